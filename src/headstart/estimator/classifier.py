"""``ImageClassifier``: the scikit-learn estimator over the whole pipeline.

>>> import headstart
>>> clf = headstart.ImageClassifier().fit("photos/")        # doctest: +SKIP
>>> clf.predict("new/")                                      # doctest: +SKIP
['cat', 'dog']
>>> clf.save("model/"); headstart.load("model/").score("more-photos/")   # doctest: +SKIP
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..backbones import DEFAULT_BACKBONE
from ..errors import HeadstartError, NotFittedError
from . import inputs
from .fitted import Fitted
from .sklearn_api import ScikitLearnEstimator

# How and where a fit runs, not what it learns: ``load`` does not restore these.
RUNTIME_PARAMS = ("engine", "verbose", "checkpoint_dir", "ray", "distributed")
AUTO = "auto"  # the backbone chosen per data set on validation (Lite0/1/2, input size, stages)


class ImageClassifier(ScikitLearnEstimator):
    """A pretrained backbone (frozen, features cached) with a new head trained on your images;
    or a CNN built from scratch (``backbone="scratch:SPEC"``) trained end to end.

    Parameters are only stored here; ``fit`` checks them all, then does the work. Learned state
    has a trailing underscore: ``classes_``, ``task_``, ``backbone_``, ``head_``, ``metrics_``
    (validation and test figures), ``history_``, ``dataset_``, ``fit_info_``.

    ``backbone="auto"`` (the default) chooses the source model on the validation split: Lite0, Lite1
    or Lite2, at the native input size or +30 % for detailed photos, four-stage or pooled features,
    cheapest first within ``budget`` seconds (None: about a linear probe's time); the model keeps
    the chosen one and ``fit_info_["source_selection"]`` says what was tried.
    ``task`` ("auto" or one of ``headstart.tasks.TASKS``) says what to predict; "auto" infers it
    from the targets. ``loss="huber"`` makes a continuous task robust to a few wrong targets.
    ``finetune=N`` then trains the backbone's last N stages too (``"all"``: every stage);
    ``checkpoint_dir`` keeps a checkpoint every epoch of a fine-tune or of a scratch CNN, and a
    fit with the same data and settings resumes from it. ``ray`` (a ``features.ray.RayConfig``)
    computes the features on a Ray cluster (and fine-tunes on Ray Train); ``distributed`` runs
    the training over a ``torchrun`` process group.

    >>> m = ImageClassifier().fit("cells/", "cells/counts.csv")    # doctest: +SKIP
    >>> m.predict_files(["slide.png"])[0]                          # doctest: +SKIP
    {'file': 'slide.png', 'expected': 7.3, 'count': 7, 'probability': 0.15, 'interval': [3, 12]}
    """

    def __init__(self, backbone: str = AUTO, weights: str | None = None, head: str = "mlp",
                 task: str = "auto", loss: str = "auto", epochs: int | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, input_size: int | None = None,
                 resize: str | None = None, flip: bool = True, finetune: int | str | None = None,
                 finetune_epochs: int = 8, checkpoint_dir: str | Path | None = None, ray=None,
                 distributed: bool = False, engine: str = "auto", batch_size: int = 32, use_cache: bool = True,
                 refit: bool = False, skip_bad_rows: bool = False, seed: int = 0, verbose: bool = False,
                 budget: float | None = None):
        self.backbone = backbone            # a name, or "auto": chosen on validation (estimator.selection)
        self.budget = budget                # seconds for "auto" to try candidates (None: a linear probe's time)
        self.weights = weights
        self.head = head
        self.task = task                    # "auto" or a name in headstart.tasks.TASKS
        self.loss = loss                    # "auto" (the task's default) or e.g. "huber"
        self.epochs = epochs
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.input_size = input_size        # scratch CNNs: side of the square input (None: 64, arrays' own)
        self.resize = resize                # scratch CNNs: crop | pad | stretch (None: pad)
        self.flip = flip                    # scratch CNNs: random horizontal flips (off for digits, text)
        self.finetune = finetune            # None, N stages, or "all"
        self.finetune_epochs = finetune_epochs
        self.checkpoint_dir = checkpoint_dir
        self.ray = ray                      # None or a features.ray.RayConfig
        self.distributed = distributed      # under torchrun
        self.engine = engine
        self.batch_size = batch_size
        self.use_cache = use_cache
        self.refit = refit
        self.skip_bad_rows = skip_bad_rows  # CSV rows with problems: error (default) or left out
        self.seed = seed
        self.verbose = verbose

    # ---- fitting -------------------------------------------------------------------------
    def fit(self, X, y=None, *, path_column: str | None = None, target_column: str | None = None,
            on_progress: Callable[[str, int, int], None] | None = None) -> ImageClassifier:
        """Fit on ``X``: a folder of class folders; with ``y``, the images a CSV or a
        ``{path: target}`` mapping lists relative to that folder; a list of image paths with one
        target each; or images in memory (N, H, W[, C]) with one label each.
        ``on_progress(stage, done, total)`` hears how feature extraction goes."""
        from .params import check_backbone, check_params, scratch_options

        t0 = time.perf_counter()
        check_params(self)  # every setting, before any image is read
        from .selection import check_budget

        check_budget(self.budget)
        from ..backbones import is_scratch

        # a scratch CNN at its input size (arrays: at their own, in fit_arrays)
        backbone = self._new_backbone(**(scratch_options(self) if is_scratch(self.backbone) else {}))
        check_backbone(self, backbone)
        if inputs.is_array_input(X):
            from .scratch import fit_arrays

            return self._keep(fit_arrays(self, X, y, backbone, self._new_backbone, self._log, t0))
        dataset = self._read_for_fit(X, y, backbone, path_column, target_column)
        self._log(dataset.describe())
        if backbone.trained_from_scratch:
            from .scratch import fit_scratch_folder

            return self._keep(fit_scratch_folder(self, dataset, backbone, self._new_backbone, self._log, t0))
        from .frozen import fit_frozen

        if self.distributed and self.use_cache:  # each rank computes its share of the features first
            from .cluster import fill_cache_share

            fill_cache_share(backbone, dataset, self.engine)
        features = (lambda bb, paths, digests: self._features(bb, paths, digests, on_progress))
        fitted = fit_frozen(self, dataset, backbone, features, self._log, t0, select=self._selects())
        if self.finetune is not None:
            self._finetune(fitted)
        return self._keep(fitted)

    def _selects(self) -> bool:
        """Whether this fit chooses its source model (not on a cluster: every worker would have to agree)."""
        return self.backbone == AUTO and self.ray is None and not self.distributed and self.weights is None

    def _read_for_fit(self, X, y, backbone, path_column, target_column):
        """The dataset, read once; with ``ray`` the cluster hashes (and embeds) the files first."""
        from ..data.read import read_dataset
        from ..data.scan import known_digests

        if self.distributed:
            from .cluster import join_process_group

            self._rank = join_process_group()  # only rank 0 speaks
        digests = {}
        if self.ray is not None:
            from .cluster import digests_from_ray

            digests = digests_from_ray(self, backbone, X, y, path_column)
        with known_digests(digests):  # the workers' sha256: the files are not read again
            return read_dataset(X, y, task=self.task, loss=self.loss, path_column=path_column,
                                target_column=target_column, val_fraction=self.val_fraction,
                                test_fraction=self.test_fraction, skip_bad_rows=self.skip_bad_rows,
                                progress=self.verbose)

    def _finetune(self, fitted: Fitted) -> None:
        from ..training.finetune import FinetuneConfig
        from .finetune import finetune_fitted

        stages = len(fitted.backbone.stages()) if self.finetune == "all" else self.finetune
        config = FinetuneConfig(stages=stages, epochs=self.finetune_epochs, seed=self.seed)
        dist = loop = None
        if self.distributed:
            from ..training.finetune_distributed import ProcessGroup

            dist = ProcessGroup()  # every rank must see the same checkpoint, or their loops would differ
            dist.agree_flag(self._checkpoint_exists(), "the fine-tuning checkpoint")
        elif self.ray is not None:
            from .cluster import ray_train_loop

            loop = ray_train_loop(self.ray)
        finetune_fitted(fitted, config, self._features, self.engine, self.checkpoint_dir,
                        self._log if self.verbose and not getattr(self, "_rank", 0) else None, dist=dist, loop=loop)

    def _keep(self, fitted: Fitted) -> ImageClassifier:
        """Take the learned state; a finished fit needs its checkpoint and dropout banks no more."""
        from ..heads import release_dropout_banks

        self.backbone_, self.head_, self.task_ = fitted.backbone, fitted.head, fitted.task
        release_dropout_banks(self.head_)
        self.classes_ = fitted.classes
        self.head_config_, self.history_, self.metrics_ = fitted.head_config, fitted.history, fitted.metrics
        self.fit_info_, self.dataset_, self.skipped_ = fitted.info, fitted.dataset, fitted.skipped
        self.data_check_ = fitted.data_check
        self._drop_checkpoint()
        return self

    # ---- prediction ----------------------------------------------------------------------
    def predict(self, X) -> list:
        """Each image's prediction in the task's form: a label (binary, multiclass), a list of
        labels (multilabel), a number (continuous) or the expected count (count). ``X``: a
        folder, an image path, a list of paths, PIL images, or an array (N, H, W[, C])."""
        self._check_fitted()
        return self.task_.predict_values(self._checked_scores(X))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, n_classes), columns in ``classes_`` order (multilabel: one
        probability per label). A file that cannot be decoded raises; ``predict_files`` reports
        it per file instead."""
        self._check_fitted()
        if not self.classes_:
            raise HeadstartError(f"predict_proba gives class probabilities, but this model's task is "
                                 f"{self.task_.name}: use predict() for the numbers, or predict_files() "
                                 "for everything the task reports (for counts: rounded count, probability, interval).")
        return self._checked_scores(X)

    def predict_files(self, paths, top_k: int = 5) -> list[dict]:
        """One dict per file in the task's form: ``{"file", "label", "probability", "top": [...]}``
        (classes), ``{"file", "labels", "probabilities"}`` (multilabel), ``{"file", "value"}``
        (continuous), ``{"file", "expected", "count", "probability", "interval"}`` (count); or
        ``{"file", "error", "reason"}`` for a file that failed (the others are still predicted).
        With ``ray`` set, a generator of the rows, computed on the cluster batch by batch."""
        from .outputs import prediction_rows

        self._check_fitted()
        paths = inputs.image_paths(paths, "predict_files")
        if self.ray is not None:
            return self._ray_rows(paths, top_k)
        scores, failures = self._scores(paths)
        failed = {f.index for f in failures}
        return prediction_rows(self.task_, paths, scores[[i for i in range(len(paths)) if i not in failed]],
                               failures, top_k)

    def predict_images(self, images, top_k: int = 5) -> list[dict]:
        """Like ``predict_files`` for images already decoded (PIL): one dict per image; no cache."""
        from ..data.transforms import preprocess

        self._check_fitted()
        if not len(images):
            return []
        p = self.backbone_.preprocess
        return self.predict_inputs(np.stack([preprocess(im, p) for im in images]), top_k)

    def predict_inputs(self, x: np.ndarray, top_k: int = 5, engine=None) -> list[dict]:
        """``predict_images`` after preprocessing: one row per backbone input of ``x`` (N, C, H, W).
        ``engine``: a ``backbone.engine()`` to run the backbone with (the server's threading)."""
        from ..training.head import predict_scores

        self._check_fitted()
        engine = engine or self.backbone_.engine(prefer=self.engine)  # sessions are kept per process
        return self.task_.decode(predict_scores(self.task_, self.head_, engine(x)), top_k)

    def score(self, X, y=None, sample_weight=None, **columns) -> float:
        """The task's headline figure on labelled images (a folder's test split when it has
        split folders): accuracy, micro F1 (multilabel), R^2 (continuous) or the fraction of
        Poisson deviance explained (count)."""
        if sample_weight is not None:
            raise HeadstartError("score() does not take sample_weight; every image counts once.")
        return self.evaluate(X, y, **columns)[self.task_.headline]

    def evaluate(self, X, y=None, *, path_column: str | None = None, target_column: str | None = None) -> dict:
        """Full metrics on labelled images: a folder (all its images, or its test split when it
        has ``train/val/test`` folders), the images a CSV / mapping ``y`` lists, a list of paths
        with targets ``y``, or an array of images with labels ``y``."""
        from .evaluate import evaluate

        self._check_fitted()
        return evaluate(self, X, y, path_column, target_column)

    # ---- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the model folder (config.json + safetensors; atomic), settings included."""
        from ..model.folder import ModelFolder, save_folder
        from ..model.runs import history_csv

        self._check_fitted()
        bb = self.backbone_
        params = {k: v for k, v in self.get_params().items() if k not in RUNTIME_PARAMS}
        config = {
            "backbone": bb.spec(), "backbone_weights_id": bb.weights_id,
            "preprocess": bb.preprocess.to_dict(), "task": self.task_.to_dict(),
            "labels": self.classes_, "head": {**self.head_.config(), "training": self.head_config_.to_dict()},
            "metrics": self.metrics_, "training": getattr(self, "fit_info_", {}),
            "history": getattr(self, "history_", []), "params": params,
        }
        backbone_state = dict(bb.state_dict()) if bb.weights_in_folder else None
        extras = {"history.csv": history_csv(config["history"])} if config["history"] else {}
        return save_folder(ModelFolder(config, dict(self.head_.state_dict()), backbone_state, extras), path)

    # ---- internals -----------------------------------------------------------------------
    def _new_backbone(self, **options):
        """The backbone of the settings; a scratch CNN's first weights follow ``seed``, so two
        fits with one seed in one process start alike (as in two processes)."""
        import torch

        from ..backbones import create_backbone

        torch.manual_seed(self.seed)
        return create_backbone(DEFAULT_BACKBONE if self.backbone == AUTO else self.backbone, weights=self.weights,
                               **options)

    def _features(self, backbone, paths, digests, on_progress=None):
        """(features (N, D), failures) of ``backbone``, from the cache first (a pretrained
        backbone's only: a scratch CNN's weights change with every fit)."""
        from ..features import FeatureCache, extract_features

        cache = FeatureCache() if self.use_cache and not backbone.trained_from_scratch else None
        report = (lambda done, total: on_progress("features", done, total)) if on_progress else None
        try:
            ex = extract_features(backbone, paths, digests if cache else None, cache=cache,
                                  batch_size=self.batch_size, engine=self.engine, progress=self.verbose,
                                  on_batch=report)
        finally:
            if cache is not None:
                cache.close()
        if ex.n_cached:
            self._log(f"features: {ex.n_cached} from cache, {ex.n_computed} computed in {ex.seconds:.1f} s")
        return ex.features, ex.failures

    def _scores(self, paths: list[Path]):
        """Task scores (N, out_width) of image files (NaN rows for the failures), and failures."""
        from ..data.scan import file_sha256
        from ..training.head import predict_scores

        caching = self.use_cache and not self.backbone_.trained_from_scratch
        digests = []
        for p in paths if caching else ():  # the cache's keys; without one, no need to read files twice
            try:
                digests.append(file_sha256(p))
            except OSError:
                digests.append(f"unreadable:{p}")
        feats, failures = self._features(self.backbone_, paths, digests)
        ok = np.isfinite(feats).all(1)
        scores = np.full((len(paths), self.task_.out_width), np.nan, np.float32)
        if ok.any():
            scores[ok] = predict_scores(self.task_, self.head_, feats[ok])
        return scores, failures

    def _checked_scores(self, X) -> np.ndarray:
        """Scores of whatever ``predict`` was given; a file that fails raises."""
        kind, items = inputs.classify(X, "predict")
        if kind == "arrays":
            from ..data.arrays import as_uint8
            from ..training.head import predict_scores
            from .scratch import array_features

            return predict_scores(self.task_, self.head_, array_features(self, self.backbone_, as_uint8(items)))
        if kind == "images":
            return self._image_scores(items)
        scores, failures = self._scores(items)
        if failures:
            f = failures[0]
            raise HeadstartError(f"could not read {str(f.path)!r}: {f.detail}. "
                                 f"{len(failures)} of {len(items)} files failed; predict_files() reports each.")
        return scores

    def _image_scores(self, images) -> np.ndarray:
        from ..data.transforms import preprocess
        from ..training.head import predict_scores

        p = self.backbone_.preprocess
        x = np.stack([preprocess(im, p) for im in images])
        return predict_scores(self.task_, self.head_, self.backbone_.engine(prefer=self.engine)(x))

    def _ray_rows(self, paths: list[Path], top_k: int):
        from ..features import FeatureCache
        from ..features.ray import ray_feature_batches
        from ..training.head import predict_scores
        from .outputs import prediction_rows

        cache = FeatureCache() if self.use_cache else None
        try:
            for index, feats, failures in ray_feature_batches(self.backbone_, paths, config=self.ray, cache=cache,
                                                              engine=self.engine, progress=self.verbose):
                where = {i: j for j, i in enumerate(index)}
                scores = predict_scores(self.task_, self.head_, feats) if len(feats) else np.zeros((0,))
                fails = [replace(f, index=where[f.index]) for f in failures]
                yield from prediction_rows(self.task_, [paths[i] for i in index], scores, fails, top_k)
        finally:
            if cache is not None:
                cache.close()

    def _checkpoint_exists(self) -> bool:
        from ..training.checkpoint import FILE

        return self.checkpoint_dir is not None and (Path(self.checkpoint_dir) / FILE).is_file()

    def _drop_checkpoint(self) -> None:
        """Remove the checkpoint file a finished fit leaves (and its folder when empty); only
        rank 0 of a process group, after every rank is done with it."""
        from .cluster import is_main_process

        if self.checkpoint_dir is None or not is_main_process():
            return
        from ..training.checkpoint import FILE

        (Path(self.checkpoint_dir) / FILE).unlink(missing_ok=True)
        try:
            Path(self.checkpoint_dir).rmdir()
        except OSError:  # not empty (the user's files), or gone
            pass

    def _check_fitted(self) -> None:
        if not hasattr(self, "head_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet: call fit(DATA) first, or "
                                 "headstart.load(MODEL_DIR).")

    def _log(self, msg: str) -> None:
        if self.verbose and not getattr(self, "_rank", 0):
            print(msg, file=sys.stderr, flush=True)


# The same estimator under a name that fits every task (counts and numbers are not classes).
ImagePredictor = ImageClassifier


def load(path: str | Path, *, engine: str = "auto", verbose: bool = False, **params) -> ImageClassifier:
    """Load a model folder written by ``save`` (or ``headstart train``): the fitted model and the
    settings it was fitted with (``get_params()``); where it runs is yours to give (``engine``,
    ``verbose`` and any of ``RUNTIME_PARAMS`` in ``params``)."""
    from ..model.folder import load_model
    from ..training.head import HeadConfig

    m = load_model(path)
    c = m.config
    saved = {k: v for k, v in c.get("params", {}).items() if k in ImageClassifier().get_params()}
    saved.setdefault("backbone", c["backbone"]["name"])
    saved.setdefault("head", c["head"]["kind"])
    clf = ImageClassifier(**{**saved, "engine": engine, "verbose": verbose, **params})
    clf.backbone_, clf.head_, clf.task_, clf.classes_ = m.backbone, m.head, m.task, m.labels
    clf.metrics_ = c.get("metrics", {})
    clf.history_ = c.get("history", [])
    clf.head_config_ = HeadConfig(**c["head"].get("training", {}))
    clf.fit_info_ = c.get("training", {})
    clf.config_ = c
    return clf
