"""Fits without cached features: a CNN built from scratch (trained end to end), and images given
as in-memory arrays (any backbone).

- a folder with a ``scratch:`` backbone: every image decoded once into memory at the input
  size, grey data detected (one channel), trained end to end (``training/end_to_end.py``),
  reported on the test split like the main job;
- ``fit(X, y)`` with arrays: a pretrained backbone's features + a head, or a scratch CNN end to
  end; a share ``val_fraction`` is held out for validation, there is no test split.

>>> clf = ImageClassifier("scratch:conv32-bn-relu-maxpool,conv64-bn-relu-gap").fit(X, y)  # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import HeadstartError
from .fitted import Fitted, check_known, check_splits, fit_task
from .frozen import score_features
from .params import DEFAULT_INPUT_SIZE, scratch_options


def fit_scratch_folder(est, dataset, backbone, new_backbone, log, t0: float) -> Fitted:
    """Train the scratch CNN ``backbone`` end to end on the images of ``dataset``
    (``new_backbone(**options)`` builds it again with one channel for grey images)."""
    from ..data.arrays import grey_to_one_channel
    from ..training.end_to_end import decode_to_uint8

    samples = dataset.samples
    images, failures = decode_to_uint8([s.path for s in samples], backbone.preprocess, progress=est.verbose)
    bad = {i for i, _, _ in failures}
    for i, reason, detail in failures:
        log(f"  skipped {samples[i].rel}: {reason} ({detail})")
    keep = [i for i in range(len(samples)) if i not in bad]
    images, samples = images[keep], [samples[i] for i in keep]
    grey = grey_to_one_channel(images)
    if grey is not None:  # every image is grey: one channel, a third of the work
        images = grey
        backbone = new_backbone(**scratch_options(est, 1))
    log(f"{len(images)} images in memory at {images.shape[1]}x{images.shape[2]}, "
        f"{'grey (1 channel)' if grey is not None else 'colour (3 channels)'}, {images.nbytes / 1e6:.1f} MB")
    split = np.array([s.split for s in samples])
    tr, va, te = (split == "train"), (split == "val"), (split == "test")
    check_splits(repr(str(dataset.root)), int(tr.sum()), int(va.sum()))
    y = np.array([s.label for s in samples], dtype=object)
    task, task_info = fit_task(est, dataset, list(y[tr]), log)
    check_known(task, list(y[va | te]))
    fitted = train_scratch(est, backbone, task, images[tr], list(y[tr]), images[va], list(y[va]), log)
    if te.any():
        files = [s.rel for s, t in zip(samples, te) if t]
        fitted.metrics["test"] = score_features(task, fitted.head, array_features(est, backbone, images[te]),
                                                list(y[te]), files)
    fitted.info = {"data": str(dataset.root), "seconds": round(time.perf_counter() - t0, 2),
                   "counts": dataset.counts(), "n_skipped": len(failures) + len(dataset.bad),
                   "val_fraction": est.val_fraction, "test_fraction": est.test_fraction, **task_info,
                   "end_to_end": fitted.info["end_to_end"]}
    fitted.dataset = dataset
    fitted.skipped = [{"file": dataset.samples[i].rel, "reason": r, "detail": d} for i, r, d in failures]
    return fitted


def train_scratch(est, backbone, task, x_tr, y_tr, x_va, y_va, log) -> Fitted:
    """Train ``backbone`` and a linear head end to end (a checkpoint every epoch in
    ``est.checkpoint_dir``, resumed when there)."""
    from ..training.end_to_end import EndToEndConfig, train_end_to_end
    from ..training.head import HeadConfig

    cfg = EndToEndConfig(epochs=est.epochs or EndToEndConfig.epochs, flip=est.flip, seed=est.seed)
    log(f"training {backbone.name} end to end on {len(x_tr)} images "
        f"({x_tr.shape[1]}x{x_tr.shape[2]}x{x_tr.shape[3]}), up to {cfg.epochs} epochs, "
        f"flips {'on' if cfg.flip else 'off'} ...")
    res = train_end_to_end(backbone, task, x_tr, y_tr, x_va, y_va, cfg, progress=est.verbose, log=log,
                           checkpoint_dir=est.checkpoint_dir)
    head_config = HeadConfig(kind="linear", input_dropout=cfg.dropout, lr=cfg.lr, weight_decay=cfg.weight_decay,
                             label_smoothing=cfg.label_smoothing, batch_size=cfg.batch_size, epochs=cfg.epochs,
                             seed=cfg.seed)
    metrics = {"validation": {"score": res.val_score, "metric": task.selection_name, "n_images": len(x_va),
                              "best_epoch": res.best_epoch}}
    end_to_end = {**cfg.to_dict(), "best_epoch": res.best_epoch, "stopped_early": res.stopped_early,
                  "epochs_run": len(res.history), "train_seconds": round(res.seconds, 1),
                  "images_per_s": round(res.images_per_s, 1)}
    log(f"trained in {res.seconds:.1f} s ({res.images_per_s:.0f} img/s); best epoch "
        f"{res.best_epoch}: validation {task.selection_name} {res.val_score:.4f}")
    return Fitted(backbone, res.model.head, task, head_config, res.history, metrics, {"end_to_end": end_to_end})


def fit_arrays(est, X, y, backbone, new_backbone, log, t0: float) -> Fitted:
    """``fit(X, y)``: images (N, H, W) or (N, H, W, C) and one label per image; validation is a
    stable share ``val_fraction`` of them; score your own test arrays with ``score(X, y)``."""
    from ..data.arrays import as_labels, as_uint8, stable_split, to_input_size
    from ..training.head import HeadConfig, select_and_fit

    x = as_uint8(X)
    labels = np.array(as_labels(_labels_for(y, "fit(X, y)"), len(x)), dtype=object)
    split = stable_split(x, est.val_fraction)
    tr, va = split == "train", split == "val"
    if not tr.any() or not va.any():
        raise HeadstartError(f"{len(x)} images give {int(tr.sum())} for training and {int(va.sum())} for "
                             f"validation (val_fraction={est.val_fraction}); need at least one of each. "
                             "Pass more images or raise val_fraction.")
    n, h, w, c = x.shape
    if backbone.trained_from_scratch:  # sized for these images
        backbone = new_backbone(**scratch_options(est, c, min(max(h, w), DEFAULT_INPUT_SIZE)))
    task, task_info = fit_task(est, None, list(labels[tr]), log)
    missing = task.unknown(list(labels[va]))
    if missing:
        raise HeadstartError(f"labels {missing} have validation images but none for training; "
                             "pass more images of them.")
    if backbone.trained_from_scratch:
        p = backbone.preprocess
        fitted = train_scratch(est, backbone, task, to_input_size(x[tr], p), list(labels[tr]),
                               to_input_size(x[va], p), list(labels[va]), log)
    else:
        feats = array_features(est, backbone, x)
        config = HeadConfig(kind=est.head, seed=est.seed, **({"epochs": est.epochs} if est.epochs else {}))
        fit = select_and_fit(task, feats[tr], list(labels[tr]), feats[va], list(labels[va]), config, refit=est.refit)
        metrics = {"validation": {"score": fit.val_score, "metric": task.selection_name, "n_images": int(va.sum())}}
        fitted = Fitted(backbone, fit.head, task, config, fit.history, metrics, {})
    counts: dict = {}
    for label, s in zip(labels, split):
        counts.setdefault(str(label), {"train": 0, "val": 0})[s] += 1
    fitted.info = {"data": f"array {n}x{h}x{w}x{c} uint8", "seconds": round(time.perf_counter() - t0, 2),
                   "counts": counts, "n_skipped": 0, "val_fraction": est.val_fraction, **task_info,
                   **({"end_to_end": fitted.info["end_to_end"]} if backbone.trained_from_scratch else {})}
    return fitted


def array_features(est, backbone, x: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Backbone features (N, D) of uint8 images (N, H, W, C) of any size: each is resized with
    the backbone's own preprocessing (size, crop / pad / stretch, channels)."""
    import torch

    from ..data.arrays import to_input_size
    from ..training.end_to_end import to_input

    p = backbone.preprocess
    engine = backbone.engine(prefer=est.engine)
    out = [np.zeros((0, backbone.feature_dim), np.float32)]
    for i in range(0, len(x), chunk):
        batch = to_input(torch.from_numpy(to_input_size(x[i:i + chunk], p)), p)  # (B, C, H, W)
        out.append(np.asarray(engine(batch.contiguous().numpy()), np.float32))
    return np.concatenate(out)


def labelled_arrays(X, y, what: str) -> tuple[np.ndarray, list]:
    """Images and their labels, checked: (N, H, W, C) uint8 and one label per image."""
    from ..data.arrays import as_labels, as_uint8

    x = as_uint8(X)
    return x, as_labels(_labels_for(y, what), len(x))


def _labels_for(y, what: str):
    if y is None or isinstance(y, (str, dict)):
        raise HeadstartError(f"{what} with an array of images needs one label per image, got "
                             f"y={type(y).__name__}")
    return y
