"""The main job: a frozen pretrained backbone's features (cached) -> a new head -> its report.

    dataset --features (cache first)--> (N, D) --head on train, scored on val--> head
            --test split--> metrics; quick data checks (leaks, conflicts, suspect labels)
"""

from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .fitted import Fitted, check_known, check_splits, fit_task


def fit_frozen(est, dataset, backbone, features, log, t0: float) -> Fitted:
    """Fit ``est``'s head on ``backbone``'s features of ``dataset``; ``features(paths, digests)``
    gives (features, failures) from the cache or the backbone."""
    from ..training.head import HeadConfig, select_and_fit

    feats, failures = features([s.path for s in dataset.samples], [s.digest for s in dataset.samples])
    bad = {f.index for f in failures}
    for f in failures:
        log(f"  skipped {dataset.samples[f.index].rel}: {f.reason} ({f.detail})")
    samples = [s for i, s in enumerate(dataset.samples) if i not in bad]
    feats = feats[[i for i in range(len(dataset.samples)) if i not in bad]]
    split = np.array([s.split for s in samples])
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    check_splits(repr(str(dataset.root)), int(tr.sum()), int(va.sum()))
    y = np.array([s.label for s in samples], dtype=object)  # python str: echoed in messages
    task, task_info = fit_task(est, dataset, list(y[tr]), log)
    check_known(task, list(y[va | te]))
    config = HeadConfig(kind=est.head, seed=est.seed, epochs=est.epochs)
    epochs, _ = config.plan(int(tr.sum()))
    log(f"training a {config.kind} head on {int(tr.sum())} images, {feats.shape[1]} features each, "
        f"{epochs} epochs" + ("" if est.epochs else " (automatic: set epochs to choose)") + " ...")
    t_head = time.perf_counter()
    with epoch_bar(epochs, task.selection_name, est.verbose) as on_epoch:
        fit = select_and_fit(task, feats[tr], list(y[tr]), feats[va], list(y[va]), config, refit=est.refit,
                             on_epoch=on_epoch)
    metrics = {"validation": {"score": fit.val_score, "metric": task.selection_name, "n_images": int(va.sum()),
                              "best_epoch": fit.best_epoch, "epochs": epochs}}
    log(f"head trained in {time.perf_counter() - t_head:.1f} s; validation {task.selection_name} "
        f"{fit.val_score:.4f}, {kept_epoch(fit, epochs, int(va.sum()))}"
        + (" (then refitted on train + validation)" if est.refit else ""))
    if te.any():
        metrics["test"] = score_features(task, fit.head, feats[te], list(y[te]), [s.rel for s, t in zip(samples, te) if t])
    info = {"data": str(Path(dataset.root).resolve()), "seconds": round(time.perf_counter() - t0, 2),
            "counts": dataset.counts(), "n_skipped": len(failures) + len(dataset.bad),
            "val_fraction": est.val_fraction, "test_fraction": est.test_fraction, **task_info}
    skipped = [{"file": dataset.samples[f.index].rel, "reason": f.reason, "detail": f.detail} for f in failures]
    return Fitted(backbone, fit.head, task, config, fit.history, metrics, info, dataset, skipped,
                  data_check(task, fit.head, feats, samples, va))


def kept_epoch(fit, epochs: int, n_val: int) -> str:
    """Which epoch's weights the head kept, and why, in words."""
    scores = [r["val_score"] for r in fit.history]
    best = max(range(len(scores)), key=lambda i: (scores[i], i))
    if fit.best_epoch != epochs:
        return f"epoch {fit.best_epoch} of {epochs} kept: better on validation than the last ({scores[-1]:.4f})"
    if scores[best] > scores[-1]:
        return (f"last epoch kept: epoch {best + 1} scored {scores[best]:.4f}, within the noise of "
                f"{n_val} validation images")
    return f"last epoch ({epochs}) kept, the best on validation"


@contextmanager
def epoch_bar(epochs: int, metric: str, enabled: bool):
    """An ``on_epoch`` callback that draws the head's epochs as a progress bar (None when quiet)."""
    if not enabled:
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=epochs, desc="head", unit="epoch", file=sys.stderr, dynamic_ncols=True, leave=False)

    def on_epoch(row: dict, total: int) -> None:
        bar.set_postfix_str(f"loss {row['loss']:.3f}" + (f", validation {metric} {row['val_score']:.3f}"
                                                          if "val_score" in row else ""), refresh=False)
        bar.update(1)

    try:
        yield on_epoch
    finally:
        bar.close()


def score_features(task, head, feats: np.ndarray, targets: list, files: list[str]) -> dict:
    """The metrics dict of ``head`` on features of labelled images."""
    from ..evaluation.scores import evaluate_scores
    from ..training.head import predict_scores

    return evaluate_scores(task, predict_scores(task, head, feats), targets, files)


def data_check(task, head, feats: np.ndarray, samples: list, va: np.ndarray) -> dict:
    """``train``'s one-line warning: leaks and label conflicts (features already in memory), and
    validation images whose label the held-out head confidently contradicts."""
    from ..evaluation.doctor import find_suspects, quick_check
    from ..training.head import predict_scores

    check = quick_check(feats, [s.label for s in samples], [s.split for s in samples], [s.digest for s in samples])
    if task.has_classes:
        labels = [s.label for s, v in zip(samples, va) if v]
        suspects = find_suspects(predict_scores(task, head, feats[va]), task.index(labels), list(task.labels),
                                 [""] * len(labels), ["val"] * len(labels))
        check.update(suspect_val=len(suspects), n_val=len(labels))
    return check
