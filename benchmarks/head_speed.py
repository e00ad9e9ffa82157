"""Head training on cached features: seconds to fit the default head on N feature vectors.

    PYTHONPATH=src .venv/bin/python benchmarks/head_speed.py [--n 10000] [--threads 2] [--repeat 3]

Synthetic 1904-d vectors (the width of the embedded backbone's four-stage features) with class
structure: 10 classes, each a random mean plus noise, non-negative like pooled activations.
N vectors train, N/10 validate (the default split's share), N/5 test. The fit is the real one
(``training.select_and_fit`` with the default ``HeadConfig``: its epochs, validation every epoch,
threshold tuning), timed after the data are built and torch is imported. Prints the seconds of
each repeat and their median, the epochs, batch and steps run, and the test accuracy (a check
that a faster loop still learns the same thing), and a yardstick timed in the same run: a fixed
amount of work, the first layer's float32 matmuls of the earlier batch-128 recipe (948 steps of 128
vectors for 10,000), so the ratio compares days and machines. The goal: 10,000 vectors in under 3 s.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def synthetic(n: int, dim: int = 1904, classes: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, 1.0, (classes, dim)).astype(np.float32)

    def draw(m: int):
        y = rng.integers(0, classes, m)
        x = means[y] * 0.08 + rng.normal(0.0, 1.0, (m, dim)).astype(np.float32)
        return np.maximum(x + 0.5, 0.0).astype(np.float32), [f"c{i}" for i in y]

    return draw(n), draw(max(1, n // 10)), draw(max(1, n // 5))


def yardstick(torch, dim: int, n: int, batch: int = 128, hidden: int = 256, max_steps: int = 1000) -> float:
    """Seconds of the earlier batch-128 recipe's first-layer arithmetic in float32: per step, the (B, D) x
    (D, hidden) forward matmul and its weight gradient, as many steps as that recipe ran."""
    per_epoch = -(-n // batch)
    steps = per_epoch * max(1, min(max(25, -(-200 // per_epoch)), max_steps // per_epoch))
    x = torch.randn(batch, dim)
    w = torch.randn(hidden, dim, requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(steps):
        (x @ w.t()).sum().backward()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="training vectors (default 10000)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="fits to time (default 3)")
    args = ap.parse_args()

    import torch

    from headstart.tasks import Multiclass
    from headstart.training.head import HeadConfig, predict_scores, select_and_fit

    torch.set_num_threads(args.threads)
    (xt, yt), (xv, yv), (xs, ys) = synthetic(args.n)
    labels = sorted(set(yt))
    times = []
    for _ in range(args.repeat):
        task = Multiclass(labels)
        t0 = time.perf_counter()
        fit = select_and_fit(task, xt, yt, xv, yv, HeadConfig())
        times.append(time.perf_counter() - t0)
    floor = yardstick(torch, xt.shape[1], len(xt))
    pred = predict_scores(task, fit.head, xs).argmax(1)
    acc = float(np.mean([labels[p] == y for p, y in zip(pred, ys)]))
    epochs, steps = HeadConfig().plan(len(xt))
    print(f"n={args.n} dim={xt.shape[1]} threads={args.threads} epochs={epochs} batch={HeadConfig().batch_and_lr(len(xt))[0]} "
          f"steps={epochs * steps}")
    print("fit seconds: " + " ".join(f"{t:.3f}" for t in times) + f"   median {statistics.median(times):.3f}")
    print(f"kept epoch {fit.best_epoch}, validation {fit.val_score:.4f}, test accuracy {acc:.4f}")
    print(f"yardstick in the same run: the earlier float32 batch-128 recipe's first-layer matmuls alone {floor:.3f} s; "
          f"fit / yardstick {statistics.median(times) / floor:.2f}")


if __name__ == "__main__":
    main()
