"""The CNN's partner for classes: TF-IDF word 1-2-grams and character 2-5-grams, logistic regression.

A bag of n-grams sees what a CNN trained from scratch on a few thousand sentences misses (rare
words, their spelling) and errs elsewhere, so the average of the two models' probabilities beats
either (docs/text.md). Fitted with scikit-learn; saved as JSON (vocabularies) and tensors (idf,
weights), never pickled: ``from_saved`` rebuilds the vectorizers from them.

>>> m = TfidfLogistic.fit(["a fine film", "a dull film", "fine", "dull"], [1, 0, 1, 0], 2)
>>> m.scores(["fine"]).argmax(1).tolist()
[1]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

WORD = dict(ngram_range=(1, 2), sublinear_tf=True, min_df=1, lowercase=True)
CHAR = dict(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, lowercase=True)
PREFIX = "tfidf."  # its tensors in head.safetensors, beside the CNN's


class TfidfLogistic:
    """Texts -> class probabilities (N, K); columns follow the task's labels."""

    def __init__(self, word, char, coef: np.ndarray, intercept: np.ndarray, C: float):
        self.word, self.char, self.C = word, char, C
        self.coef, self.intercept = coef.astype(np.float32), intercept.astype(np.float32)  # (K, F), (K,)

    @classmethod
    def fit(cls, texts: Sequence[str], y: Sequence[int], n_classes: int, C: float = 30.0) -> "TfidfLogistic":
        """``y``: class indices in [0, n_classes). Every class needs a text (logistic regression's rule)."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        word, char = TfidfVectorizer(**WORD), TfidfVectorizer(**_char_df(len(texts)))
        x = _stack(word.fit_transform(texts), char.fit_transform(texts))
        lr = LogisticRegression(C=C, max_iter=2000).fit(x, np.asarray(y))
        coef, intercept = np.zeros((n_classes, x.shape[1])), np.zeros(n_classes)
        if lr.coef_.shape[0] == 1:                    # two classes: one logit; softmax([0, z]) = sigmoid(z)
            coef[lr.classes_[1]], intercept[lr.classes_[1]] = lr.coef_[0], lr.intercept_[0]
        else:
            coef[lr.classes_], intercept[lr.classes_] = lr.coef_, lr.intercept_
        return cls(word, char, coef, intercept, C)

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        x = _stack(self.word.transform(list(texts)), self.char.transform(list(texts)))
        z = np.asarray(x @ self.coef.T) + self.intercept  # (N, K)
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    # --- the model folder: JSON and tensors -------------------------------------------------

    def to_config(self) -> dict:
        return {"C": self.C, "word": _terms(self.word), "char": _terms(self.char),
                "char_min_df": self.char.min_df}

    def state(self) -> dict[str, torch.Tensor]:
        return {PREFIX + k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
                (("word_idf", self.word.idf_), ("char_idf", self.char.idf_), ("coef", self.coef),
                 ("intercept", self.intercept))}

    @classmethod
    def from_saved(cls, config: dict, state: dict[str, torch.Tensor]) -> "TfidfLogistic":
        word = _vectorizer(WORD, config["word"], state[PREFIX + "word_idf"])
        char = _vectorizer({**CHAR, "min_df": config.get("char_min_df", 2)}, config["char"], state[PREFIX + "char_idf"])
        return cls(word, char, state[PREFIX + "coef"].numpy(), state[PREFIX + "intercept"].numpy(), config["C"])


def blend(cnn_scores: np.ndarray, model: TfidfLogistic | None, texts: Sequence[str], weight: float) -> np.ndarray:
    """The CNN's probabilities averaged with the TF-IDF part's (weight ``weight``); the CNN's alone without it."""
    if model is None or not weight:
        return cnn_scores
    return ((1 - weight) * cnn_scores + weight * model.scores(texts)).astype(np.float32)


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """head.safetensors -> (the CNN's tensors, the TF-IDF part's)."""
    return ({k: v for k, v in state.items() if not k.startswith(PREFIX)},
            {k: v for k, v in state.items() if k.startswith(PREFIX)})


def expected_tfidf(config: dict, n_classes: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """The tensors ``config`` (config.json's ``"tfidf"``) implies: name -> (shape, "float")."""
    nw, nc = len(config["word"]), len(config["char"])
    return {PREFIX + "word_idf": ((nw,), "float"), PREFIX + "char_idf": ((nc,), "float"),
            PREFIX + "coef": ((n_classes, nw + nc), "float"), PREFIX + "intercept": ((n_classes,), "float")}


def _char_df(n: int) -> dict:
    return {**CHAR, "min_df": 2 if n >= 50 else 1}  # a tiny set: a character n-gram seen once still counts


def _stack(a, b):
    from scipy.sparse import hstack

    return hstack([a, b]).tocsr()


def _terms(vectorizer) -> list[str]:
    return [t for t, _ in sorted(vectorizer.vocabulary_.items(), key=lambda kv: kv[1])]  # index order


def _vectorizer(settings: dict, terms: list[str], idf: torch.Tensor):
    from sklearn.feature_extraction.text import TfidfVectorizer

    v = TfidfVectorizer(**settings, vocabulary={t: i for i, t in enumerate(terms)})
    v.idf_ = idf.numpy().astype(np.float64)
    return v
