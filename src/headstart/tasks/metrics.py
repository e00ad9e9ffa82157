"""Metrics in plain NumPy (no scikit-learn needed at run time)."""

from __future__ import annotations

import numpy as np


def classification_metrics(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, top-5 (more than 5 classes), per-class precision/recall/F1/support, the
    confusion matrix (rows = true, columns = predicted), the most confused pairs and the
    majority-class baseline."""
    k = len(labels)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y, pred), 1)
    per_class = {}
    for i, name in enumerate(labels):
        tp = cm[i, i]
        precision = tp / cm[:, i].sum() if cm[:, i].sum() else 0.0
        recall = tp / cm[i].sum() if cm[i].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                           "support": int(cm[i].sum())}
    confused = [(labels[i], labels[j], int(cm[i, j])) for i in range(k) for j in range(k) if i != j and cm[i, j]]
    confused.sort(key=lambda t: -t[2])
    counts = np.bincount(y, minlength=k)
    out = {
        "n_images": int(len(y)),
        "accuracy": float((pred == y).mean()) if len(y) else 0.0,
        "labels": list(labels),
        "per_class": per_class,
        "macro_f1": float(np.mean([c["f1"] for c in per_class.values()])),
        "confusion_matrix": cm.tolist(),
        "most_confused": [{"true": a, "predicted": b, "count": c} for a, b, c in confused[:10]],
        "baseline": {"name": "majority class", "label": labels[int(counts.argmax())],
                     "accuracy": float(counts.max() / max(1, len(y)))},
    }
    if k > 5:
        top5 = np.argsort(-proba, axis=1)[:, :5]
        out["top5_accuracy"] = float((top5 == y[:, None]).any(1).mean())
    return out


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve via the rank statistic (ties get average ranks)."""
    pos, neg = (y == 1).sum(), (y == 0).sum()
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    sorted_scores = score[order]
    i = 0
    while i < len(score):
        j = i
        while j + 1 < len(score) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j) + 1
        i = j + 1
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve (step-wise, as scikit-learn computes it)."""
    if (y == 1).sum() == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    hits = (y[order] == 1).astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(y) + 1)
    return float((precision * hits).sum() / hits.sum())


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    pred = p >= threshold
    tp = float((pred & (y == 1)).sum())
    precision = tp / pred.sum() if pred.sum() else 0.0
    recall = tp / (y == 1).sum() if (y == 1).sum() else 0.0
    return {"roc_auc": roc_auc(y, p), "pr_auc": average_precision(y, p),
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "threshold": float(threshold)}


def regression_metrics(y: np.ndarray, pred: np.ndarray, train_mean: float) -> dict:
    """MAE, RMSE and R^2 (against the mean of ``y``), with the baseline that always predicts the
    training mean."""
    def scores(p: np.ndarray) -> dict:
        err = p - y
        ss_tot = float(((y - y.mean()) ** 2).sum()) if len(y) else 0.0
        return {"mae": float(np.abs(err).mean()) if len(y) else 0.0,
                "rmse": float(np.sqrt((err ** 2).mean())) if len(y) else 0.0,
                "r2": 1.0 - float((err ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")}

    return {"n_images": int(len(y)), **scores(pred), "target_mean": float(y.mean()) if len(y) else 0.0,
            "target_std": float(y.std()) if len(y) else 0.0,
            "baseline": {"name": "training mean", "value": float(train_mean),
                         **scores(np.full(len(y), train_mean, dtype=np.float64))}}


def poisson_deviance(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson deviance 2 * (y log(y / mu) - (y - mu)), with 0 log 0 = 0."""
    y, mu = np.asarray(y, np.float64), np.maximum(np.asarray(mu, np.float64), 1e-12)
    ylog = np.where(y > 0, y * np.log(np.where(y > 0, y, 1.0) / mu), 0.0)
    return float((2 * (ylog - (y - mu))).mean()) if len(y) else 0.0


def count_metrics(y: np.ndarray, mu: np.ndarray, train_mean: float, lo: np.ndarray, hi: np.ndarray) -> dict:
    """MAE, RMSE, exact-count accuracy (rounded expected count == true count), mean Poisson
    deviance, the fraction of deviance explained (D^2) and how often the true count falls in the
    predicted interval; baseline: always the training mean count."""
    def scores(m: np.ndarray) -> dict:
        return {"mae": float(np.abs(m - y).mean()) if len(y) else 0.0,
                "rmse": float(np.sqrt(((m - y) ** 2).mean())) if len(y) else 0.0,
                "exact_count_accuracy": float((np.floor(m + 0.5) == y).mean()) if len(y) else 0.0,
                "poisson_deviance": poisson_deviance(y, m)}

    null = poisson_deviance(y, np.full(len(y), max(float(y.mean()) if len(y) else 0.0, 1e-9)))
    out = {"n_images": int(len(y)), **scores(mu)}
    out["d2_poisson"] = 1.0 - out["poisson_deviance"] / null if null > 0 else float("nan")
    out["interval_coverage"] = float(((y >= lo) & (y <= hi)).mean()) if len(y) else 0.0
    out["count_mean"] = float(y.mean()) if len(y) else 0.0
    out["baseline"] = {"name": "training mean count", "value": float(train_mean),
                       **scores(np.full(len(y), train_mean, dtype=np.float64))}
    return out


def multilabel_metrics(y: np.ndarray, proba: np.ndarray, pred: np.ndarray, labels: list[str],
                       prevalence: np.ndarray, thresholds: np.ndarray) -> dict:
    """Per-label precision/recall/F1/AP, micro and macro F1, mean average precision (over labels
    with a positive image), subset accuracy; baseline: each label's training frequency as its
    score, predicted present when that frequency is at least one half."""
    def f1s(p: np.ndarray) -> tuple[float, float, list[tuple[float, float, float]]]:
        rows = []
        for j in range(len(labels)):
            tp = float((p[:, j] & y[:, j]).sum())
            precision = tp / p[:, j].sum() if p[:, j].sum() else 0.0
            recall = tp / y[:, j].sum() if y[:, j].sum() else 0.0
            rows.append((precision, recall, 2 * precision * recall / (precision + recall) if precision + recall else 0.0))
        tp, n_pred, n_true = float((p & y).sum()), float(p.sum()), float(y.sum())
        micro = 2 * tp / (n_pred + n_true) if n_pred + n_true else 0.0
        return micro, float(np.mean([r[2] for r in rows])), rows

    micro, macro, rows = f1s(pred)
    aps = [average_precision(y[:, j].astype(int), proba[:, j]) for j in range(len(labels))]
    per_label = {name: {"precision": r[0], "recall": r[1], "f1": r[2], "average_precision": ap,
                        "threshold": float(t), "support": int(y[:, j].sum())}
                 for j, (name, r, ap, t) in enumerate(zip(labels, rows, aps, thresholds))}
    const = np.broadcast_to(prevalence >= 0.5, y.shape)
    b_micro, b_macro, _ = f1s(const)
    present = y.any(0)
    return {"n_images": int(len(y)), "labels": list(labels), "micro_f1": micro, "macro_f1": macro,
            "mean_average_precision": float(np.mean([a for a, ok in zip(aps, present) if ok])) if present.any() else float("nan"),
            "subset_accuracy": float((pred == y).all(1).mean()) if len(y) else 0.0,
            "hamming_loss": float((pred != y).mean()) if len(y) else 0.0,
            "per_label": per_label,
            "baseline": {"name": "training label frequencies", "prevalence": [float(v) for v in prevalence],
                         "micro_f1": b_micro, "macro_f1": b_macro,
                         "mean_average_precision": float(y[:, present].mean(0).mean()) if present.any() else float("nan"),
                         "subset_accuracy": float((const == y).all(1).mean()) if len(y) else 0.0}}
