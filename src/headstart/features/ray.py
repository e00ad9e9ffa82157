"""Feature extraction and batch prediction over a Ray cluster (Ray Data), feeding the same ``FeatureCache``.

The driver needs the file paths only; every file is read once, on a worker::

    from_items(index, path) ──map_batches(_read_hash_decode)──▶ digest, state, pixels, reason, detail   (tasks)
        │  sha256 of the bytes; a digest the driver's cache holds (a sorted array of raw digests
        │  in the object store) is marked CACHED and not decoded; the others are decoded from
        │  the same bytes (failures: state FAILED, reason, detail, as on one machine)
        ──map_batches(_Embedder, concurrency=workers)──▶ index, digest, state, vector      (actor pool)
        ──iter_batches on the driver──▶ one progress bar; FeatureCache rows (+ Parquet shards with --out);
                                        ``ray_feature_batches``: in input order, for prediction

Rows are keyed as on one machine (backbone ``cache_key``, sha256 of the file), so a later
single-machine ``train`` or ``predict`` reuses what the cluster computed, and a second run
decodes and embeds nothing it has already (cached rows send back their digest alone).
Files must be readable by every worker at the same path (a shared or network file system).
Ray Data retries a task whose worker dies and restarts a dead actor, so one lost worker does
not lose the job.

>>> ex = ray_extract(create_backbone(), paths, cache=FeatureCache())   # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from .extract import DECODE_THREADS, Extraction, Failure, FeatureCache
from .shards import INSTALL_HINT, ShardWriter

CONNECT_TIMEOUT_S = 5.0
DIE_ONCE_ENV = "HEADSTART_RAY_DIE_ONCE"  # tests: a marker path; the first actor batch kills its process once


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide: ``address`` None starts a local Ray; "auto" or "HOST:PORT" joins one."""

    address: str | None = None
    num_workers: int = 1           # backbone actors
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 32
    local_cpus: int | None = None  # a local Ray's CPUs (default: this machine's)
    train_workers: int = 2         # Ray Train workers of a fine-tune (each cpus_per_worker, gpus_per_worker)


def require_ray():
    """``ray`` imported, or a HeadstartError saying how to install it."""
    try:
        import pyarrow  # noqa: F401
        import ray
    except ImportError as e:
        raise HeadstartError(f"--ray needs Ray Data, which is not installed here ({e.name} is missing). "
                             f"Install it with: {INSTALL_HINT}") from None
    return ray


def connect(config: RayConfig) -> None:
    """Join the cluster at ``config.address``, or start a local Ray; reuse one already running.

    An unreachable HOST:PORT fails within ``CONNECT_TIMEOUT_S`` (Ray itself would retry for
    minutes)."""
    ray = require_ray()
    addr = config.address
    if addr and addr != "auto":
        check_reachable(addr)
    need = config.num_workers * config.cpus_per_worker + 1  # the actors' CPUs, and one for decoding
    if not ray.is_initialized():
        try:
            if addr:
                ray.init(address=addr, log_to_driver=False, logging_level="ERROR")
            else:  # decoding waits on files while ONNX computes: one logical CPU over is fine
                ray.init(num_cpus=int(max(config.local_cpus or os.cpu_count() or 1, need)),
                         include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise HeadstartError(f"could not connect to the Ray cluster at {addr!r}: {e}. Expected a running "
                                 "cluster (`ray start --head` on its head node); pass its HOST:PORT (default "
                                 "port 6379), or give --ray without an address for a local Ray.") from None
    have = ray.cluster_resources().get("CPU", 0)
    if have < need:  # the actors would hold every CPU and no decoding task could ever start
        raise HeadstartError(
            f"the Ray cluster has {have:g} CPUs, but {config.num_workers} workers x {config.cpus_per_worker:g} "
            f"CPUs plus 1 for decoding need {need:g}. Lower --num-workers or --cpus-per-worker, or add nodes.")


def check_reachable(addr: str) -> None:
    hostport = addr.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        raise HeadstartError(f"Ray address {addr!r} is not HOST:PORT. Expected e.g. 10.0.0.5:6379 "
                             "(or ray://10.0.0.5:10001, or 'auto' on a cluster node).")
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as e:
        raise HeadstartError(f"no Ray cluster answers at {addr!r} ({e}; waited {CONNECT_TIMEOUT_S:.0f} s). "
                             "Expected a running head node: start one with `ray start --head`, check the host "
                             "and port (default 6379) and the firewall, or give --ray without an address "
                             "for a local Ray.") from None


# ---- the pipeline's stages (run on the workers) ------------------------------------------------

COMPUTE, CACHED, FAILED = 0, 1, 2  # a row's state after _read_hash_decode


def _read_hash_decode(batch: dict, *, p, known) -> dict:
    """Read each file once: sha256 of its bytes, then decode + preprocess those bytes unless the
    digest is in ``known`` (the driver's cache; sorted raw digests in the object store)."""
    import ray

    from ..data.images import ImageDecodeError
    from ..data.inputs import load_input

    known = ray.get(known) if isinstance(known, ray.ObjectRef) else known  # zero-copy on the node
    n = len(batch["path"])
    pixels = np.zeros((n, p.channels, p.input_size, p.input_size), np.float32)  # (B, C, H, W)
    state = np.full(n, COMPUTE, np.uint8)
    digest, reason, detail = [""] * n, [""] * n, [""] * n

    def work(i: int) -> None:
        try:
            with open(str(batch["path"][i]), "rb") as f:
                data = f.read()
        except OSError as e:
            state[i], reason[i], detail[i] = FAILED, "unreadable", f"{type(e).__name__}: {e.strerror or e}"
            return
        digest[i] = hashlib.sha256(data).hexdigest()
        if _contains(known, digest[i]):
            state[i] = CACHED
            return
        try:
            pixels[i] = load_input(data, p)
        except ImageDecodeError as e:
            state[i], reason[i], detail[i] = FAILED, e.reason, e.detail

    # Pillow and hashlib release the GIL; Ray Data may fuse this stage into the actor's
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        list(pool.map(work, range(n)))
    return {"index": batch["index"], "digest": np.array(digest, dtype=object), "state": state,
            "pixels": pixels, "reason": np.array(reason, dtype=object), "detail": np.array(detail, dtype=object)}


def _contains(known: np.ndarray, hex_digest: str) -> bool:
    if not len(known):
        return False
    q = np.array(bytes.fromhex(hex_digest), dtype="S32")
    i = int(np.searchsorted(known, q))
    return i < len(known) and known[i] == q


class _Embedder:
    """One backbone per actor; ONNX Runtime (or torch on a GPU) with the actor's CPU share,
    opened at the first batch with something to compute (a run over cached files opens none)."""

    def __init__(self, backbone, threads: int, engine: str, die_once: str | None = None):
        self.backbone, self.threads, self.engine = backbone, threads, engine
        self.die_once = die_once
        self.run = None

    def _open(self):
        import ray
        import torch

        backbone = self.backbone
        if isinstance(backbone, ray.ObjectRef):  # passed by reference: the driver holds it for the job
            backbone = ray.get(backbone)
        torch.set_num_threads(self.threads)
        return backbone.engine(prefer=self.engine, threads=self.threads)

    def __call__(self, batch: dict) -> dict:
        if self.die_once and not os.path.exists(self.die_once):
            Path(self.die_once).touch()  # tests: this process dies once, mid-job
            os._exit(1)
        todo = batch["state"] == COMPUTE
        # Only computed rows carry a vector (float32 bytes): a cached row sends its digest alone.
        vectors = np.full(len(todo), b"", dtype=object)
        if todo.any():
            if self.run is None:
                self.run = self._open()
            for j, v in zip(np.flatnonzero(todo), np.asarray(self.run(batch["pixels"][todo]), np.float32)):
                vectors[j] = v.tobytes()
        return {"index": batch["index"], "digest": batch["digest"], "state": batch["state"],
                "reason": batch["reason"], "detail": batch["detail"], "vector": vectors}


def _key(backbone, engine: str) -> str:
    """The feature-cache key of ``backbone``'s features from ``engine`` (as in extract_features)."""
    from ..backbones.engines import features_key

    return features_key(backbone.cache_key, engine)


# ---- the driver --------------------------------------------------------------------------------

@dataclass
class RayExtraction(Extraction):
    """``Extraction`` plus each file's sha256, computed on the workers ("" where unreadable)."""

    digests: list[str] = field(default_factory=list)


def ray_batches(backbone, paths: Sequence[str | Path], *, config: RayConfig = RayConfig(),
                cache: FeatureCache | None = None, engine: str = "auto", progress: bool = False,
                in_order: bool = False) -> Iterator[dict]:
    """Run the pipeline over ``paths``; yield the driver's batches: ``index`` (into ``paths``),
    ``digest``, ``state`` (COMPUTE: ``vector`` holds its float32 bytes; CACHED: in ``cache``
    already; FAILED: ``reason``, ``detail``). Every index is yielded exactly once; in input
    order with ``in_order`` (slower: a finished block waits for the ones before it)."""
    if not len(paths):
        return
    connect(config)
    import ray

    _quiet_ray_data()
    # Large objects by reference, held here while the job runs: a restarted actor finds them
    weights = ray.put(backbone.cpu().eval())
    known = ray.put(_cached_digests(cache, _key(backbone, engine)) if cache is not None else np.array([], "S32"))
    items = [{"index": i, "path": str(p)} for i, p in enumerate(paths)]
    n_blocks = -(-len(items) // config.batch_size)  # about one batch per block: every actor gets work
    ctx = ray.data.DataContext.get_current()
    order_before, ctx.execution_options.preserve_order = ctx.execution_options.preserve_order, in_order
    ds = ray.data.from_items(items, override_num_blocks=max(1, min(n_blocks, 10_000)))
    ds = ds.map_batches(_read_hash_decode, fn_kwargs={"p": backbone.preprocess, "known": known},
                        batch_size=config.batch_size, batch_format="numpy", num_cpus=1)
    ds = ds.map_batches(
        _Embedder, batch_size=config.batch_size, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=config.num_workers),
        num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None,
        fn_constructor_kwargs={"backbone": weights, "threads": max(1, int(config.cpus_per_worker)),
                               "engine": engine, "die_once": os.environ.get(DIE_ONCE_ENV)})
    # A dead actor is restarted and its batch retried: Ray Data's defaults for actor pools
    # (max_restarts=-1, max_task_retries=-1); reading tasks are retried too (max_retries).
    bar = _progress(len(items), progress)  # one bar for every worker: rows as they reach the driver
    seen = np.zeros(len(items), bool)
    try:
        for b in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            fresh = ~seen[b["index"]]
            if not fresh.all():  # a retried block may deliver a row twice: keep the first
                b = {k: v[fresh] for k, v in b.items()}
            seen[b["index"]] = True
            if bar is not None:
                bar.update(len(b["index"]))
            if len(b["index"]):
                yield b
    finally:
        if bar is not None:
            bar.close()
        ctx.execution_options.preserve_order = order_before
    if not seen.all():  # every image must be accounted for: a lost row is a bug, not a skip
        raise RuntimeError(f"the Ray job returned no row for {int((~seen).sum())} of {len(items)} images")


def ray_extract(backbone, paths: Sequence[str | Path], *, config: RayConfig = RayConfig(),
                cache: FeatureCache | None = None, out: str | Path | None = None, engine: str = "auto",
                progress: bool = False, keep_features: bool = True) -> RayExtraction:
    """Like ``features.extract_features`` (same ``Failure`` rows, same cache keys), with every
    file read, hashed and (unless its features are cached) decoded and embedded on a Ray
    cluster: the driver needs the paths only. New vectors go into ``cache`` (and Parquet
    shards in ``out``). ``keep_features=False`` keeps no (N, D) matrix on the driver
    (``features`` is then (N, 0)): for jobs too large for its memory.

    >>> ex = ray_extract(create_backbone(), paths, cache=FeatureCache())   # doctest: +SKIP
    """
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    key = _key(backbone, engine)
    feats = np.full((len(paths), backbone.feature_dim if keep_features else 0), np.nan, np.float32)
    digests = [""] * len(paths)
    failures: list[Failure] = []
    n_cached = 0
    lost: list[int] = []  # in the cache when the job started, gone when read back (rare)
    writer = ShardWriter(Path(out), key) if out is not None else None
    for b in ray_batches(backbone, paths, config=config, cache=cache, engine=engine, progress=progress):
        computed = _apply(b, digests, failures, paths)
        n_cached += int((b["state"] == CACHED).sum())
        if cache is not None and computed:
            cache.put(key, [(d, v) for _, d, v in computed])
        if writer is not None:
            writer.add([(d, v) for _, d, v in computed])
        if keep_features:
            for i, _, v in computed:
                feats[i] = v
            lost += _fill_from_cache(b, cache, key, feats)
    if writer is not None:
        writer.close()
    if lost:  # in the cache when the job started, gone when read back (rare): computed here
        from .extract import extract_features

        again = extract_features(backbone, [paths[i] for i in lost], [digests[i] for i in lost], cache=cache,
                                 engine=engine)
        feats[lost] = again.features
        n_cached -= len(lost)
        failures += [Failure(lost[f.index], f.path, f.reason, f.detail) for f in again.failures]
    failures.sort(key=lambda f: f.index)
    return RayExtraction(feats, failures, n_cached, len(paths) - n_cached - len(failures),
                         time.perf_counter() - t0, digests)


def ray_feature_batches(backbone, paths: Sequence[str | Path], *, config: RayConfig = RayConfig(),
                        cache: FeatureCache | None = None, engine: str = "auto", progress: bool = False
                        ) -> Iterator[tuple[list[int], np.ndarray, list[Failure]]]:
    """The features of ``paths`` batch by batch, in input order, computed on a Ray cluster
    (hashing included): ``(indices, features of the readable ones (n, D), failures)`` with
    ``Failure.index`` into ``paths``; new vectors go into ``cache``. Memory stays flat."""
    paths = [Path(p) for p in paths]
    key = _key(backbone, engine)
    digests = [""] * len(paths)
    for b in ray_batches(backbone, paths, config=config, cache=cache, engine=engine, progress=progress,
                         in_order=True):
        failures: list[Failure] = []
        computed = _apply(b, digests, failures, paths)
        if cache is not None and computed:
            cache.put(key, [(d, v) for _, d, v in computed])
        index = [int(i) for i in b["index"]]
        feats = {i: v for i, _, v in computed}
        cached = [i for i, s in zip(index, b["state"]) if s == CACHED]
        hit = cache.get(key, [digests[i] for i in cached]) if cache is not None and cached else {}
        feats.update({i: hit[digests[i]] for i in cached if digests[i] in hit})
        missing = [i for i in cached if digests[i] not in hit]
        if missing:  # in the cache when the job started, gone now (rare): computed here
            from .extract import extract_features

            again = extract_features(backbone, [paths[i] for i in missing], engine=engine)
            feats.update({i: again.features[j] for j, i in enumerate(missing) if again.ok[j]})
            failures += [Failure(missing[f.index], f.path, f.reason, f.detail) for f in again.failures]
        failed = {f.index for f in failures}
        good = [i for i in index if i not in failed]
        matrix = np.stack([feats[i] for i in good]) if good else np.zeros((0, backbone.feature_dim), np.float32)
        yield index, matrix, sorted(failures, key=lambda f: f.index)


def _apply(b: dict, digests: list[str], failures: list[Failure], paths: list[Path]) -> list[tuple[int, str, np.ndarray]]:
    """Record a batch's digests and failures; return its computed rows (index, digest, vector)."""
    computed = []
    for j, i in enumerate(b["index"]):
        i = int(i)
        digests[i] = str(b["digest"][j])
        if b["state"][j] == FAILED:
            failures.append(Failure(i, paths[i], str(b["reason"][j]), str(b["detail"][j])))
        elif b["state"][j] == COMPUTE:
            computed.append((i, digests[i], np.frombuffer(b["vector"][j], np.float32)))
    return computed


def _fill_from_cache(b: dict, cache: FeatureCache | None, key: str, feats: np.ndarray) -> list[int]:
    """Put the cached rows of batch ``b`` into ``feats``; returns the indices no longer cached."""
    cached = [(int(i), str(d)) for i, d, s in zip(b["index"], b["digest"], b["state"]) if s == CACHED]
    if not cached or cache is None:
        return []
    hit = cache.get(key, [d for _, d in cached])
    for i, d in cached:
        if d in hit:
            feats[i] = hit[d]
    return [i for i, d in cached if d not in hit]


def _cached_digests(cache: FeatureCache, key: str) -> np.ndarray:
    """The digests ``cache`` holds for ``key`` (whole rows only), sorted raw sha256 bytes (N,) S32:
    32 bytes a file, so 10 million cached images ship as 320 MB to each node, shared by its workers."""
    out = np.array([bytes.fromhex(d) for d in cache.digests(key)], dtype="S32")
    out.sort()
    return out


def _quiet_ray_data() -> None:
    """Our one progress bar instead of Ray Data's per-operator bars and INFO logs."""
    import logging
    import warnings

    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled"
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="features (ray)", unit="img", file=sys.stderr, dynamic_ncols=True)
