"""The parts of ``ImageClassifier`` for CNNs trained from scratch and for in-memory arrays.

Kept apart from ``estimator.py`` so the frozen-backbone path stays short; ``ImageClassifier``
inherits these methods and calls them from small branches:

- ``fit(FOLDER)`` with a ``scratch:`` backbone -> ``_fit_end_to_end``: decode every image once
  into memory at the input size, detect grey data (one channel), train end to end
  (``training/end_to_end.py``), report on the test split like the main job;
- ``fit(X, y)`` with arrays -> ``_fit_arrays``: any backbone (pretrained: features + head;
  scratch: end to end); ``predict`` / ``predict_proba`` / ``score`` / ``evaluate`` take arrays
  too (``_array_scores``, ``_evaluate_arrays``).

>>> clf = ImageClassifier("scratch:conv32-bn-relu-maxpool,conv64-bn-relu-gap").fit(X, y)  # doctest: +SKIP
>>> clf.score(X_test, y_test)                                                              # doctest: +SKIP
"""

from __future__ import annotations

import time

import numpy as np

from ..errors import HeadstartError

DEFAULT_INPUT_SIZE = 64  # px, for scratch CNNs on folders (arrays: their own size up to this)


class EndToEndMixin:
    # ---- choosing the backbone's input -----------------------------------------------------
    def _scratch_options(self, channels: int = 3, default_size: int = DEFAULT_INPUT_SIZE) -> dict:
        """``create_backbone`` options: input size, channels and resize mode for a scratch CNN;
        none for a pretrained backbone (it carries its own preprocessing)."""
        from ..data.transforms import RESIZE_MODES

        input_size, resize = getattr(self, "input_size", None), getattr(self, "resize", None)
        if resize is not None and resize not in RESIZE_MODES:
            raise HeadstartError(
                f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}: 'crop' keeps "
                "the centre square, 'pad' letterboxes the whole image, 'stretch' ignores the "
                "aspect ratio (--resize pad)")
        if input_size is not None and (not isinstance(input_size, int) or input_size < 8):
            raise HeadstartError(f"input_size must be a whole number of pixels of at least 8, got "
                                 f"{input_size!r}; e.g. --input-size 28 for 28x28 images")
        if not self.backbone.startswith("scratch:"):
            if input_size is not None or resize is not None:
                raise HeadstartError(
                    f"input_size / resize (--input-size / --resize) apply to CNNs built from "
                    f"scratch; {self.backbone!r} is pretrained and brings its own preprocessing. "
                    "Drop them, or use --backbone scratch:SPEC")
            return {}
        return {"input_size": input_size or default_size, "channels": channels,
                "resize": resize or "pad"}

    # ---- training from scratch -------------------------------------------------------------
    def _fit_end_to_end(self, result, data, t0: float):
        """``fit(FOLDER)`` for a scratch backbone: ``result`` is the scan (or labels CSV)."""
        from ..data.arrays import grey_to_one_channel
        from ..training.end_to_end import decode_to_uint8

        samples = result.samples
        images, failures = decode_to_uint8([s.path for s in samples], self.backbone_.preprocess,
                                           progress=self.verbose)
        bad = {i for i, _, _ in failures}
        for i, reason, detail in failures:
            self._log(f"  skipped {samples[i].rel}: {reason} ({detail})")
        keep = [i for i in range(len(samples)) if i not in bad]
        images, samples = images[keep], [samples[i] for i in keep]
        grey = grey_to_one_channel(images)
        if grey is not None:  # every image is grey: one channel, a third of the work
            images = grey
            self.backbone_ = self._new_backbone(**self._scratch_options(1))
        self._log(f"{len(images)} images in memory at {images.shape[1]}x{images.shape[2]}, "
                  f"{'grey (1 channel)' if grey is not None else 'colour (3 channels)'}, "
                  f"{images.nbytes / 1e6:.1f} MB")
        split = np.array([s.split for s in samples])
        tr, va, te = (split == "train"), (split == "val"), (split == "test")
        if not tr.any() or not va.any():
            raise HeadstartError(
                f"{str(data)!r} has {int(tr.sum())} training and {int(va.sum())} validation images after "
                "skipping bad files; need at least one of each. Add images, or set val_fraction / --val-fraction.")
        y = np.array([s.label for s in samples], dtype=object)
        self.task_ = self._fit_task(result, list(y[tr]))
        missing = self.task_.unknown(list(y[va | te]))
        if missing:
            raise HeadstartError(f"classes {missing} have validation/test images but none for training; "
                                 "add training images for them or remove those folders.")
        self._train_scratch(images[tr], list(y[tr]), images[va], list(y[va]))
        self.scan_ = result
        self.skipped_ = [{"file": result.samples[i].rel, "reason": r, "detail": d} for i, r, d in failures]
        if te.any():
            files = [s.rel for s, t in zip(samples, te) if t]
            self.metrics_["test"] = self._evaluate_features(self._array_features(images[te]), list(y[te]), files)
        self.fit_info_ = {"data": str(data), "seconds": round(time.perf_counter() - t0, 2),
                          "counts": result.counts(), "n_skipped": len(failures) + len(result.bad),
                          "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                          **getattr(self, "task_info_", {}), "end_to_end": self.end_to_end_}
        return self

    def _train_scratch(self, x_tr, y_tr, x_va, y_va) -> None:
        """Train ``backbone_`` and a linear head end to end; sets the learned attributes."""
        from ..training.end_to_end import EndToEndConfig, train_end_to_end
        from ..training.head import HeadConfig

        cfg = EndToEndConfig(epochs=self.epochs or EndToEndConfig.epochs,
                             flip=getattr(self, "flip", True), seed=self.seed)
        self._log(f"training {self.backbone_.name} end to end on {len(x_tr)} images "
                  f"({x_tr.shape[1]}x{x_tr.shape[2]}x{x_tr.shape[3]}), up to {cfg.epochs} epochs, "
                  f"flips {'on' if cfg.flip else 'off'} ...")
        # checkpoint_dir (set by `headstart train`): a checkpoint every epoch, resumed when present
        res = train_end_to_end(self.backbone_, self.task_, x_tr, y_tr, x_va, y_va, cfg,
                               progress=self.verbose, log=self._log,
                               checkpoint_dir=getattr(self, "checkpoint_dir", None))
        self.head_ = res.model.head
        self.head_config_ = HeadConfig(kind="linear", input_dropout=cfg.dropout, lr=cfg.lr,
                                       weight_decay=cfg.weight_decay, label_smoothing=cfg.label_smoothing,
                                       batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed)
        self.history_ = res.history
        self.classes_ = list(self.task_.labels)
        self.metrics_ = {"validation": {"score": res.val_score, "metric": self.task_.selection_name,
                                        "n_images": len(x_va), "best_epoch": res.best_epoch}}
        self.end_to_end_ = {**cfg.to_dict(), "best_epoch": res.best_epoch, "stopped_early": res.stopped_early,
                            "epochs_run": len(res.history), "train_seconds": round(res.seconds, 1),
                            "images_per_s": round(res.images_per_s, 1)}
        self._log(f"trained in {res.seconds:.1f} s ({res.images_per_s:.0f} img/s); best epoch "
                  f"{res.best_epoch}: validation {self.task_.selection_name} {res.val_score:.4f}")

    # ---- arrays ----------------------------------------------------------------------------
    def _fit_arrays(self, X, y):
        """``fit(X, y)``: images (N, H, W) or (N, H, W, C) and one label per image. A share
        ``val_fraction`` is held out for validation (early stopping, thresholds); there is no
        test split: score your own test arrays with ``score(X_test, y_test)``."""
        from ..data.arrays import as_labels, as_uint8, stable_split, to_input_size
        from ..training.head import HeadConfig, select_and_fit

        t0 = time.perf_counter()
        if y is None or isinstance(y, (str, dict)):
            raise HeadstartError(f"fit(X) with an array of images needs one label per image: "
                                 f"fit(X, y), got y={type(y).__name__}")
        x = as_uint8(X)
        labels = np.array(as_labels(y, len(x)), dtype=object)
        split = stable_split(x, self.val_fraction)
        tr, va = split == "train", split == "val"
        if not tr.any() or not va.any():
            raise HeadstartError(f"{len(x)} images give {int(tr.sum())} for training and {int(va.sum())} for "
                                 f"validation (val_fraction={self.val_fraction}); need at least one of each. "
                                 "Pass more images or raise val_fraction.")
        n, h, w, c = x.shape
        self.backbone_ = self._new_backbone(**self._scratch_options(c, min(max(h, w), DEFAULT_INPUT_SIZE)))
        self.task_ = self._fit_task(None, list(labels[tr]))
        missing = self.task_.unknown(list(labels[va]))
        if missing:
            raise HeadstartError(f"labels {missing} have validation images but none for training; "
                                 "pass more images of them.")
        if not self.backbone_.pretrained:
            p = self.backbone_.preprocess
            self._train_scratch(to_input_size(x[tr], p), list(labels[tr]), to_input_size(x[va], p),
                                list(labels[va]))
        else:
            feats = self._array_features(x)
            config = HeadConfig(kind=self.head, seed=self.seed, **({"epochs": self.epochs} if self.epochs else {}))
            fit = select_and_fit(self.task_, feats[tr], list(labels[tr]), feats[va], list(labels[va]), config,
                                 refit=self.refit)
            self.head_, self.head_config_, self.history_ = fit.head, config, fit.history
            self.classes_ = list(self.task_.labels)
            self.metrics_ = {"validation": {"score": fit.val_score, "metric": self.task_.selection_name,
                                            "n_images": int(va.sum())}}
        counts: dict = {}
        for label, s in zip(labels, split):
            counts.setdefault(str(label), {"train": 0, "val": 0})[s] += 1
        self.fit_info_ = {"data": f"array {n}x{h}x{w}x{c} uint8", "seconds": round(time.perf_counter() - t0, 2),
                          "counts": counts, "n_skipped": 0, "val_fraction": self.val_fraction,
                          **getattr(self, "task_info_", {})}
        if not self.backbone_.pretrained:
            self.fit_info_["end_to_end"] = self.end_to_end_
        return self

    def _array_features(self, x: np.ndarray, chunk: int = 256) -> np.ndarray:
        """Backbone features (N, D) of uint8 images (N, H, W, C) of any size: each is resized
        with the backbone's own preprocessing (size, crop / pad / stretch, channels)."""
        import torch

        from ..data.arrays import to_input_size
        from ..backbones.engines import make_engine
        from ..training.end_to_end import to_input

        p = self.backbone_.preprocess
        engine = make_engine(self.backbone_, self.backbone_.cache_key,
                             (p.channels, p.input_size, p.input_size), prefer=self.engine)
        out = [np.zeros((0, self.backbone_.feature_dim), np.float32)]
        for i in range(0, len(x), chunk):
            batch = to_input(torch.from_numpy(to_input_size(x[i:i + chunk], p)), p)  # (B, C, H, W)
            out.append(np.asarray(engine(batch.contiguous().numpy()), np.float32))
        return np.concatenate(out)

    def _array_scores(self, X) -> np.ndarray:
        from ..data.arrays import as_uint8
        from ..training.head import predict_scores

        self._check_fitted()
        return predict_scores(self.task_, self.head_, self._array_features(as_uint8(X)))

    def _evaluate_arrays(self, X, y) -> dict:
        """Full metrics on images ``X`` with labels ``y`` (files are named ``#<row>``)."""
        from ..data.arrays import as_labels, as_uint8

        self._check_fitted()
        if y is None or isinstance(y, (str, dict)):
            raise HeadstartError(f"scoring an array of images needs one label per image: score(X, y), "
                                 f"got y={type(y).__name__}")
        x = as_uint8(X)
        labels = as_labels(y, len(x))
        return self._evaluate_features(self._array_features(x), labels, [f"#{i}" for i in range(len(x))])
