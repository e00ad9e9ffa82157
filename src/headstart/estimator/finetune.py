"""The tune step on top of the main job: fine-tune the last stages of a fitted estimator."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from ..training.finetune import (FinetuneConfig, FinetuneResult, activations, check_finetunable, features_from_activations,
                                 finetune)


def finetune_classifier(clf, config: FinetuneConfig = FinetuneConfig(), checkpoint_dir: str | Path | None = None,
                        log: Callable[[str], None] | None = None, dist=None, loop=None) -> FinetuneResult:
    """Fine-tune a fitted ``ImageClassifier`` (the main job: frozen backbone + head) in place.

    The warm-start head is trained on the training split's frozen features with the main
    job's head settings; early stopping uses the validation split; the test split, when there
    is one, is scored before (``metrics_["test_frozen_head"]``) and after (``metrics_["test"]``).
    ``dist`` runs the loop on every process of a torchrun group (``finetune``'s argument);
    ``loop`` replaces ``finetune`` itself (``finetune_distributed.ray_loop``: Ray Train workers).
    """
    from ..training.head import fit_head

    check_finetunable(clf.backbone_, config.stages)
    skipped = {s["file"] for s in getattr(clf, "skipped_", [])}
    samples = [s for s in clf.scan_.samples if s.rel not in skipped]
    split = {name: [s for s in samples if s.split == name] for name in ("train", "val", "test")}
    data_key = hashlib.sha256("\n".join(f"{s.digest} {s.split} {s.label}" for s in samples).encode()).hexdigest()[:16]

    def part(name):
        ss = split[name]
        return [s.path for s in ss], [s.digest for s in ss], [s.label for s in ss]

    train, val = part("train"), part("val")
    feats, _ = clf._features(train[0], train[1])
    warm = fit_head(clf.task_, feats, train[2], clf.head_config_).head
    result = (loop or finetune)(clf.backbone_, warm, clf.task_, train, val, config, checkpoint_dir,
                                engine=clf.engine, log=log, data_key=data_key, **({"dist": dist} if dist else {}))
    first = len(clf.backbone_.stages()) - config.stages
    original = clf.backbone_  # its frozen part's activations are cached under its key
    info = {"config": config.to_dict(), "best_epoch": result.best_epoch, "val_score": result.val_score,
            "val_score_frozen_head": result.val_score_start, "seconds": round(result.seconds, 1),
            "seconds_activations": round(result.seconds_cache, 1), "history": result.history}
    if result.best_epoch == 0:  # no epoch beat the frozen head on validation: keep the main job's model
        info["kept"] = "frozen head (no fine-tuning epoch beat it on validation)"
        if log is not None:
            log("no fine-tuning epoch beat the frozen head on validation: keeping the main job's model")
        clf.metrics_["finetune"] = info
        return result
    clf.backbone_, clf.head_ = result.backbone, result.head
    if split["test"]:
        paths, digests, labels = part("test")
        if first > 0:
            acts = activations if dist is None else dist.activations
            a = acts(original, first, paths, digests, 1, config.seed, clf.engine, log)[0]
            test_feats = features_from_activations(result.backbone, first, a)
        else:
            test_feats = clf._features(paths, digests)[0]
        if "test" in clf.metrics_:
            clf.metrics_["test_frozen_head"] = clf.metrics_["test"]
        clf.metrics_["test"] = clf._evaluate_features(test_feats, labels, [s.rel for s in split["test"]])
    clf.metrics_["finetune"] = info
    return result
