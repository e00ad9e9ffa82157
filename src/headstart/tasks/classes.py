"""One class per image: several (softmax) or two (one sigmoid, a tuned threshold)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HeadstartError
from .base import Task


class Multiclass(Task):
    """One of several classes: softmax output, cross-entropy loss."""

    name = "multiclass"
    has_classes = True

    def __init__(self, labels: Sequence[str] = ()):
        self.labels = list(labels)
        self._index = {c: i for i, c in enumerate(self.labels)}

    def parse(self, raw):
        label = str(raw).strip()
        if not label:
            raise ValueError("no label (empty cell)")
        return label

    def unknown(self, targets):
        return sorted({t for t in targets if t not in self._index})

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

    @property
    def out_width(self) -> int:
        return len(self.labels)  # one probability per class, binary included

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
        from .metrics import classification_metrics

        return classification_metrics(self.index(targets), scores, self.predicted_index(scores), self.labels)

    def selection_score(self, scores, targets):
        return float((self.predicted_index(scores) == self.index(targets)).mean())

    def predict_values(self, scores):
        return [self.labels[i] for i in self.predicted_index(scores)]

    def worst(self, scores, targets, files, n=10):
        y = self.index(targets)
        pred = self.predicted_index(scores)
        p_true = scores[np.arange(len(y)), y]
        return [{"file": files[i], "true": targets[i], "predicted": self.labels[pred[i]],
                 "p_true": float(p_true[i]), "p_predicted": float(scores[i, pred[i]])}
                for i in np.argsort(p_true)[:n] if pred[i] != y[i]]

    columns = ("label", "probability", "top")

    def cells(self, decoded):
        top = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in decoded["top"])
        return [decoded["label"], f"{decoded['probability']:.4f}", top]

    def text(self, decoded):
        top = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in decoded["top"])
        return f"{decoded['label']} ({decoded['probability']:.2f})   top: {top}"


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

        # Best balanced accuracy; among ties, the threshold nearest 0.5. Candidates lie between
        # observed scores (and 0.5 itself): a threshold on a validation score itself overfits
        # a small validation split and misplaces the refitted head's boundary.
        u = np.unique(p)
        candidates = np.append((u[:-1] + u[1:]) / 2, [0.5, u[0], u[-1] + 1e-6])
        self.threshold = float(max(candidates, key=lambda t: (balanced_accuracy(t), -abs(t - 0.5))))

    def metrics(self, scores, targets):
        from .metrics import binary_metrics

        m = super().metrics(scores, targets)
        m.update(binary_metrics(self.index(targets), scores[:, 1], self.threshold))
        return m

    def to_dict(self):
        return {**super().to_dict(), "threshold": self.threshold}


