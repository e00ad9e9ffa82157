"""Sentence classification on TREC and SST-2: headstart's default text CNN against the anchors.

    python benchmarks/text_cnn.py                       # default CNN + TF-IDF anchor, both sets
    python benchmarks/text_cnn.py --sets trec --ablations

For each set: the default ``TextClassifier()`` (no flags, no vectors: as many CNNs as fit its
300 CPU-second budget, with its TF-IDF + logistic regression part averaged in) trained on train.csv,
early-stopped on the validation split (TREC has none: 10 % of train.csv held out by a stable
hash), scored once on test.csv; its training time (wall and CPU) and the peak resident memory
of the process that trained it. Beside it, in the same run, the anchor: TF-IDF word 1-2-grams +
character 2-5-grams, logistic regression (C chosen on the validation split). With
``--ablations``: filter widths, word vs character level, embedding size; every choice is made on
validation, test figures are printed for the record only.

Data: ``../shared/datasets/text/{trec,sst2}`` from the project root (``--data`` to change).
Published (Kim 2014, test accuracy, CNN-rand): TREC 91.2 %, SST-2 82.7 %.
Each run trains in a child process (one torch thread) so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

DATA = next((p / "shared" / "datasets" / "text" for p in Path(__file__).resolve().parents[1:]  # a clone or a worktree
             if (p / "shared" / "datasets" / "text").is_dir()), Path("../shared/datasets/text"))
KIM = {"trec": 0.912, "sst2": 0.827}
ABLATIONS = {"the CNN alone (tfidf=0)": {"tfidf": 0}, "widths 1,2,3": {"widths": (1, 2, 3)}, "widths 2,3,4,5": {"widths": (2, 3, 4, 5)},
             "embedding 64": {"embed_dim": 64}, "embedding 300": {"embed_dim": 300},
             "filters 200": {"filters": 200}, "Adam (before Kim's Adadelta)": {"optimizer": "adam"},
             "no edge padding": {"edge_pad": False}, "character level": {"level": "char"}}
LEVELS = {"word level (default)": {}, "character level": {"level": "char"}}  # --levels: same epochs, same budget


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)  # user + system: less sensitive to a busy machine than wall time
    return r.ru_utime + r.ru_stime


def _cnn(path: str, params: dict, queue) -> None:
    import torch

    from headstart.estimator.text import TextClassifier

    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), _cpu()
    clf = TextClassifier(**params).fit(path)
    queue.put({"val": clf.metrics_["validation"]["accuracy"], "test": clf.metrics_["test"]["accuracy"],
               "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu() - c0, 1),
               "best_epoch": clf.fit_info_["best_epoch"], "vocabulary": clf.fit_info_["vocabulary"],
               "members": clf.fit_info_["members"],
               "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})


def _tfidf(path: str, queue) -> None:
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from headstart.data.text import read_texts

    t0, c0 = time.perf_counter(), _cpu()
    ds = read_texts(path)
    split = {s: ([x.text for x in ds.subset(s)], [x.label for x in ds.subset(s)]) for s in ("train", "val", "test")}
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x_train = hstack([word.fit_transform(split["train"][0]), char.fit_transform(split["train"][0])]).tocsr()

    def features(s):
        return hstack([word.transform(split[s][0]), char.transform(split[s][0])]).tocsr()

    best = max(((LogisticRegression(C=c, max_iter=2000).fit(x_train, split["train"][1]), c) for c in (1, 3, 10, 30)),
               key=lambda m: m[0].score(features("val"), split["val"][1]))
    model, c = best
    queue.put({"val": model.score(features("val"), split["val"][1]), "test": model.score(features("test"), split["test"][1]),
               "C": c, "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(_cpu() - c0, 1),
               "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)})


def run_child(target, *args) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--sets", nargs="+", default=["trec", "sst2"], choices=list(KIM))
    p.add_argument("--ablations", action="store_true", help="also the ablations (minutes each)")
    p.add_argument("--levels", action="store_true", help="only word against character level, default settings")
    p.add_argument("--no-anchor", action="store_true")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    results: dict = {}
    for name in args.sets:
        path = args.data / name / "train.csv"
        if not path.is_file():
            print(f"{path} is missing: the data sets are expected at ../shared/datasets/text (see its README)")
            return 2
        runs = LEVELS if args.levels else {"default (CNNs in 300 CPU-s + TF-IDF)": {}, **(ABLATIONS if args.ablations else {})}
        results[name] = {label: run_child(_cnn, str(path), params) for label, params in runs.items()}
        if not (args.no_anchor or args.levels):
            results[name]["TF-IDF + logistic regression"] = run_child(_tfidf, str(path))
        for label, r in results[name].items():
            print(f"{name:5} {label:30} val {r['val']:.4f}  test {r['test']:.4f}  wall {r['wall_s']:6.1f} s  "
                  f"cpu {r['cpu_s']:6.1f} s  peak {r['peak_mb']} MB"
                  + (f"  CNNs {r['members']['trained']}" if "members" in r else ""), flush=True)
        print(f"{name:5} Kim (2014) CNN-rand, published: test {KIM[name]:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
