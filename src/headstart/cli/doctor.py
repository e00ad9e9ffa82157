"""``headstart doctor DATA``: likely wrong labels, duplicates and train/test leaks, small or
confusable classes and outliers, from the cached embeddings. It only reports; the folder is
never changed.

Heavy imports happen inside the command so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse

from ..backbones import DEFAULT_BACKBONE
from .common import ENGINES


def register(sub) -> None:
    p = sub.add_parser("doctor", help="find likely wrong labels, duplicates, train/test leaks and outliers (read-only)",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("data", help="folder: DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    p.add_argument("--model", metavar="MODEL_DIR", help=f"use this model's backbone (default: {DEFAULT_BACKBONE})")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="backbone when no --model is given")
    p.add_argument("--labels", metavar="CSV", help="targets from a CSV (paths relative to DATA), as for train")
    p.add_argument("--task", default="auto", help="as for train: the task of the --labels CSV (default: inferred)")
    p.add_argument("--path-column", help="as for train")
    p.add_argument("--target-column", help="as for train")
    p.add_argument("--text-column", help="DATA is a CSV of texts: its text column (default 'text')")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds for the label check (default 5)")
    p.add_argument("--near", type=float, default=None, metavar="COSINE",
                   help="near-duplicate threshold on embedding cosine similarity (default 0.92)")
    p.add_argument("--top", type=int, default=15, help="rows per table in the terminal (default 15)")
    p.add_argument("--json", metavar="FILE", help="write every finding as JSON")
    p.add_argument("--report", metavar="FILE", help="write an HTML page with thumbnails")
    p.add_argument("--val-fraction", type=float, default=0.1, help="as for train: where DATA has no val folder")
    p.add_argument("--test-fraction", type=float, default=0.1, help="as for train: where DATA has no test folder")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="how the backbone runs (default auto)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run_doctor)


def run_doctor(args: argparse.Namespace) -> int:
    from ..errors import HeadstartError
    from ..evaluation.doctor import NEAR_THRESHOLD, check_data

    if args.folds < 2:
        raise HeadstartError(f"--folds must be at least 2, got {args.folds}. Use e.g. --folds 5.")
    near = NEAR_THRESHOLD if args.near is None else args.near
    if not 0 < near <= 1:
        raise HeadstartError(f"--near is a cosine similarity in (0, 1], got {args.near}. Use e.g. --near 0.92.")
    from ..data.text import is_text_csv

    if args.labels is None and is_text_csv(args.data, args.text_column):  # texts: TF-IDF features
        from ..evaluation.text_doctor import check_texts

        report = check_texts(args.data, text_column=args.text_column, target_column=args.target_column,
                             val_fraction=args.val_fraction, test_fraction=args.test_fraction, folds=args.folds,
                             near_threshold=near)
        print(format_doctor(report, top=args.top))
        return 0
    if args.model is not None:
        from ..estimator import load

        backbone = load(args.model, engine=args.engine).backbone_
    else:
        backbone = args.backbone
    report = check_data(args.data, backbone=backbone, val_fraction=args.val_fraction,
                        test_fraction=args.test_fraction, folds=args.folds, near_threshold=near,
                        engine=args.engine, use_cache=not args.no_cache, verbose=not args.quiet,
                        labels=args.labels, task=args.task, path_column=args.path_column,
                        target_column=args.target_column)
    print(format_doctor(report, top=args.top))
    if args.json:
        from .common import write_json

        write_json(args.json, report.to_dict())
    if args.report:
        from ..evaluation.html import render_doctor, write_html

        print(f"report written to {write_html(args.report, render_doctor(report))}")
    return 0


def format_doctor(r, top: int = 15) -> str:
    """The terminal tables."""
    out = [f"== doctor: {r.n_images} images, {len(r.labels)} classes; cross-validated accuracy "
           f"{r.cv_accuracy:.3f} ({r.settings.get('folds')} folds) =="]
    out.append(f"likely wrong labels: {len(r.suspects)}" + (" (most confident first)" if r.suspects else ""))
    if r.suspects:
        w = max(20, *(len(s.rel) for s in r.suspects[:top]))
        out.append(f"  {'file':<{w}}  {'given':<12} {'p':>5}  {'suggested':<12} {'p':>5}")
        for s in r.suspects[:top]:
            out.append(f"  {s.rel:<{w}}  {s.label:<12} {s.p_label:5.2f}  {s.suggested:<12} {s.p_suggested:5.2f}")
        _more(out, r.suspects, top)
    flagged = [g for g in r.groups if g.flagged]
    out.append("")
    out.append(f"duplicate groups: {len(r.groups)} ({sum(g.kind == 'exact' for g in r.groups)} exact); "
               f"{len(r.leaks)} span splits (leaks); {len(r.conflicts)} with different labels")
    for g in (flagged or r.groups)[:top]:
        flags = [f for f, on in (("LEAK", g.leak), ("DIFFERENT LABELS", g.spans_classes)) if on]
        sim = "exact" if g.kind == "exact" else f"near {g.similarity:.3f}"
        out.append(f"  [{sim}{', ' + ', '.join(flags) if flags else ''}] " +
                   "  =  ".join(f"{rel} ({lab}, {sp})" for rel, lab, sp in zip(g.rels, g.labels, g.splits)))
    _more(out, flagged or r.groups, top)
    if r.small_classes:
        out.append("")
        out.append("small classes (add images): " + ", ".join(f"{c['label']} ({c['n']})" for c in r.small_classes))
    if r.confused_pairs:
        out.append("")
        out.append("most confused pairs: " + "; ".join(
            f"{p['a']} / {p['b']} {p['rate']:.1%} ({p['a_as_b']}+{p['b_as_a']})" for p in r.confused_pairs[:5]))
    out.append("")
    out.append(f"outliers (unlike every other image): {len(r.outliers)}")
    for o in r.outliers[:min(top, 10)]:
        out.append(f"  {o.rel} ({o.label}; most like a {o.nearest_class}; neighbour similarity {o.similarity:.2f})")
    if r.skipped:
        out.append(f"\nskipped {len(r.skipped)} files that could not be read (see `headstart scan`)")
    out.append("\nnothing was changed: review the files above and move or delete them yourself.")
    return "\n".join(out)


def _more(out: list[str], items, top: int) -> None:
    if len(items) > top:
        out.append(f"  ... and {len(items) - top} more (--top N, or --json FILE for all)")
