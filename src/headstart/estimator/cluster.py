"""More than one machine, from Python: features on a Ray cluster before the fit, fine-tuning on
Ray Train, and the process group of a ``torchrun`` launch.

>>> from headstart.features.ray import RayConfig
>>> ImageClassifier(ray=RayConfig(address="auto", num_workers=4)).fit("photos/")   # doctest: +SKIP
>>> # torchrun --nproc-per-node 2 fit.py, where fit.py holds:
>>> ImageClassifier(finetune=2, distributed=True).fit("photos/")                    # doctest: +SKIP
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import HeadstartError


def embed_on_ray(backbone, paths: list, config, *, engine: str = "auto", out: str | Path | None = None,
                 progress: bool = False):
    """The features of ``paths`` computed on the cluster into this machine's cache (the cached
    ones hashed, not embedded), and Parquet shards in ``out``; returns the ``RayExtraction``
    (with each file's sha256) without the (N, D) features, which stay in the cache."""
    from ..features import FeatureCache
    from ..features.ray import ray_extract, require_ray

    require_ray()
    if backbone.trained_from_scratch:
        raise HeadstartError(f"ray computes cached features of a pretrained backbone; {backbone.name!r} is built "
                             "from scratch and trained end to end (nothing to cache). Drop --ray.")
    cache = FeatureCache()
    try:
        ex = ray_extract(backbone, paths, config=config, cache=cache, out=out, engine=engine, progress=progress,
                         keep_features=False)
    finally:
        cache.close()
    if progress:
        print(f"features (ray): {ex.n_cached} from cache, {ex.n_computed} computed in {ex.seconds:.1f} s, "
              f"{len(ex.failures)} failed", file=sys.stderr)
    return ex


def digests_from_ray(est, backbone, X, y, path_column: str | None) -> dict:
    """``fit`` with ``ray``: the cluster hashes and embeds the files the fit will read; returns
    ``{path: sha256}`` so the dataset is read without hashing every file again."""
    from ..features.ray import connect, require_ray

    require_ray()  # before listing the files: say how to install at once
    connect(est.ray)
    files = training_files(est, X, y, path_column)
    ex = embed_on_ray(backbone, files, est.ray, engine=est.engine, progress=est.verbose)
    return dict(zip(files, ex.digests))


def training_files(est, X, y, path_column: str | None) -> list:
    """The image files ``fit(X, y)`` will read, listed without reading them."""
    from ..data.scan import find_images

    if y is None:
        return find_images([X])
    if not isinstance(X, (str, Path)):
        return [Path(p).absolute() for p in X]
    from ..data.labels_csv import listed_files

    try:
        return listed_files(X, y, path_column=path_column) if isinstance(y, (str, Path)) else \
            [Path(X, p).absolute() for p in y]
    except HeadstartError:
        if not est.skip_bad_rows:
            raise
    from ..data.dataset import (
        read_dataset,  # skip_bad_rows: the rows the fit will keep (it hashes here)
    )

    return [s.path for s in read_dataset(X, y, task=est.task, loss=est.loss, path_column=path_column,
                                         skip_bad_rows=True).samples]


def join_process_group() -> int:
    """Under torchrun: join the process group it describes; returns this process's rank."""
    from ..training.distributed import init_from_env

    rank, _ = init_from_env()
    return rank


def fill_cache_share(backbone, dataset, engine: str) -> None:
    """Each rank computes the frozen features of its share of the images into the shared cache,
    so the main job that follows on every rank reads them instead of computing them all."""
    from ..training.finetune_distributed import fill_feature_cache

    fill_feature_cache(backbone, [s.path for s in dataset.samples], [s.digest for s in dataset.samples], engine=engine)


def require_ray_train() -> None:
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as e:
        raise HeadstartError(f"--ray with --finetune runs the fine-tune on Ray Train, which is not installed here "
                             f"({e.name} is missing). Install it with: pip install 'headstart[cluster]'") from None


def ray_train_loop(config):
    """``finetune`` run on ``config.train_workers`` Ray Train workers."""
    from ..training.finetune_distributed import ray_loop

    require_ray_train()
    return ray_loop(config.address, config.train_workers, config.cpus_per_worker, config.gpus_per_worker)


def is_main_process() -> bool:
    """False on the ranks > 0 of a ``torchrun`` group (without importing torch otherwise)."""
    if "torch" not in sys.modules:
        return True
    from ..training.distributed import is_main_process as main

    return main()
