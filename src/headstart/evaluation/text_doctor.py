"""The doctor's checks on texts: likely wrong labels, the same sentence twice (across splits: a
leak; with two labels: a conflict), small and confused classes, outliers.

The features are TF-IDF word 1-2-grams and character 2-5-grams reduced to 128 dimensions
(truncated SVD, i.e. latent semantic analysis); ``diagnose`` then runs exactly as for images.
Exact duplicates are texts with the same tokens (``TextSample.digest``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.text import read_texts
from .doctor import NEAR_THRESHOLD, DoctorReport, diagnose

SVD_DIM = 128


def text_features(texts: list[str], dim: int = SVD_DIM, seed: int = 0) -> np.ndarray:
    """Dense (N, <= dim) LSA features of ``texts``."""
    from scipy.sparse import hstack
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2)
    x = hstack([word.fit_transform(texts), char.fit_transform(texts)]).tocsr()
    k = max(1, min(dim, x.shape[1] - 1, len(texts) - 1))
    return TruncatedSVD(k, random_state=seed).fit_transform(x).astype(np.float32)


def check_texts(data: str | Path, *, text_column: str | None = None, target_column: str | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.1, folds: int = 5,
                near_threshold: float = NEAR_THRESHOLD) -> DoctorReport:
    """Every check on a labelled text CSV (and the split files beside it)."""
    ds = read_texts(data, text_column=text_column, target_column=target_column,
                    val_fraction=val_fraction, test_fraction=test_fraction)
    samples = ds.samples
    x = text_features([s.text for s in samples])
    report = diagnose(x, [s.label for s in samples], [s.split for s in samples], [s.row for s in samples],
                      [s.digest for s in samples], folds=folds, near_threshold=near_threshold)
    report.settings["features"] = f"TF-IDF word 1-2 + char 2-5 grams, SVD-{x.shape[1]}"
    return report
