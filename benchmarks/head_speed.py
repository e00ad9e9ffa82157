"""Head training on cached features: seconds to fit the default head on N feature vectors.

    PYTHONPATH=src .venv/bin/python benchmarks/head_speed.py [--n 10000] [--threads 2] [--repeat 3]

Synthetic 1904-d vectors (the width of the embedded backbone's four-stage features) with class
structure: 10 classes, each a random mean plus noise, non-negative like pooled activations.
N vectors train, N/10 validate (the default split's share), N/5 test. The fit is the real one
(``training.select_and_fit`` with the default ``HeadConfig``: its epochs, validation every epoch,
threshold tuning), timed after the data are built and torch is imported. Prints the seconds of
each repeat and their median, the epochs and steps run, and the test accuracy (a check that a
faster loop still learns the same thing), and a yardstick timed in the same run: the first
layer's matmuls alone, the floor of any loop on this machine. The goal: 10,000 vectors in under 3 s.
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


def gemm_floor(torch, dim: int, config, n: int) -> float:
    """Seconds of the fit's unavoidable work: per step, the (B, D) x (D, hidden) forward matmul and
    its weight gradient, as many steps as the fit runs. The ratio to it says how much is overhead."""
    epochs, steps = config.plan(n)
    x = torch.randn(config.batch_size, dim)
    w = torch.randn(config.hidden, dim, requires_grad=True)
    t0 = time.perf_counter()
    for _ in range(epochs * steps):
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
    floor = gemm_floor(torch, xt.shape[1], HeadConfig(), len(xt))
    pred = predict_scores(task, fit.head, xs).argmax(1)
    acc = float(np.mean([labels[p] == y for p, y in zip(pred, ys)]))
    epochs, steps = HeadConfig().plan(len(xt))
    print(f"n={args.n} dim={xt.shape[1]} threads={args.threads} epochs={epochs} steps={epochs * steps}")
    print("fit seconds: " + " ".join(f"{t:.3f}" for t in times) + f"   median {statistics.median(times):.3f}")
    print(f"kept epoch {fit.best_epoch}, validation {fit.val_score:.4f}, test accuracy {acc:.4f}")
    print(f"yardstick in the same run: the first layer's forward + weight-gradient matmuls alone {floor:.3f} s; "
          f"fit / yardstick {statistics.median(times) / floor:.2f}")


if __name__ == "__main__":
    main()
