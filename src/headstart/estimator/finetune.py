"""The tune step on top of the main job: fine-tune the last stages of a fitted estimator."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ..training.finetune import (
    FinetuneConfig,
    FinetuneResult,
    activations,
    check_finetunable,
    features_from_activations,
    finetune,
)


def finetune_fitted(fitted, config: FinetuneConfig, features, engine: str = "auto",
                    checkpoint_dir: str | Path | None = None, log: Callable[[str], None] | None = None,
                    dist=None, loop=None) -> FinetuneResult:
    """Fine-tune the last stages of a main job's result (frozen backbone + head), in place.

    The warm-start head is trained on the training split's frozen features with the main
    job's head settings; early stopping uses the validation split; the test split, when there
    is one, is scored before (``metrics["test_frozen_head"]``) and after (``metrics["test"]``).
    ``features(backbone, paths, digests)`` gives (features, failures); ``dist`` runs the loop on
    every process of a torchrun group; ``loop`` replaces ``finetune`` itself (Ray Train workers).
    """
    from ..training.head import fit_head

    check_finetunable(fitted.backbone, config.stages)
    split, data_key = _splits(fitted)
    train, val = split["train"][:3], split["val"][:3]
    feats, _ = features(fitted.backbone, train[0], train[1])
    warm = fit_head(fitted.task, feats, train[2], fitted.head_config).head
    result = (loop or finetune)(fitted.backbone, warm, fitted.task, train, val, config, checkpoint_dir,
                                engine=engine, log=log, data_key=data_key, **({"dist": dist} if dist else {}))
    info = {"config": config.to_dict(), "best_epoch": result.best_epoch, "val_score": result.val_score,
            "val_score_frozen_head": result.val_score_start, "seconds": round(result.seconds, 1),
            "seconds_activations": round(result.seconds_cache, 1), "history": result.history}
    if result.best_epoch == 0:  # no epoch beat the frozen head on validation: keep the main job's model
        info["kept"] = "frozen head (no fine-tuning epoch beat it on validation)"
        if log is not None:
            log("no fine-tuning epoch beat the frozen head on validation: keeping the main job's model")
    else:
        original = fitted.backbone  # its frozen part's activations are cached under its key
        fitted.backbone, fitted.head = result.backbone, result.head
        if split["test"][0]:
            _score_test(fitted, original, result, split["test"], config, features, engine, log, dist)
    fitted.metrics["finetune"] = info
    return result


def _splits(fitted) -> tuple[dict, str]:
    """(paths, digests, targets) of each split's readable images, and a key of the whole data."""
    skipped = {s["file"] for s in fitted.skipped}
    samples = [s for s in fitted.dataset.samples if s.rel not in skipped]
    data_key = hashlib.sha256("\n".join(f"{s.digest} {s.split} {s.label}" for s in samples).encode()).hexdigest()[:16]
    split = {}
    for name in ("train", "val", "test"):
        ss = [s for s in samples if s.split == name]
        split[name] = ([s.path for s in ss], [s.digest for s in ss], [s.label for s in ss], [s.rel for s in ss])
    return split, data_key


def _score_test(fitted, original, result, test, config, features, engine, log, dist) -> None:
    from .frozen import score_features

    paths, digests, labels, files = test
    first = len(original.stages()) - config.stages
    if first > 0:  # the frozen part's activations, then the fine-tuned stages
        acts = activations if dist is None else dist.activations
        a = acts(original, first, paths, digests, 1, config.seed, engine, log)[0]
        test_feats = features_from_activations(result.backbone, first, a)
    else:
        test_feats = features(result.backbone, paths, digests)[0]
    if "test" in fitted.metrics:
        fitted.metrics["test_frozen_head"] = fitted.metrics["test"]
    fitted.metrics["test"] = score_features(fitted.task, fitted.head, test_feats, labels, files)
