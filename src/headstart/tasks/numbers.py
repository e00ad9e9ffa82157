"""A number per image: continuous values, or counts (Poisson)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import HeadstartError
from .base import Task, _parsed, _worst_numbers


class Continuous(Task):
    """A number: one linear output trained on standardised targets (mean 0, std 1), with the
    squared error or, with ``loss="huber"``, the Huber loss (robust to a few wrong targets)."""

    name = "continuous"
    numeric = True
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
        from .metrics import regression_metrics

        return regression_metrics(self.values(targets), scores[:, 0], self.mean)

    def selection_score(self, scores, targets):
        from .metrics import r2

        return r2(self.values(targets), scores[:, 0])

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
    numeric = True
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
        from .metrics import count_metrics

        mu = scores[:, 0].astype(np.float64)
        lo, hi = poisson_interval(mu, self.LEVEL)
        return count_metrics(self.values(targets), mu, self.mean, lo, hi)

    def selection_score(self, scores, targets):
        from .metrics import poisson_deviance

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


