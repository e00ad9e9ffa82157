"""How well `headstart doctor` finds deliberately wrong labels, and what it finds in clean data.

    .venv/bin/python benchmarks/doctor_flipped_labels.py [--data ../shared/datasets/clothing-small]
        [--fraction 0.05] [--seed 0] [--out .exp/doctor-bench]

1. Copies DATA into a temporary folder (hard links, so no image bytes are copied) and moves
   ``--fraction`` of the training images into another, random class folder: flipped labels.
2. Runs the doctor on the copy; prints the precision and recall of the flagged set (the
   "likely wrong labels") against the flipped files, over the train split (where the flips
   are) and over every split, and the precision of the top-N ranked suspects (N = flips).
   Baseline in the same run: a random pick of as many training images.
3. Runs the doctor on the unmodified DATA and lists its duplicate / near-duplicate groups.
4. Wall time of each doctor run; the features come from the cache after the first run
   (the copy's files have the same bytes, so the same digests).

DATA is expected at ../shared/datasets/clothing-small (see ../shared/datasets/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def link_copy(src: Path, dst: Path) -> None:
    for dirpath, _, files in os.walk(src):
        out = dst / Path(dirpath).relative_to(src)
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(Path(dirpath, f), out / f)
            except OSError:  # another file system: copy instead
                shutil.copy2(Path(dirpath, f), out / f)


def flip_labels(root: Path, fraction: float, seed: int) -> tuple[set[str], int]:
    """Move a ``fraction`` of train/<class>/* into train/<other class>/; returns the new rels
    and the number of training images."""
    from headstart.data.scan import scan

    r = scan(root)
    train = [s for s in r.samples if s.split == "train" and s.rel.startswith("train/")]
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(train), int(round(fraction * len(train))), replace=False)
    flipped = set()
    for i in picked:
        s = train[i]
        other = rng.choice([c for c in r.labels if c != s.label])
        dst = root / "train" / other / f"flipped_{s.path.name}"
        os.replace(s.path, dst)
        flipped.add(dst.relative_to(root).as_posix())
    return flipped, len(train)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared/datasets/clothing-small"))
    ap.add_argument("--fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / ".exp/doctor-bench"), help="JSON and HTML pages go here")
    args = ap.parse_args()
    data = Path(args.data)
    if not data.is_dir():
        print(f"data set not found at {data}: see ../shared/datasets/README.md", file=sys.stderr)
        return 2
    from headstart.evaluation.doctor import check_data
    from headstart.evaluation.html import render_doctor, write_html

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        copy = Path(tmp) / data.name
        link_copy(data, copy)
        flipped, n_train_split = flip_labels(copy, args.fraction, args.seed)
        t0 = time.perf_counter()
        noisy = check_data(copy)
        t_noisy = time.perf_counter() - t0
        write_html(out / "flipped.html", render_doctor(noisy, "doctor: clothing-small with flipped labels"))
    n_train = sum(noisy.counts.values())
    flagged = {s.rel for s in noisy.suspects}
    flagged_train = {s.rel for s in noisy.suspects if s.rel.startswith("train/")}
    tp = len(flagged_train & flipped)
    print(f"data: {data} ({n_train} images, {len(noisy.labels)} classes); flipped {len(flipped)} training labels "
          f"({args.fraction:.0%}, seed {args.seed})")
    print(f"doctor on the flipped copy: {t_noisy:.1f} s wall (features {noisy.settings['features_seconds']} s, "
          f"{noisy.settings['features_cached']} cached / {noisy.settings['features_computed']} computed; "
          f"checks {noisy.settings['analysis_seconds']} s); cross-validated accuracy {noisy.cv_accuracy:.3f}")
    p = tp / max(1, len(flagged_train))
    r = tp / max(1, len(flipped))
    print(f"flagged as likely wrong labels: {len(flagged)} in all, {len(flagged_train)} in train")
    print(f"  train split: precision {p:.3f}  recall {r:.3f}  ({tp} of {len(flipped)} flips found)")
    print(f"  all splits : precision {len(flagged & flipped) / max(1, len(flagged)):.3f} "
          f"(the val/test flags are natural errors or ambiguous photos)")
    ranked = [s.rel for s in noisy.suspects if s.rel.startswith("train/")][:len(flipped)]
    print(f"  precision of the top {len(flipped)} ranked train suspects: "
          f"{len(set(ranked) & flipped) / max(1, len(flipped)):.3f}")
    print(f"  baseline in this run (flag training images at random): precision "
          f"{len(flipped) / n_train_split:.3f} at any recall; the doctor is "
          f"{p / (len(flipped) / n_train_split):.1f}x that")

    t0 = time.perf_counter()
    clean = check_data(data)
    t_clean = time.perf_counter() - t0
    write_html(out / "clean.html", render_doctor(clean, "doctor: clothing-small"))
    (out / "clean.json").write_text(json.dumps(clean.to_dict(), indent=1))
    print(f"\ndoctor on the unmodified set: {t_clean:.1f} s wall; {len(clean.suspects)} likely wrong labels, "
          f"{len(clean.groups)} duplicate groups ({sum(g.kind == 'exact' for g in clean.groups)} exact, "
          f"{len(clean.leaks)} spanning splits, {len(clean.conflicts)} with different labels), "
          f"{len(clean.outliers)} outliers")
    for g in clean.groups:
        flags = ", ".join(f for f, on in (("LEAK", g.leak), ("DIFFERENT LABELS", g.spans_classes)) if on)
        sim = "exact" if g.kind == "exact" else f"{g.similarity:.3f}"
        print(f"  [{sim}{', ' + flags if flags else ''}] " +
              "  =  ".join(f"{rel} ({lab}, {sp})" for rel, lab, sp in zip(g.rels, g.labels, g.splits)))
    print(f"pages: {out / 'flipped.html'}, {out / 'clean.html'}; all findings: {out / 'clean.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
