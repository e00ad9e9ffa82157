"""What the server's engine settings cost in speed and give back in memory.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_memory.py [--seconds 8]

Each setting runs in a fresh subprocess, as the server runs its engine: the embedded backbone,
one-thread ONNX Runtime sessions without spin-waiting, one per core, each run by its own
thread. It prints the RSS at start (backbone loaded, session made), after a burst of batches of
32 and 1, after 3 s idle, and after ``malloc_trim(0)``; then images/s at batch 32 and at
batch 1. Settings: ONNX Runtime's CPU memory arena on (its default), off, or shrunk after
every call (``memory.enable_memory_arena_shrinkage``), and
``MALLOC_ARENA_MAX=2`` (glibc's per-thread heaps capped); and OpenVINO f32, one-thread
requests, for comparison. Timings on a shared machine are
noisy: compare within one run; the settings alternate twice.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(arena: bool | str, seconds: float) -> dict:
    import numpy as np

    from headstart.backbones.registry import create_backbone
    from headstart.serve.guard import release_memory

    bb = create_backbone()
    lanes = os.cpu_count() or 1
    eng = (bb.engine(prefer="openvino", threads=1) if arena == "openvino"
           else bb.engine(prefer="onnxruntime", threads=1, spin=False, arena=arena))
    p = bb.preprocess
    x32 = np.random.default_rng(0).random((32, p.channels, p.input_size, p.input_size), dtype=np.float32)
    out = {"start": rss_mb()}
    pool = ThreadPoolExecutor(lanes)

    def rate(batch: np.ndarray) -> float:
        list(pool.map(lambda _: eng(batch), range(lanes)))  # warm-up
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            list(pool.map(lambda _: eng(batch), range(lanes)))
            n += lanes * len(batch)
        return n / (time.perf_counter() - t0)

    out["img_s_32"] = rate(x32)
    out["img_s_1"] = rate(x32[:1])
    out["after_burst"] = rss_mb()
    time.sleep(3)
    out["idle"] = rss_mb()
    release_memory()
    out["trimmed"] = rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=8.0, help="timing per batch size (default 8)")
    ap.add_argument("--child", choices=["on", "off", "shrink", "openvino"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child({"on": True, "off": False}.get(args.child, args.child), args.seconds)))
        return
    settings = {"arena on (ORT default)": ("on", {}), "arena off": ("off", {}),
                "arena shrunk after each call": ("shrink", {}),
                "arena off, MALLOC_ARENA_MAX=2": ("off", {"MALLOC_ARENA_MAX": "2"}),
                "OpenVINO f32 (what auto picks)": ("openvino", {})}
    print(f"{os.cpu_count()} cores; loadavg {open('/proc/loadavg').read().split()[:3]}", flush=True)
    for rnd in range(2):
        for name, (flag, env) in settings.items():
            r = subprocess.run([sys.executable, __file__, "--child", flag, "--seconds", str(args.seconds)],
                               capture_output=True, text=True, env={**os.environ, **env}, check=True)
            m = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"round {rnd + 1} {name:32s} RSS MB start {m['start']:5.0f}  after burst {m['after_burst']:5.0f}  "
                  f"idle {m['idle']:5.0f}  trimmed {m['trimmed']:5.0f}  |  img/s batch 32 {m['img_s_32']:6.1f}  "
                  f"batch 1 {m['img_s_1']:6.1f}", flush=True)


if __name__ == "__main__":
    main()
