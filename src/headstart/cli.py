"""The ``headstart`` command: thin commands over the Python API.

Heavy imports (torch, timm) happen inside the commands, so ``headstart --help`` is instant.
Errors the user can fix are printed without a traceback (exit status 2).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from .errors import HeadstartError


def _add_common_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each class carved for validation where DATA has no val folder (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of each class carved for testing where DATA has no test folder (default 0.1)")


def cmd_backbones(args) -> int:
    from .backbones import list_backbones

    for b in list_backbones():
        state = "available" if b.available else f"unavailable: {b.why_not}"
        print(f"{b.name:<28} {b.description}\n{'':<28} {state}")
    return 0


def cmd_scan(args) -> int:
    from .data.scan import scan
    from .estimator import _describe_scan

    r = scan(args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
             deep=not args.fast, progress=not args.quiet)
    if args.json:
        payload = {"root": str(r.root), "layout": r.layout, "counts": r.counts(), "notes": r.notes,
                   "bad": [{"file": b.rel, "reason": b.reason, "detail": b.detail} for b in r.bad],
                   "duplicates": [{"files": g.rels, "spans_classes": g.spans_classes, "spans_splits": g.spans_splits}
                                  for g in r.duplicates]}
        _write_json(args.json, payload)
    print(_describe_scan(r))
    if r.bad:
        print(f"\n{len(r.bad)} bad files (left untouched; train skips them):")
        for b in r.bad:
            print(f"  {b.rel}: {b.reason}: {b.detail}")
    if r.duplicates:
        print(f"\n{len(r.duplicates)} groups of identical files:")
        for g in r.duplicates:
            flags = [w for w, on in (("ACROSS CLASSES", g.spans_classes), ("ACROSS SPLITS (leak)", g.spans_splits)) if on]
            print(f"  {' = '.join(g.rels)}" + (f"   [{', '.join(flags)}]" if flags else ""))
    return 0


def cmd_train(args) -> int:
    from .estimator import ImageClassifier
    from .evaluation.report import format_report

    clf = ImageClassifier(backbone=args.backbone, weights=args.weights, head=args.head,
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction, epochs=args.epochs,
                          engine=args.engine, use_cache=not args.no_cache, seed=args.seed, verbose=not args.quiet)
    clf.fit(args.data)
    out = clf.save(args.out)
    test = clf.metrics_.get("test")
    if test:
        print(format_report(test, "test split"))
    else:
        print("no test split: run `headstart evaluate` on held-out images for an honest figure")
    if args.json:
        _write_json(args.json, clf.metrics_)
    print(f"\nmodel saved to {out}  ({clf.fit_info_['seconds']:.1f} s in all)")
    return 0


def cmd_evaluate(args) -> int:
    from .estimator import load
    from .evaluation.report import format_report

    clf = load(args.model, engine=args.engine, verbose=not args.quiet)
    m = clf.evaluate(args.data)
    print(format_report(m, str(args.data)))
    if args.json:
        _write_json(args.json, m)
    return 0


def cmd_predict(args) -> int:
    from .data.scan import find_images
    from .estimator import load

    files = find_images(args.paths)
    if not files:
        raise HeadstartError(f"no images found in {', '.join(map(str, args.paths))}.")
    clf = load(args.model, engine=args.engine, verbose=not args.quiet)
    rows = clf.predict_files(files, top_k=args.top_k)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["file", "label", "probability", "top", "error"])
        for r in rows:
            top = ";".join(f"{t['label']}:{t['probability']:.4f}" for t in r.get("top", []))
            w.writerow([r["file"], r.get("label", ""), f"{r['probability']:.4f}" if "probability" in r else "",
                        top, r.get("error", "")])
    else:
        for r in rows:
            if "error" in r:
                print(f"{r['file']}: ERROR {r['reason']}: {r['error']}")
            else:
                top = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in r["top"])
                print(f"{r['file']}: {r['label']} ({r['probability']:.2f})   top: {top}")
    if args.sort_into:
        from .predict_io import sort_into

        n = sort_into(rows, Path(args.sort_into))
        print(f"copied {n} images into {args.sort_into}/<label>/ (originals untouched)", file=sys.stderr)
    failed = sum("error" in r for r in rows)
    if failed:
        print(f"{failed} of {len(rows)} files could not be read (see ERROR lines)", file=sys.stderr)
    return 0


def _write_json(path: str, payload) -> None:
    from .artifact import _jsonable
    from .paths import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headstart", description=__doc__.split("\n")[0])
    from . import __version__

    parser.add_argument("--version", action="version", version=f"headstart {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list the backbones and whether each is available")
    p.set_defaults(run=cmd_backbones)

    p = sub.add_parser("scan", help="count images per class and split; list bad files and duplicates")
    p.add_argument("data", help="folder: DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    _add_common_data(p)
    p.add_argument("--fast", action="store_true", help="check headers only (skips the full decode that finds truncated files)")
    p.add_argument("--json", metavar="FILE", help="also write the findings as JSON")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_scan)

    p = sub.add_parser("train", help="train a new head on a frozen pretrained backbone and report on the test split")
    p.add_argument("data", help="folder: DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    p.add_argument("--out", default="model", help="model folder to write (default ./model)")
    p.add_argument("--backbone", default="efficientnet_lite0", help="see `headstart backbones` (default efficientnet_lite0)")
    p.add_argument("--weights", help="local weights file for a timm backbone (safetensors or state dict)")
    p.add_argument("--head", choices=["mlp", "linear"], default="mlp",
                   help="mlp (default; measured 1-7 points better) or linear (retrain.py's single softmax layer)")
    p.add_argument("--epochs", type=int, help="head training epochs (default 25)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--json", metavar="FILE", help="write validation and test metrics as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_common_data(p)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled folder")
    p.add_argument("model", help="model folder")
    p.add_argument("data", help="labelled folder (its test split when it has train/val/test folders)")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="predict images (files or folders)")
    p.add_argument("model", help="model folder")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--sort-into", metavar="DIR", help="copy (never move) each image into DIR/<predicted label>/")
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(run=cmd_predict)

    for module in EXTRA_COMMANDS:
        importlib.import_module(module, __package__).register(sub)
    return parser


# Modules that add their own commands: each has ``register(sub)`` that calls
# ``sub.add_parser(...)`` and sets ``run``. They must import torch only inside the commands.
EXTRA_COMMANDS = [
    ".cli_lab",
]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except HeadstartError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `headstart predict ... | head`
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: finished feature batches are cached; run the same command again to continue.",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
