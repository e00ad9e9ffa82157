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
    output = "softmax"

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
        if not label_smoothing:
            return F.cross_entropy(output, target)
        # cross_entropy's own label_smoothing, the same value and gradient: its path costs 0.75 ms
        # a step on a (256, 10) batch on a CPU, this one 0.27 ms
        logp = F.log_softmax(output, 1)
        return (1 - label_smoothing) * F.nll_loss(logp, target) - label_smoothing * logp.mean()

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
                for i in [i for i in np.argsort(p_true) if pred[i] != y[i]][:n]]  # the n worst errors

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
    output = "sigmoid"

    MIN_PER_CLASS = 10  # validation images of each class below which no threshold is tuned

    def __init__(self, labels: Sequence[str] = (), threshold: float = 0.5, threshold_reason: str = "the default"):
        super().__init__(labels)
        self.threshold = threshold
        self.threshold_reason = threshold_reason  # how the threshold was chosen, in words

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
        """Move the threshold from 0.5 only where validation supports it: at least MIN_PER_CLASS
        images of each class, and a balanced-accuracy gain over 0.5 larger than its standard error."""
        y = self.index(targets)
        n0, n1 = int((y == 0).sum()), int((y == 1).sum())
        self.threshold, self.threshold_reason = 0.5, "the default"
        if min(n0, n1) < self.MIN_PER_CLASS:
            self.threshold_reason = (f"the default: too few validation images to tune it ({n0} and {n1}; "
                                     f"at least {self.MIN_PER_CLASS} of each class are needed)")
            return
        p = scores[:, 1]

        def balanced_accuracy(t: float) -> float:
            return 0.5 * ((p[y == 1] >= t).mean() + (p[y == 0] < t).mean())

        # Best balanced accuracy; among ties, the threshold nearest 0.5. Candidates lie between
        # observed scores (and 0.5 itself): a threshold on a validation score itself overfits
        # a small validation split and misplaces the refitted head's boundary.
        u = np.unique(p)
        candidates = np.append((u[:-1] + u[1:]) / 2, [0.5, u[0], u[-1] + 1e-6])
        best = float(max(candidates, key=lambda t: (balanced_accuracy(t), -abs(t - 0.5))))
        gain, noise = balanced_accuracy(best) - balanced_accuracy(0.5), 0.25 * np.sqrt(1 / n0 + 1 / n1)
        if gain > noise:
            self.threshold = best
            self.threshold_reason = (f"tuned on {n0 + n1} validation images: balanced accuracy "
                                     f"{balanced_accuracy(best):.3f}, against {balanced_accuracy(0.5):.3f} at 0.5")
        else:
            self.threshold_reason = (f"the default: the best threshold on validation ({best:.2f}) gained "
                                     f"{gain:.3f} balanced accuracy, within the noise of {n0 + n1} images")

    def decode(self, scores, top_k=5):
        out = super().decode(scores, top_k)
        for row in out:
            row["threshold"] = self.threshold
        return out

    def text(self, decoded):
        t = decoded.get("threshold", 0.5)
        if t == 0.5:
            return super().text(decoded)
        p_pos = decoded["probability"] if decoded["label"] == self.labels[1] else 1 - decoded["probability"]
        sign = ">=" if p_pos >= t else "<"
        return (f"{decoded['label']} (p({self.labels[1]}) {p_pos:.2f} {sign} threshold {t:.2f})   "
                f"top: " + ", ".join(f"{x['label']} {x['probability']:.2f}" for x in decoded["top"]))

    def metrics(self, scores, targets):
        from .metrics import binary_metrics

        m = super().metrics(scores, targets)
        m.update(binary_metrics(self.index(targets), scores[:, 1], self.threshold), threshold_reason=self.threshold_reason)
        return m

    def to_dict(self):
        return {**super().to_dict(), "threshold": self.threshold, "threshold_reason": self.threshold_reason}


