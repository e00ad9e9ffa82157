"""``headstart evaluate MODEL_DIR DATA`` and ``headstart predict MODEL_DIR PATHS...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import HeadstartError
from . import cluster, text, video
from .arguments import check_model_arg
from .common import ENGINES, add_labels, examples, write_json


def cmd_evaluate(args) -> int:
    from ..estimator import load
    from ..evaluation.report import format_report

    check_model_arg(args.model, "headstart evaluate MODEL_DIR DATA")
    if text.is_text_model(args.model):
        return text.cmd_evaluate(args)
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
    from ..estimator import load

    check_model_arg(args.model, "headstart predict MODEL_DIR PATHS...")
    if text.is_text_model(args.model):  # texts: as arguments, or files of texts
        return text.cmd_predict(args)
    if video.wants_video(args.paths):
        return video.cmd_predict_video(args)
    if args.labels:
        from ..data.labels_csv import listed_files

        if len(args.paths) != 1:
            raise HeadstartError(f"with --labels, give one DATA folder that the CSV's paths are relative to; "
                                 f"got {len(args.paths)} paths: {args.paths[:3]}.")
        files = listed_files(args.paths[0], args.labels, path_column=args.path_column)
    else:
        files = find_images(args.paths, as_given=True)  # the order, repeats and spelling given
    if not files:
        raise HeadstartError(f"no images found in {', '.join(map(str, args.paths))}.")
    if args.out:
        from ..estimator.outputs import require_pyarrow

        require_pyarrow()  # before the (long) predictions
    ray = cluster.ray_config(args)
    if ray is not None:
        cluster.check_reachable(ray)
    clf = load(args.model, engine=args.engine, verbose=not args.quiet, ray=ray)
    task = clf.task_
    for flag, value in (("--sort-into", args.sort_into), ("--min-confidence", args.min_confidence)):
        if value is not None and not task.has_classes:
            raise HeadstartError(f"{flag} needs one predicted class per image; this model's task is {task.name}, "
                                 "which has none. Use --format csv instead.")
    rows = clf.predict_files(files, top_k=args.top_k)  # --ray: a generator, in order, computed on the cluster
    if args.min_confidence is not None:
        from ..estimator.outputs import mark_unsure

        rows = mark_unsure(rows, args.min_confidence)
    if args.out:
        from ..estimator.outputs import write_parquet

        if args.sort_into:
            rows = list(rows)
        n, failed = write_parquet(rows, task, args.out, unsure=args.min_confidence is not None)
        print(f"wrote {n} predictions to {args.out}" + (f"; {failed} files could not be read (their rows "
              "hold reason and error)" if failed else ""), file=sys.stderr)
    else:
        rows = list(rows)
        _print_rows(rows, task, args.format, args.min_confidence)
        failed = sum("error" in r for r in rows)
        if failed:
            print(f"{failed} of {len(rows)} files could not be read (see ERROR lines)", file=sys.stderr)
    if args.sort_into:
        _sort(rows, args.sort_into)
    return 0


def _sort(rows: list[dict], out: str) -> None:
    from ..estimator.outputs import sort_into

    notes: list[str] = []
    done = sort_into(rows, Path(out), notes)
    for note in notes:  # labels that share a folder name get folders of their own
        print(note, file=sys.stderr)
    said = f"copied {done.copied} images into {out}/<label>/ (originals untouched)"
    if done.skipped:
        said += f"; skipped {done.skipped} already there with the same content"
    if done.unsure:
        said += f"; {done.unsure} of them below --min-confidence are in {out}/{done.unsure_folder}/"
    print(said, file=sys.stderr)


def _confidence(text: str) -> float:
    try:
        p = float(text)
    except ValueError:
        p = float("nan")
    if not 0 < p <= 1:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1 (e.g. 0.7), got {text!r}")
    return p


def _print_rows(rows: list[dict], task, fmt: str, min_confidence: float | None = None) -> None:
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    elif fmt == "csv":
        import csv

        unsure = min_confidence is not None
        w = csv.writer(sys.stdout)
        w.writerow(["file", *task.columns, *(["unsure"] if unsure else []), "error"])
        for r in rows:
            cells = [""] * len(task.columns) if "error" in r else task.cells(r)
            flag = [("yes" if r.get("unsure") else "no") if "error" not in r else ""] if unsure else []
            w.writerow([r["file"], *cells, *flag, r.get("error", "")])
    else:
        from ..estimator.outputs import table_lines

        print("\n".join(table_lines(rows, task, min_confidence)))


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="metrics of a model on a labelled folder",
                       **examples("headstart evaluate model/ more-photos/",
                                  "headstart evaluate model/ photos/ --labels labels.csv --json metrics.json"))
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `headstart train`")
    p.add_argument("data", help="labelled folder (its test split when it has train/val/test folders)")
    p.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    p.add_argument("--report", metavar="FILE",
                   help="HTML report to write (default MODEL_DIR/evaluations/<DATA name>.html)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="how the backbone runs (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes on standard error")
    add_labels(p)
    p.set_defaults(run=cmd_evaluate)

    p = sub.add_parser("predict", help="predict images (files or folders)",
                       **examples("headstart predict model/ new-photos/ img.jpg",
                                  "headstart predict model/ new-photos/ --format csv > predictions.csv",
                                  "headstart predict model/ inbox/ --sort-into sorted/ --min-confidence 0.7"))
    p.add_argument("model", metavar="MODEL_DIR", help="model folder written by `headstart train`")
    p.add_argument("paths", nargs="+", metavar="PATHS", help="image files or folders, or video files (a timeline per video)")
    p.add_argument("--top-k", type=int, default=3, metavar="K",
                   help="classes listed per image after the predicted one, most likely first (default 3)")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table",
                   help="table (for reading; default), csv or json (for programs), on standard output")
    p.add_argument("--out", metavar="FILE.parquet",
                   help="write the predictions as Parquet instead of printing them: one row per file, the "
                        "columns of --format json (file, the task's fields, reason and error for unreadable "
                        "files); needs pyarrow (pip install 'headstart[cluster]')")
    p.add_argument("--sort-into", metavar="DIR",
                   help="copy (never move) each image into DIR/<predicted label>/; images already there with the "
                        "same content are skipped, so a second run adds only new ones")
    p.add_argument("--min-confidence", type=_confidence, metavar="P",
                   help="mark images whose probability is below P (0-1) unsure: a NOTE in the table, an "
                        "'unsure' column or field in csv/json, DIR/unsure/ with --sort-into; for a video, "
                        "frames below P are left out of the timeline")
    p.add_argument("--engine", choices=ENGINES, default="auto", help="how the backbone runs (default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes on standard error")
    add_labels(p, targets=False)
    cluster.add_arguments(p)
    video.add_arguments(p)
    p.set_defaults(run=cmd_predict)
