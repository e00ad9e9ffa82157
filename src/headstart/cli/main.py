"""The ``headstart`` command: thin commands over the Python API.

Heavy imports (torch, timm) happen inside the commands, so ``headstart --help`` is instant.
Errors the user can fix are printed without a traceback (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import HeadstartError
from . import cluster, doctor, export, finetune, lab, serve
from .common import write_json

TASK_NAMES = ["binary", "multiclass", "multilabel", "continuous", "count"]  # tasks.TASKS (imports torch)


def _add_common_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each class carved for validation where DATA has no val folder (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of each class carved for testing where DATA has no test folder (default 0.1)")


def _add_labels(p: argparse.ArgumentParser, targets: bool = True) -> None:
    p.add_argument("--labels", metavar="CSV",
                   help="CSV with one row per image: a path relative to DATA and its target (instead of class folders)")
    p.add_argument("--path-column", help="the CSV's path column (default 'path', else the first column)")
    if targets:
        p.add_argument("--target-column",
                       help="the CSV's target column (default the first of label, target, count, value; else the second)")
        p.add_argument("--skip-bad-rows", action="store_true",
                       help="leave out CSV rows with problems (missing files, duplicates, bad targets) instead of "
                            "stopping; the report says how many")


def cmd_backbones(args) -> int:
    from ..backbones import list_backbones

    for b in list_backbones():
        state = "available" if b.available else f"unavailable: {b.why_not}"
        print(f"{b.name:<28} {b.description}\n{'':<28} {state}")
    return 0


def cmd_scan(args) -> int:
    from ..data.scan import scan
    from ..estimator.classifier import _describe_scan

    r = scan(args.data, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
             deep=not args.fast, progress=not args.quiet)
    if args.json:
        payload = {"root": str(r.root), "layout": r.layout, "counts": r.counts(), "notes": r.notes,
                   "bad": [{"file": b.rel, "reason": b.reason, "detail": b.detail} for b in r.bad],
                   "duplicates": [{"files": g.rels, "spans_classes": g.spans_classes, "spans_splits": g.spans_splits}
                                  for g in r.duplicates]}
        write_json(args.json, payload)
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
    from ..estimator.classifier import ImageClassifier
    from ..evaluation.report import format_report

    clf = ImageClassifier(backbone=args.backbone, weights=args.weights, head=args.head,
                          val_fraction=args.val_fraction, test_fraction=args.test_fraction, epochs=args.epochs,
                          engine=args.engine, use_cache=not args.no_cache, seed=args.seed, verbose=not args.quiet,
                          task=args.task, loss=args.loss, skip_bad_rows=args.skip_bad_rows,
                          input_size=args.input_size, resize=args.resize, flip=not args.no_flip)
    from ..data.scan import known_digests

    cluster.check_train_options(args)
    finetune.check(args)  # bad --finetune options fail before the main job
    checkpoint = _end_to_end_checkpoint(args, clf)
    # --ray: the cluster hashes the files and fills the cache; --distributed: join torchrun's group
    digests = cluster.before_train(args, clf)
    with known_digests(digests):  # the workers' sha256: the scan does not read every file again
        clf.fit(args.data, args.labels, path_column=args.path_column, target_column=args.target_column)
    if args.finetune is not None:
        finetune.run(clf, args)  # --distributed: on every rank
    if not cluster.is_main_process():
        return 0  # --distributed: only rank 0 reports and writes the model folder
    print(f"task: {clf.fit_info_['task']} ({clf.fit_info_['task_reason']})")
    _print_skipped_rows(clf.scan_)
    out = clf.save(args.out)
    if checkpoint is not None:  # finished: the model folder holds the result
        import shutil

        shutil.rmtree(checkpoint, ignore_errors=True)
    test = clf.metrics_.get("test")
    if test:
        print(format_report(test, "test split"))
    else:
        print("no test split: run `headstart evaluate` on held-out images for an honest figure")
    if args.json:
        write_json(args.json, clf.metrics_)
    warning = _data_warning(clf, args.data)
    if not args.no_report:
        from ..evaluation.html import model_report, write_html

        page = model_report(clf, test or {"score": clf.metrics_.get("validation", {}).get("score")},
                            title="headstart: training report",
                            data=getattr(getattr(clf, "scan_", None), "root", args.data),
                            warnings=[warning] if warning else [])
        print(f"report written to {write_html(args.report or Path(out) / 'report.html', page)}")
    if warning:
        print(warning)
    print(f"\nmodel saved to {out}  ({clf.fit_info_['seconds']:.1f} s in all)")
    return 0


def end_to_end_checkpoint_dir(out: str | Path) -> Path:
    """Where ``train --backbone scratch:SPEC --out OUT`` keeps its per-epoch checkpoint."""
    out = Path(out)
    return out.parent / f".{out.name}.train-checkpoint"


def _end_to_end_checkpoint(args, clf) -> Path | None:
    """A scratch CNN checkpoints every epoch; re-running the same command (or --resume)
    continues, --restart discards the checkpoint. None for a pretrained backbone."""
    if not args.backbone.startswith("scratch:") or getattr(args, "distributed", False):
        return None  # (the DDP loop in training/distributed.py does not checkpoint yet)
    ck = end_to_end_checkpoint_dir(args.out)
    if args.restart:
        import shutil

        shutil.rmtree(ck, ignore_errors=True)
    elif args.resume and not (ck / "checkpoint.safetensors").is_file():
        raise HeadstartError(f"--resume: no training checkpoint for --out {args.out} (looked in {ck}). "
                             "Run without --resume to start.")
    clf.checkpoint_dir = ck
    return ck


def _data_warning(clf, data) -> str | None:
    from ..evaluation.doctor import warning_line

    check = getattr(clf, "data_check_", None)
    return warning_line(check, str(data)) if check else None


def cmd_evaluate(args) -> int:
    from ..estimator.classifier import load
    from ..evaluation.report import format_report

    clf = load(args.model, engine=args.engine, verbose=not args.quiet)
    clf.skip_bad_rows = args.skip_bad_rows
    m = clf.evaluate(args.data, args.labels, path_column=args.path_column, target_column=args.target_column)
    print(format_report(m, str(args.data)))
    if m.get("skipped_rows"):
        print(f"skipped {len(m['skipped_rows'])} bad rows of {args.labels} (--skip-bad-rows)")
    if args.json:
        write_json(args.json, m)
    if not args.no_report:
        from ..evaluation.html import evaluate_report_path, model_report, write_html

        page = model_report(clf, m, title=f"headstart: evaluation on {Path(args.data).name}", data=args.data)
        print(f"report written to {write_html(args.report or evaluate_report_path(args.model, args.data), page)}")
    return 0


def cmd_predict(args) -> int:
    from ..data.scan import find_images
    from ..estimator.classifier import load

    if args.labels:
        from ..data.labels_csv import listed_files

        if len(args.paths) != 1:
            raise HeadstartError(f"with --labels, give one DATA folder that the CSV's paths are relative to; "
                                 f"got {len(args.paths)} paths: {args.paths[:3]}.")
        files = listed_files(args.paths[0], args.labels, path_column=args.path_column)
    else:
        files = find_images(args.paths)
    if not files:
        raise HeadstartError(f"no images found in {', '.join(map(str, args.paths))}.")
    if args.out:
        from ..estimator.outputs import require_pyarrow

        require_pyarrow()  # before the (long) predictions
    if args.ray is not None:
        cluster.check_cluster(args)
    clf = load(args.model, engine=args.engine, verbose=not args.quiet)
    task = clf.task_
    if args.sort_into and not task.has_classes:
        raise HeadstartError(f"--sort-into copies images into one folder per predicted class; this model's task is "
                             f"{task.name}, which has no single class per image. Use --format csv instead.")
    if args.ray is not None:  # the cluster hashes, decodes and embeds; rows come back in order
        rows = cluster.predict_rows(args, clf, files)
    else:
        rows = clf.predict_files(files, top_k=args.top_k)
    if args.out:
        from ..estimator.outputs import write_parquet

        if args.sort_into:
            rows = list(rows)
        n, failed = write_parquet(rows, task, args.out)
        print(f"wrote {n} predictions to {args.out}" + (f"; {failed} files could not be read (their rows "
              "hold reason and error)" if failed else ""), file=sys.stderr)
    else:
        rows = list(rows)
        _print_rows(rows, task, args.format)
        failed = sum("error" in r for r in rows)
        if failed:
            print(f"{failed} of {len(rows)} files could not be read (see ERROR lines)", file=sys.stderr)
    if args.sort_into:
        from ..estimator.outputs import sort_into

        n = sort_into(rows, Path(args.sort_into))
        print(f"copied {n} images into {args.sort_into}/<label>/ (originals untouched)", file=sys.stderr)
    return 0


def _print_rows(rows: list[dict], task, fmt: str) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["file", *task.columns, "error"])
        for r in rows:
            cells = [""] * len(task.columns) if "error" in r else task.cells(r)
            w.writerow([r["file"], *cells, r.get("error", "")])
    else:
        for r in rows:
            if "error" in r:
                print(f"{r['file']}: ERROR {r['reason']}: {r['error']}")
            else:
                print(f"{r['file']}: {task.text(r)}")


def _print_skipped_rows(result) -> None:
    skipped = getattr(result, "skipped_rows", [])
    if skipped:
        print(f"skipped {len(skipped)} bad rows of {result.source} (--skip-bad-rows):")
        for r in skipped[:10]:
            print(f"  {r.describe()}")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headstart", description=__doc__.split("\n")[0])
    from .._version import __version__

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
    p.add_argument("--epochs", type=int, help="head training epochs (default 25; scratch CNNs: at most 30, early stopping)")
    p.add_argument("--input-size", type=int, metavar="N", help="scratch CNNs: side of the square input in px (default 64)")
    p.add_argument("--resize", metavar="MODE", help="scratch CNNs: crop (centre square), pad (letterbox, default) or stretch")
    p.add_argument("--no-flip", action="store_true", help="scratch CNNs: no random horizontal flips (digits, text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--json", metavar="FILE", help="write validation and test metrics as JSON")
    p.add_argument("--report", metavar="FILE", help="HTML report to write (default MODEL_DIR/report.html)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    _add_common_data(p)
    _add_labels(p)
    p.add_argument("--task", choices=["auto", *TASK_NAMES], default="auto",
                   help="what to predict (default auto: inferred from the targets, and the reason printed)")
    p.add_argument("--loss", choices=["auto", "mse", "huber"], default="auto",
                   help="continuous task: mse (default) or huber (robust to a few wrong targets)")
    finetune.add_arguments(p)
    cluster.add_arguments(p, train=True)
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("evaluate", help="metrics of a model on a labelled folder")
    p.add_argument("model", help="model folder")
    p.add_argument("data", help="labelled folder (its test split when it has train/val/test folders)")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--report", metavar="FILE",
                   help="HTML report to write (default: beside the model folder, MODEL_DIR-evaluate-<DATA name>.html)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--quiet", action="store_true")
    _add_labels(p)
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="predict images (files or folders)")
    p.add_argument("model", help="model folder")
    p.add_argument("paths", nargs="+", help="image files or folders")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--out", metavar="FILE.parquet",
                   help="write the predictions as Parquet instead of printing them: one row per file, the "
                        "columns of --format json (file, the task's fields, reason and error for unreadable "
                        "files); needs pyarrow (pip install 'headstart[cluster]')")
    p.add_argument("--sort-into", metavar="DIR", help="copy (never move) each image into DIR/<predicted label>/")
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--quiet", action="store_true")
    _add_labels(p, targets=False)
    cluster.add_arguments(p)
    p.set_defaults(run=cmd_predict)

    for module in EXTRA_COMMANDS:
        module.register(sub)
    return parser


# Modules that add their own commands: each has ``register(sub)`` that calls
# ``sub.add_parser(...)`` and sets ``run``. They must import torch only inside the commands.
EXTRA_COMMANDS = [lab, doctor, export, serve, cluster]


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
