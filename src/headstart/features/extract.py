"""Frozen-backbone features of image files: decoded and embedded in parallel lanes, cached."""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import ImageDecodeError
from ..data.inputs import load_input
from ..data.transforms import Preprocess
from ..threads import one_torch_thread
from .cache import FeatureCache

DECODE_THREADS = 2
MAX_LANES = 8  # one-thread extraction lanes at most (each holds one batch of images)
LANE_BATCH = 4  # images per backbone call in a lane: on a CPU larger calls cost more per image (memory traffic)


@dataclass
class Failure:
    """An image that could not be used, with the reason code and a human explanation."""

    index: int
    path: Path
    reason: str
    detail: str


@dataclass
class Extraction:
    features: np.ndarray                  # (N, D) float32; rows of failed images are NaN
    failures: list[Failure] = field(default_factory=list)
    n_cached: int = 0
    n_computed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of rows that hold real features."""
        mask = np.ones(len(self.features), dtype=bool)
        mask[[f.index for f in self.failures]] = False
        return mask


def _decode_one(paths: Sequence[Path], i: int, p: Preprocess) -> tuple[int, np.ndarray | None, Failure | None]:
    """Image ``i`` as the backbone's input array, or the reason it cannot be used."""
    try:
        return i, load_input(paths[i], p), None
    except ImageDecodeError as e:
        return i, None, Failure(i, Path(paths[i]), e.reason, e.detail)
    except OSError as e:
        return i, None, Failure(i, Path(paths[i]), "unreadable", str(e))


def _collect(results, p: Preprocess) -> tuple[list[int], np.ndarray, list[Failure]]:
    idx = [i for i, a, _ in results if a is not None]
    arrays = [a for _, a, _ in results if a is not None]
    fails = [f for _, _, f in results if f is not None]
    if len(arrays) == 1:
        return idx, arrays[0][None], fails  # a view: no copy for a batch of one
    batch = np.stack(arrays) if arrays else np.zeros((0, p.channels, p.input_size, p.input_size), np.float32)
    return idx, batch, fails


def load_batches(paths: Sequence[Path], p: Preprocess, batch_size: int,
                 threads: int = DECODE_THREADS) -> Iterator[tuple[list[int], np.ndarray, list[Failure]]]:
    """Decode and preprocess images in background threads, yielding batches in order.

    At most two batches are in flight, so memory stays flat whatever the number of images,
    and decoding overlaps with the backbone's work on the previous batch. JPEGs are decoded
    in draft mode straight to about the size the resize needs (much faster, same result
    to within resampling noise).
    """
    def work(i: int):
        return _decode_one(paths, i, p)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        pending: deque = deque()
        starts = range(0, len(paths), batch_size)
        it = iter(starts)
        for _ in range(2):
            s = next(it, None)
            if s is not None:
                pending.append(pool.map(work, range(s, min(s + batch_size, len(paths)))))
        while pending:
            results = list(pending.popleft())
            s = next(it, None)
            if s is not None:
                pending.append(pool.map(work, range(s, min(s + batch_size, len(paths)))))
            yield _collect(results, p)


def embed_in_lanes(paths: Sequence[Path], p: Preprocess, batch_size: int, run: Callable[[np.ndarray], np.ndarray],
                   lanes: int) -> Iterator[tuple[list[int], np.ndarray, list[Failure]]]:
    """Features batch by batch, in order: each of ``lanes`` threads decodes a batch and runs it
    through ``run`` (one-thread ONNX Runtime or OpenVINO, safe to call from every lane at once).

    Each lane does the whole work of its batch, so no core waits for another (faster than
    decoding threads feeding one multi-thread session: benchmarks/predict_speed.py); PyTorch's
    resampling in a lane runs on the lane's own thread (``threads.one_torch_thread``). At most
    ``lanes + 1`` batches are in flight, so memory stays flat.
    """
    def work(start: int):
        idx, batch, fails = _collect([_decode_one(paths, i, p) for i in range(start, min(start + batch_size, len(paths)))], p)
        return idx, (run(batch) if len(idx) else batch), fails

    with ThreadPoolExecutor(max_workers=lanes, initializer=one_torch_thread) as pool:
        starts = iter(range(0, len(paths), batch_size))
        pending = deque(pool.submit(work, s) for s in itertools.islice(starts, lanes + 1))
        while pending:
            result = pending.popleft().result()
            s = next(starts, None)
            if s is not None:
                pending.append(pool.submit(work, s))
            yield result


def lanes_for(engine: str) -> int:
    """How many one-thread lanes extraction runs with ``engine`` on this machine (0: one
    multi-thread engine fed by decoding threads, as on a GPU or with PyTorch). OpenVINO gets
    two per core: its calls run on the engine's own thread per core while the calling lane
    waits, so the second lane decodes meanwhile and no core waits for a decode (ONNX Runtime's
    one-thread calls run in the lane itself)."""
    from ..backbones.engines import resolve

    cores = os.cpu_count() or 1
    name = resolve(engine)
    if name == "torch" or cores < 2:
        return 0
    return min(cores * (2 if name == "openvino" else 1), MAX_LANES)


def extract_features(backbone, paths: Sequence[str | Path], digests: Sequence[str] | None = None, *,
                     cache: FeatureCache | None = None, batch_size: int = 32, engine: str = "auto",
                     progress: bool = False, on_batch: Callable[[int, int], None] | None = None) -> Extraction:
    """Features of ``paths`` from a frozen ``backbone``; cached rows are reused when ``digests``
    (sha256 of each file, as in ``Sample.digest``) and ``cache`` are given.

    >>> ex = extract_features(create_backbone(), ["cat.jpg"])   # doctest: +SKIP
    >>> ex.features.shape
    (1, 1904)
    """
    t0 = time.perf_counter()
    paths = [Path(p) for p in paths]
    out = np.full((len(paths), backbone.feature_dim), np.nan, dtype=np.float32)
    from ..backbones.engines import features_key, resolve

    key = features_key(backbone.cache_key, engine)
    todo = list(range(len(paths)))
    n_cached = 0
    if cache is not None and digests is not None:
        hit = cache.get(key, digests)
        for i, d in enumerate(digests):
            if d in hit:
                out[i] = hit[d]
        todo = [i for i, d in enumerate(digests) if d not in hit]
        n_cached = len(paths) - len(todo)
    failures: list[Failure] = []
    if todo:
        p = backbone.preprocess
        lanes = lanes_for(engine)
        todo_paths = [paths[i] for i in todo]
        if lanes:
            run = backbone.engine(prefer=resolve(engine), threads=1, spin=False)
            batches = embed_in_lanes(todo_paths, p, min(batch_size, LANE_BATCH), run, lanes)
        else:
            run = backbone.engine(prefer=engine)
            batches = ((idx, run(batch) if len(idx) else batch, fails)
                       for idx, batch, fails in load_batches(todo_paths, p, batch_size))
        bar = _progress(len(todo), "features", progress)
        done = 0
        for idx, feats, fails in batches:
            for f in fails:
                failures.append(Failure(todo[f.index], f.path, f.reason, f.detail))
            if len(idx):
                rows = [todo[i] for i in idx]
                out[rows] = feats
                if cache is not None and digests is not None:
                    cache.put(key, [(digests[r], out[r]) for r in rows])
            done += len(idx) + len(fails)
            if bar is not None:
                bar.update(len(idx) + len(fails))
            if on_batch is not None:
                on_batch(done, len(todo))
        if bar is not None:
            bar.close()
    failures.sort(key=lambda f: f.index)
    return Extraction(out, failures, n_cached, len(todo) - len(failures), time.perf_counter() - t0)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)
