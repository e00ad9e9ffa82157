"""Does ``--finetune`` earn its cost? Frozen head vs partial fine-tune vs full fine-tune, one run.

    .venv/bin/python benchmarks/finetune.py [--data DIR] [--recipe stages=2,views=2,...] ...

On clothing-small (train + validation -> test) it prints:
  * the frozen four-stage + MLP head (the main job): test accuracy and wall time;
  * each fine-tune recipe (``--recipe``, repeatable; keys of ``FinetuneConfig``): validation
    before/after, test accuracy, wall time (activations of the frozen part + training);
  * a full fine-tune of the same backbone for the same epochs: one training step of the whole
    network (on-the-fly augmentation, decoding included) timed on a subset of the training
    images and extrapolated to all of them x epochs (said so in the output);
  * the ratios. Target: fine-tune >= frozen + 1.5 points, <= 10 minutes, <= 1/3 of full.

Recipes are chosen on the validation split; the test figure is reported, never used to choose.
Set HEADSTART_CACHE_DIR to keep its caches apart (the first run computes features).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "clothing-small"


def parse_recipe(text: str):
    from dataclasses import fields

    from headstart.training.finetune import FinetuneConfig

    types = {f.name: f.type for f in fields(FinetuneConfig)}
    kw = {}
    for item in filter(None, text.split(",")):
        k, v = item.split("=")
        t = types[k]
        kw[k] = v if t == "str" else (int(v) if t == "int" else float(v))
    return FinetuneConfig(**kw)


def full_finetune_seconds_per_image(clf, samples, n: int = 64, batch: int = 32) -> float:
    """One optimiser step per batch through the whole backbone + head, images decoded and
    augmented on the fly (what a full fine-tune does every epoch)."""
    import numpy as np
    import torch

    from headstart.features import load_batches
    from headstart.training.end_to_end import EndToEndConfig, augment

    train = [s.path for s in samples if s.split == "train"][:n]
    model = torch.nn.Sequential(clf.backbone_, clf.head_)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    y = torch.zeros(batch, dtype=torch.long)
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    seen = 0
    for _, x, _ in load_batches(train, clf.backbone_.preprocess, batch):
        xb = augment(torch.from_numpy(np.ascontiguousarray(x)), EndToEndConfig(), gen)
        loss = torch.nn.functional.cross_entropy(model(xb), y[:len(xb)])
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(xb)
    model.eval()
    return (time.perf_counter() - t0) / seen


def estimate(args) -> int:
    """Per-image costs measured on a subset, one run: full fine-tune step, frozen-part pass,
    trained-part step; extrapolated to the data set (for a machine too busy for the real run)."""
    import torch

    from headstart import ImageClassifier
    from headstart.backbones import create_backbone
    from headstart.data.scan import scan
    from headstart.heads import Head
    from headstart.training.finetune import Upper, _act_shape, activations

    cfg = parse_recipe(args.recipe[0] if args.recipe else "")
    r = scan(args.data)
    train = [s for s in r.samples if s.split == "train"]
    n_other = len(r.samples) - len(train)
    sub = train[:: max(1, len(train) // args.full_subset)][: args.full_subset]
    clf = ImageClassifier()
    clf.backbone_ = create_backbone()
    clf.head_ = Head(clf.backbone_.feature_dim, len(r.labels))
    full = full_finetune_seconds_per_image(clf, sub, len(sub))
    first = len(clf.backbone_.stages()) - cfg.stages
    t = time.perf_counter()
    activations(clf.backbone_, first, [s.path for s in sub], [s.digest + "-estimate" + str(time.time()) for s in sub],
                1, 0)
    act = (time.perf_counter() - t) / len(sub)
    up = Upper(clf.backbone_, first, _act_shape(clf.backbone_, first))
    frozen_taps = clf.backbone_.feature_dim - _upper_feature_dim(up)
    a = torch.randn(32, up.act_dim + frozen_taps)  # (B, activation + frozen taps)
    opt = torch.optim.AdamW(list(up.parameters()) + list(clf.head_.parameters()), 1e-4)
    t = time.perf_counter()
    for _ in range(max(1, len(sub) // 32)):
        loss = clf.head_(up(a)).logsumexp(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step = (time.perf_counter() - t) / (max(1, len(sub) // 32) * 32)
    n = len(train)
    ft = act * (n * cfg.views + n_other) + step * n * cfg.epochs
    fu = full * n * cfg.epochs
    print(f"per image: full fine-tune step {full * 1000:.0f} ms, frozen part {act * 1000:.0f} ms per view, "
          f"last {cfg.stages} stages step {step * 1000:.0f} ms (measured on {len(sub)} images, load average "
          f"{os.getloadavg()[0]:.1f})")
    print(f"extrapolated to {n} training images x {cfg.epochs} epochs ({cfg.views} views): fine-tune "
          f"{ft:.0f} s vs full fine-tune {fu:.0f} s, ratio {ft / fu:.2f}")
    return 0


def _upper_feature_dim(up) -> int:
    import torch

    with torch.no_grad():
        x = torch.zeros(1, *up.act_shape)
        dims = 0
        for i, stage in enumerate(up.stages):
            x = stage(x)
            if i in up.taps:
                dims += x.shape[1]
    return dims


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--recipe", action="append", default=[],
                    help="FinetuneConfig fields, e.g. stages=2,views=2,lr_body=1e-4 (repeatable; default: defaults)")
    ap.add_argument("--full-subset", type=int, default=64, help="images timed for the full fine-tune estimate")
    ap.add_argument("--estimate", action="store_true",
                    help="only measure per-image costs on --full-subset images and extrapolate the times")
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        print(f"data folder {args.data} not found (expected ../shared/datasets/clothing-small)", file=sys.stderr)
        return 2
    if args.estimate:
        return estimate(args)

    import torch

    from headstart import ImageClassifier
    from headstart.estimator.finetune import finetune_fitted
    from headstart.estimator.fitted import Fitted

    print(f"data {args.data}; {os.cpu_count()} CPU cores, CUDA {torch.cuda.is_available()}, "
          f"load average {os.getloadavg()[0]:.1f} at start (machine shared with other jobs)", flush=True)
    t = time.perf_counter()
    clf = ImageClassifier().fit(args.data)
    t_frozen = time.perf_counter() - t
    acc_frozen = clf.metrics_["test"]["accuracy"]
    n_train = sum(s.split == "train" for s in clf.dataset_.samples)
    print(f"frozen head: test accuracy {acc_frozen:.4f}, {t_frozen:.0f} s (features from cache where present)",
          flush=True)

    recipes = [parse_recipe(r) for r in args.recipe] or [parse_recipe("")]
    rows = []
    for cfg in recipes:
        c = Fitted(clf.backbone_, clf.head_, clf.task_, clf.head_config_, clf.history_, dict(clf.metrics_),
                   clf.fit_info_, clf.dataset_, clf.skipped_)
        t = time.perf_counter()
        r = finetune_fitted(c, cfg, clf._features, log=lambda m: print(m, flush=True))
        dt = time.perf_counter() - t
        acc = c.metrics["test"]["accuracy"]
        rows.append((cfg, r, acc, dt))
        print(f"fine-tune {cfg}: validation {r.val_score_start:.4f} -> {r.val_score:.4f} (best epoch "
              f"{r.best_epoch}), test {acc_frozen:.4f} -> {acc:.4f} ({100 * (acc - acc_frozen):+.2f} points), "
              f"{dt:.0f} s ({r.seconds_cache:.0f} s activations; under 1 s = read from the cache), "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)

    per_img = full_finetune_seconds_per_image(clf, clf.dataset_.samples, args.full_subset)
    print(f"\nfull fine-tune: {per_img * 1000:.0f} ms per training image per epoch, measured on "
          f"{args.full_subset} images and extrapolated to {n_train} images", flush=True)
    print(f"\n{'recipe':<60} {'test':>7} {'gain':>7} {'time s':>7} {'full s':>7} {'ratio':>6}")
    print(f"{'frozen four-stage + MLP head (main job)':<60} {acc_frozen:>7.4f} {'':>7} {t_frozen:>7.0f}")
    for cfg, r, acc, dt in rows:
        epochs_run = len(r.history)
        full = per_img * n_train * max(1, epochs_run)
        name = (f"stages={cfg.stages} views={cfg.views} epochs={epochs_run}/{cfg.epochs} "
                f"lr={cfg.lr_body:g}/{cfg.lr_head:g} bn={cfg.bn}")
        print(f"{name:<60} {acc:>7.4f} {100 * (acc - acc_frozen):>+7.2f} {dt:>7.0f} {full:>7.0f} {dt / full:>6.2f}")
    print("(full fine-tune time = extrapolated, same number of epochs as the recipe ran; "
          f"load average {os.getloadavg()[0]:.1f} at the end)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
