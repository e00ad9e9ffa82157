"""Any subset of several labels per image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HeadstartError
from .base import LABEL_SEP, Task


class Multilabel(Task):
    """Any subset of several labels: one sigmoid per label, each label's threshold tuned on the
    validation split (best F1). A target is a set of labels; in text, ``cat|dog`` (empty: none)."""

    name = "multilabel"
    output = "sigmoid"
    headline = "micro_f1"
    selection_name = "mean average precision"

    def __init__(self, labels: Sequence[str] = (), thresholds: Sequence[float] | None = None,
                 prevalence: Sequence[float] | None = None):
        self.labels = list(labels)
        self._index = {c: i for i, c in enumerate(self.labels)}
        self.thresholds = list(thresholds) if thresholds is not None else [0.5] * len(self.labels)
        self.prevalence = list(prevalence) if prevalence is not None else [0.0] * len(self.labels)

    def parse(self, raw):
        items = raw if isinstance(raw, (list, tuple, set, frozenset)) else str(raw).split(LABEL_SEP)
        return tuple(sorted({str(t).strip() for t in items if str(t).strip()}))

    def unknown(self, targets):
        return sorted({t for s in targets for t in self.parse(s) if t not in self._index})

    def fit_targets(self, targets):
        sets = [self.parse(t) for t in targets]
        found = sorted({t for s in sets for t in s})
        if len(found) < 2:
            raise HeadstartError(
                f"a multilabel task needs at least 2 distinct labels; found {len(found)}: {found}. "
                f"Write each image's labels in one cell separated by '{LABEL_SEP}', e.g. 'cat{LABEL_SEP}dog'.")
        self.__init__(found)
        self.prevalence = self.multi_hot(sets).mean(0).tolist()
        return self

    @property
    def out_dim(self) -> int:
        return len(self.labels)

    def multi_hot(self, targets: Sequence) -> np.ndarray:
        unknown = self.unknown(targets)
        if unknown:
            raise HeadstartError(f"labels {unknown[:10]} are not among the model's labels {self.labels}.")
        y = np.zeros((len(targets), len(self.labels)), np.float32)
        for i, s in enumerate(targets):
            for t in self.parse(s):
                y[i, self._index[t]] = 1.0
        return y  # (N, L)

    def encode(self, targets):
        return torch.from_numpy(self.multi_hot(targets))

    def loss(self, output, target, label_smoothing=0.0):
        target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(output, target)

    def activate(self, output):
        return 1.0 / (1.0 + np.exp(-output))  # (N, L): one probability per label

    def predicted(self, scores: np.ndarray) -> np.ndarray:
        return scores >= np.asarray(self.thresholds)[None, :]  # (N, L) bool

    def tune(self, scores, targets):
        y = self.multi_hot(targets) > 0.5
        for j in range(len(self.labels)):
            if min(y[:, j].sum(), (~y[:, j]).sum()) < 10:
                continue  # too few images with or without the label to tune on: keep the threshold
            p = scores[:, j]

            def f1(t: float) -> float:
                pred = p >= t
                tp = (pred & y[:, j]).sum()
                return 2 * tp / (pred.sum() + y[:, j].sum())

            self.thresholds[j] = float(max(np.unique(p), key=lambda t: (f1(t), -abs(t - 0.5))))

    def predict_values(self, scores):
        return [[self.labels[j] for j in np.flatnonzero(row)] for row in self.predicted(scores)]

    def decode(self, scores, top_k=5):
        return [{"labels": labels, "probabilities": {c: float(p) for c, p in zip(self.labels, row)}}
                for labels, row in zip(self.predict_values(scores), scores)]

    def metrics(self, scores, targets):
        from .metrics import multilabel_metrics

        return multilabel_metrics(self.multi_hot(targets) > 0.5, scores, self.predicted(scores), self.labels,
                                  np.asarray(self.prevalence), np.asarray(self.thresholds))

    def selection_score(self, scores, targets):
        from .metrics import average_precision

        y = self.multi_hot(targets)
        aps = [average_precision(y[:, j], scores[:, j]) for j in range(len(self.labels)) if y[:, j].any()]
        return float(np.mean(aps)) if aps else 0.0

    def worst(self, scores, targets, files, n=10):
        y = self.multi_hot(targets) > 0.5
        pred = self.predicted(scores)
        wrong = (pred != y).sum(1)
        miss = np.abs(y - scores).sum(1)  # how far the probabilities are from the truth
        order = sorted(range(len(y)), key=lambda i: (-wrong[i], -miss[i]))[:n]
        return [{"file": files[i], "true": LABEL_SEP.join(self.parse(targets[i])),
                 "predicted": LABEL_SEP.join(self.labels[j] for j in np.flatnonzero(pred[i])),
                 "wrong_labels": int(wrong[i])} for i in order if wrong[i]]

    columns = ("labels", "probabilities")

    def cells(self, decoded):
        probs = ";".join(f"{c}:{p:.4f}" for c, p in decoded["probabilities"].items())
        return [LABEL_SEP.join(decoded["labels"]), probs]

    def text(self, decoded):
        probs = ", ".join(f"{c} {p:.2f}" for c, p in decoded["probabilities"].items())
        return f"{LABEL_SEP.join(decoded['labels']) or '(none)'}   probabilities: {probs}"

    def to_dict(self):
        return {**super().to_dict(), "thresholds": self.thresholds, "prevalence": self.prevalence}


