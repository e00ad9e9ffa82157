"""The metrics of every task, computed with scikit-learn; the dicts' keys are what the text and
HTML reports and the JSON output read.

scikit-learn is imported inside the functions: it costs about half a second and training
imports the tasks before it needs a metric. scikit-learn refuses empty inputs and undefined
scores, so the guards here keep the old answers: 0.0 for an empty split, NaN for a score that
a split cannot define (ROC AUC without both classes, R^2 of a constant target).
"""

from __future__ import annotations

import numpy as np

NAN = float("nan")


def classification_metrics(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, top-5 (more than 5 classes), per-class precision/recall/F1/support, the
    confusion matrix (rows = true, columns = predicted), the most confused pairs and the
    majority-class baseline."""
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = len(labels)
    if len(y):
        cm = confusion_matrix(y, pred, labels=np.arange(k))
        precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=np.arange(k), zero_division=0)
    else:
        cm, precision = np.zeros((k, k), np.int64), np.zeros(k)
        recall = f1 = precision
    per_class = {name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                        "support": int(cm[i].sum())} for i, name in enumerate(labels)}
    confused = [(labels[i], labels[j], int(cm[i, j])) for i in range(k) for j in range(k) if i != j and cm[i, j]]
    confused.sort(key=lambda t: -t[2])
    counts = np.bincount(y, minlength=k)
    out = {
        "n_images": len(y),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "labels": list(labels),
        "per_class": per_class,
        "macro_f1": float(np.mean(f1)),
        "confusion_matrix": cm.tolist(),
        "most_confused": [{"true": a, "predicted": b, "count": c} for a, b, c in confused[:10]],
        "baseline": {"name": "majority class", "label": labels[int(counts.argmax())],
                     "accuracy": float(counts.max() / max(1, len(y)))},
    }
    if k > 5:
        out["top5_accuracy"] = top_k_accuracy(y, proba, 5)
    return out


def top_k_accuracy(y: np.ndarray, proba: np.ndarray, k: int) -> float:
    """Share of images whose true class is among the ``k`` most probable; NaN with no image."""
    from sklearn.metrics import top_k_accuracy_score

    if not len(y):
        return NAN
    return float(top_k_accuracy_score(y, proba, k=k, labels=np.arange(proba.shape[1])))


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve of positives ``y == 1``; NaN unless both classes are present."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(y) == 1
    if positive.all() or not positive.any():
        return NAN
    return float(roc_auc_score(positive, score))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve of positives ``y == 1`` (tied scores form one
    step); NaN without a positive."""
    from sklearn.metrics import average_precision_score

    positive = np.asarray(y) == 1
    if not positive.any():
        return NAN
    return float(average_precision_score(positive, score))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """ROC AUC, PR AUC, and F1 of the positive class at ``threshold``."""
    from sklearn.metrics import f1_score

    pred = (p >= threshold).astype(np.int64)
    f1 = float(f1_score(y, pred, labels=[1], average="macro", zero_division=0)) if len(y) else 0.0
    return {"roc_auc": roc_auc(y, p), "pr_auc": average_precision(y, p), "f1": f1, "threshold": float(threshold)}


def _errors(y: np.ndarray, pred: np.ndarray) -> dict:
    """MAE and RMSE; 0.0 on an empty split."""
    from sklearn.metrics import mean_absolute_error, root_mean_squared_error

    if not len(y):
        return {"mae": 0.0, "rmse": 0.0}
    return {"mae": float(mean_absolute_error(y, pred)), "rmse": float(root_mean_squared_error(y, pred))}


def r2(y: np.ndarray, pred: np.ndarray) -> float:
    """R^2 against the mean of ``y``; NaN when ``y`` is constant (or empty)."""
    from sklearn.metrics import r2_score

    return float(r2_score(y, pred)) if len(y) and np.ptp(y) > 0 else NAN


def regression_metrics(y: np.ndarray, pred: np.ndarray, train_mean: float) -> dict:
    """MAE, RMSE and R^2 (against the mean of ``y``), with the baseline that always predicts the
    training mean."""
    def scores(p: np.ndarray) -> dict:
        return {**_errors(y, p), "r2": r2(y, p)}

    return {"n_images": len(y), **scores(pred), "target_mean": float(y.mean()) if len(y) else 0.0,
            "target_std": float(y.std()) if len(y) else 0.0,
            "baseline": {"name": "training mean", "value": float(train_mean),
                         **scores(np.full(len(y), train_mean, dtype=np.float64))}}


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson deviance 2 * (y log(y / mu) - (y - mu)), with 0 log 0 = 0; 0.0 when empty."""
    from sklearn.metrics import mean_poisson_deviance

    if not len(y):
        return 0.0
    # scikit-learn wants mu > 0; an expected count of exactly 0 is scored as 1e-12
    return float(mean_poisson_deviance(np.asarray(y, np.float64), np.maximum(np.asarray(mu, np.float64), 1e-12)))


def count_metrics(y: np.ndarray, mu: np.ndarray, train_mean: float, lo: np.ndarray, hi: np.ndarray) -> dict:
    """MAE, RMSE, exact-count accuracy (rounded expected count == true count), mean Poisson
    deviance, the fraction of deviance explained (D^2) and how often the true count falls in the
    predicted interval; baseline: always the training mean count."""
    def scores(m: np.ndarray) -> dict:
        return {**_errors(y, m), "exact_count_accuracy": float((np.floor(m + 0.5) == y).mean()) if len(y) else 0.0,
                "poisson_deviance": poisson_deviance(y, m)}

    null = poisson_deviance(y, np.full(len(y), max(float(y.mean()) if len(y) else 0.0, 1e-9)))
    out = {"n_images": len(y), **scores(mu)}
    out["d2_poisson"] = 1.0 - out["poisson_deviance"] / null if null > 0 else NAN
    out["interval_coverage"] = float(((y >= lo) & (y <= hi)).mean()) if len(y) else 0.0
    out["count_mean"] = float(y.mean()) if len(y) else 0.0
    out["baseline"] = {"name": "training mean count", "value": float(train_mean),
                       **scores(np.full(len(y), train_mean, dtype=np.float64))}
    return out


def _label_f1s(y: np.ndarray, p: np.ndarray) -> tuple[float, float, list[tuple[float, float, float]]]:
    """Micro F1, macro F1 and per-label (precision, recall, F1) of indicator arrays (N, L)."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    if not len(y):
        return 0.0, 0.0, [(0.0, 0.0, 0.0)] * y.shape[1]
    precision, recall, f1, _ = precision_recall_fscore_support(y, p, average=None, zero_division=0)
    micro = float(f1_score(y, p, average="micro", zero_division=0))
    return micro, float(f1.mean()), [(float(a), float(b), float(c)) for a, b, c in zip(precision, recall, f1)]


def multilabel_metrics(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, labels: list[str],
                       prevalence: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per-label precision/recall/F1/AP, micro and macro F1, mean average precision (over labels
    with a positive image), subset accuracy; baseline: each label's training frequency as its
    score, predicted present when that frequency is at least one half."""
    micro, macro, rows = _label_f1s(y, pred)
    aps = [average_precision(y[:, j].astype(int), proba[:, j]) for j in range(len(labels))]
    per_label = {name: {"precision": r[0], "recall": r[1], "f1": r[2], "average_precision": ap,
                        "threshold": float(t), "support": int(y[:, j].sum())}
                 for j, (name, r, ap, t) in enumerate(zip(labels, rows, aps, thresholds))}
    const = np.broadcast_to(prevalence >= 0.5, y.shape)
    b_micro, b_macro, _ = _label_f1s(y, const)
    present = y.any(0)
    return {"n_images": len(y), "labels": list(labels), "micro_f1": micro, "macro_f1": macro,
            "mean_average_precision": float(np.mean([a for a, ok in zip(aps, present) if ok])) if present.any() else NAN,
            "subset_accuracy": float((pred == y).all(1).mean()) if len(y) else 0.0,
            "hamming_loss": float((pred != y).mean()) if len(y) else 0.0,
            "per_label": per_label,
            "baseline": {"name": "training label frequencies", "prevalence": [float(v) for v in prevalence],
                         "micro_f1": b_micro, "macro_f1": b_macro,
                         # a constant score's average precision is the label's frequency
                         "mean_average_precision": float(y[:, present].mean(0).mean()) if present.any() else NAN,
                         "subset_accuracy": float((const == y).all(1).mean()) if len(y) else 0.0}}
