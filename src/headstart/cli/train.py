"""``headstart train DATA --out MODEL_DIR``: the options become an ``ImageClassifier``; then
``fit``, ``save``, and the report. Fine-tuning, checkpoints, Ray and torchrun are the
estimator's settings (``finetune``, ``checkpoint_dir``, ``ray``, ``distributed``)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from ..backbones import DEFAULT_BACKBONE
from ..errors import HeadstartError
from . import cluster, text
from .common import ENGINES, TASK_NAMES, add_data_fractions, add_labels, examples, write_json

DEFAULT_STAGES = 3  # = training.finetune.DEFAULT_STAGES (not imported: that module imports torch)
CHECKPOINT_FILE = "checkpoint.safetensors"  # = training.checkpoint.FILE


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="folder: DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    p.add_argument("--out", default="model", metavar="MODEL_DIR", help="model folder to write (default ./model)")
    p.add_argument("--overwrite", action="store_true", help="replace the model already at --out (refused otherwise)")
    p.add_argument("--backbone", default="auto",
                   help=f"see `headstart backbones`; default auto: {DEFAULT_BACKBONE}, efficientnet_lite1 or "
                        "efficientnet_lite2, input size and feature stages chosen on the validation split")
    p.add_argument("--budget", type=float, metavar="SECONDS",
                   help="with --backbone auto: seconds to spend trying source models, cheapest first (default: "
                        "about what a linear probe takes on these images; cached features make trying again cheap); "
                        "texts: CPU-seconds that decide how many CNNs are averaged (default 300)")
    p.add_argument("--weights", help="local weights file for a timm backbone (safetensors or state dict)")
    p.add_argument("--head", choices=["mlp", "linear"], default="mlp",
                   help="mlp (default: a small MLP, more accurate) or linear (retrain.py's single softmax layer)")
    p.add_argument("--epochs", type=int, help="head training epochs, run exactly (default: automatic, 25 or more on small sets, fewer on large; "
                   "the best epoch on validation is kept; scratch CNNs: at most 30, early stopping)")
    p.add_argument("--input-size", type=int, metavar="N", help="scratch CNNs: side of the square input in px (default 64)")
    p.add_argument("--resize", metavar="MODE", help="scratch CNNs: crop (centre square), pad (letterbox, default) or stretch")
    p.add_argument("--no-flip", action="store_true", help="scratch CNNs: no random horizontal flips (digits, text)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the head and of a scratch CNN (default 0)")
    p.add_argument("--engine", choices=ENGINES, default="auto",
                   help="what runs the backbone: auto (PyTorch on a GPU, else OpenVINO, else ONNX Runtime, "
                        "whichever is installed first; default), openvino, onnxruntime or torch")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the feature cache")
    p.add_argument("--json", metavar="FILE", help="write validation and test metrics as JSON")
    p.add_argument("--tensorboard", metavar="LOGDIR", help="also log the run's epochs and figures for TensorBoard "
                   "(pip install 'headstart[tensorboard]'), in LOGDIR/<--out's name>")
    p.add_argument("--report", metavar="FILE", help="HTML report to write (default MODEL_DIR/report.html)")
    p.add_argument("--no-report", action="store_true", help="do not write the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes on standard error")
    add_data_fractions(p)
    add_labels(p)
    p.add_argument("--task", choices=["auto", *TASK_NAMES], default="auto",
                   help="what to predict (default auto: inferred from the targets, and the reason printed)")
    p.add_argument("--loss", choices=["auto", "mse", "huber"], default="auto",
                   help="continuous task: mse (default) or huber (robust to a few wrong targets)")
    add_finetune_arguments(p)
    cluster.add_arguments(p, train=True)
    text.add_train_arguments(p)


def add_finetune_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tuning (pretrained backbones) and checkpoints")
    g.add_argument("--finetune", nargs="?", type=int, const=DEFAULT_STAGES, metavar="N",
                   help=f"after training the head, also train the last N stages of the backbone (default "
                        f"{DEFAULT_STAGES} without a number; efficientnet_lite0 has 9), early-stopped on the "
                        "validation split; the frozen head is kept when no epoch beats it. Takes minutes per "
                        "thousand images on a CPU (docs/export-finetune.md)")
    g.add_argument("--full", action="store_true",
                   help="with --finetune: train every stage, images augmented on the fly (meant for a GPU)")
    g.add_argument("--finetune-epochs", type=int, default=8, metavar="E", help="fine-tuning epochs (default 8)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted fine-tune or scratch CNN from its checkpoint (re-running the "
                        "same command does this too); refused when the data or settings differ")
    g.add_argument("--restart", action="store_true", help="discard an existing checkpoint and start over")


def checkpoint_dir(out: str | Path) -> Path:
    """Where ``train --out OUT`` keeps the per-epoch checkpoint of a fine-tune or a scratch CNN."""
    out = Path(out)
    return out.parent / f".{out.name}.checkpoint"


def run(args: argparse.Namespace) -> int:
    from ..estimator import ImageClassifier
    from ..model.folder import check_out

    check_out(args.out)  # before training, not after it

    if text.is_text_data(args):  # a CSV with a text column: sentence classification
        return text.run_train(args)

    finetune = None if args.finetune is None else ("all" if args.full else args.finetune)
    if args.full and args.finetune is None:
        raise HeadstartError("--full goes with --finetune [N]: add --finetune.")
    clf = ImageClassifier(backbone=args.backbone, weights=args.weights, head=args.head, task=args.task,
                          loss=args.loss, epochs=args.epochs, val_fraction=args.val_fraction,
                          test_fraction=args.test_fraction, input_size=args.input_size, resize=args.resize,
                          flip=not args.no_flip, finetune=finetune, finetune_epochs=args.finetune_epochs,
                          checkpoint_dir=checkpoint_dir(args.out), ray=cluster.ray_config(args),
                          distributed=args.distributed, engine=args.engine, use_cache=not args.no_cache,
                          skip_bad_rows=args.skip_bad_rows, seed=args.seed, verbose=not args.quiet,
                          budget=args.budget)
    _refuse_to_replace(args)
    _prepare_checkpoint(args, clf)
    clf.fit(args.data, args.labels, path_column=args.path_column, target_column=args.target_column)
    from ..estimator.cluster import is_main_process

    if not is_main_process():
        return 0  # --distributed: only rank 0 reports and writes the model folder
    _report(args, clf)
    if args.tensorboard:
        from ..model.runs import find_runs, log_tensorboard

        print(f"TensorBoard: {log_tensorboard(find_runs([args.out]), args.tensorboard)[0]}")
    return 0


def _refuse_to_replace(args: argparse.Namespace) -> None:
    """A finished model at --out is replaced only when asked (--overwrite): before any work."""
    config = Path(args.out) / "config.json"
    if args.overwrite or args.resume or not config.is_file():
        return
    from ..model.runs import find_runs

    runs = find_runs([args.out])
    when = f", trained {runs[0].figures['created']}" if runs and runs[0].figures["created"] else ""
    raise HeadstartError(f"--out {args.out!r} already holds a model{when}. Add --overwrite to replace it "
                         f"(the new one takes its place only once trained), or choose another --out folder; "
                         f"`headstart runs {Path(args.out).parent}` compares the runs there.")


def _prepare_checkpoint(args: argparse.Namespace, clf) -> None:
    """--restart discards the checkpoint; --resume needs one (only where checkpoints are kept:
    a fine-tune or a scratch CNN)."""
    ck = Path(clf.checkpoint_dir)
    if args.restart:
        shutil.rmtree(ck, ignore_errors=True)
    elif args.resume and not (ck / CHECKPOINT_FILE).is_file():
        what = "fine-tuning" if args.finetune is not None else "training"
        raise HeadstartError(f"--resume: no {what} checkpoint for --out {args.out} (looked in {ck}). "
                             "Run without --resume to start.")


def _report(args: argparse.Namespace, clf) -> None:
    from ..evaluation.report import format_report

    print(f"task: {clf.fit_info_['task']} ({clf.fit_info_['task_reason']})")
    _print_skipped_rows(clf.dataset_)
    out = clf.save(args.out)
    from ..evaluation.report import format_selection

    if clf.fit_info_.get("source_selection"):
        print(format_selection(clf.fit_info_["source_selection"]))
    _print_finetune(clf.metrics_.get("finetune"), clf.metrics_)
    test = clf.metrics_.get("test")
    print(format_report(test, "test split") if test else
          "no test split: run `headstart evaluate` on held-out images for an honest figure")
    if args.json:
        write_json(args.json, clf.metrics_)
    warning = _data_warning(clf, args.data)
    if not args.no_report:
        from ..evaluation.html import model_report, write_html

        page = model_report(clf, test or {"score": clf.metrics_.get("validation", {}).get("score")},
                            title="headstart: training report", data=getattr(clf.dataset_, "root", args.data),
                            warnings=[warning] if warning else [])
        print(f"report written to {write_html(args.report or Path(out) / 'report.html', page)}")
    if warning:
        print(warning)
    print(f"\nmodel saved to {out}  ({clf.fit_info_['seconds']:.1f} s in all)")


def _print_finetune(info: dict | None, metrics: dict) -> None:
    if not info:
        return
    before, after = metrics.get("test_frozen_head", {}).get("accuracy"), metrics.get("test", {}).get("accuracy")
    line = (f"fine-tuned the last {info['config']['stages']} stages in {info['seconds']:.0f} s (best epoch "
            f"{info['best_epoch']}); validation {info['val_score_frozen_head']:.4f} -> {info['val_score']:.4f}")
    if before is not None and after is not None:
        line += f"; test accuracy {before:.4f} (frozen head) -> {after:.4f}"
    print(line)


def _print_skipped_rows(dataset) -> None:
    skipped = getattr(dataset, "skipped_rows", [])
    if skipped:
        print(f"skipped {len(skipped)} bad rows of {dataset.source} (--skip-bad-rows):")
        for r in skipped[:10]:
            print(f"  {r.describe()}")
        if len(skipped) > 10:
            print(f"  ... and {len(skipped) - 10} more")


def _data_warning(clf, data) -> str | None:
    from ..evaluation.doctor import warning_line

    check = getattr(clf, "data_check_", None)
    return warning_line(check, str(data)) if check else None


def register(sub) -> None:
    p = sub.add_parser("train", help="train a new head on a frozen pretrained backbone and report on the test split",
                       **examples("headstart train photos/ --out model",
                                  "headstart train photos/ --labels counts.csv --out model      # a CSV of targets",
                                  "headstart train photos/ --out model --finetune               # also tune 3 stages",
                                  'headstart train digits/ --backbone "scratch:conv32-bn-relu-maxpool,conv64-bn-relu-gap"'))
    add_arguments(p)
    p.set_defaults(run=run)
