"""The plain-text report printed after ``train`` and ``evaluate``."""

from __future__ import annotations


def format_report(m: dict, title: str = "test split") -> str:
    """Headline with its baseline, per-class table, confusion matrix, confused pairs, worst files."""
    if m.get("task") in _OTHER_TASKS:
        return _OTHER_TASKS[m["task"]](m, title)
    labels = m["labels"]
    out = [f"== {title}: {m['n_images']} images =="]
    base = m["baseline"]
    out.append(f"accuracy        {m['accuracy']:.4f}   (majority-class baseline {base['accuracy']:.4f}: "
               f"always '{base['label']}')")
    if "top5_accuracy" in m:
        out.append(f"top-5 accuracy  {m['top5_accuracy']:.4f}")
    for key in ("roc_auc", "pr_auc", "f1", "threshold"):
        if key in m:
            out.append(f"{key:<15} {m[key]:.4f}" + (f"   ({m['threshold_reason']})" if key == "threshold"
                                                     and m.get("threshold_reason") else ""))
    width = max(12, *(len(c) for c in labels))
    out.append("")
    out.append(f"{'class':<{width}}  precision  recall     f1  support")
    for c in labels:
        pc = m["per_class"][c]
        out.append(f"{c:<{width}}  {pc['precision']:9.3f}  {pc['recall']:6.3f}  {pc['f1']:5.3f}  {pc['support']:7d}")
    out.append("")
    out.append("confusion matrix (rows: true, columns: predicted)")
    short = [c[:6] for c in labels]
    out.append(" " * (width + 2) + " ".join(f"{s:>6}" for s in short))
    for c, row in zip(labels, m["confusion_matrix"]):
        out.append(f"{c:<{width}}  " + " ".join(f"{v:>6}" for v in row))
    if m.get("most_confused"):
        out.append("")
        out.append("most confused: " + "; ".join(f"{p['true']} -> {p['predicted']} ({p['count']})"
                                                for p in m["most_confused"][:5]))
    if m.get("worst"):
        out.append("worst-predicted files:")
        for w in m["worst"][:5]:
            out.append(f"  {w['file']}: true {w['true']} (p={w['p_true']:.2f}), "
                       f"predicted {w['predicted']} (p={w['p_predicted']:.2f})")
    return _footer(m, out)


def format_selection(sel: dict | None) -> str:
    """What source-model selection tried (validation score, seconds) and what it chose."""
    if not sel:
        return ""
    out = [f"== source model: chosen on the validation split, {sel['budget_seconds']:.0f} s budget =="]
    for r in sel["tried"]:
        if r["status"] == "tried":
            out.append(f"{'*' if r.get('chosen') else ' '} {r['name']:<40} validation {r['val_score']:.4f}   "
                       f"{r['seconds']:6.1f} s")
        else:
            out.append(f"  {r['name']:<40} skipped: {r.get('note', '')}")
    out.append("(* chosen: the cheapest unless another beats it on validation by more than noise; "
               "--backbone NAME pins one)")
    return "\n".join(out)


def _footer(m: dict, out: list[str]) -> str:
    if m.get("skipped"):
        out.append(f"skipped {len(m['skipped'])} files that could not be read")
    if m.get("skipped_rows"):
        out.append(f"skipped {len(m['skipped_rows'])} bad rows of the labels CSV")
    return "\n".join(out)


def _worst_numbers(m: dict, out: list[str]) -> None:
    if m.get("worst"):
        out.append("worst-predicted files:")
        for w in m["worst"][:5]:
            out.append(f"  {w['file']}: true {w['true']:.4g}, predicted {w['predicted']:.4g}")


def _continuous(m: dict, title: str) -> str:
    b = m["baseline"]
    out = [f"== {title}: {m['n_images']} images ==",
           f"{'':<8} {'model':>10} {'baseline':>10}   (baseline: always the {b['name']}, {b['value']:.4g})"]
    for key in ("mae", "rmse", "r2"):
        out.append(f"{key.upper() if key != 'r2' else 'R^2':<8} {m[key]:>10.4f} {b[key]:>10.4f}")
    _worst_numbers(m, out)
    return _footer(m, out)


def _count(m: dict, title: str) -> str:
    b = m["baseline"]
    out = [f"== {title}: {m['n_images']} images (mean count {m['count_mean']:.2f}) ==",
           f"{'':<22} {'model':>10} {'baseline':>10}   (baseline: always the {b['name']}, {b['value']:.3g})"]
    for key, name in (("mae", "MAE"), ("rmse", "RMSE"), ("exact_count_accuracy", "exact-count accuracy"),
                      ("poisson_deviance", "Poisson deviance")):
        out.append(f"{name:<22} {m[key]:>10.4f} {b[key]:>10.4f}")
    out.append(f"{'deviance explained':<22} {m['d2_poisson']:>10.4f}")
    out.append(f"{'90% interval coverage':<22} {m['interval_coverage']:>10.4f}")
    _worst_numbers(m, out)
    return _footer(m, out)


def _multilabel(m: dict, title: str) -> str:
    b = m["baseline"]
    out = [f"== {title}: {m['n_images']} images ==",
           f"{'':<24} {'model':>8} {'baseline':>8}   (baseline: {b['name']}, present when >= 0.5)"]
    for key in ("micro_f1", "macro_f1", "mean_average_precision", "subset_accuracy"):
        out.append(f"{key:<24} {m[key]:>8.4f} {b[key]:>8.4f}")
    width = max(12, *(len(c) for c in m["labels"]))
    out += ["", f"{'label':<{width}}  precision  recall     f1     AP  threshold  support"]
    for c in m["labels"]:
        pl = m["per_label"][c]
        out.append(f"{c:<{width}}  {pl['precision']:9.3f}  {pl['recall']:6.3f}  {pl['f1']:5.3f}  "
                   f"{pl['average_precision']:5.3f}  {pl['threshold']:9.3f}  {pl['support']:7d}")
    if m.get("worst"):
        out.append("worst-predicted files:")
        for w in m["worst"][:5]:
            out.append(f"  {w['file']}: true {w['true'] or '(none)'}, predicted {w['predicted'] or '(none)'}")
    return _footer(m, out)


_OTHER_TASKS = {"continuous": _continuous, "count": _count, "multilabel": _multilabel}
