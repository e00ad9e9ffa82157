"""Sentence classification on the command line: ``train`` on a text CSV, ``evaluate`` and
``predict`` with a text model. ``train``, ``evaluate`` and ``predict`` hand over here when the
data is a CSV with a text column or the model folder holds a text model (``config.json``
``"kind": "text"``); the options become a ``TextClassifier``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import HeadstartError
from .common import write_json


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("texts (DATA is a CSV with a text column: sentence classification, Kim 2014)")
    g.add_argument("--text-column", help="the CSV's text column (default 'text'; naming it also marks DATA as texts)")
    g.add_argument("--level", choices=["word", "char"], default="word", help="tokens: words (default) or characters")
    g.add_argument("--widths", default="3,4,5", help="filter widths in tokens, comma-separated (default 3,4,5)")
    g.add_argument("--filters", type=int, default=100, help="feature maps per width (default 100)")
    g.add_argument("--embed-dim", type=int, help="embedding size (default: TextClassifier's; --vectors sets it)")
    g.add_argument("--vectors", metavar="FILE", help="pretrained word vectors: word2vec (text or .bin) or GloVe")
    g.add_argument("--static", action="store_true", help="with --vectors: keep the vectors fixed (CNN-static)")
    g.add_argument("--members", type=int, metavar="N",
                   help="CNNs trained from seeds SEED, SEED+1, ..., their outputs averaged (default: as many as "
                        "fit --budget, 1 to 5)")
    g.add_argument("--tfidf", type=float, default=0.4, metavar="WEIGHT",
                   help="classes: average the CNN's probabilities with TF-IDF n-grams + logistic regression, "
                        "this weight (default 0.4; 0: the CNN alone, which exports whole)")


def is_text_data(args: argparse.Namespace) -> bool:
    from ..data.text import is_text_csv

    return is_text_csv(args.data, getattr(args, "text_column", None))


def is_text_model(model_dir: str | Path) -> bool:
    file = Path(model_dir) / "config.json"
    try:
        if not file.is_file() or file.stat().st_size > 64 << 20:  # the loader refuses it, by name
            return False
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and config.get("kind") == "text"


def run_train(args: argparse.Namespace) -> int:
    from ..estimator.text import TextClassifier
    from ..evaluation.report import format_report

    try:
        widths = tuple(int(w) for w in str(args.widths).split(","))
    except ValueError:
        raise HeadstartError(f"--widths must be whole numbers separated by commas, e.g. 3,4,5; got {args.widths!r}.") from None
    given = {k: v for k, v in (("embed_dim", args.embed_dim), ("epochs", args.epochs), ("budget", args.budget))
             if v}  # else the estimator's
    clf = TextClassifier(level=args.level, widths=widths, filters=args.filters, **given, task=args.task,
                         loss=args.loss, vectors=args.vectors, tfidf=args.tfidf, members=args.members,
                         static=args.static, text_column=args.text_column, target_column=args.target_column,
                         val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed,
                         verbose=not args.quiet)
    clf.fit(args.data)
    print(clf.dataset_.describe())
    print(f"task: {clf.fit_info_['task']} ({clf.fit_info_['task_reason']})")
    print(f"network: {clf.fit_info_['network']}; vocabulary {clf.fit_info_['vocabulary']} tokens, "
          f"padded to {clf.fit_info_['length']}")
    print(f"CNNs averaged: {clf.fit_info_['members']['trained']} ({clf.fit_info_['members']['reason']})")
    print(f"TF-IDF part: {clf.fit_info_['tfidf']}")
    if clf.fit_info_.get("vectors"):
        v = clf.fit_info_["vectors"]
        print(f"word vectors: {v['found']} of {v['total']} vocabulary words covered "
              f"({v['found'] / max(1, v['total']):.1%}), {'static' if v['static'] else 'fine-tuned'}")
    out = clf.save(args.out)
    test = clf.metrics_.get("test")
    print(format_report(test, "test split") if test else
          "no test split: run `headstart evaluate` on held-out texts for an honest figure")
    if args.json:
        write_json(args.json, clf.metrics_)
    print(f"\nmodel saved to {out}  ({clf.fit_info_['seconds']:.1f} s in all)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ..estimator.text import load_text
    from ..evaluation.report import format_report

    clf = load_text(args.model)
    clf.target_column = args.target_column
    m = clf.evaluate(args.data)
    print(format_report(m, str(args.data)))
    if args.json:
        write_json(args.json, m)
    if not getattr(args, "no_report", False):
        from ..evaluation.html import evaluate_report_path, write_html
        from ..evaluation.text_html import text_report

        page = text_report(clf, m, title=f"headstart: evaluation on {Path(args.data).name}", data=args.data)
        dest = getattr(args, "report", None) or evaluate_report_path(args.model, args.data)
        print(f"report written to {write_html(dest, page)}")
    return 0


def predict_texts(paths: list[str]) -> list[str]:
    """Each argument is a file of texts (a CSV's text column, or one per line) or a text itself."""
    from ..data.text import read_lines

    texts: list[str] = []
    for p in paths:
        texts += read_lines(p) if Path(p).is_file() else [p]
    if not texts:
        raise HeadstartError(f"no texts in {paths}: give texts as arguments, a text file or a CSV with a text column.")
    return texts


def cmd_predict(args: argparse.Namespace) -> int:
    from ..estimator.text import load_text

    clf = load_text(args.model)
    rows = clf.predict_rows(predict_texts(args.paths), top_k=args.top_k)
    task = clf.task_
    if args.format == "json":
        print(json.dumps(rows, indent=2))
    elif args.format == "csv":
        import csv

        w = csv.writer(sys.stdout)
        w.writerow(["text", *task.columns])
        for r in rows:
            w.writerow([r["text"], *task.cells(r)])
    else:
        for r in rows:
            print(f"{r['text']}: {task.text(r)}")
    return 0
