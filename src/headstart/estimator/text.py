"""``TextClassifier``: sentence classification with Kim's (2014) CNN, scikit-learn's contract.

A separate estimator, not a mode of ``ImageClassifier``: its input (texts, a vocabulary), its
network (trained end to end, no frozen backbone or feature cache) and its settings (widths,
embedding size, word vectors) share nothing with the image path but the tasks, the metrics and
the model folder, and those it reuses.

>>> clf = TextClassifier().fit("trec/train.csv")                           # doctest: +SKIP
>>> clf.predict(["Who wrote Hamlet ?"])                                     # doctest: +SKIP
['HUM']
>>> clf.save("model/"); load_text("model/").score(texts, labels)            # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import HeadstartError, NotFittedError
from .sklearn_api import ScikitLearnEstimator

SAVED = ("level", "embed_dim", "widths", "filters", "dropout", "length", "epochs", "lr", "batch_size",
         "seed", "static", "optimizer", "patience", "edge_pad", "min_count", "tfidf", "members", "budget")
MAX_MEMBERS = 5  # the budget rule's ceiling: past a few seeds the average barely moves


class TextClassifier(ScikitLearnEstimator):
    """Texts -> trained text CNNs (seeds ``seed``, ``seed + 1``, ...; probabilities averaged), averaged
    with a TF-IDF + logistic regression part for classes (``tfidf``: its weight; docs/text.md). The
    CNNs are trained one after another while one more fits in ``budget`` CPU-seconds (1 to 5;
    ``members``: exactly that many). ``fit``
    takes a CSV path (``text`` and target columns, split files beside it used as splits) or a
    list of texts with targets ``y``."""

    def __init__(self, level: str = "word", embed_dim: int = 128, widths: Sequence[int] = (3, 4, 5),
                 filters: int = 100, dropout: float = 0.5, length: int = 0, epochs: int = 25, lr: float | None = None,
                 batch_size: int = 50, optimizer: str = "adam", patience: int = 8, edge_pad: bool = True,
                 min_count: int = 1, tfidf: float = 0.4, members: int | None = None, task: str = "auto", loss: str = "auto",
                 vectors: str | None = None, static: bool = False, text_column: str | None = None,
                 target_column: str | None = None,
                 val_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 0, threads: int = 1,
                 verbose: bool = False, budget: float = 300.0):
        self.level, self.embed_dim, self.widths, self.filters = level, embed_dim, widths, filters
        self.dropout, self.length, self.epochs, self.lr, self.batch_size = dropout, length, epochs, lr, batch_size
        self.task, self.loss, self.vectors, self.static = task, loss, vectors, static
        self.text_column, self.target_column = text_column, target_column
        self.val_fraction, self.test_fraction, self.seed = val_fraction, test_fraction, seed
        self.threads, self.verbose = threads, verbose
        self.optimizer, self.patience, self.edge_pad, self.min_count = optimizer, patience, edge_pad, min_count
        self.members = members  # CNNs from seeds seed, seed + 1, ... averaged; None: as many as fit the budget
        self.budget = budget  # CPU-seconds for the whole fit that decide how many CNNs are trained
        self.tfidf = tfidf  # the TF-IDF + logistic regression part's weight in the averaged probabilities; 0: none

    # --- fitting ------------------------------------------------------------------------------

    def fit(self, X, y=None) -> "TextClassifier":
        """Train on a CSV path, or on texts ``X`` with targets ``y``; score validation and test splits."""
        from ..data.text import read_texts

        start, self._cpu_start = time.perf_counter(), time.process_time()
        if isinstance(X, (str, os.PathLike)):
            if y is not None:
                raise HeadstartError("fit(path, y): give the targets in the CSV's target column, not as y.")
            self.dataset_ = read_texts(X, text_column=self.text_column, target_column=self.target_column,
                                       task=self.task, val_fraction=self.val_fraction,
                                       test_fraction=self.test_fraction)
        else:
            self.dataset_ = _list_dataset(X, y, self.task, self.val_fraction, self.test_fraction)
        with _threads(self.threads):
            self._fit_dataset(self.dataset_)
        self.fit_info_["seconds"] = time.perf_counter() - start
        return self

    def _fit_dataset(self, ds) -> None:
        from ..backbones.text_cnn import TextCNNConfig
        from ..data.text import Vocabulary, fixed_length, tokenize
        from ..tasks import make_task

        train, val = ds.subset("train"), ds.subset("val")
        if not train:
            raise HeadstartError(f"{ds.source}: no texts in the training split. Add rows or lower the fractions.")
        tokens = [tokenize(s.text, self.level) for s in train]
        self.vocabulary_ = Vocabulary.build(tokens, self.min_count)
        vectors, vectors_info = self._read_vectors() if self.vectors else (None, None)
        if vectors is not None:
            self.embed_dim = vectors.dim  # the vectors decide the embedding size
        net_config = TextCNNConfig(self.level, self.embed_dim, tuple(self.widths), self.filters, self.dropout,
                                   self.length or fixed_length(tokens, cap=400 if self.level == "char" else 100),
                                   self.edge_pad, self.members or 1)
        self.task_ = task = make_task(ds.task_name, self.loss).fit_targets(_targets(train))
        self.tfidf_ = self._fit_tfidf([s.text for s in train], _targets(train))  # first: the budget counts it
        x = self.vocabulary_.encode(tokens, net_config.length)  # the training texts, tokenized once
        val_texts = [s.text for s in val]
        x_val = self._encoder(net_config)(val_texts) if val else None
        fits, members_info = self._fit_members(net_config, x, _targets(train), x_val,
                                               _targets(val) if val else None, vectors)
        self.history_ = fits[0].history
        if val:
            task.tune(self._scores(val_texts, x_val), _targets(val))
        self.classes_ = np.array(task.labels) if task.has_classes else None
        self.metrics_ = {name: self._split_metrics(ds.subset(split))
                         for name, split in (("validation", "val"), ("test", "test")) if ds.subset(split)}
        self.fit_info_ = {"task": task.name, "task_reason": ds.task_reason, "best_epoch": fits[0].best_epoch,
                          "best_epochs": [f.best_epoch for f in fits],
                          "train_seconds": round(sum(f.seconds for f in fits), 2), "vocabulary": len(self.vocabulary_),
                          "length": net_config.length, "counts": ds.counts(),
                          "network": self.network_.config.describe(), "members": members_info,
                          "vectors": vectors_info, "tfidf": self._tfidf_info()}

    def _fit_members(self, net_config, x, y, x_val, y_val, vectors) -> tuple[list, dict]:
        """Train CNNs one after another, member i from seed ``seed + i``; ``network_`` averages them.
        How many: ``members``, or while the CPU time so far plus the costliest member yet stays
        within ``budget`` (at least 1, at most ``MAX_MEMBERS``)."""
        from dataclasses import replace

        import torch

        from ..backbones.text_cnn import TextCNN, TextCNNEnsemble
        from ..training.text import TextTrainConfig, train_text_cnn

        members, fits, costs = [], [], []
        while self._another_member(costs):
            i, cpu = len(members), time.process_time()
            torch.manual_seed(self.seed + i)  # the same seed, the same starting weights
            net = TextCNN(net_config, len(self.vocabulary_), self.task_.out_dim)
            if vectors is not None:
                net.set_embeddings(torch.from_numpy(vectors.matrix), trainable=not self.static)
            config = TextTrainConfig(epochs=self.epochs, batch_size=self.batch_size, seed=self.seed + i,
                                     lr=self.lr or (1.0 if self.optimizer == "adadelta" else 2e-3),
                                     optimizer=self.optimizer, patience=self.patience)
            fits.append(train_text_cnn(net, self.task_, x, y, x_val, y_val, config,
                                       log=print if self.verbose else None))
            members.append(net)
            costs.append(time.process_time() - cpu)
        for net in members:
            net.config = replace(net_config, members=len(members))  # what the folder rebuilds
        self.network_ = members[0] if len(members) == 1 else TextCNNEnsemble(members, self.task_.output)
        return fits, self._members_info(costs)

    def _another_member(self, costs: list[float]) -> bool:
        if self.members is not None:
            return len(costs) < self.members
        if not (self.budget or 0) > 0:
            raise HeadstartError(f"budget is the CPU-seconds a fit may spend on its CNNs, above 0; got {self.budget}.")
        spent = time.process_time() - self._cpu_start
        return not costs or (len(costs) < MAX_MEMBERS and spent + max(costs) <= self.budget)

    def _members_info(self, costs: list[float]) -> dict:
        """How many CNNs were trained and why (config.json's ``fit_info.members``)."""
        n, spent = len(costs), time.process_time() - self._cpu_start
        if self.members is not None:
            reason = f"members={n}, given"
        elif n == MAX_MEMBERS:
            reason = f"the most the budget rule trains ({MAX_MEMBERS}), {spent:.0f} of {self.budget:g} CPU-s spent"
        else:
            reason = (f"one more (~{max(costs):.0f} CPU-s) would take the fit past its {self.budget:g} CPU-second "
                      f"budget ({spent:.0f} spent)")
        return {"trained": n, "reason": reason, "budget_cpu_s": self.budget,
                "member_cpu_s": [round(c, 1) for c in costs]}

    def _fit_tfidf(self, texts: list[str], targets: list[str]):
        """The TF-IDF + logistic regression part, for classes only (docs/text.md); None without it."""
        from ..backbones.text_tfidf import TfidfLogistic

        task = self.task_
        if not self.tfidf or not task.has_classes:
            return None
        if not 0 < self.tfidf <= 1:
            raise HeadstartError(f"tfidf is the TF-IDF part's weight, in [0, 1]; got {self.tfidf}.")
        y = task.index(targets)
        if len(set(y.tolist())) < 2:
            return None  # logistic regression needs two classes in the training split
        return TfidfLogistic.fit(texts, y, len(task.labels))

    def _tfidf_info(self) -> str:
        if self.tfidf_ is None:
            return "none: the CNNs alone"
        return (f"averaged with TF-IDF word 1-2-grams + character 2-5-grams, logistic regression "
                f"(C {self.tfidf_.C:g}, {self.tfidf_.coef.shape[1]} n-grams), weight {self.tfidf:g}")

    def _read_vectors(self) -> tuple:
        from ..data.vectors import read_vectors

        if self.level != "word":
            raise HeadstartError("--vectors holds word vectors; it goes with the word level, not level='char'.")
        v = read_vectors(self.vectors, self.vocabulary_.tokens, self.seed)
        if self.verbose:
            print(v.describe(self.vectors))
        return v, {"file": str(self.vectors), "found": v.found, "total": v.total, "dim": v.dim,
                   "static": bool(self.static)}

    def _split_metrics(self, samples) -> dict:
        return self._metrics([s.text for s in samples], [s.label for s in samples], [s.row for s in samples])

    # --- predicting ---------------------------------------------------------------------------

    def _check(self):
        if not hasattr(self, "network_"):
            raise NotFittedError("this TextClassifier is not fitted yet: call fit(...) or load a model folder first.")

    def _encoder(self, config=None):
        """texts -> token ids (N, length), by ``config`` (the fitted network's by default)."""
        from ..data.text import tokenize

        c = config or self.network_.config
        level, length = c.level, c.length
        return lambda texts: self.vocabulary_.encode([tokenize(t, level) for t in texts], length)

    def predict_scores(self, texts: Sequence[str]) -> np.ndarray:
        """The task's scores (N, out_width): class probabilities, or numbers."""
        self._check()
        texts = _texts(texts)
        return self._scores(texts, self._encoder()(texts))

    def _scores(self, texts: list[str], ids: np.ndarray) -> np.ndarray:
        from ..backbones.text_tfidf import blend
        from ..training.text import predict_text_scores

        with _threads(self.threads):
            cnn = predict_text_scores(self.network_, self.task_, ids)
        return blend(cnn, self.tfidf_, texts, self.tfidf)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if not self.task_.has_classes and self.task_.name != "multilabel":
            raise HeadstartError(f"predict_proba needs classes; this model's task is {self.task_.name}. Use predict.")
        return self.predict_scores(texts)

    def predict(self, texts: Sequence[str]) -> list:
        """Labels (binary, multiclass), label lists (multilabel) or numbers (continuous, count)."""
        return self.task_.predict_values(self.predict_scores(texts))

    def predict_rows(self, texts: Sequence[str], top_k: int = 5) -> list[dict]:
        """One dict per text: ``{"text", ...decoded prediction}`` (what ``predict`` and ``serve`` show)."""
        texts = _texts(texts)
        decoded = self.task_.decode(self.predict_scores(texts), top_k=top_k)
        return [{"text": t, **d} for t, d in zip(texts, decoded)]

    def _metrics(self, texts: list[str], targets: list[str], rows: list[str]) -> dict:
        from ..evaluation.scores import evaluate_scores

        m = evaluate_scores(self.task_, self.predict_scores(texts), targets, rows)
        by_row = dict(zip(rows, texts))
        for w in m.get("worst") or []:  # the report shows the sentence, not only its row
            w["text"] = by_row.get(w["file"])
        return m

    def evaluate(self, X, y=None) -> dict:
        """Full metrics on a labelled CSV (its test split when it has split files, else every row)
        or on texts ``X`` with targets ``y``."""
        from ..data.text import read_texts

        self._check()
        if isinstance(X, (str, os.PathLike)):
            ds = read_texts(X, text_column=self.text_column, target_column=self.target_column,
                            task=self.task_.name, val_fraction=0.0, test_fraction=0.0)
            samples = ds.subset("test") or ds.samples
            return self._split_metrics(samples)
        texts = _texts(X)
        if y is None or len(y) != len(texts):
            raise HeadstartError(f"evaluate(texts, y) needs one target per text; got {len(texts)} texts and "
                                 f"{'no' if y is None else len(y)} targets.")
        return self._metrics(texts, [str(v) for v in y], [f"#{i}" for i in range(len(texts))])

    def score(self, X, y=None) -> float:
        """The task's headline metric (accuracy for classes) on labelled texts."""
        return float(self.evaluate(X, y)[self.task_.headline])

    # --- the model folder ---------------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        from ..evaluation.report import format_report
        from ..model.folder import ModelFolder, save_folder
        from ..model.text import text_folder

        self._check()
        test = self.metrics_.get("test")
        extras = {}
        if test:
            from ..evaluation.text_html import text_report

            extras = {"report.txt": format_report(test, "test split"),
                      "report.html": text_report(self, test, title="headstart: test split", data=self.dataset_.source
                                                 if hasattr(self, "dataset_") else None)}
        settings = {k: getattr(self, k) for k in SAVED}
        settings["widths"] = list(settings["widths"])
        config = {"estimator": settings, "metrics": self.metrics_, "fit_info": self.fit_info_}
        c, state = text_folder(self.network_, self.vocabulary_, self.task_, config, self.tfidf_)
        return save_folder(ModelFolder(c, state, extras=extras), path)

    @classmethod
    def from_saved(cls, saved, threads: int = 1, verbose: bool = False) -> "TextClassifier":
        c = saved.config
        est = cls(**{k: v for k, v in c.get("estimator", {}).items() if k in SAVED}, threads=threads, verbose=verbose)
        est.network_, est.vocabulary_, est.task_, est.tfidf_ = saved.network, saved.vocabulary, saved.task, saved.tfidf
        est.classes_ = np.array(saved.task.labels) if saved.task.has_classes else None
        est.metrics_, est.fit_info_, est.history_ = c.get("metrics", {}), c.get("fit_info", {}), []
        return est


def load_text(path: str | Path, threads: int = 1, verbose: bool = False) -> TextClassifier:
    """A saved text model folder -> a fitted ``TextClassifier``."""
    from ..model.folder import load_model

    saved = load_model(path)
    if getattr(saved, "kind", None) != "text":
        raise HeadstartError(f"{str(path)!r} holds an image model, not a text model. Load it with headstart.load.")
    return TextClassifier.from_saved(saved, threads, verbose)


def _texts(texts) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    out = list(texts)
    bad = next((t for t in out if not isinstance(t, str)), None)
    if bad is not None:
        raise HeadstartError(f"expected texts (strings), got {type(bad).__name__}: {bad!r}.")
    return out


def _targets(samples) -> list[str]:
    return [s.label for s in samples]


def _list_dataset(X, y, task: str, val_fraction: float, test_fraction: float):
    from ..data.labels_csv import infer_task_name
    from ..data.split import assign_split
    from ..data.text import TextDataset, TextSample, tokenize

    texts = _texts(X)
    if y is None or len(y) != len(texts):
        raise HeadstartError(f"fit(texts, y) needs one target per text; got {len(texts)} texts and "
                             f"{'no' if y is None else len(y)} targets.")
    labels = ["|".join(map(str, v)) if isinstance(v, (list, tuple, set)) else str(v) for v in y]
    name, reason = (task, "given") if task != "auto" else infer_task_name(labels, "y")
    samples = [TextSample(t, lab, assign_split(" ".join(tokenize(t)), val_fraction, test_fraction), f"#{i}")
               for i, (t, lab) in enumerate(zip(texts, labels))]
    return TextDataset("<list>", samples, name, reason, "text", "y")


class _threads:
    """Torch's thread count for a block: small text CNNs run fastest on one thread (docs/text.md)."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        import torch

        self.before = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        import torch

        torch.set_num_threads(self.before)
