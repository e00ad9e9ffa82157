"""Feature extraction over a Ray cluster (Ray Data), feeding the same ``FeatureCache``.

The pipeline, one Ray Data dataset of the files whose features are not cached yet::

    from_items(path, digest) ──map_batches(_decode)──▶ pixels, ok, reason, detail      (tasks, 1 CPU each)
        ──map_batches(_Embedder, concurrency=workers)──▶ digest, backbone, vector, ...  (actor pool)
        ──iter_batches on the driver──▶ FeatureCache rows (+ Parquet shards with --out)

Rows are keyed as on one machine (backbone ``cache_key``, sha256 of the file), so a later
single-machine ``train`` or ``predict`` reuses what the cluster computed, and a second run
only sends the missing digests. Files must be readable by every worker at the same path
(a shared or network file system). Ray Data retries a task whose worker dies and restarts a
dead actor, so one lost worker does not lose the job.

>>> ex = ray_extract(create_backbone(), paths, digests, cache=FeatureCache())   # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import HeadstartError
from .features import DECODE_THREADS, Extraction, Failure, FeatureCache

INSTALL_HINT = "pip install 'headstart[cluster]'   (adds ray[data] and pyarrow)"
CONNECT_TIMEOUT_S = 5.0
DIE_ONCE_ENV = "HEADSTART_RAY_DIE_ONCE"  # tests: a marker path; the first actor batch kills its process once
SHARD_ROWS = 4096  # rows per Parquet shard written with --out


@dataclass(frozen=True)
class RayConfig:
    """Where and how wide: ``address`` None starts a local Ray; "auto" or "HOST:PORT" joins one."""

    address: str | None = None
    num_workers: int = 1           # backbone actors
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    batch_size: int = 32
    local_cpus: int | None = None  # a local Ray's CPUs (default: this machine's)


def require_ray():
    """``ray`` imported, or a HeadstartError saying how to install it."""
    try:
        import ray  # noqa: F401
        import pyarrow  # noqa: F401
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
        _check_reachable(addr)
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


def _check_reachable(addr: str) -> None:
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

def _decode(batch: dict, *, p) -> dict:
    """Decode + preprocess one batch of files; failures become rows with ok=False."""
    from .data.images import ImageDecodeError, open_image
    from .data.transforms import preprocess

    mode = "RGB" if p.channels == 3 else "L"
    n = len(batch["path"])
    pixels = np.zeros((n, p.channels, p.input_size, p.input_size), np.float32)  # (B, C, H, W)
    ok, reason, detail = np.ones(n, bool), [""] * n, [""] * n

    def work(i: int) -> None:
        try:
            pixels[i] = preprocess(open_image(str(batch["path"][i]), mode=mode, draft_size=p.draft_size), p)
        except ImageDecodeError as e:
            ok[i], reason[i], detail[i] = False, e.reason, e.detail
        except OSError as e:
            ok[i], reason[i], detail[i] = False, "unreadable", str(e)

    # Pillow releases the GIL while decoding; Ray Data may fuse this stage into the actor's
    with ThreadPoolExecutor(DECODE_THREADS) as pool:
        list(pool.map(work, range(n)))
    return {"path": batch["path"], "digest": batch["digest"], "pixels": pixels, "ok": ok,
            "reason": np.array(reason, dtype=object), "detail": np.array(detail, dtype=object)}


class _Embedder:
    """One backbone per actor; ONNX Runtime (or torch on a GPU) with the actor's CPU share."""

    def __init__(self, backbone, threads: int, engine: str, die_once: str | None = None):
        import torch

        from .engines import TorchEngine, _export_once

        self.key, self.dim = backbone.cache_key, backbone.feature_dim
        self.die_once = die_once
        torch.set_num_threads(threads)
        p = backbone.preprocess
        if engine == "torch" or (engine == "auto" and torch.cuda.is_available()):
            self.run = TorchEngine(backbone)
        else:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            path = _export_once(backbone, self.key, (p.channels, p.input_size, p.input_size))
            session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            self.run = lambda x: session.run(None, {name: np.ascontiguousarray(x)})[0]

    def __call__(self, batch: dict) -> dict:
        if self.die_once and not os.path.exists(self.die_once):
            Path(self.die_once).touch()  # tests: this process dies once, mid-job
            os._exit(1)
        ok = batch["ok"].astype(bool)
        vectors = np.zeros((len(ok), self.dim), np.float32)  # (B, D); rows of failed files stay 0
        if ok.any():
            vectors[ok] = self.run(batch["pixels"][ok])
        return {"path": batch["path"], "digest": batch["digest"], "ok": ok, "reason": batch["reason"],
                "detail": batch["detail"], "vector": vectors}


# ---- the driver --------------------------------------------------------------------------------

def ray_extract(backbone, paths: Sequence[str | Path], digests: Sequence[str], *, config: RayConfig = RayConfig(),
                cache: FeatureCache | None = None, out: str | Path | None = None, engine: str = "auto",
                progress: bool = False) -> Extraction:
    """Like ``features.extract_features`` (same ``Extraction``, same ``Failure`` rows), with
    the uncached images embedded on a Ray cluster. Each distinct digest is sent once."""
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    out_feats = np.full((len(paths), backbone.feature_dim), np.nan, dtype=np.float32)
    key = backbone.cache_key
    hit = cache.get(key, digests) if cache is not None else {}
    where: dict[str, list[int]] = {}
    for i, d in enumerate(digests):
        if d in hit:
            out_feats[i] = hit[d]
        else:
            where.setdefault(d, []).append(i)
    n_cached = len(paths) - sum(map(len, where.values()))
    failures: list[Failure] = []
    writer = _ShardWriter(Path(out), key) if out is not None else None
    if where:
        connect(config)
        import ray

        _quiet_ray_data()
        items = [{"path": str(paths[idx[0]]), "digest": d} for d, idx in where.items()]
        n_blocks = -(-len(items) // config.batch_size)  # about one batch per block: every actor gets work
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(n_blocks, 10_000)))
        ds = ds.map_batches(_decode, fn_kwargs={"p": backbone.preprocess}, batch_size=config.batch_size,
                            batch_format="numpy", num_cpus=1)
        ds = ds.map_batches(
            _Embedder, batch_size=config.batch_size, batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=config.num_workers),
            num_cpus=config.cpus_per_worker, num_gpus=config.gpus_per_worker or None,
            fn_constructor_kwargs={"backbone": backbone.cpu().eval(),
                                   "threads": max(1, int(config.cpus_per_worker)), "engine": engine,
                                   "die_once": os.environ.get(DIE_ONCE_ENV)})
        # A dead actor is restarted and its batch retried: Ray Data's defaults for actor pools
        # (max_restarts=-1, max_task_retries=-1); decoding tasks are retried too (max_retries).
        bar = _progress(len(items), progress)
        seen: set[str] = set()
        for b in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
            good = []
            for j, d in enumerate(b["digest"]):
                d = str(d)
                if d in seen:  # a retried block may deliver a row twice: keep the first
                    continue
                seen.add(d)
                if b["ok"][j]:
                    vec = b["vector"][j]
                    out_feats[where[d]] = vec
                    good.append((d, vec))
                else:
                    for i in where[d]:
                        failures.append(Failure(i, paths[i], str(b["reason"][j]), str(b["detail"][j])))
            if cache is not None and good:
                cache.put(key, good)
            if writer is not None:
                writer.add(good)
            if bar is not None:
                bar.update(len(b["digest"]))
        if bar is not None:
            bar.close()
        missing = set(where) - seen
        if missing:  # every image must be accounted for: a lost row is a bug, not a skip
            raise RuntimeError(f"the Ray job returned no row for {len(missing)} of {len(where)} images")
    if writer is not None:
        writer.close()
    failures.sort(key=lambda f: f.index)
    n_done = sum(map(len, where.values()))
    return Extraction(out_feats, failures, n_cached, n_done - len(failures), time.perf_counter() - t0)


class _ShardWriter:
    """Parquet shards (digest, backbone, vector), ``SHARD_ROWS`` rows each, written atomically."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key, self.rows = folder, key, []
        self.n = 0
        folder.mkdir(parents=True, exist_ok=True)
        self.stamp = f"{int(time.time())}-{os.getpid()}"

    def add(self, rows: list[tuple[str, np.ndarray]]) -> None:
        self.rows += rows
        while len(self.rows) >= SHARD_ROWS:
            self._flush(self.rows[:SHARD_ROWS])
            self.rows = self.rows[SHARD_ROWS:]

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)
            self.rows = []

    def _flush(self, rows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .paths import atomic_path

        dim = len(rows[0][1])
        table = pa.table({
            "digest": pa.array([d for d, _ in rows], pa.string()),
            "backbone": pa.array([self.key] * len(rows), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([v for _, v in rows]).astype(np.float32)), dim),
        })
        with atomic_path(self.folder / f"features-{self.stamp}-{self.n:05d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.n += 1


def import_shards(folder: str | Path, cache: FeatureCache) -> int:
    """Put every row of the Parquet shards in ``folder`` into ``cache``; returns the row count."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HeadstartError(f"reading Parquet shards needs pyarrow. Install it with: {INSTALL_HINT}") from None
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise HeadstartError(f"no Parquet shards (*.parquet) in {str(folder)!r}. Expected the --out folder of "
                             "`headstart embed DATA --ray --out DIR`.")
    n = 0
    for f in files:
        t = pq.read_table(f, columns=["digest", "backbone", "vector"])
        digests, keys = t["digest"].to_pylist(), t["backbone"].to_pylist()
        vecs = np.asarray(t["vector"].combine_chunks().flatten(), np.float32).reshape(len(digests), -1)
        by_key: dict[str, list] = {}
        for d, k, v in zip(digests, keys, vecs):
            by_key.setdefault(k, []).append((d, v))
        for k, rows in by_key.items():
            cache.put(k, rows)
        n += len(digests)
    return n


def _quiet_ray_data() -> None:
    """Our one progress bar instead of Ray Data's per-operator bars and INFO logs."""
    import logging
    import warnings

    import ray

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message="The minimum number of concurrent actors")


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="features (ray)", unit="img", file=sys.stderr, dynamic_ncols=True)
