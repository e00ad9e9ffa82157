"""Images/s of feature extraction: one process (``extract_features``, the baseline) against
Ray Data with 1 and 2 backbone actors on a local Ray, over the same files, no cache; then a
second Ray run over the same files with the cache full (the workers only read and hash).

    .venv/bin/python benchmarks/ray_embed.py [--data ../shared/datasets/clothing-small] [--limit 300]

Needs ``pip install 'headstart[cluster]'``. The Ray figures include starting the actors
(unpickling the backbone, opening ONNX Runtime) but not starting Ray itself, printed apart.
The one-process baseline is given the sha256 digests (the scan computes them); the Ray runs
compute them on the workers, so they do slightly more work.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "clothing-small"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--limit", type=int, default=300, help="first N images of the scan (default 300)")
    ap.add_argument("--batch-size", type=int, default=32)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"data set not found at {args.data}: expected ../shared/datasets/clothing-small "
              "(see ../shared/datasets/README.md), or pass --data DIR", file=sys.stderr)
        return 2
    os.environ.setdefault("HEADSTART_CACHE_DIR", tempfile.mkdtemp(prefix="hs-ray-bench-"))  # ONNX export only
    import ray

    from headstart.backbones import create_backbone
    from headstart.data.scan import scan
    from headstart.features import FeatureCache, extract_features
    from headstart.features.ray import RayConfig, ray_extract

    samples = scan(args.data).samples[: args.limit]
    paths = [s.path for s in samples]
    bb = create_backbone()
    print(f"{len(paths)} images from {args.data}, {os.cpu_count()} CPUs, batch {args.batch_size}")
    extract_features(bb, paths[:8])  # ONNX export + warm-up, outside the timings

    t = time.perf_counter()
    ref = extract_features(bb, paths, batch_size=args.batch_size)
    base = len(paths) / (time.perf_counter() - t)
    print(f"one process (extract_features, one decode+ONNX lane per core): {base:7.1f} img/s   1.00x")

    t = time.perf_counter()
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    print(f"(ray.init of a local Ray: {time.perf_counter() - t:.1f} s, not counted below)")
    cache = FeatureCache(Path(tempfile.mkdtemp(prefix="hs-ray-bench-cache-")) / "features.sqlite")
    for workers in (1, 2):
        cfg = RayConfig(num_workers=workers, cpus_per_worker=1, batch_size=args.batch_size)
        t = time.perf_counter()
        ex = ray_extract(bb, paths, config=cfg, cache=cache if workers == 2 else None)
        rate = len(paths) / (time.perf_counter() - t)
        diff = float(np.nanmax(np.abs(ex.features[ex.ok] - ref.features[ex.ok]))) if ex.ok.any() else float("nan")
        print(f"ray, {workers} actor(s) x 1 CPU (read + hash + decode in 2 threads each): {rate:7.1f} img/s   "
              f"{rate / base:.2f}x   (max |diff| vs one process {diff:.1e})")
    t = time.perf_counter()
    ex = ray_extract(bb, paths, config=RayConfig(num_workers=2, cpus_per_worker=1, batch_size=args.batch_size),
                     cache=cache, keep_features=False)
    rate = len(paths) / (time.perf_counter() - t)
    print(f"ray again, cache full ({ex.n_cached} cached, {ex.n_computed} computed; workers read + hash only): "
          f"{rate:7.1f} img/s   {rate / base:.2f}x")
    cache.close()
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
