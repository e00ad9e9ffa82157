"""``ImageClassifier.evaluate``: a fitted model's full metrics on labelled images."""

from __future__ import annotations

import os

import numpy as np

from . import inputs
from .frozen import score_features


def evaluate(est, X, y, path_column: str | None, target_column: str | None) -> dict:
    """A folder (its test split when it has split folders, else all its images), the images a
    CSV / mapping ``y`` lists, a list of paths with targets ``y``, or arrays with labels ``y``."""
    from ..data.read import read_dataset

    if inputs.is_array_input(X):
        from .scratch import array_features, labelled_arrays

        x, labels = labelled_arrays(X, y, "score(X, y) / evaluate(X, y)")
        return score_features(est.task_, est.head_, array_features(est, est.backbone_, x), labels,
                              [f"#{i}" for i in range(len(x))])
    table = y is not None or not isinstance(X, (str, os.PathLike))
    dataset = read_dataset(X, y, task=est.task_ if table else "auto", path_column=path_column,
                           target_column=target_column, val_fraction=0.0, test_fraction=0.0,
                           skip_bad_rows=est.skip_bad_rows)
    samples = dataset.subset("test") if dataset.layout == "splits" and dataset.subset("test") else dataset.samples
    feats, failures = est._features(est.backbone_, [s.path for s in samples], [s.digest for s in samples])
    bad = {f.index for f in failures}
    keep = [i for i in range(len(samples)) if i not in bad]
    m = score_features(est.task_, est.head_, feats[keep] if keep else np.zeros((0, feats.shape[1]), np.float32),
                       [samples[i].label for i in keep], [samples[i].rel for i in keep])
    m["skipped"] = [{"file": samples[f.index].rel, "reason": f.reason} for f in failures] + \
                   [{"file": b.rel, "reason": b.reason} for b in dataset.bad]
    if dataset.from_table:
        m["skipped_rows"] = [{"line": r.line, "path": r.path, "reason": r.reason, "detail": r.detail}
                             for r in dataset.skipped_rows]
    return m
