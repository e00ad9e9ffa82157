"""What several commands share: options, and writing JSON atomically."""

from __future__ import annotations

import argparse
import json

TASK_NAMES = ["binary", "multiclass", "multilabel", "continuous", "count"]  # = tasks.TASKS (that imports torch)
ENGINES = ["auto", "openvino", "onnxruntime", "torch"]


def add_data_fractions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--val-fraction", type=float, default=0.1,
                   help="share of each class carved for validation where DATA has no val folder (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1,
                   help="share of each class carved for testing where DATA has no test folder (default 0.1)")


def examples(*lines: str) -> dict:
    """``add_parser`` settings that end a command's --help with examples, kept as written."""
    return {"epilog": "examples:\n" + "\n".join(f"  {line}" for line in lines),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def add_labels(p: argparse.ArgumentParser, targets: bool = True) -> None:
    p.add_argument("--labels", metavar="CSV",
                   help="CSV with one row per image: a path relative to DATA and its target (instead of class folders)"
                   if targets else "CSV listing the images to predict, by paths relative to the one folder given")
    p.add_argument("--path-column", help="the CSV's path column (default 'path', else the first column)")
    if targets:
        p.add_argument("--target-column",
                       help="the CSV's target column (default the first of label, target, count, value; else the second)")
        p.add_argument("--skip-bad-rows", action="store_true",
                       help="leave out CSV rows with problems (missing files, duplicates, bad targets) instead of "
                            "stopping; the report says how many")


def write_json(path: str, payload) -> None:
    from ..model.folder import _jsonable
    from ..paths import atomic_write_text

    atomic_write_text(path, json.dumps(payload, indent=2, default=_jsonable))
