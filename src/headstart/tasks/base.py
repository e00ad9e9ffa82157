"""The interface every task offers, and what the numeric tasks share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch

from ..errors import HeadstartError

LABEL_SEP = "|"  # separates the labels of one image in a multilabel cell


class Task:
    name: ClassVar[str]
    labels: list[str]
    has_classes: ClassVar[bool] = False           # one class per image (binary, multiclass)
    numeric: ClassVar[bool] = False               # a number per image (continuous, count)
    headline: ClassVar[str] = "accuracy"          # the metric ``ImageClassifier.score`` returns
    selection_name: ClassVar[str] = "accuracy"    # what ``selection_score`` measures, in words
    output: ClassVar[str] = "raw"                 # what ``activate`` applies: "softmax", "sigmoid" or "raw"

    def parse(self, raw) -> object:
        """One raw target (a CSV cell, a folder name, a Python value) -> the task's value;
        raises ``ValueError`` saying what is wrong with it."""
        raise NotImplementedError

    def fit_targets(self, targets: Sequence) -> "Task":
        raise NotImplementedError

    @property
    def out_dim(self) -> int:
        raise NotImplementedError

    @property
    def out_width(self) -> int:
        """Width of the scores ``activate`` returns (N, out_width)."""
        return self.out_dim

    def unknown(self, targets: Sequence) -> list[str]:
        """Labels in ``targets`` that the fitted task cannot represent (none for numbers)."""
        return []

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

    def predict_values(self, scores: np.ndarray) -> list:
        """What ``ImageClassifier.predict`` returns: labels, label lists or numbers."""
        raise NotImplementedError

    def worst(self, scores: np.ndarray, targets: Sequence, files: Sequence[str], n: int = 10) -> list[dict]:
        """The worst-predicted files: ``{"file", "true", "predicted", ...}``, worst first."""
        raise NotImplementedError

    # A decoded prediction as text: CSV columns and one line of the table.
    columns: ClassVar[tuple[str, ...]] = ()

    def cells(self, decoded: dict) -> list[str]:
        raise NotImplementedError

    def text(self, decoded: dict) -> str:
        raise NotImplementedError

    def to_dict(self) -> dict:
        return {"name": self.name, "labels": list(self.labels)}


def _parsed(task: Task, targets: Sequence) -> np.ndarray:
    out = []
    for t in targets:
        try:
            out.append(task.parse(t))
        except ValueError as e:
            raise HeadstartError(f"cannot use target {t!r} for the {task.name} task: {e}. Fix the target "
                                 "(folder name or CSV cell), or choose another task.") from None
    return np.array(out, dtype=np.float64)


def _worst_numbers(y: np.ndarray, pred: np.ndarray, files: Sequence[str], n: int) -> list[dict]:
    err = np.abs(pred - y)
    return [{"file": files[i], "true": float(y[i]), "predicted": float(pred[i]), "error": float(err[i])}
            for i in np.argsort(-err, kind="stable")[:n]]


