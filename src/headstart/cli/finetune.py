"""``headstart train DATA --finetune [N]``: the options, and the step after the main job.

Kept apart from ``cli.py`` (which only calls ``add_arguments`` and ``run``); torch is
imported inside the functions so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import HeadstartError

DEFAULT_STAGES = 3  # = training.finetune.DEFAULT_STAGES (not imported: that module imports torch)

FINETUNE_HELP = (
    "after training the head, also train the last N stages of the backbone (default N=3 when "
    "given without a number; efficientnet_lite0 has 9) on activations of the frozen lower part computed "
    "once per image, head warm-started, body lr 5e-4 / head 3e-4, 8 epochs, early stopping on validation "
    "(the frozen head is kept when no epoch beats it), a checkpoint every epoch. Measured on clothing-small "
    "(benchmarks/finetune.py, 2-core CPU, 3,068 training images, recipe chosen on the validation split): test "
    "accuracy 91.9 -> 93.5 %% with two seeds, in 8-9 minutes, 0.15 of a full fine-tune's time. The gain is "
    "about the frozen head's own seed-to-seed spread (91.1-92.7 %%): read the test figures it prints before "
    "and after. On 2 cores it costs about 10 minutes per 3,000 images (the main job: about 1).")


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("fine-tuning (pretrained backbones)")
    g.add_argument("--finetune", nargs="?", type=int, const=DEFAULT_STAGES, metavar="N", help=FINETUNE_HELP)
    g.add_argument("--full", action="store_true",
                   help="with --finetune: train every stage, images augmented on the fly (CUDA used when "
                        "present; on a 2-core CPU about 7x the default's time, estimated by benchmarks/finetune.py)")
    g.add_argument("--finetune-epochs", type=int, default=8, metavar="E", help="fine-tuning epochs (default 8)")
    g.add_argument("--resume", action="store_true",
                   help="continue an interrupted fine-tune from its checkpoint (re-running the same command "
                        "does this too); refused when the data or settings differ")
    g.add_argument("--restart", action="store_true", help="discard an existing fine-tuning checkpoint")
    g.add_argument("--finetune-workers", type=int, default=2, metavar="W",
                   help="with --ray: Ray Train workers for the fine-tune (default 2; each takes --cpus-per-worker "
                        "CPUs and --gpus-per-worker GPUs). Under torchrun (--distributed) the process count is "
                        "torchrun's --nproc-per-node.")


def checkpoint_dir(out: str | Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.finetune-checkpoint"


def check(args: argparse.Namespace) -> None:
    """Refuse bad fine-tuning options before the (long) main job runs."""
    if args.finetune is None:
        if args.full or ((args.resume or args.restart) and not args.backbone.startswith("scratch:")):
            raise HeadstartError("--full, --resume and --restart go with --finetune [N] (--resume and --restart "
                                 "also with a --backbone scratch:SPEC trained end to end); add --finetune.")
        return
    if args.backbone.startswith("scratch:"):
        raise HeadstartError(
            f"--finetune continues training a pretrained backbone, but {args.backbone!r} is built from "
            "scratch: every layer is already trained, end to end. Drop --finetune.")
    from ..backbones import create_backbone
    from ..training.finetune import check_finetunable

    n = check_finetunable(create_backbone(args.backbone, weights=args.weights),
                          args.finetune if not args.full else 1)
    if args.full:
        args.finetune = n
    if args.resume and not (checkpoint_dir(args.out) / "checkpoint.safetensors").is_file():
        raise HeadstartError(f"--resume: no fine-tuning checkpoint for --out {args.out} "
                             f"(looked in {checkpoint_dir(args.out)}). Run without --resume to start.")
    if getattr(args, "ray", None) is not None:
        if args.finetune_workers < 1:
            raise HeadstartError(f"--finetune-workers must be positive, got {args.finetune_workers}.")
        try:
            import ray.train.torch  # noqa: F401
        except ImportError as e:
            raise HeadstartError(f"--ray with --finetune runs the fine-tune on Ray Train, which is not installed "
                                 f"here ({e.name} is missing). Install it with: pip install 'headstart[cluster]'"
                                 ) from None
    if args.restart:
        import shutil

        shutil.rmtree(checkpoint_dir(args.out), ignore_errors=True)


def before_distributed(args: argparse.Namespace) -> None:
    """``--finetune --distributed``, after joining torchrun's group: the same scan as ``fit``,
    then each rank computes the frozen features of its share of the images into the cache,
    so the main job on every rank reads them instead of computing them all."""
    if args.no_cache:
        return
    from ..backbones import create_backbone
    from ..estimator.classifier import ImageClassifier
    from ..training.finetune_distributed import fill_feature_cache

    probe = ImageClassifier(val_fraction=args.val_fraction, test_fraction=args.test_fraction, task=args.task,
                            loss=args.loss, skip_bad_rows=args.skip_bad_rows, verbose=False)
    result = probe._read(args.data, args.labels, args.path_column, args.target_column, training=True)
    fill_feature_cache(create_backbone(args.backbone, weights=args.weights), [s.path for s in result.samples],
                       [s.digest for s in result.samples], engine=args.engine)


def run(clf, args: argparse.Namespace) -> None:
    """Fine-tune the fitted ``clf`` in place (its metrics gain the before / after figures).

    ``--distributed``: every torchrun process runs this, rank 0 alone prints and cleans up;
    ``--ray``: the loop runs on Ray Train workers (``finetune_distributed.ray_loop``)."""
    import shutil

    from ..estimator.finetune import finetune_classifier
    from ..training.finetune import FinetuneConfig

    config = FinetuneConfig(stages=args.finetune, epochs=args.finetune_epochs, seed=args.seed)
    dist = loop = None
    if getattr(args, "distributed", False):
        from ..training.finetune_distributed import ProcessGroup

        dist = ProcessGroup()  # every rank must see the same checkpoint, or their loops would differ
        dist.agree_flag((checkpoint_dir(args.out) / "checkpoint.safetensors").is_file(),
                        "the fine-tuning checkpoint")
    elif getattr(args, "ray", None) is not None:
        from ..training.finetune_distributed import ray_loop

        loop = ray_loop(args.ray or None, args.finetune_workers, args.cpus_per_worker, args.gpus_per_worker)
    main = dist is None or dist.is_main
    log = None if args.quiet or not main else (lambda m: print(m, file=sys.stderr, flush=True))
    ck = checkpoint_dir(args.out)
    r = finetune_classifier(clf, config, ck, log, dist=dist, loop=loop)
    if not main:
        return
    before = clf.metrics_.get("test_frozen_head", {}).get("accuracy")
    after = clf.metrics_.get("test", {}).get("accuracy")
    line = (f"fine-tuned the last {config.stages} stages in {r.seconds:.0f} s (best epoch {r.best_epoch}); "
            f"validation {r.val_score_start:.4f} -> {r.val_score:.4f}")
    if before is not None and after is not None:
        line += f"; test accuracy {before:.4f} (frozen head) -> {after:.4f}"
    print(line)
    shutil.rmtree(ck, ignore_errors=True)  # finished: the model folder holds the result
