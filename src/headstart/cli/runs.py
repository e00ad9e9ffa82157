"""``headstart runs DIR...``: the training runs found under folders, side by side."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from ..errors import HeadstartError
    from ..model.runs import compare, find_runs, table
    from .common import write_json

    runs = find_runs(args.dirs)
    if not runs:
        raise HeadstartError(f"no model folders (a config.json written by `headstart train`) in or just below "
                             f"{', '.join(map(repr, args.dirs))}. Give the --out folders of your runs.")
    rows = compare(runs)
    if args.json:
        write_json(args.json, rows)
    print(table(rows))
    if args.tensorboard:
        from ..model.runs import log_tensorboard

        log_tensorboard(runs, args.tensorboard)
        print(f"\nTensorBoard event files written under {args.tensorboard}: tensorboard --logdir {args.tensorboard}")
    if len(runs) > 1:
        print(f"\n{len(runs)} runs; the columns after 'seconds' are the settings that differ between them. "
              "Per-epoch figures: RUN/history.csv.")
    return 0


def register(sub) -> None:
    p = sub.add_parser("runs", help="list and compare training runs (model folders): figures and differing settings",
                       description="List the model folders in or just below each DIR, oldest first, with their "
                                   "validation and test figures and the settings that differ between them.",
                       epilog="example: headstart runs runs/   or   headstart runs model-a model-b")
    p.add_argument("dirs", nargs="+", metavar="DIR", help="a model folder, or a folder holding model folders")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--tensorboard", metavar="LOGDIR",
                   help="also write each run's epochs and final figures for TensorBoard (pip install "
                        "'headstart[tensorboard]'), a sub-folder per run")
    p.set_defaults(run=run)
