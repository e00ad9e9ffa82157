"""Sign-digits (hand signs for 0-9) read as 10 classes and as a count, next to the baselines.

Three models on the frozen embedded EfficientNet-Lite0 (features cached, so only the first
pays for them):

1. ``classes (folders)``: ``fit(DATA)``, the folder-per-digit layout, multiclass;
2. ``count (CSV)``: a CSV the script writes into a temp dir, ``path,count`` with the digit's
   value as the target; the task is inferred (whole numbers >= 0 in a column named 'count');
3. ``classes (CSV)``: the same CSV rows with the digit in a ``label`` column (inferred as
   class ids), so it has exactly the count model's split: its predicted digit, read as a
   number, is scored with the count metrics on the same test images (like for like).

Each headline is printed next to its trivial baseline from the same run (majority class;
the training mean count). Data: ../shared/datasets/sign-digits/images/<0..9>/*.JPG (never
copied into the repository).

    .venv/bin/python benchmarks/sign_digits_tasks.py
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "sign-digits" / "images"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA, help=f"folder of digit folders (default {DATA})")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not args.data.is_dir():
        print(f"sign-digits not found at {args.data}: expected <0..9>/*.JPG there (see ../shared/datasets/README.md)",
              file=sys.stderr)
        return 2

    import headstart
    from headstart.data.scan import find_images
    from headstart.tasks.metrics import count_metrics
    from headstart.tasks import poisson_interval

    files = find_images([args.data])
    rows = [(f.relative_to(args.data).as_posix(), int(f.parent.name)) for f in files]
    print(f"sign-digits: {len(rows)} images in {args.data}")

    t = time.perf_counter()
    cls = headstart.ImageClassifier(seed=args.seed, verbose=True).fit(args.data)
    m = cls.metrics_["test"]
    print(f"\n[1] classes (folders): {time.perf_counter() - t:.1f} s, test {m['n_images']} images")
    print(f"    accuracy {m['accuracy']:.4f}   top-5 {m.get('top5_accuracy', float('nan')):.4f}   "
          f"macro F1 {m['macro_f1']:.4f}   (majority-class baseline {m['baseline']['accuracy']:.4f})")

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels.csv"
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "count", "label"])
            w.writerows((rel, k, k) for rel, k in rows)

        t = time.perf_counter()
        cnt = headstart.ImageClassifier(seed=args.seed, verbose=True).fit(args.data, path, target_column="count")
        c = cnt.metrics_["test"]
        b = c["baseline"]
        print(f"\n[2] count (CSV): {time.perf_counter() - t:.1f} s, test {c['n_images']} images; "
              f"task {cnt.fit_info_['task']} ({cnt.fit_info_['task_reason']})")
        print(f"    {'':<22} {'model':>9} {'baseline':>9} {'ratio':>7}")
        for key in ("mae", "rmse", "exact_count_accuracy", "poisson_deviance"):
            ratio = c[key] / b[key] if b[key] else float("nan")
            print(f"    {key:<22} {c[key]:>9.4f} {b[key]:>9.4f} {ratio:>7.3f}")
        print(f"    deviance explained {c['d2_poisson']:.4f}; 90% interval covers {c['interval_coverage']:.1%} "
              f"of true counts; baseline = always {b['value']:.3f}")

        t = time.perf_counter()
        lab = headstart.ImageClassifier(seed=args.seed, verbose=True).fit(args.data, path, target_column="label")
        test = [s for s in lab.dataset_.samples if s.split == "test"]
        proba = lab.predict_proba([s.path for s in test])
        digits = np.array([float(d) for d in lab.classes_])
        y = np.array([float(s.label) for s in test])
        as_count = count_metrics(y, np.clip(digits[proba.argmax(1)], 1e-3, None), float(y.mean()),
                                 *poisson_interval(digits[proba.argmax(1)]))
        expected = proba @ digits
        print(f"\n[3] classes (CSV, same split as [2]): {time.perf_counter() - t:.1f} s; task {lab.fit_info_['task']}; "
              f"accuracy {lab.metrics_['test']['accuracy']:.4f} "
              f"(baseline {lab.metrics_['test']['baseline']['accuracy']:.4f})")
        print(f"    its predicted digit as a count: MAE {as_count['mae']:.4f}, RMSE {as_count['rmse']:.4f}, "
              f"exact {as_count['exact_count_accuracy']:.4f};  "
              f"probability-weighted digit: MAE {np.abs(expected - y).mean():.4f}")
        print(f"    count model [2] on the same images: MAE {c['mae']:.4f}, RMSE {c['rmse']:.4f}, "
              f"exact {c['exact_count_accuracy']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
