"""The bare backbone on ONNX Runtime and on OpenVINO (f32 and bf16), each way of using the cores,
back to back in one run; and how far each engine's features are from ONNX Runtime's.

    .venv/bin/python benchmarks/openvino_engines.py [SECONDS]

Prints images/s and CPU milliseconds per image (the steadier figure on a shared machine) for:
one call at a time with every core, and one one-thread lane (ONNX Runtime) or stream (OpenVINO)
per core, at batch 1, 4 and 32.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))


def main() -> int:
    from bare import _timed

    from headstart.backbones import create_backbone
    from headstart.backbones.engines import _export_once, make_engine
    from headstart.backbones.openvino_engine import OpenVinoEngine

    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 5.0
    cores = os.cpu_count() or 1
    print(f"{cores} CPU cores; load average {os.getloadavg()[0]:.1f} at start")
    bb = create_backbone()
    shape = bb.input_shape
    path = _export_once(bb, bb.cache_key, shape)
    x32 = np.random.default_rng(0).standard_normal((32, *shape)).astype(np.float32)
    ort = make_engine(bb, bb.cache_key, shape, prefer="onnxruntime")
    ort_lane = make_engine(bb, bb.cache_key, shape, prefer="onnxruntime", threads=1, spin=False)
    ref = ort(x32)
    ways = {"onnxruntime": (ort, ort_lane)}
    for precision in ("f32", "bf16"):
        t = time.perf_counter()
        one = OpenVinoEngine(path, precision=precision)
        lane = OpenVinoEngine(path, threads=1, precision=precision)
        print(f"openvino {precision}: compiled in {time.perf_counter() - t:.1f} s; largest |feature difference| "
              f"from onnxruntime {float(np.abs(one(x32) - ref).max()):.2e} (features up to {float(np.abs(ref).max()):.1f})")
        ways[f"openvino {precision}"] = (one, lane)
    for name, (one, lane) in ways.items():
        for how, engine, threads in (("one call at a time", one, 1), (f"{cores} one-thread lanes", lane, cores)):
            for b in (1, 4, 32):
                r = _timed(lambda: engine(x32[:b]), b, seconds, threads)
                print(f"{name:>14}, {how}, batch {b:>2}: {r['img_s']:6.1f} img/s, {r['cpu_ms']:5.1f} CPU ms/img")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
