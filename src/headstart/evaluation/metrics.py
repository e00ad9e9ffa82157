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
