"""Feature extraction end to end vs the bare backbone, warm re-train time, peak memory.

    .venv/bin/python benchmarks/extract_speed.py [DATA] [--limit N] [--engine E] [--large N]

Prints, measured in this one run on this machine:
- the bare backbone's images/s on random tensors (batch 32; the fastest of one session, one-thread
  lanes, and lanes calling it with 4 images at a time, see bare.py);
- end-to-end extraction images/s from the JPEG files (decode, resize, forward), cold cache;
- their ratio (goal >= 0.8);
- peak RSS of extraction over N/4 and N images (run in child processes): memory should not
  grow with the number of images beyond the (N, D) float32 feature matrix;
- the head's fit time on 10,000 cached feature vectors (goal: warm re-train < 5 s).

``--large N``: instead of DATA's own files, N camera-sized JPEGs (3 to 12 megapixels, quality 90)
made from DATA's photos by upscaling them into a temporary folder: the decoder's share of the
work on the photos users most often have (JPEG draft mode decodes them at 1/2 to 1/8 scale).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "clothing-small"


def large_photos(data: str, n: int, out: Path) -> Path:
    """``n`` JPEGs of 3-12 MP upscaled from ``data``'s photos, in class folders under ``out``."""
    from PIL import Image

    from headstart.data.scan import scan

    samples = scan(data).samples
    rng = np.random.default_rng(0)
    for k, s in enumerate(samples[:: max(1, len(samples) // n)][:n]):
        mp = rng.uniform(3, 12) * 1e6
        with Image.open(s.path) as img:
            img = img.convert("RGB")
            scale = (mp / (img.width * img.height)) ** 0.5
            big = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        dest = out / s.label / f"{k:05d}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        big.save(dest, quality=90)
    return out


def child(data: str, limit: int, cache_dir: str, engine: str = "auto") -> dict:
    """Run in a fresh process: extract features for the first ``limit`` images."""
    os.environ["HEADSTART_CACHE_DIR"] = cache_dir
    import numpy as np

    from headstart.backbones import create_backbone
    from headstart.data.scan import scan
    from headstart.features import FeatureCache, extract_features

    from bare import bare_rates, best, describe

    bb = create_backbone()
    p = bb.preprocess
    x = np.random.default_rng(0).standard_normal((32, 3, p.input_size, p.input_size)).astype(np.float32)
    rates = bare_rates(bb, x, seconds=8, engine=engine)
    how, bare = best(rates)
    samples = scan(data).samples[:limit]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    ex = extract_features(bb, [s.path for s in samples], [s.digest for s in samples], cache=FeatureCache(),
                          engine=engine)
    e2e = len(samples) / (time.perf_counter() - t)
    return {"n": len(samples), "bare_img_s": bare, "e2e_img_s": e2e, "engine": how, "bare_all": describe(rates),
            "rss_before_mb": rss_before, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "feature_matrix_mb": ex.features.nbytes / 2**20, "failures": len(ex.failures)}


def head_fit_seconds(n: int = 10_000, dim: int = 1904, classes: int = 10) -> float:
    import numpy as np

    from headstart.tasks import Multiclass
    from headstart.training.head import HeadConfig, fit_head

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((classes, dim)).astype(np.float32)
    y = rng.integers(0, classes, n)
    x = centers[y] + 2 * rng.standard_normal((n, dim)).astype(np.float32)
    task = Multiclass([f"c{i}" for i in range(classes)])
    labels = [task.labels[i] for i in y]
    t = time.perf_counter()
    fit_head(task, x, labels, HeadConfig())
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("data", nargs="?", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=100_000)
    ap.add_argument("--engine", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"])
    ap.add_argument("--large", type=int, metavar="N", help="time N upscaled 3-12 MP JPEGs made from DATA instead")
    ap.add_argument("--child", nargs=2, metavar=("LIMIT", "CACHE"))
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.data, int(args.child[0]), args.child[1], args.engine)))
        return 0
    print(f"{os.cpu_count()} CPU cores; load average {os.getloadavg()[0]:.1f} at start; engine {args.engine}")
    if args.large:
        with tempfile.TemporaryDirectory() as d:
            big = large_photos(args.data, args.large, Path(d))
            mp = [np.prod(Image.open(p).size) / 1e6 for p in big.rglob("*.jpg")]
            print(f"{len(mp)} JPEGs of {min(mp):.1f}-{max(mp):.1f} MP (mean {np.mean(mp):.1f}) upscaled from {args.data}")
            with tempfile.TemporaryDirectory() as cache:
                out = subprocess.run([sys.executable, __file__, str(big), "--engine", args.engine, "--child",
                                      str(len(mp)), cache], capture_output=True, text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"bare backbone on random tensors, batch 32: {r['bare_all']}")
        print(f"{r['n']} large JPEGs: bare ({r['engine']}, the faster) {r['bare_img_s']:.1f} img/s; end to end "
              f"{r['e2e_img_s']:.1f} img/s; ratio {r['e2e_img_s'] / r['bare_img_s']:.2f} (load average "
              f"{os.getloadavg()[0]:.1f})")
        return 0
    if not Path(args.data).is_dir():
        print(f"data folder {args.data} not found: pass a folder of class sub-folders "
              "(the default is ../shared/datasets/clothing-small beside the repository)", file=sys.stderr)
        return 2
    runs = []
    from headstart.data.scan import scan

    total = min(args.limit, len(scan(args.data).samples))
    for n in (total // 4, total):
        with tempfile.TemporaryDirectory() as cache:
            out = subprocess.run([sys.executable, __file__, args.data, "--engine", args.engine, "--child", str(n), cache],
                                 capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    for r in runs:
        print(f"{r['n']:>6} images: bare backbone on random tensors, batch 32: {r['bare_all']}")
        print(f"{r['n']:>6} images: bare backbone ({r['engine']}, the faster) {r['bare_img_s']:.1f} img/s; "
              f"end to end {r['e2e_img_s']:.1f} img/s; ratio {r['e2e_img_s'] / r['bare_img_s']:.2f}; "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (feature matrix {r['feature_matrix_mb']:.1f} MB)")
    growth = runs[1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]
    matrix = runs[1]["feature_matrix_mb"] - runs[0]["feature_matrix_mb"]
    print(f"peak RSS grew {growth:.0f} MB from {runs[0]['n']} to {runs[1]['n']} images "
          f"(feature matrix grew {matrix:.1f} MB)")
    print(f"head fit on 10,000 cached feature vectors (1904-d, 10 classes): {head_fit_seconds():.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
