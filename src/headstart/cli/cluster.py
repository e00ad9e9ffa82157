"""``--ray [ADDRESS]`` for ``train`` and ``predict``, and the ``headstart embed`` command.

``headstart embed DATA --ray [ADDRESS] [--out DIR]``: features of every image in DATA computed
on a Ray cluster (a local one without ADDRESS) and put in the feature cache, optionally also
written as Parquet shards; ``headstart embed --import DIR`` puts such shards into this
machine's cache. The driver lists the files; the workers read, hash and decode them.
``train --ray`` and ``predict --ray`` set the estimator's ``ray`` (a ``RayConfig``), and
``train --distributed`` its ``distributed``: the work itself is the library's
(``estimator/cluster.py``).

Ray is imported inside the functions (``headstart --help`` stays instant, and Ray is optional).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..backbones import DEFAULT_BACKBONE
from ..errors import HeadstartError
from .common import ENGINES


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
    if train:
        g.add_argument("--finetune-workers", type=int, default=2, metavar="W",
                       help="with --ray and --finetune: Ray Train workers (default 2; each takes --cpus-per-worker "
                            "CPUs and --gpus-per-worker GPUs). Under torchrun the process count is torchrun's "
                            "--nproc-per-node.")


def ray_config(args: argparse.Namespace):
    """``--ray [ADDRESS]`` and its options as the estimator's ``ray`` setting; None without --ray."""
    if args.ray is None:
        return None
    from ..features.ray import RayConfig

    return RayConfig(address=args.ray or None, num_workers=args.num_workers, cpus_per_worker=args.cpus_per_worker,
                     gpus_per_worker=args.gpus_per_worker, train_workers=getattr(args, "finetune_workers", 2))


def check_reachable(cfg) -> None:
    """Before any long work: Ray installed, and a given address answering."""
    from ..features.ray import check_reachable, require_ray

    for name in ("num_workers", "cpus_per_worker"):
        if getattr(cfg, name) <= 0:
            raise HeadstartError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}.")
    require_ray()
    if cfg.address and cfg.address != "auto":
        check_reachable(cfg.address)


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
    from ..estimator.cluster import embed_on_ray

    cfg = ray_config(args)
    check_reachable(cfg)  # before listing the files: say how to install at once

    root = Path(args.data).resolve()
    files = find_images([args.data])  # listed, not read: the workers hash and decode
    if not files:
        raise HeadstartError(f"no images found in {args.data!r}. Expected a folder of image files "
                             "(searched recursively).")
    bb = create_backbone(args.backbone, weights=args.weights)
    ex = embed_on_ray(bb, files, cfg, engine=args.engine, out=args.out, progress=not args.quiet)
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
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"see `headstart backbones` (default {DEFAULT_BACKBONE})")
    p.add_argument("--weights", help="local weights file for a timm backbone")
    p.add_argument("--engine", choices=ENGINES, default="auto")
    p.add_argument("--quiet", action="store_true")
    add_arguments(p)
    p.set_defaults(run=cmd_embed)
