"""The plain-text report printed after ``train`` and ``evaluate``."""

from __future__ import annotations


def format_report(m: dict, title: str = "test split") -> str:
    """Headline with its baseline, per-class table, confusion matrix, confused pairs, worst files."""
    labels = m["labels"]
    out = [f"== {title}: {m['n_images']} images =="]
    base = m["baseline"]
    out.append(f"accuracy        {m['accuracy']:.4f}   (majority-class baseline {base['accuracy']:.4f}: "
               f"always '{base['label']}')")
    if "top5_accuracy" in m:
        out.append(f"top-5 accuracy  {m['top5_accuracy']:.4f}")
    for key in ("roc_auc", "pr_auc", "f1", "threshold"):
        if key in m:
            out.append(f"{key:<15} {m[key]:.4f}")
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
    if m.get("skipped"):
        out.append(f"skipped {len(m['skipped'])} files that could not be read")
    return "\n".join(out)
