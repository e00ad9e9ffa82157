"""``headstart train DATA --finetune [N]``: the options, and the step after the main job.

Kept apart from ``cli.py`` (which only calls ``add_arguments`` and ``run``); torch is
imported inside the functions so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import HeadstartError

DEFAULT_STAGES = 2  # = training.finetune.DEFAULT_STAGES (not imported: that module imports torch)

FINETUNE_HELP = (
    "after training the head, also train the last N stages of the backbone (default N=2 when "
    "given without a number; efficientnet_lite0 has 9) on cached activations of the frozen lower part, "
    "head warm-started, its own learning rates for body and head (chosen on validation), early stopping on validation (the frozen head "
    "is kept when no epoch beats it), a checkpoint every epoch. When it pays: on clothing-small "
    "(benchmarks/finetune.py, 2-core CPU) it reached 92.2-92.5 %% test accuracy, +0.5 to +0.8 over the "
    "head it started from, but no better than the default frozen head alone (92.7 %% in a later run): "
    "on photos like ImageNet's it does not pay. Try it when your images look unlike ImageNet "
    "photos (medical, satellite, drawings), and compare the test figures it prints before and after.")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tuning (pretrained backbones)")
    g.add_argument("--finetune", nargs="?", type=int, const=DEFAULT_STAGES, metavar="N", help=FINETUNE_HELP)
    g.add_argument("--full", action="store_true",
                   help="with --finetune: train every stage, images augmented on the fly (CUDA used when "
                        "present; on a 2-core CPU about 10x the time of the default, measured)")
    g.add_argument("--finetune-epochs", type=int, default=12, metavar="E", help="fine-tuning epochs (default 12)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted fine-tune from its checkpoint (re-running the same command "
                        "does this too); refused when the data or settings differ")
    g.add_argument("--restart", action="store_true", help="discard an existing fine-tuning checkpoint")


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.finetune-checkpoint"


def check(args: argparse.Namespace) -> None:
    """Refuse bad fine-tuning options before the (long) main job runs."""
    if args.finetune is None:
        if args.full or args.resume or args.restart:
            raise HeadstartError("--full, --resume and --restart go with --finetune [N]; add --finetune.")
        return
    if args.backbone.startswith("scratch:"):
        raise HeadstartError(
            f"--finetune continues training a pretrained backbone, but {args.backbone!r} is built from "
            "scratch: every layer is already trained, end to end. Drop --finetune.")
    from .backbones import create_backbone
    from .training.finetune import check_finetunable

    n = check_finetunable(create_backbone(args.backbone, weights=args.weights),
                          args.finetune if not args.full else 1)
    if args.full:
        args.finetune = n
    if args.resume and not (checkpoint_dir(args.out) / "checkpoint.safetensors").is_file():
        raise HeadstartError(f"--resume: no fine-tuning checkpoint for --out {args.out} "
                             f"(looked in {checkpoint_dir(args.out)}). Run without --resume to start.")
    if args.restart:
        import shutil

        shutil.rmtree(checkpoint_dir(args.out), ignore_errors=True)


def run(clf, args: argparse.Namespace) -> None:
    """Fine-tune the fitted ``clf`` in place (its metrics gain the before / after figures)."""
    import shutil

    from .training.finetune import FinetuneConfig, finetune_classifier

    config = FinetuneConfig(stages=args.finetune, epochs=args.finetune_epochs, seed=args.seed)
    log = None if args.quiet else (lambda m: print(m, file=sys.stderr, flush=True))
    ck = checkpoint_dir(args.out)
    r = finetune_classifier(clf, config, ck, log)
    before = clf.metrics_.get("test_frozen_head", {}).get("accuracy")
    after = clf.metrics_.get("test", {}).get("accuracy")
    line = (f"fine-tuned the last {config.stages} stages in {r.seconds:.0f} s (best epoch {r.best_epoch}); "
            f"validation {r.val_score_start:.4f} -> {r.val_score:.4f}")
    if before is not None and after is not None:
        line += f"; test accuracy {before:.4f} (frozen head) -> {after:.4f}"
    print(line)
    shutil.rmtree(ck, ignore_errors=True)  # finished: the model folder holds the result
