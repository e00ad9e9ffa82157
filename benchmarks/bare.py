"""The baseline every speed ratio divides by: the bare backbone on arrays already in memory.

ONNX Runtime and OpenVINO (one stream per lane) can use the cores two ways, and which is faster depends on the machine and on
what else runs on it (on 2 shared cores the lanes won by up to 2x, measured here):

- one session with a thread per core (its default, threads spin-waiting between operators);
- one one-thread session run by one thread per core ("lanes"), no spinning;
- for batches larger than ``features.LANE_BATCH``, lanes that run the batch in calls of that
  many images (what headstart's own lanes do: cheaper per image on a CPU, measured here);
- OpenVINO runs a call on its stream's own thread while the caller waits, so its lanes are also
  timed two per core (as many as headstart's own lanes, ``features.lanes_for``).

``bare_rates`` times both, back to back, and the benchmarks divide by the faster one, so a
ratio never flatters headstart by comparing it with a badly run backbone.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def bare_rates(backbone, x: np.ndarray, seconds: float = 5.0, engine: str = "auto",
               only: str | None = None) -> dict[str, dict]:
    """``{"how": {"img_s": ..., "cpu_ms": ...}}`` for each way of running ``backbone`` on ``x``
    (a (B, C, H, W) float32 batch), each for about ``seconds``; ``only``: that way alone."""
    from headstart.backbones.engines import make_engine
    from headstart.features.extract import LANE_BATCH, lanes_for

    p = backbone.preprocess
    shape = (p.channels, p.input_size, p.input_size)
    one = make_engine(backbone, backbone.cache_key, shape, prefer=engine)
    ways = {f"{one.name}, one session": (lambda: one(x), 1)}
    cores = os.cpu_count() or 1
    if one.name in ("onnxruntime", "openvino") and cores > 1:
        lane = make_engine(backbone, backbone.cache_key, shape, prefer=one.name, threads=1, spin=False)
        for lanes in sorted({cores, lanes_for(one.name) or cores}):  # OpenVINO: two callers per core too
            ways[f"{one.name}, {lanes} one-thread lanes"] = (lambda: lane(x), lanes)
            if len(x) > LANE_BATCH:
                ways[f"{one.name}, {lanes} one-thread lanes, {LANE_BATCH} images per call"] = (
                    lambda: [lane(x[i:i + LANE_BATCH]) for i in range(0, len(x), LANE_BATCH)], lanes)
    return {name: _timed(call, len(x), seconds, threads) for name, (call, threads) in ways.items()
            if only is None or name == only}


def best(rates: dict[str, dict]) -> tuple[str, float]:
    name = max(rates, key=lambda k: rates[k]["img_s"])
    return name, rates[name]["img_s"]


def describe(rates: dict[str, dict]) -> str:
    return "; ".join(f"{k}: {v['img_s']:.1f} img/s, {v['cpu_ms']:.1f} CPU ms/img" for k, v in rates.items())


def _timed(call, batch: int, seconds: float, threads: int) -> dict:
    call()  # warm-up (and, for a fresh session, its first-run allocations)
    stop = time.perf_counter() + seconds

    def loop() -> int:
        n = 0
        while time.perf_counter() < stop:
            call()
            n += batch
        return n

    t0, cpu0 = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(lambda _: loop(), range(threads)))
    wall = time.perf_counter() - t0
    return {"img_s": n / wall, "cpu_ms": (time.process_time() - cpu0) / n * 1000}
