"""The HTML report: one self-contained file (plots and thumbnails embedded as base64), readable
offline. Written by ``train`` (MODEL_DIR/report.html), ``evaluate`` and ``doctor``.

The page follows what the metrics dict holds, so every task type gets the sections that apply:
a headline with its baseline; for classes, a confusion-matrix heat map, per-class table,
most-confused pairs and a gallery of the worst-predicted images; for numeric tasks
(``metrics["values"] = {"true": [...], "predicted": [...]}``), predicted-vs-true and residual
plots; training curves when a history is given; the doctor's findings when given.

>>> html = render_report(clf.metrics_["test"], history=clf.history_, image_root="photos/")  # doctest: +SKIP
>>> write_html("report.html", html)                                                       # doctest: +SKIP
"""

from __future__ import annotations

import base64
import html as _html
import io
import time
from collections.abc import Sequence
from pathlib import Path

THUMB_PX = 150
GALLERY_MAX = 24

# Headline numbers, in the order shown: key -> (label, format, higher is better).
_HEADLINE = [
    ("accuracy", "accuracy", "{:.1%}"), ("macro_f1", "macro F1", "{:.3f}"),
    ("top5_accuracy", "top-5 accuracy", "{:.1%}"), ("roc_auc", "ROC AUC", "{:.3f}"),
    ("pr_auc", "PR AUC", "{:.3f}"), ("f1", "F1", "{:.3f}"),
    ("mae", "MAE", "{:.4g}"), ("rmse", "RMSE", "{:.4g}"), ("r2", "R\u00b2", "{:.3f}"),
    ("micro_f1", "micro F1", "{:.3f}"), ("subset_accuracy", "exact-match accuracy", "{:.1%}"),
    ("hamming_loss", "Hamming loss", "{:.4f}"), ("score", "validation score", "{:.3f}"),
]

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d2433;background:#f5f6f8;margin:0}
main{max-width:1080px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:34px 0 10px;padding-bottom:4px;border-bottom:2px solid #dde1e8}
h3{font-size:16px;margin:18px 0 8px}
.sub{color:#5b6475;font-size:13px}.muted{color:#6b7385}
section{background:#fff;border-radius:10px;padding:6px 20px 16px;margin-top:18px;box-shadow:0 1px 3px rgba(0,0,0,.08)}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.card{background:#f7f9fc;border:1px solid #e2e6ee;border-radius:8px;padding:10px 16px;min-width:150px}
.card .v{font-size:28px;font-weight:650}.card .l{color:#5b6475;font-size:13px}
.card.main{background:#eaf2ff;border-color:#b9d1fb}
.warn{background:#fff6e0;border:1px solid #f0cf7a;border-radius:8px;padding:10px 14px;margin:12px 0}
table{border-collapse:collapse;margin:6px 0;font-size:14px}
th,td{padding:5px 10px;text-align:left;border-bottom:1px solid #eceff4}th{background:#f3f5f9;font-weight:600}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.bar{display:inline-block;height:9px;border-radius:4px;background:#4c8bf5;vertical-align:middle;margin-left:6px}
.low{color:#b3261e;font-weight:600}
img.plot{max-width:min(100%,820px);height:auto;display:block;margin:8px 0}
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px}
figure{margin:0;background:#fafbfc;border:1px solid #e2e6ee;border-radius:8px;padding:8px;font-size:12.5px}
figure img{width:100%;height:150px;object-fit:contain;background:#eef0f3;border-radius:4px}
figcaption{margin-top:6px}figcaption b{white-space:nowrap}
.fn{display:block;color:#6b7385;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}.t{color:#1b7f3b}.p{color:#b3261e}
.tag{display:inline-block;font-size:11.5px;padding:1px 7px;border-radius:9px;background:#e8eaef;margin-right:4px}
.tag.bad{background:#fde2e0;color:#8c1d18}
.group{display:flex;gap:8px;flex-wrap:wrap;margin:6px 0 14px;padding:8px;border:1px solid #e2e6ee;border-radius:8px}
.group figure{width:150px}
"""


# ---- pages -------------------------------------------------------------------------------

def render_report(metrics: dict, *, title: str = "headstart report", history: Sequence[dict] | None = None,
                  image_root: str | Path | None = None, info: dict | None = None,
                  warnings: Sequence[str] = (), doctor=None) -> str:
    """The whole page for one evaluation: ``metrics`` from ``ImageClassifier.evaluate`` (or
    ``metrics_["test"]``); ``image_root`` is the folder the metrics' relative file names are in."""
    parts = [_header(title, info), *(f'<div class="warn">{_e(w)}</div>' for w in warnings)]
    parts.append(_section("Headline", _headline(metrics)))
    if metrics.get("confusion_matrix"):
        parts.append(_section("Confusion matrix", _confusion(metrics)))
    if metrics.get("per_class"):
        parts.append(_section("Per class", _per_class(metrics)))
    if metrics.get("values"):
        parts.append(_section("Predicted vs true", _numeric(metrics["values"])))
    if history and any("loss" in h for h in history):
        parts.append(_section("Training curves", _curves(history)))
    if metrics.get("worst"):
        parts.append(_section("Worst-predicted images", _worst(metrics["worst"], image_root)))
    if doctor is not None:
        parts.append(doctor_section(doctor))
    if metrics.get("skipped"):
        rows = "".join(f"<tr><td>{_e(s['file'])}</td><td>{_e(s['reason'])}</td></tr>" for s in metrics["skipped"])
        parts.append(_section("Skipped files", f"<table><tr><th>file</th><th>reason</th></tr>{rows}</table>"))
    return _page(title, parts)


def render_doctor(report, title: str = "headstart doctor") -> str:
    """A page with the doctor's findings only."""
    info = {"data": report.root, "images": report.n_images, "classes": len(report.labels)}
    return _page(title, [_header(title, info), doctor_section(report)])


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
    return render_report(metrics, title=title, history=getattr(clf, "history_", None), image_root=data,
                         info=info, warnings=warnings)


def evaluate_report_path(model: str | Path, data: str | Path) -> Path:
    """Where ``evaluate`` writes its page by default: beside the model folder (never inside it),
    e.g. ``runs/model`` + ``photos/`` -> ``runs/model-evaluate-photos.html``."""
    model, data = Path(model).resolve(), Path(data).resolve()
    return model.parent / f"{model.name}-evaluate-{data.name or 'data'}.html"


# ---- sections ----------------------------------------------------------------------------

def _header(title: str, info: dict | None) -> str:
    bits = [f"{_e(k)}: <b>{_e(v)}</b>" for k, v in (info or {}).items() if v not in (None, "")]
    bits.append(time.strftime("%Y-%m-%d %H:%M"))
    return f"<h1>{_e(title)}</h1><div class='sub'>{' &middot; '.join(bits)}</div>"


def _headline(m: dict) -> str:
    cards = []
    for key, label, fmt in _HEADLINE:
        v = m.get(key)
        if isinstance(v, (int, float)) and v == v:
            cards.append(f"<div class='card{' main' if not cards else ''}'><div class='v'>{fmt.format(v)}</div>"
                         f"<div class='l'>{_e(label)}</div></div>")
    note = [f"{m.get('n_images', '?')} images"]
    base = m.get("baseline")
    if isinstance(base, dict):
        shown = {k: v for k, v in base.items() if isinstance(v, float)}
        desc = ", ".join(f"{k} {_fmt(k, v)}" for k, v in shown.items())
        who = f"{base.get('name', 'baseline')}" + (f" (always '{base['label']}')" if "label" in base else "")
        note.append(f"baseline, {_e(who)}: <b>{_e(desc)}</b>")
    if "threshold" in m:
        note.append(f"decision threshold {m['threshold']:.3f} (tuned on validation)")
    return f"<div class='cards'>{''.join(cards)}</div><p class='muted'>{' &middot; '.join(note)}</p>"


def _confusion(m: dict) -> str:
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

    body = _plot(draw, (side + 1.2, side))
    pairs = m.get("most_confused") or []
    if pairs:
        body += "<h3>Most confused</h3><table><tr><th>true</th><th>predicted as</th><th>images</th></tr>" + "".join(
            f"<tr><td>{_e(p['true'])}</td><td>{_e(p['predicted'])}</td><td class='n'>{p['count']}</td></tr>"
            for p in pairs[:8]) + "</table>"
    return "<p class='muted'>Rows are the true class, columns the prediction; colour is the share of the row.</p>" + body


def _per_class(m: dict) -> str:
    rows = []
    for c, pc in m["per_class"].items():
        cells = []
        for key in ("precision", "recall", "f1"):
            v = pc.get(key, 0.0)
            cells.append(f"<td class='n{' low' if v < 0.7 else ''}'>{v:.3f}</td>")
        bar = f"<span class='bar' style='width:{int(100 * pc.get('f1', 0))}px'></span>"
        rows.append(f"<tr><td>{_e(c)}</td>{''.join(cells)}<td>{bar}</td><td class='n'>{pc.get('support', '')}</td></tr>")
    return ("<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th></th><th>images</th></tr>"
            + "".join(rows) + "</table><p class='muted'>Figures below 0.7 are in red.</p>")


def _numeric(values: dict) -> str:
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


def _curves(history: Sequence[dict]) -> str:
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

    note = "<p class='muted'>The head's first fit (train split), scored on the validation split every 5 epochs.</p>"
    return note + _plot(draw, (8, 3.6))


def _fname(rel: str) -> str:
    """A file name on one line, cut with an ellipsis; the whole relative path on hover."""
    return f"<span class='fn' title='{_e(rel)}'>{_e(rel)}</span>"


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _worst(worst: Sequence[dict], root) -> str:
    cards = []
    for w in worst[:GALLERY_MAX]:
        # classes carry probabilities; numbers (continuous, count) and label sets do not
        pt, pp = (f" ({w['p_true']:.2f})", f" ({w['p_predicted']:.2f})") if "p_true" in w else ("", "")
        cap = (f"<span class='t'>true <b>{_e(_short(w['true']))}</b>{pt}</span><br>"
               f"<span class='p'>predicted <b>{_e(_short(w['predicted']))}</b>{pp}</span><br>"
               f"{_fname(w['file'])}")
        cards.append(_figure(root, w["file"], cap))
    return ("<p class='muted'>Test images the model got wrong, least probable true class first "
            "(probabilities in brackets). Look for wrong labels and unusual photos.</p>"
            f"<div class='gallery'>{''.join(cards)}</div>")


def doctor_section(r) -> str:
    """The doctor's findings (a ``headstart.doctor.DoctorReport``) as one section with thumbnails."""
    root = r.root
    out = [f"<p>{r.n_images} images in {len(r.labels)} classes. Cross-validated accuracy of the fast check "
           f"model: <b>{r.cv_accuracy:.1%}</b> ({_e(r.settings.get('folds'))} folds). "
           "Nothing was moved, relabelled or deleted: these are suggestions.</p>"]
    s = {"suspect labels": len(r.suspects), "leaks": len(r.leaks), "label conflicts": len(r.conflicts),
         "duplicate groups": len(r.groups), "small classes": len(r.small_classes), "outliers": len(r.outliers)}
    out.append("<div class='cards'>" + "".join(
        f"<div class='card'><div class='v'>{v}</div><div class='l'>{_e(k)}</div></div>" for k, v in s.items()) + "</div>")
    if r.suspects:
        cards = [_figure(root, x.rel, f"given <b class='p'>{_e(x.label)}</b> ({x.p_label:.2f})<br>suggested "
                                      f"<b class='t'>{_e(x.suggested)}</b> ({x.p_suggested:.2f})<br>"
                                      f"{_fname(x.rel)}") for x in r.suspects[:GALLERY_MAX]]
        shown = f" Showing {GALLERY_MAX} of {len(r.suspects)}; the JSON output has all." if len(r.suspects) > GALLERY_MAX else ""
        out.append("<h3>Likely wrong labels</h3><p class='muted'>Out-of-fold probability of the given label "
                   f"and of the suggested one; most confident contradiction first.{shown}</p>"
                   f"<div class='gallery'>{''.join(cards)}</div>")
    if r.groups:
        out.append("<h3>Duplicates and near-duplicates</h3>")
        for g in r.groups[:GALLERY_MAX]:
            tags = [f"<span class='tag'>{g.kind}{'' if g.kind == 'exact' else f' {g.similarity:.3f}'}</span>"]
            if g.leak:
                tags.append("<span class='tag bad'>leak: spans splits</span>")
            if g.spans_classes:
                tags.append("<span class='tag bad'>different labels</span>")
            figs = "".join(_figure(root, rel, f"<b>{_e(lab)}</b> &middot; {_e(sp)}<br>{_fname(rel)}")
                           for rel, lab, sp in list(zip(g.rels, g.labels, g.splits))[:8])
            out.append(f"<div>{''.join(tags)}</div><div class='group'>{figs}</div>")
        if len(r.groups) > GALLERY_MAX:
            out.append(f"<p class='muted'>{len(r.groups) - GALLERY_MAX} more groups in the JSON output.</p>")
    if r.small_classes:
        out.append("<h3>Small classes</h3><table><tr><th>class</th><th>images</th><th>median class</th></tr>" + "".join(
            f"<tr><td>{_e(c['label'])}</td><td class='n'>{c['n']}</td><td class='n'>{c['median']:.0f}</td></tr>"
            for c in r.small_classes) + "</table>")
    if r.confused_pairs:
        out.append("<h3>Most confused class pairs</h3><table><tr><th>classes</th><th>a as b</th><th>b as a</th>"
                   "<th>rate</th></tr>" + "".join(
                       f"<tr><td>{_e(p['a'])} / {_e(p['b'])}</td><td class='n'>{p['a_as_b']}</td>"
                       f"<td class='n'>{p['b_as_a']}</td><td class='n'>{p['rate']:.1%}</td></tr>"
                       for p in r.confused_pairs[:8]) + "</table>")
    if r.outliers:
        cards = [_figure(root, o.rel, f"<b>{_e(o.label)}</b> (most like a {_e(o.nearest_class)}, "
                                      f"{o.similarity:.2f})<br>{_fname(o.rel)}")
                 for o in r.outliers[:GALLERY_MAX]]
        out.append("<h3>Outliers: unlike every other image</h3>"
                   f"<div class='gallery'>{''.join(cards)}</div>")
    return _section("Data doctor", "".join(out), anchor="doctor")


# ---- helpers -----------------------------------------------------------------------------

def _page(title: str, parts: Sequence[str]) -> str:
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>")


def _section(title: str, body: str, anchor: str | None = None) -> str:
    anchor = anchor or title.lower().replace(" ", "-")
    return f"<section id='{_e(anchor)}'><h2>{_e(title)}</h2>{body}</section>"


def _plot(draw, size: tuple[float, float]) -> str:
    """Run ``draw(fig)`` on a fresh Agg figure and embed it as a PNG; a note if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return "<p class='muted'>Plots need matplotlib: pip install 'headstart[report]'.</p>"
    fig = Figure(figsize=size, dpi=100, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return f"<img class='plot' alt='plot' src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _figure(root, rel: str, caption: str) -> str:
    return f"<figure>{_thumb(root, rel)}<figcaption>{caption}</figcaption></figure>"


def _thumb(root, rel: str) -> str:
    """A JPEG thumbnail as a data URI; a grey placeholder when the file cannot be read."""
    from ..data.images import open_image

    if root is None:
        return "<img alt='(no image folder given)'>"
    try:
        img = open_image(Path(root) / rel, draft_size=THUMB_PX)
        img.thumbnail((THUMB_PX * 2, THUMB_PX * 2))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=82)
    except Exception:  # noqa: BLE001 - a missing thumbnail must not lose the report
        return f"<img alt='could not read {_e(rel)}'>"
    return f"<img alt='{_e(rel)}' src='data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _fmt(key: str, v: float) -> str:
    return f"{v:.1%}" if "accuracy" in key else f"{v:.4g}"


def _e(x) -> str:
    return _html.escape(str(x), quote=True)
