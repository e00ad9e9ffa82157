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


def fit_frozen(est, dataset, backbone, features, log, t0: float, select: bool = False) -> Fitted:
    """Fit ``est``'s head on ``backbone``'s features of ``dataset`` (with ``select``: on the source
    model chosen on validation, ``estimator.selection``); ``features(backbone, paths, digests)``
    gives (features, failures) from the cache or the backbone. The test split is read only once
    the model is fixed."""
    from ..training.head import HeadConfig

    fit_s = [s for s in dataset.samples if s.split != "test"]
    test_s = [s for s in dataset.samples if s.split == "test"]
    y = np.array([s.label for s in fit_s], dtype=object)  # python str: echoed in messages
    tr, va = np.array([s.split == "train" for s in fit_s]), np.array([s.split == "val" for s in fit_s])
    check_splits(repr(str(dataset.root)), int(tr.sum()), int(va.sum()))
    task, task_info = fit_task(est, dataset, list(y[tr]), log)
    check_known(task, list(y[va]) + [s.label for s in test_s])
    config = HeadConfig(kind=est.head, seed=est.seed, epochs=est.epochs)
    extract = _Extractor(features, log, est.use_cache, est.engine)
    score = _scorer(est, task, config, y, tr, va)
    if select:
        from .selection import Selection, candidates, median_short_side

        cands = candidates(median_short_side([s.path for s in fit_s if s.split == "train"]))
        choice = Selection(cands, extract, score, log, est.budget, len(dataset.samples), test_s).run(fit_s)
        backbone, fit, feats, trials = choice.backbone, choice.fit, choice.feats, choice.trials
        task_info["source_selection"] = {"budget_seconds": choice.budget, "tried": trials}
    else:
        feats = extract(backbone, fit_s)
        fit = score(feats, verbose=True)
    ok = np.isfinite(feats).all(1)
    task.tune(_predict(task, fit.head, feats[va & ok]), list(y[va & ok]))  # the chosen head's thresholds
    epochs = fit.config.plan(int((tr & ok).sum()))[0]
    metrics = {"validation": {"score": fit.val_score, "metric": task.selection_name, "n_images": int((va & ok).sum()),
                              "best_epoch": fit.best_epoch, "epochs": epochs}}
    log(f"validation {task.selection_name} {fit.val_score:.4f}, {kept_epoch(fit, epochs, int((va & ok).sum()))}"
        + (" (then refitted on train + validation)" if est.refit else ""))
    # the model is fixed: only now is the test split read
    feats_te = extract(backbone, test_s) if test_s else np.zeros((0, feats.shape[1]), np.float32)
    samples = fit_s + test_s
    all_feats = np.concatenate([feats, feats_te])
    good = np.isfinite(all_feats).all(1)
    te = np.array([s.split == "test" for s in samples]) & good
    if te.any():
        metrics["test"] = score_features(task, fit.head, all_feats[te], [s.label for s, t in zip(samples, te) if t],
                                         [s.rel for s, t in zip(samples, te) if t])
    failures = extract.failures
    info = {"data": str(Path(dataset.root).resolve()), "seconds": round(time.perf_counter() - t0, 2),
            "counts": dataset.counts(), "n_skipped": len(failures) + len(dataset.bad),
            "val_fraction": est.val_fraction, "test_fraction": est.test_fraction, **task_info}
    kept = [s for s, g in zip(samples, good) if g]
    return Fitted(backbone, fit.head, task, fit.config, fit.history, metrics, info, dataset, list(failures.values()),
                  data_check(task, fit.head, all_feats[good], kept, np.array([s.split == "val" for s in kept])))


class _Extractor:
    """Features of samples for any backbone (NaN rows where a file fails; each failure logged once)."""

    def __init__(self, features, log, use_cache: bool = True, engine: str = "auto"):
        self.features, self.log, self.use_cache, self.engine = features, log, use_cache, engine
        self.failures: dict[str, dict] = {}

    def __call__(self, backbone, samples) -> np.ndarray:
        feats, failures = self.features(backbone, [s.path for s in samples], [s.digest for s in samples])
        feats = np.array(feats, dtype=np.float32)
        for f in failures:
            feats[f.index] = np.nan
            rel = samples[f.index].rel
            if rel not in self.failures:
                self.log(f"  skipped {rel}: {f.reason} ({f.detail})")
                self.failures[rel] = {"file": rel, "reason": f.reason, "detail": f.detail}
        return feats

    def uncached(self, backbone, samples) -> int:
        """How many of ``samples`` the backbone would compute (the cache is asked, no file is read)."""
        from ..features import FeatureCache

        if not samples or not self.use_cache:
            return len(samples)
        try:
            cache = FeatureCache()
        except OSError:
            return len(samples)
        try:
            return len(samples) - len(cache.get(backbone.cache_key, [s.digest for s in samples]))
        finally:
            cache.close()

    def measure_speed(self, backbone, n: int = 16) -> float:
        """Images per second of ``backbone`` on ``n`` blank inputs (when every feature was cached)."""
        run = backbone.engine(prefer=self.engine)
        x = np.zeros((n, *backbone.input_shape), np.float32)
        run(x[:2])  # the first call builds the session
        t = time.perf_counter()
        run(x)
        return n / max(time.perf_counter() - t, 1e-6)


def _scorer(est, task, config, y, tr, va):
    """``score(feats)``: a head on the training rows, scored on the validation rows (NaN rows left out)."""
    from ..training.head import fit_head

    def score(feats, verbose=False):
        ok = np.isfinite(feats).all(1)
        t, v = tr & ok, va & ok
        check_splits("the data", int(t.sum()), int(v.sum()))
        epochs, _ = config.plan(int(t.sum()))
        if verbose:
            est._log(f"training a {config.kind} head on {int(t.sum())} images, {feats.shape[1]} features each, "
                     f"{epochs} epochs" + ("" if est.epochs else " (automatic: set epochs to choose)") + " ...")
        with epoch_bar(epochs, task.selection_name, est.verbose and verbose) as on_epoch:
            fit = fit_head(task, feats[t], list(y[t]), config, feats[v], list(y[v]), on_epoch)
        if est.refit:
            from dataclasses import replace

            tv = t | v
            final = fit_head(task, feats[tv], list(y[tv]), replace(config, epochs=fit.best_epoch))
            final.val_score, final.history, final.best_epoch = fit.val_score, fit.history, fit.best_epoch
            return final
        return fit
    return score


def _predict(task, head, feats):
    from ..training.head import predict_scores

    return predict_scores(task, head, feats)


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
