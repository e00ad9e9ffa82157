"""The HTML report of a text model: the image report's page (headline, confusion matrix,
per-class table, training curves) with the worst-predicted sentences instead of thumbnails.
Written by ``train`` (MODEL_DIR/report.html) and ``evaluate`` for text models.

>>> write_html("report.html", text_report(clf, clf.metrics_["test"], title="TREC"))  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .html import GALLERY_MAX, _confusion, _curves, _headline, _numeric, _per_class, _render, _short


def text_report(clf, metrics: dict, *, title: str = "headstart text report", data: str | Path | None = None,
                warnings: Sequence[str] = ()) -> str:
    """The page for a fitted ``TextClassifier``: ``metrics`` from ``evaluate`` (or ``metrics_["test"]``),
    whose ``worst`` entries carry their ``text``; its training curves and settings."""
    m, info = metrics, dict(getattr(clf, "fit_info_", {}) or {})
    history = getattr(clf, "history_", None)
    val = (getattr(clf, "metrics_", {}) or {}).get("validation", {})
    shown = {"data": data, "task": m.get("task") or info.get("task"), "network": info.get("network"),
             "vocabulary": info.get("vocabulary"), "padded length": info.get("length"),
             "kept epoch": info.get("best_epoch"),
             "validation score": f"{val['score']:.4f}" if val.get("score") is not None else None}
    curves = history and any("loss" in h for h in history)
    return _render("text_report.html", title, shown, warnings=list(warnings), headline=_headline(m), unit="texts",
                   confusion=_confusion(m) if m.get("confusion_matrix") else None,
                   per_class=_per_class(m["per_class"]) if m.get("per_class") else None,
                   numeric={"plot": _numeric(m["values"])} if m.get("values") else None, curves={"plot": _curves(history)} if curves else None,
                   worst=_worst(m.get("worst") or []), doctor=None, skipped=None)


def _worst(worst: Sequence[dict]) -> list[dict]:
    return [{"text": w.get("text") or "(text not kept)", "file": w["file"], "true": _short(w["true"]),
             "predicted": _short(w["predicted"]), "p_true": f" ({w['p_true']:.2f})" if "p_true" in w else "",
             "p_predicted": f" ({w['p_predicted']:.2f})" if "p_true" in w else ""} for w in worst[:GALLERY_MAX]]
