"""``--ray [ADDRESS]`` for ``train`` and ``predict``, and the ``headstart embed`` command.

``headstart embed DATA --ray [ADDRESS] [--out DIR]``: features of every image in DATA computed
on a Ray cluster (a local one without ADDRESS) and put in the feature cache, optionally also
written as Parquet shards; ``headstart embed --import DIR`` puts such shards into this
machine's cache. The driver lists the files; the workers read, hash and decode them.
``train --ray`` runs the same embedding first, then the usual single-machine head fit reads
every feature from the cache. ``predict --ray`` applies the head to the cluster's features
batch by batch (``--out FILE.parquet`` writes the rows as Parquet).

Ray is imported inside the functions (``headstart --help`` stays instant, and Ray is optional).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import HeadstartError


def add_arguments(p: argparse.ArgumentParser, train: bool = False) -> None:
    g = p.add_argument_group("cluster (Ray: pip install 'headstart[cluster]'; torchrun)")
    if train:
        g.add_argument("--distributed", action="store_true",
                       help="under `torchrun --nproc-per-node N`: train a scratch CNN (--backbone scratch:SPEC), "
                            "or fine-tune (--finetune [N]), with DistributedDataParallel over N processes (gloo "
                            "on CPUs, NCCL on GPUs); rank 0 writes the model folder")
    g.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="compute features with Ray Data: on the cluster at ADDRESS (HOST:PORT, ray://HOST:PORT "
                        "or auto), or on a local Ray when no address is given. Files must be readable at the "
                        "same path on every node.")
    g.add_argument("--num-workers", type=int, default=1, metavar="N", help="with --ray: backbone actors (default 1)")
    g.add_argument("--cpus-per-worker", type=float, default=1.0, metavar="C",
                   help="with --ray: CPUs per backbone actor (default 1)")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G",
                   help="with --ray: GPUs per backbone actor (default 0)")


def config(args: argparse.Namespace):
    from ..features.ray import RayConfig

    for name in ("num_workers", "cpus_per_worker"):
        if getattr(args, name) <= 0:
            raise HeadstartError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}.")
    if args.gpus_per_worker < 0:
        raise HeadstartError(f"--gpus-per-worker must be 0 or more, got {args.gpus_per_worker}.")
    return RayConfig(address=args.ray or None, num_workers=args.num_workers,
                     cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker)


def embed_into_cache(backbone, paths, args, *, out=None, quiet: bool = False):
    """Run the Ray job over ``paths`` (the cached ones are hashed, not embedded); returns the
    ``RayExtraction`` without the (N, D) features, which stay in the cache."""
    from ..features import FeatureCache
    from ..features.ray import ray_extract, require_ray

    cfg = config(args)
    require_ray()
    if not backbone.pretrained:
        raise HeadstartError(f"--ray computes cached features of a pretrained backbone; {backbone.name!r} is built "
                             "from scratch and trained end to end (nothing to cache). Drop --ray.")
    cache = FeatureCache()
    try:
        ex = ray_extract(backbone, paths, config=cfg, cache=cache, out=out, engine=getattr(args, "engine", "auto"),
                         progress=not quiet, keep_features=False)
    finally:
        cache.close()
    if not quiet:
        print(f"features (ray): {ex.n_cached} from cache, {ex.n_computed} computed in {ex.seconds:.1f} s, "
              f"{len(ex.failures)} failed", file=sys.stderr)
    return ex


def is_main_process() -> bool:
    """False on the ranks > 0 of a ``--distributed`` run (without importing torch otherwise)."""
    if "torch" not in sys.modules:
        return True
    from ..training.distributed import is_main_process as main

    return main()


def check_train_options(args: argparse.Namespace) -> None:
    """Options that contradict each other, refused before anything is installed or read."""
    if getattr(args, "distributed", False) and args.ray is not None:
        raise HeadstartError("--distributed (under torchrun) and --ray (Ray Train) each run the training over "
                             "several processes; give one of them.")


def before_train(args: argparse.Namespace, clf=None) -> dict:
    """``train --distributed``: join torchrun's process group (ranks > 0 stay quiet).
    ``train --ray``: the cluster hashes and embeds the files ``fit`` will read into the cache;
    returns ``{path: sha256}`` from the workers, so ``fit``'s scan (inside
    ``data.scan.known_digests``) checks headers here without reading every file again, and
    finds every feature cached. ``{}`` without ``--ray``."""
    if getattr(args, "distributed", False):
        if not args.backbone.startswith("scratch:") and args.finetune is None:
            raise HeadstartError(f"--distributed trains a CNN built from scratch (--backbone scratch:SPEC), or "
                                 f"fine-tunes a pretrained one (--finetune [N]), with DistributedDataParallel; got "
                                 f"--backbone {args.backbone} without --finetune. A frozen backbone's head trains in "
                                 "seconds on one machine (use --ray for the features).")
        from ..training.distributed import init_from_env

        rank, _ = init_from_env()
        if rank > 0 and clf is not None:
            clf.verbose = False
        if args.finetune is not None:  # the main job's features: each rank computes its share
            from .finetune import before_distributed

            before_distributed(args)
    if args.ray is None:
        return {}
    from ..backbones import create_backbone
    from ..features.ray import require_ray

    config(args)
    require_ray()  # before listing the files: say how to install at once
    if args.backbone.startswith("scratch:"):
        raise HeadstartError(f"--ray computes cached features of a pretrained backbone; {args.backbone!r} is built "
                             "from scratch and trained end to end (nothing to cache). Drop --ray.")
    bb = create_backbone(args.backbone, weights=args.weights)
    files = _training_files(args)
    ex = embed_into_cache(bb, files, args, quiet=args.quiet)
    return dict(zip(files, ex.digests))


def _training_files(args: argparse.Namespace) -> list:
    """The files ``fit`` will read, listed without reading them (the workers hash them)."""
    from ..data.scan import find_images

    if not args.labels:
        return find_images([args.data])
    from ..data.labels_csv import listed_files

    try:
        return listed_files(args.data, args.labels, path_column=args.path_column)
    except HeadstartError:
        if not args.skip_bad_rows:
            raise
    # --skip-bad-rows: fit's own reading of the CSV leaves the bad rows out (it hashes here)
    from ..estimator.classifier import ImageClassifier

    clf = ImageClassifier(task=args.task, loss=args.loss, skip_bad_rows=True)
    return [s.path for s in clf._read(args.data, args.labels, args.path_column, args.target_column,
                                      training=True).samples]


def check_cluster(args: argparse.Namespace) -> None:
    """Before any long work: the options, Ray installed, and a given address answering."""
    from ..features.ray import check_reachable, require_ray

    cfg = config(args)
    require_ray()
    if cfg.address and cfg.address != "auto":
        check_reachable(cfg.address)


def predict_rows(args: argparse.Namespace, clf, files):
    """``predict --ray``: ``clf.predict_files(files)``'s rows (a generator, in order), the features
    computed on the cluster (the workers hash the files too), the head applied here."""
    from ..features import FeatureCache
    from ..features.ray import ray_predict

    cfg = config(args)
    cache = FeatureCache()
    try:
        yield from ray_predict(clf, files, config=cfg, cache=cache, engine=args.engine, top_k=args.top_k,
                               progress=not args.quiet)
    finally:
        cache.close()


def cmd_embed(args: argparse.Namespace) -> int:
    from ..features import FeatureCache

    if args.import_shards:
        from ..features.shards import import_shards

        cache = FeatureCache()
        try:
            n = import_shards(args.import_shards, cache)
        finally:
            cache.close()
        print(f"imported {n} feature rows from {args.import_shards} into {cache.path}")
        return 0
    if not args.data:
        raise HeadstartError("give DATA (a folder of images) to embed, or --import DIR to import Parquet shards.")
    if args.ray is None:
        args.ray = ""  # embed is the cluster command: a local Ray unless an address is given
    from ..backbones import create_backbone
    from ..data.scan import find_images
    from ..features.ray import require_ray

    config(args)
    require_ray()  # before listing the files: say how to install at once

    root = Path(args.data).resolve()
    files = find_images([args.data])  # listed, not read: the workers hash and decode
    if not files:
        raise HeadstartError(f"no images found in {args.data!r}. Expected a folder of image files "
                             "(searched recursively).")
    bb = create_backbone(args.backbone, weights=args.weights)
    ex = embed_into_cache(bb, files, args, out=args.out, quiet=args.quiet)
    print(f"{len(files) - len(ex.failures)} images have features ({bb.cache_key}); "
          f"{ex.n_cached} were cached already" + (f"; shards in {args.out}" if args.out else ""))
    if ex.failures:
        print(f"{len(ex.failures)} files skipped:")
        for f in ex.failures:
            print(f"  {f.path.relative_to(root).as_posix()}: {f.reason}: {f.detail}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("embed", help="compute the backbone features of a folder on a Ray cluster (cached; Parquet)")
    p.add_argument("data", nargs="?", help="folder: DATA/<class>/* or DATA/{train,val,test}/<class>/*")
    p.add_argument("--out", metavar="DIR", help="also write the features as Parquet shards (digest, backbone, vector)")
    p.add_argument("--import", dest="import_shards", metavar="DIR",
                   help="put the Parquet shards in DIR (from --out, e.g. copied off a cluster) into this cache")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", help="local weights file for a timm backbone")
    p.add_argument("--engine", choices=["auto", "onnxruntime", "torch"], default="auto")
    p.add_argument("--quiet", action="store_true")
    add_arguments(p)
    p.set_defaults(run=cmd_embed)
