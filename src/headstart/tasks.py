"""One object per output type: its output size, loss, decoding and metrics together.

Adding a task touches this file only. A task is fitted on the training targets
(``fit_targets``: learns the label set or the scaling), encodes targets for the loss,
turns raw head outputs into task-shaped scores (``activate``), tunes a decision rule on the
validation split (``tune``), and decodes and scores predictions.

=============  ==========================  ==========================  =========================
task           head output                 loss                        prediction
=============  ==========================  ==========================  =========================
binary         1 logit                     BCE (label smoothing)       label, tuned threshold
multiclass     one logit per class         cross-entropy (smoothing)   label, top-k
multilabel     one logit per label         BCE per label               label set, tuned thresholds
continuous     1 value, standardised       MSE or Huber                number
count          log(rate / mean count)      Poisson                     expected, rounded, P, 90 %
=============  ==========================  ==========================  =========================
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from .errors import HeadstartError

LABEL_SEP = "|"  # separates the labels of one image in a multilabel cell


class Task:
    name: ClassVar[str]
    labels: list[str]
    headline: ClassVar[str] = "accuracy"          # the metric ``ImageClassifier.score`` returns
    selection_name: ClassVar[str] = "accuracy"    # what ``selection_score`` measures, in words

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


class Multiclass(Task):
    """One of several classes: softmax output, cross-entropy loss."""

    name = "multiclass"

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
        from .evaluation.metrics import classification_metrics

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
        from .evaluation.metrics import binary_metrics

        m = super().metrics(scores, targets)
        m.update(binary_metrics(self.index(targets), scores[:, 1], self.threshold))
        return m

    def to_dict(self):
        return {**super().to_dict(), "threshold": self.threshold}


class Multilabel(Task):
    """Any subset of several labels: one sigmoid per label, each label's threshold tuned on the
    validation split (best F1). A target is a set of labels; in text, ``cat|dog`` (empty: none)."""

    name = "multilabel"
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
            if y[:, j].all() or not y[:, j].any():
                continue  # nothing to balance on this split: keep the threshold
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
        from .evaluation.metrics import multilabel_metrics

        return multilabel_metrics(self.multi_hot(targets) > 0.5, scores, self.predicted(scores), self.labels,
                                  np.asarray(self.prevalence), np.asarray(self.thresholds))

    def selection_score(self, scores, targets):
        from .evaluation.metrics import average_precision

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


class Continuous(Task):
    """A number: one linear output trained on standardised targets (mean 0, std 1), with the
    squared error or, with ``loss="huber"``, the Huber loss (robust to a few wrong targets)."""

    name = "continuous"
    headline = "r2"
    selection_name = "R^2"
    LOSSES = ("mse", "huber")

    def __init__(self, labels: Sequence[str] = (), mean: float = 0.0, std: float = 1.0, loss: str = "mse"):
        if loss not in self.LOSSES:
            raise HeadstartError(f"loss {loss!r} is not one for a continuous task; choose one of {self.LOSSES}.")
        self.labels, self.mean, self.std, self.loss_name = [], float(mean), float(std), loss

    def parse(self, raw):
        try:
            x = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a number") from None
        if not math.isfinite(x):
            raise ValueError(f"{raw!r} is not a finite number")
        return x

    def values(self, targets: Sequence) -> np.ndarray:
        return _parsed(self, targets)

    def fit_targets(self, targets):
        y = self.values(targets)
        if len(np.unique(y)) < 2:
            raise HeadstartError(f"every training target has the same value ({y[0] if len(y) else 'none'}); "
                                 "there is nothing to learn. Check the target column.")
        self.mean, self.std = float(y.mean()), float(y.std())
        return self

    @property
    def out_dim(self) -> int:
        return 1

    def encode(self, targets):
        return torch.from_numpy(((self.values(targets) - self.mean) / self.std).astype(np.float32))[:, None]

    def loss(self, output, target, label_smoothing=0.0):  # label smoothing means nothing here
        if self.loss_name == "huber":
            return F.huber_loss(output, target, delta=1.0)  # delta: one standard deviation
        return F.mse_loss(output, target)

    def activate(self, output):
        return output[:, :1] * self.std + self.mean  # (N, 1) in the target's units

    def predict_values(self, scores):
        return [float(v) for v in scores[:, 0]]

    def decode(self, scores, top_k=5):
        return [{"value": v} for v in self.predict_values(scores)]

    def metrics(self, scores, targets):
        from .evaluation.metrics import regression_metrics

        return regression_metrics(self.values(targets), scores[:, 0], self.mean)

    def selection_score(self, scores, targets):
        from .evaluation.metrics import regression_metrics

        return regression_metrics(self.values(targets), scores[:, 0], self.mean)["r2"]

    def worst(self, scores, targets, files, n=10):
        return _worst_numbers(self.values(targets), scores[:, 0], files, n)

    columns = ("value",)

    def cells(self, decoded):
        return [f"{decoded['value']:.6g}"]

    def text(self, decoded):
        return f"{decoded['value']:.4g}"

    def to_dict(self):
        return {"name": self.name, "mean": self.mean, "std": self.std, "loss": self.loss_name}


class Count(Task):
    """A count (0, 1, 2, ...): a log-link output trained with the Poisson loss. It predicts the
    expected count; ``decode`` adds the rounded count, its probability and a 90 % interval
    from the Poisson distribution with that mean."""

    name = "count"
    headline = "d2_poisson"
    selection_name = "fraction of Poisson deviance explained"
    LEVEL = 0.9

    def __init__(self, labels: Sequence[str] = (), mean: float = 1.0):
        self.labels, self.mean = [], float(mean)

    def parse(self, raw):
        try:
            x = float(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{raw!r} is not a count (a whole number 0, 1, 2, ...)") from None
        if not math.isfinite(x) or x < 0:
            raise ValueError(f"{raw!r} is negative; counts are 0, 1, 2, ...")
        if x != round(x):
            raise ValueError(f"{raw!r} is fractional; counts are whole numbers")
        return int(round(x))

    def values(self, targets: Sequence) -> np.ndarray:
        return _parsed(self, targets)

    def fit_targets(self, targets):
        y = self.values(targets)
        if len(np.unique(y)) < 2:
            raise HeadstartError(f"every training image has the same count ({int(y[0]) if len(y) else 'none'}); "
                                 "there is nothing to learn. Check the count column.")
        self.mean = float(y.mean())
        return self

    @property
    def out_dim(self) -> int:
        return 1

    def _log_rate(self, output):
        # The head learns the log of (rate / training mean): starts near the mean count.
        return output + math.log(max(self.mean, 1e-3))

    def encode(self, targets):
        return torch.from_numpy(self.values(targets).astype(np.float32))[:, None]

    def loss(self, output, target, label_smoothing=0.0):  # label smoothing means nothing here
        return F.poisson_nll_loss(self._log_rate(output).clamp(max=30.0), target, log_input=True, full=False)

    def activate(self, output):
        return np.exp(np.clip(self._log_rate(output[:, :1]), -30.0, 30.0))  # (N, 1) expected counts

    def predict_values(self, scores):
        return [float(v) for v in scores[:, 0]]

    def decode(self, scores, top_k=5):
        mu = scores[:, 0].astype(np.float64)
        k = np.floor(mu + 0.5).astype(np.int64)
        p = poisson_pmf(k, mu)
        lo, hi = poisson_interval(mu, self.LEVEL)
        return [{"expected": float(m), "count": int(c), "probability": float(q), "interval": [int(a), int(b)]}
                for m, c, q, a, b in zip(mu, k, p, lo, hi)]

    def metrics(self, scores, targets):
        from .evaluation.metrics import count_metrics

        mu = scores[:, 0].astype(np.float64)
        lo, hi = poisson_interval(mu, self.LEVEL)
        return count_metrics(self.values(targets), mu, self.mean, lo, hi)

    def selection_score(self, scores, targets):
        from .evaluation.metrics import poisson_deviance

        y = self.values(targets)
        null = poisson_deviance(y, np.full_like(y, max(y.mean(), 1e-9)))
        return 1.0 - poisson_deviance(y, scores[:, 0]) / null if null > 0 else 0.0

    def worst(self, scores, targets, files, n=10):
        return _worst_numbers(self.values(targets), scores[:, 0], files, n)

    columns = ("expected", "count", "probability", "interval_low", "interval_high")

    def cells(self, decoded):
        lo, hi = decoded["interval"]
        return [f"{decoded['expected']:.4f}", str(decoded["count"]), f"{decoded['probability']:.4f}", str(lo), str(hi)]

    def text(self, decoded):
        lo, hi = decoded["interval"]
        return (f"{decoded['count']} (P={decoded['probability']:.2f}; expected {decoded['expected']:.2f}, "
                f"{self.LEVEL:.0%} interval {lo}-{hi})")

    def to_dict(self):
        return {"name": self.name, "mean": self.mean}


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


def poisson_pmf(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """P(X = k) for X ~ Poisson(mu), elementwise."""
    k, mu = np.asarray(k, np.float64), np.maximum(np.asarray(mu, np.float64), 1e-12)
    lgamma = np.vectorize(math.lgamma)(k + 1)
    return np.exp(k * np.log(mu) - mu - lgamma)


def poisson_interval(mu: np.ndarray, level: float = 0.9) -> tuple[np.ndarray, np.ndarray]:
    """Central interval [lo, hi] holding at least ``level`` of Poisson(mu): lo is the
    (1 - level) / 2 quantile, hi the (1 + level) / 2 quantile."""
    mu = np.maximum(np.asarray(mu, np.float64), 1e-12)
    kmax = int(np.ceil(mu.max(initial=0.0) + 10 * np.sqrt(mu.max(initial=0.0)) + 10))
    k = np.arange(kmax + 1, dtype=np.float64)
    lgamma = np.array([math.lgamma(v + 1) for v in k])
    cdf = np.cumsum(np.exp(k[None, :] * np.log(mu[:, None]) - mu[:, None] - lgamma[None, :]), axis=1)  # (N, K)
    lo = (cdf < (1 - level) / 2).sum(1)
    hi = (cdf < (1 + level) / 2 - 1e-12).sum(1)
    return lo, np.minimum(hi, kmax)


TASKS: dict[str, type[Task]] = {"binary": Binary, "multiclass": Multiclass, "multilabel": Multilabel,
                               "continuous": Continuous, "count": Count}


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


def make_task(name: str, loss: str = "auto") -> Task:
    """An unfitted task by name; ``loss`` picks among the task's losses ("auto": its default).

    >>> make_task("continuous", loss="huber").loss_name
    'huber'
    """
    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(str(name), list(TASKS), n=2)
        raise HeadstartError(f"unknown task {name!r}; expected one of {list(TASKS)} or 'auto'"
                             + (f" (did you mean {' or '.join(map(repr, close))}?)" if close else "") + ".")
    cls = TASKS[name]
    if loss == "auto":
        return cls()
    losses = getattr(cls, "LOSSES", ())
    if loss not in losses:
        raise HeadstartError(f"loss {loss!r} does not apply to the {name} task"
                             + (f"; it takes one of {list(losses)}." if losses else "; it has one loss. Drop --loss."))
    return cls(loss=loss)
