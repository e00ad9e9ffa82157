"""The HTML report: one self-contained file (plots and thumbnails embedded as base64), readable
offline. Written by ``train`` (MODEL_DIR/report.html), ``evaluate`` and ``doctor``.

The page follows what the metrics dict holds, so every task type gets the sections that apply:
a headline with its baseline; for classes, a confusion-matrix heat map, per-class table,
most-confused pairs and a gallery of the worst-predicted images; for numeric tasks
(``metrics["values"] = {"true": [...], "predicted": [...]}``), predicted-vs-true and residual
plots; training curves when a history is given; the doctor's findings when given.

The markup lives in Jinja2 templates (``evaluation/templates/``, autoescaped); this module
draws the plots, reads the thumbnails and hands the templates plain values.

>>> html = render_report(clf.metrics_["test"], history=clf.history_, image_root="photos/")  # doctest: +SKIP
>>> write_html("report.html", html)                                                       # doctest: +SKIP
"""

from __future__ import annotations

import base64
import functools
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path

THUMB_PX = 150
GALLERY_MAX = 24

# Headline numbers, in the order shown: key -> (label, format).
_HEADLINE = [
    ("accuracy", "accuracy", ".1%"), ("macro_f1", "macro F1", ".3f"),
    ("top5_accuracy", "top-5 accuracy", ".1%"), ("roc_auc", "ROC AUC", ".3f"),
    ("pr_auc", "PR AUC", ".3f"), ("f1", "F1", ".3f"),
    ("mae", "MAE", ".4g"), ("rmse", "RMSE", ".4g"), ("r2", "R\u00b2", ".3f"),
    ("micro_f1", "micro F1", ".3f"), ("subset_accuracy", "exact-match accuracy", ".1%"),
    ("hamming_loss", "Hamming loss", ".4f"), ("score", "validation score", ".3f"),
]


# ---- pages -------------------------------------------------------------------------------

def render_report(metrics: dict, *, title: str = "headstart report", history: Sequence[dict] | None = None,
                  image_root: str | Path | None = None, info: dict | None = None,
                  warnings: Sequence[str] = (), doctor=None, heat: dict | None = None,
                  selection: dict | None = None) -> str:
    """The whole page for one evaluation: ``metrics`` from ``ImageClassifier.evaluate`` (or
    ``metrics_["test"]``); ``image_root`` is the folder the metrics' relative file names are in;
    ``heat``: heat-map thumbnails of the worst images by file (``evaluation.heatmaps``)."""
    m = metrics
    curves = history and any("loss" in h for h in history)
    return _render("report.html", title, info, warnings=list(warnings), headline=_headline(m),
                   confusion=_confusion(m) if m.get("confusion_matrix") else None,
                   per_class=_per_class(m["per_class"]) if m.get("per_class") else None,
                   numeric={"plot": _numeric(m["values"])} if m.get("values") else None,
                   curves={"plot": _curves(history)} if curves else None,
                   worst=_worst(m["worst"], image_root, heat or {}) if m.get("worst") else None,
                   doctor=_doctor_values(doctor) if doctor is not None else None,
                   skipped=m.get("skipped") or None, selection=selection or None)


def render_doctor(report, title: str = "headstart doctor") -> str:
    """A page with the doctor's findings only."""
    info = {"data": report.root, "images": report.n_images, "classes": len(report.labels)}
    return _render("doctor_page.html", title, info, doctor=_doctor_values(report))


def doctor_section(r) -> str:
    """The doctor's findings (a ``headstart.evaluation.doctor.DoctorReport``) as one section with
    thumbnails."""
    return str(_env().get_template("doctor.html").module.section(_doctor_values(r)))


def write_html(path: str | Path, page: str) -> Path:
    """Write the page atomically and return its path."""
    from ..paths import atomic_write_text

    atomic_write_text(path, page)
    return Path(path)


def model_report(clf, metrics: dict, *, title: str, data: str | Path | None = None,
                 warnings: Sequence[str] = ()) -> str:
    """The page for a fitted ``ImageClassifier``: ``metrics`` (test split or an evaluation),
    its training curves and settings; thumbnails are read from ``data``."""
    info = {"data": data, "backbone": getattr(clf.backbone_, "name", None),
            "head": getattr(getattr(clf, "head_config_", None), "kind", None),
            "task": metrics.get("task") or getattr(getattr(clf, "task_", None), "name", None)}
    val = (getattr(clf, "metrics_", {}) or {}).get("validation", {})
    if val.get("score") is not None:
        info["validation score"] = f"{val['score']:.4f}"
    from .heatmaps import heat_thumbs

    worst = [w["file"] for w in (metrics.get("worst") or [])[:GALLERY_MAX]]
    return render_report(metrics, title=title, history=getattr(clf, "history_", None), image_root=data,
                         info=info, warnings=warnings, heat=heat_thumbs(clf, worst, data),
                         selection=(getattr(clf, "fit_info_", None) or {}).get("source_selection"))


def evaluate_report_path(model: str | Path, data: str | Path) -> Path:
    """Where ``evaluate`` writes its page by default: with the model's other reports, e.g.
    ``runs/model`` + ``photos/`` -> ``runs/model/evaluations/photos.html`` (not the current folder)."""
    model, data = Path(model), Path(data).resolve()
    return model / "evaluations" / f"{data.name or 'data'}.html"


@functools.cache
def _env():
    import jinja2

    env = jinja2.Environment(loader=jinja2.PackageLoader("headstart", "evaluation/templates"), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["fmt"] = format  # {{ 0.5|fmt(".1%") }} -> 50.0%
    return env


def _render(template: str, title: str, info: dict | None, **values) -> str:
    shown = [(k, v) for k, v in (info or {}).items() if v not in (None, "")]
    return _env().get_template(template).render(title=title, info=shown, stamp=time.strftime("%Y-%m-%d %H:%M"),
                                                **values)


# ---- the values each section shows --------------------------------------------------------

def _headline(m: dict) -> dict:
    """Cards of the headline numbers (the first is the main one) and the baseline line."""
    cards = [(format(m[key], fmt), label) for key, label, fmt in _HEADLINE
             if isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]
    base, baseline = m.get("baseline"), None
    if isinstance(base, dict):
        desc = ", ".join(f"{k} {_fmt(k, v)}" for k, v in base.items() if isinstance(v, float))
        who = f"{base.get('name', 'baseline')}" + (f" (always '{base['label']}')" if "label" in base else "")
        baseline = {"who": who, "desc": desc}
    return {"cards": cards, "n_images": m.get("n_images", "?"), "baseline": baseline,
            "threshold": m.get("threshold"), "threshold_reason": m.get("threshold_reason")}


def _per_class(per_class: dict) -> list[dict]:
    return [{"name": c, "scores": [pc.get(k, 0.0) for k in ("precision", "recall", "f1")],
             "bar": int(100 * pc.get("f1", 0)), "support": pc.get("support", "")} for c, pc in per_class.items()]


def _worst(worst: Sequence[dict], root, heat: dict) -> list[dict]:
    # classes carry probabilities; numbers (continuous, count) and label sets do not
    return [{"thumb": _thumb(root, w["file"]), "file": w["file"], "true": _short(w["true"]),
             "predicted": _short(w["predicted"]),
             "p_true": f" ({w['p_true']:.2f})" if "p_true" in w else "",
             "p_predicted": f" ({w['p_predicted']:.2f})" if "p_true" in w else "",
             "heat": heat.get(w["file"])} for w in worst[:GALLERY_MAX]]


def _doctor_values(r) -> dict:
    """What the doctor section shows of a ``DoctorReport``, thumbnails read from ``r.root``."""
    root = r.root
    groups = [{"kind": g.kind, "similarity": g.similarity, "leak": g.leak, "spans_classes": g.spans_classes,
               "members": [{"thumb": _thumb(root, rel), "rel": rel, "label": lab, "split": sp}
                           for rel, lab, sp in list(zip(g.rels, g.labels, g.splits))[:8]]}
              for g in r.groups[:GALLERY_MAX]]
    counts = {"suspect labels": len(r.suspects), "leaks": len(r.leaks), "label conflicts": len(r.conflicts),
              "duplicate groups": len(r.groups), "small classes": len(r.small_classes), "outliers": len(r.outliers)}
    return {"n_images": r.n_images, "n_classes": len(r.labels), "cv_accuracy": r.cv_accuracy,
            "folds": r.settings.get("folds"), "counts": [(v, k) for k, v in counts.items()],
            "suspects": [{**vars(s), "thumb": _thumb(root, s.rel)} for s in r.suspects[:GALLERY_MAX]],
            "n_suspects": len(r.suspects), "groups": groups, "more_groups": max(0, len(r.groups) - GALLERY_MAX),
            "small_classes": r.small_classes, "confused_pairs": r.confused_pairs[:8],
            "outliers": [{**vars(o), "thumb": _thumb(root, o.rel)} for o in r.outliers[:GALLERY_MAX]]}


# ---- plots (PNG data URIs) ---------------------------------------------------------------

def _confusion(m: dict) -> dict:
    import numpy as np

    labels, cm = m["labels"], np.asarray(m["confusion_matrix"], dtype=float)
    rows = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(labels)
    side = min(9.0, 2.4 + 0.42 * k)

    def draw(fig):
        ax = fig.subplots()
        im = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(k), labels, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
        ax.set_yticks(range(k), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if k <= 25:
            for i in range(k):
                for j in range(k):
                    if cm[i, j]:
                        ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=9 if k < 12 else 7,
                                color="white" if rows[i, j] > 0.55 else "#1d2433")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")

    return {"plot": _plot(draw, (side + 1.2, side)), "pairs": (m.get("most_confused") or [])[:8]}


def _numeric(values: dict) -> str | None:
    import numpy as np

    t = np.asarray(values["true"], dtype=float).reshape(len(values["true"]), -1)
    p = np.asarray(values["predicted"], dtype=float).reshape(len(values["predicted"]), -1)
    t, p = t[:, 0], p[:, 0]

    def draw(fig):
        a, b = fig.subplots(1, 2)
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        a.scatter(t, p, s=14, alpha=0.6, color="#4c8bf5", edgecolors="none")
        a.plot([lo, hi], [lo, hi], color="#888", lw=1, ls="--", label="perfect")
        a.set_xlabel("true")
        a.set_ylabel("predicted")
        a.set_title("predicted vs true")
        a.legend(loc="upper left", frameon=False)
        r = p - t
        b.scatter(t, r, s=14, alpha=0.6, color="#e8710a", edgecolors="none")
        b.axhline(0, color="#888", lw=1, ls="--")
        b.set_xlabel("true")
        b.set_ylabel("predicted - true")
        b.set_title("residuals")
        for ax in (a, b):
            ax.grid(alpha=0.3)

    return _plot(draw, (10, 4.2))


def _curves(history: Sequence[dict]) -> str | None:
    def draw(fig):
        ax = fig.subplots()
        ep = [h["epoch"] for h in history if "loss" in h]
        ax.plot(ep, [h["loss"] for h in history if "loss" in h], color="#4c8bf5", lw=2, label="training loss")
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss", color="#4c8bf5")
        ax.grid(alpha=0.3)
        val = [(h["epoch"], h["val_score"]) for h in history if h.get("val_score") is not None]
        if val:
            ax2 = ax.twinx()
            ax2.plot(*zip(*val), color="#e8710a", marker="o", lw=2, label="validation score")
            lo, hi = min(v for _, v in val), max(v for _, v in val)
            pad = max(0.05, hi - lo)  # a flat curve should look flat, not like a cliff
            ax2.set_ylim(lo - pad, hi + pad)
            ax2.set_ylabel("validation score", color="#e8710a")
        fig.legend(loc="upper center", ncol=2, frameon=False)

    return _plot(draw, (8, 3.6))


def _plot(draw, size: tuple[float, float]) -> str | None:
    """Run ``draw(fig)`` on a fresh Agg figure: a PNG data URI; None if matplotlib is missing
    (the page then says how to get it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return f"data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"


# ---- helpers -----------------------------------------------------------------------------

def _thumb(root, rel: str) -> dict:
    """A JPEG thumbnail {"alt", "src": data URI}; no src (a grey placeholder) when the file
    cannot be read."""
    from ..data.images import open_image

    if root is None:
        return {"alt": "(no image folder given)", "src": None}
    try:
        img = open_image(Path(root) / rel, draft_size=THUMB_PX)
        img.thumbnail((THUMB_PX * 2, THUMB_PX * 2))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=82)
    except Exception:  # noqa: BLE001 - a missing thumbnail must not lose the report
        return {"alt": f"could not read {rel}", "src": None}
    return {"alt": rel, "src": f"data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}"}


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt(key: str, v: float) -> str:
    return f"{v:.1%}" if "accuracy" in key else f"{v:.4g}"
