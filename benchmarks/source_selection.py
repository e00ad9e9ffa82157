"""Source-model selection against the strongest simple baseline, per labelled image set, one run.

    PYTHONPATH=src python benchmarks/source_selection.py --data clothing [--runs probe,old,new,warm] [--json F]
    PYTHONPATH=src python benchmarks/source_selection.py --speeds [--n 300]

Per data set (clothing-small with its own split; sign-digits with the project's stable split):
  * probe: retrain.py-style linear probe: EfficientNet-Lite0 at 224 px, the pooled 1280-d vector,
    scikit-learn logistic regression with C chosen by 5-fold cross-validation on train + validation;
  * old: the old default, pinned: ``headstart train --backbone efficientnet_lite0``;
  * new: the new default, ``headstart train`` (source model chosen on validation within the budget);
  * warm: the new default again, its candidates' features cached (what a second run costs);
  * finetune: ``headstart train --finetune`` (minutes).
Each run starts from an empty cache folder (features and ONNX files) unless it says warm, and is
timed end to end (wall clock, process start included). Test accuracy is REPORTED only: every
choice is made on the validation split. ``--speeds`` times the extraction of each candidate on the
same images, as ratios to Lite0 at 224 px (the constants in estimator/selection.py).
Timed runs: one at a time on a quiet machine (the project runs them under a lock).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the data sets beside the repository (a worktree sits one level deeper)
SHARED = next((p / "shared" / "datasets" for p in ROOT.parents[:2] if (p / "shared" / "datasets").is_dir()),
              ROOT.parent / "shared" / "datasets")
DATA = {"clothing": SHARED / "clothing-small", "digits": SHARED / "sign-digits" / "images"}


def probe(data: Path, cache: Path) -> dict:
    """The linear probe, timed in this process: extraction, then LogisticRegressionCV."""
    os.environ["HEADSTART_CACHE_DIR"] = str(cache)
    t0 = time.perf_counter()
    import numpy as np
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from headstart.backbones import create_backbone
    from headstart.data.read import read_dataset
    from headstart.features import extract_features

    ds = read_dataset(data)
    bb = create_backbone("efficientnet_lite0")
    ex = extract_features(bb, [s.path for s in ds.samples])
    t1 = time.perf_counter()
    x = ex.features[:, -bb.model.num_features:]  # the pooled vector alone
    split = np.array([s.split for s in ds.samples])
    y = np.array([s.label for s in ds.samples])
    ok = np.isfinite(x).all(1)
    fit, te = (split != "test") & ok, (split == "test") & ok
    clf = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=10, cv=5, max_iter=2000))
    clf.fit(x[fit], y[fit])
    acc = float((clf.predict(x[te]) == y[te]).mean())
    t2 = time.perf_counter()
    return {"test_accuracy": round(acc, 4), "seconds": round(t2 - t0, 1), "extract_seconds": round(t1 - t0, 1),
            "cv_seconds": round(t2 - t1, 1), "C": float(clf[-1].C_[0]), "n_images": len(ds.samples)}


def train(data: Path, cache: Path, out: Path, *flags: str) -> dict:
    """``headstart train`` in its own process, timed end to end; figures from its --json and config."""
    env = {**os.environ, "HEADSTART_CACHE_DIR": str(cache), "PYTHONPATH": str(ROOT / "src")}
    metrics = out.with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-c", "import sys; from headstart.cli import main; sys.exit(main())", "train",
           str(data), "--out", str(out), "--overwrite", "--quiet", "--no-report", "--json", str(metrics), *flags]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if run.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{run.stderr[-3000:]}")
    m = json.loads(metrics.read_text())
    config = json.loads((out / "config.json").read_text())
    sel = config.get("training", {}).get("source_selection")
    chosen = next((r["name"] for r in sel["tried"] if r.get("chosen")), None) if sel else None
    return {"test_accuracy": round(m["test"]["accuracy"], 4), "validation": round(m["validation"]["score"], 4),
            "seconds": round(seconds, 1), "backbone": config["backbone"], "chosen": chosen,
            "tried": [(r["name"], r["status"], r["val_score"], r["seconds"]) for r in sel["tried"]] if sel else None,
            "budget": sel["budget_seconds"] if sel else None}


def speeds(data: Path, n: int) -> dict:
    """Images per second of each candidate's extraction (decoding included) on the same n images."""
    import torch

    from headstart.backbones import create_backbone
    from headstart.data.read import read_dataset
    from headstart.features import extract_features

    torch.set_num_threads(os.cpu_count() or 1)
    paths = [s.path for s in read_dataset(data).samples][:n]
    out = {}
    for name, size in (("efficientnet_lite0", None), ("efficientnet_lite1", None), ("efficientnet_lite2", None),
                       ("efficientnet_lite0", 288), ("efficientnet_lite1", 312), ("efficientnet_lite2", 336)):
        bb = create_backbone(name, **({"input_size": size} if size else {}))
        extract_features(bb, paths[:8])  # the ONNX session built (and exported) before timing
        t = time.perf_counter()
        extract_features(bb, paths)
        out[f"{name} {bb.preprocess.input_size}"] = round(n / (time.perf_counter() - t), 1)
    base = next(iter(out.values()))
    return {k: {"img_per_s": v, "relative_cost": round(base / v, 2)} for k, v in out.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(DATA), default="clothing")
    ap.add_argument("--runs", default="probe,old,new,warm", help="comma list of probe, old, new, warm, finetune")
    ap.add_argument("--speeds", action="store_true", help="time each candidate's extraction instead")
    ap.add_argument("--n", type=int, default=300, help="--speeds: images timed per candidate")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    data = DATA[args.data]
    if not data.is_dir():
        raise SystemExit(f"{data} not found: the benchmark expects the project's shared data sets beside the "
                         "repository (../shared/datasets; see its README.md)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.speeds:
            os.environ["HEADSTART_CACHE_DIR"] = str(tmp / "cache")
            result = {"speeds": speeds(data, args.n)}
        else:
            result = {}
            for run in args.runs.split(","):
                cache = tmp / ("warm" if run in ("new", "warm") else run)  # warm: the cache "new" filled
                if run == "probe":
                    result[run] = probe(data, cache)
                else:
                    flags = {"old": ["--backbone", "efficientnet_lite0"], "new": [], "warm": [],
                             "finetune": ["--finetune"]}[run]
                    result[run] = train(data, cache, tmp / "models" / run, *flags)  # not in its cache folder
                print(run, json.dumps(result[run]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
