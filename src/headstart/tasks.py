"""One object per output type: its output size, loss, decoding and metrics together.

Adding a task touches this file only. A task is fitted on the training targets
(``fit_targets``: learns the label set or the scaling), encodes targets for the loss,
turns raw head outputs into task-shaped scores (``activate``), tunes a decision rule on the
validation split (``tune``), and decodes and scores predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import HeadstartError


class Task:
    name: ClassVar[str]
    labels: list[str]

    def fit_targets(self, targets: Sequence) -> "Task":
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    def encode(self, targets: Sequence) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        raise NotImplementedError

    def activate(self, output: np.ndarray) -> np.ndarray:
        """Raw head output (N, out_dim) -> the task's scores (e.g. class probabilities)."""
        raise NotImplementedError

    def tune(self, scores: np.ndarray, targets: Sequence) -> None:
        """Choose decision rules (thresholds) on the validation split; default: nothing."""

    def decode(self, scores: np.ndarray, top_k: int = 5) -> list[dict]:
        raise NotImplementedError

    def metrics(self, scores: np.ndarray, targets: Sequence) -> dict:
        raise NotImplementedError

    def selection_score(self, scores: np.ndarray, targets: Sequence) -> float:
        """Higher is better; used to choose settings on the validation split."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": list(self.labels)}


class Multiclass(Task):
    """One of several classes: softmax output, cross-entropy loss."""

    name = "multiclass"

    def __init__(self, labels: Sequence[str] = ()):
        self.labels = list(labels)
        self._index = {c: i for i, c in enumerate(self.labels)}

    def fit_targets(self, targets):
        found = sorted(set(targets))
        if len(found) < 2:
            raise HeadstartError(
                f"a classifier needs at least 2 classes; found {len(found)}: {found}. "
                "Add a folder of images for each class you want to recognise.")
        self.__init__(found)
        return self

    @property
    def out_dim(self) -> int:
        return len(self.labels)

    def index(self, targets: Sequence[str]) -> np.ndarray:
        unknown = sorted({t for t in targets if t not in self._index})
        if unknown:
            raise HeadstartError(f"labels {unknown[:10]} are not among the model's classes {self.labels}.")
        return np.array([self._index[t] for t in targets], dtype=np.int64)

    def encode(self, targets):
        return torch.from_numpy(self.index(targets))

    def loss(self, output, target, label_smoothing=0.0):
        return F.cross_entropy(output, target, label_smoothing=label_smoothing)

    def activate(self, output):
        z = output - output.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    def predicted_index(self, scores: np.ndarray) -> np.ndarray:
        return scores.argmax(1)

    def decode(self, scores, top_k=5):
        k = min(top_k, len(self.labels))
        out = []
        for row, pick in zip(scores, self.predicted_index(scores)):
            top = np.argsort(-row)[:k]
            out.append({"label": self.labels[pick], "probability": float(row[pick]),
                        "top": [{"label": self.labels[j], "probability": float(row[j])} for j in top]})
        return out

    def metrics(self, scores, targets):
        from .evaluation.metrics import classification_metrics

        return classification_metrics(self.index(targets), scores, self.predicted_index(scores), self.labels)

    def selection_score(self, scores, targets):
        return float((self.predicted_index(scores) == self.index(targets)).mean())


class Binary(Multiclass):
    """Two classes: one sigmoid output for the second (positive) class; its decision threshold
    is tuned on the validation split (balanced accuracy), not fixed at 0.5."""

    name = "binary"

    def __init__(self, labels: Sequence[str] = (), threshold: float = 0.5):
        super().__init__(labels)
        self.threshold = threshold

    def fit_targets(self, targets):
        found = sorted(set(targets))
        if len(found) != 2:
            raise HeadstartError(f"a binary task needs exactly 2 classes; found {len(found)}: {found[:10]}.")
        self.__init__(found)
        return self

    @property
    def out_dim(self) -> int:
        return 1

    def encode(self, targets):
        return torch.from_numpy(self.index(targets).astype(np.float32))[:, None]

    def loss(self, output, target, label_smoothing=0.0):
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(output, target)

    def activate(self, output):
        p = 1.0 / (1.0 + np.exp(-output[:, :1]))
        return np.concatenate([1 - p, p], axis=1)  # (N, 2): columns follow self.labels

    def predicted_index(self, scores):
        return (scores[:, 1] >= self.threshold).astype(np.int64)

    def tune(self, scores, targets):
        y = self.index(targets)
        if len(set(y)) < 2:
            return
        p = scores[:, 1]

        def balanced_accuracy(t: float) -> float:
            return 0.5 * ((p[y == 1] >= t).mean() + (p[y == 0] < t).mean())

        # Best balanced accuracy; among ties, the threshold nearest 0.5.
        self.threshold = float(max(np.unique(p), key=lambda t: (balanced_accuracy(t), -abs(t - 0.5))))

    def metrics(self, scores, targets):
        from .evaluation.metrics import binary_metrics

        m = super().metrics(scores, targets)
        m.update(binary_metrics(self.index(targets), scores[:, 1], self.threshold))
        return m

    def to_dict(self):
        return {**super().to_dict(), "threshold": self.threshold}


TASKS: dict[str, type[Task]] = {"multiclass": Multiclass, "binary": Binary}


def task_from_dict(d: dict) -> Task:
    d = dict(d)
    name = d.pop("name")
    if name not in TASKS:
        raise HeadstartError(f"unknown task {name!r} in the model folder; this headstart knows {sorted(TASKS)}. "
                             "Upgrade headstart to load it.")
    return TASKS[name](**d)


def infer_task(labels: Sequence[str]) -> Task:
    """Class names from folders: two classes -> binary, more -> multiclass."""
    n = len(set(labels))
    return (Binary() if n == 2 else Multiclass()).fit_targets(labels)
