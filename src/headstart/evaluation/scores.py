"""A model's scores on labelled images -> the metrics dict that reports, JSON and the page read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def evaluate_scores(task, scores: np.ndarray, targets: Sequence, files: Sequence[str]) -> dict:
    """The task's metrics of ``scores`` (N, out_width) against ``targets``, with the task's name,
    the worst-predicted ``files`` and, for numbers, every (true, predicted) pair (the HTML
    report's scatter and residual plots)."""
    m = task.metrics(scores, targets)
    m["task"] = task.name
    m["worst"] = task.worst(scores, targets, files)
    if task.numeric:
        m["values"] = {"true": [float(v) for v in task.values(targets)],
                       "predicted": [float(v) for v in task.predict_values(scores)]}
    return m
