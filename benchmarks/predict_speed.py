"""Prediction speed from JPEG files vs the bare backbone on random tensors, in one run.

    .venv/bin/python benchmarks/predict_speed.py [--model MODEL_DIR] [--data DIR] [--n 128]

Prints images/s of (a) the backbone engine alone on random (B, 3, 224, 224) tensors and
(b) ``ImageClassifier.predict_files`` on real JPEGs (decode, preprocess, backbone, head,
decoding of the scores; feature cache off, so files are not hashed), at batch 1 and batch
32, and the ratio b / a (goal >= 0.85). Without --model, a fresh untrained head stands in
(its cost is negligible; the speed does not depend on its weights).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "clothing-small" / "test"


def classifier(model_dir: str | None, engine: str):
    from headstart import ImageClassifier, load
    from headstart.backbones import create_backbone
    from headstart.heads import Head
    from headstart.tasks import Multiclass

    if model_dir:
        clf = load(model_dir, engine=engine)
    else:
        clf = ImageClassifier(engine=engine)
        clf.backbone_ = create_backbone()
        labels = [f"c{i}" for i in range(10)]
        clf.task_, clf.classes_ = Multiclass(labels), labels
        clf.head_ = Head(clf.backbone_.feature_dim, 10).eval()
    clf.use_cache = False
    return clf


def bare_rates_now(clf, batch: int, seconds: float, only: str | None = None) -> dict[str, dict]:
    """The ways of running the backbone alone on random tensors (bare.py), timed now."""
    from bare import bare_rates

    p = clf.backbone_.preprocess
    x = np.random.default_rng(0).standard_normal((batch, p.channels, p.input_size, p.input_size)).astype(np.float32)
    return bare_rates(clf.backbone_, x, seconds, clf.engine, only=only)


def predict_rate(clf, files: list[Path], batch: int) -> float:
    clf.batch_size = batch
    clf.predict_files(files[:batch])  # warm-up (engine session, thread pool)
    t = time.perf_counter()
    rows = clf.predict_files(files)
    dt = time.perf_counter() - t
    assert not any("error" in r for r in rows)
    return len(files) / dt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", help="model folder (default: untrained head on the embedded backbone)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"JPEG folder (default {DEFAULT_DATA})")
    ap.add_argument("--n", type=int, default=128, help="images per measurement (default 128)")
    ap.add_argument("--engine", default="auto", choices=["auto", "openvino", "onnxruntime", "torch"])
    ap.add_argument("--seconds", type=float, default=1.5,
                    help="seconds per bare-backbone timing (default 1.5, about as long as a prediction pass)")
    ap.add_argument("--rounds", type=int, default=7,
                    help="bare / predict / bare this many times; the median ratio is printed (default 7)")
    args = ap.parse_args()

    from bare import best, describe

    from headstart.data.scan import find_images

    if not Path(args.data).is_dir():
        print(f"data folder {args.data} not found: pass --data DIR of JPEG images", file=sys.stderr)
        return 2
    files = find_images([args.data])
    files = files[:: max(1, len(files) // args.n)][: args.n]
    clf = classifier(args.model, args.engine)
    print(f"{len(files)} JPEGs from {args.data}; {os.cpu_count()} CPU cores (load average "
          f"{os.getloadavg()[0]:.1f} at start)")
    from headstart.features.extract import LANE_BATCH, lanes_for

    print("each round times the bare backbone (every way), prediction from JPEGs, and the bare backbone's "
          "fastest way again, back to back; bare = the mean of the fastest way's two timings; the ratio printed "
          "last is the median of the rounds' ratios (the machine's speed drifts; this brackets each prediction)")
    if lanes_for(args.engine):
        print(f"(prediction runs {lanes_for(args.engine)} one-thread lanes, calling the backbone with up to "
              f"{LANE_BATCH} images at a time whatever the batch size: cheaper per image on a CPU; the bare "
              f"backbone is timed that way too and the faster way counts)")
    print(f"{'batch':>5}  {'round':>5}  {'bare backbone img/s':>20}  {'predict from JPEG img/s':>24}  {'ratio':>6}")
    for batch in (1, 32):
        ratios = []
        for r in range(args.rounds):
            # every way of running the bare backbone; prediction; the fastest way again, right after:
            # the machine's speed drifts, and the mean of the two brackets prediction's moment
            before = bare_rates_now(clf, batch, args.seconds)
            fastest, rate = best(before)
            pred = predict_rate(clf, files, batch)
            after = bare_rates_now(clf, batch, args.seconds, only=fastest)[fastest]["img_s"]
            bare = (rate + after) / 2
            ratios.append(pred / bare)
            print(f"{batch:>5}  {r + 1:>5}  {bare:>20.1f}  {pred:>24.1f}  {pred / bare:>6.2f}   "
                  f"({describe(before)}; after: {after:.1f} img/s)", flush=True)
        print(f"{batch:>5}  median ratio {float(np.median(ratios)):.2f}  (load average {os.getloadavg()[0]:.1f})",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
