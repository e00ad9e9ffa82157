"""``read_dataset()``: a folder, a folder with a CSV or mapping of targets, or a list of image
paths with their targets -> one ``Dataset``.

>>> ds = read_dataset("photos/")                          # doctest: +SKIP
>>> ds.labels, len(ds.subset("train")), ds.describe()     # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import HeadstartError
from .dataset import Dataset
from .labels_csv import load_labels
from .scan import scan


def read_dataset(data: str | Path | Sequence, labels: str | Path | Mapping | Sequence | None = None, *,
                 task: str = "auto", loss: str = "auto", path_column: str | None = None,
                 target_column: str | None = None, val_fraction: float = 0.1, test_fraction: float = 0.1,
                 skip_bad_rows: bool = False, deep: bool = False, progress: bool = False) -> Dataset:
    """Read labelled images:

    - ``read_dataset("photos/")``: class folders (``photos/<class>/*`` or
      ``photos/{train,val,test}/<class>/*``);
    - ``read_dataset("photos/", "labels.csv")`` or ``(..., {"a.jpg": 3})``: the images a CSV or a
      mapping lists, with paths relative to ``photos/``; the task comes from the targets unless
      ``task`` names it;
    - ``read_dataset(["a.jpg", "b.jpg"], ["cat", "dog"])``: image paths and one target each.

    Splits not given by folders are carved by a stable hash of each path (``val_fraction``,
    ``test_fraction``). Nothing is ever written, moved or deleted.
    """
    if isinstance(data, (str, os.PathLike)):
        if labels is None:
            if path_column or target_column:
                raise HeadstartError("path_column / target_column (--path-column / --target-column) name the "
                                     "columns of a labels CSV; pass the CSV with labels= (--labels).")
            return scan(data, val_fraction=val_fraction, test_fraction=test_fraction, deep=deep, progress=progress)
        if not isinstance(labels, (str, os.PathLike, Mapping)):
            raise HeadstartError(f"with a folder, labels must be a CSV file or a {{path: target}} mapping, got "
                                 f"{type(labels).__name__}; for a list of image paths pass the paths themselves "
                                 "as data: read_dataset(paths, targets).")
        return load_labels(data, labels, task=task, loss=loss, path_column=path_column, target_column=target_column,
                           val_fraction=val_fraction, test_fraction=test_fraction, skip_bad_rows=skip_bad_rows,
                           deep=deep, progress=progress)
    return _from_lists(data, labels, task=task, loss=loss, val_fraction=val_fraction, test_fraction=test_fraction,
                       skip_bad_rows=skip_bad_rows, deep=deep, progress=progress)


def _from_lists(paths: Sequence, targets, **options) -> Dataset:
    """Image paths and one target each: the mapping form, rooted at the paths' common folder."""
    if hasattr(paths, "tolist") and not isinstance(paths, (str, bytes)):  # a NumPy array of paths
        paths = paths.tolist()
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, os.PathLike)) for p in paths):
        kinds = sorted({type(p).__name__ for p in paths}) if isinstance(paths, (list, tuple)) else []
        raise HeadstartError(f"data must be a folder, or a list of image file paths, got {type(paths).__name__}"
                             + (f" of {', '.join(kinds[:3])}" if kinds else "")
                             + "; images in memory go as an array (N, H, W[, C]).")
    if targets is None or isinstance(targets, (str, os.PathLike, Mapping)) or len(targets) != len(paths):
        got = "none" if targets is None else (f"{len(targets)}" if hasattr(targets, "__len__") else
                                              type(targets).__name__)
        raise HeadstartError(f"a list of {len(paths)} image paths needs one target each (y), got {got}: "
                             "fit(paths, y).")
    if not paths:
        raise HeadstartError("the list of image paths is empty; pass at least one image per class.")
    full = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath([os.path.dirname(p) for p in full])
    mapping = {os.path.relpath(p, root): (t.tolist() if hasattr(t, "tolist") else t) for p, t in zip(full, targets)}
    if len(mapping) < len(full):
        raise HeadstartError(f"{len(full) - len(mapping)} image paths are given twice; give each image once.")
    auto = options.get("task") == "auto"
    if auto:  # like class folders and arrays: targets in a list are class labels unless task= says
        options["task"] = "binary" if len({str(t) for t in mapping.values()}) == 2 else "multiclass"
    ds = load_labels(root, mapping, **options)
    ds.layout, ds.source = "list", "<list>"
    if auto:
        ds.task_reason = f"the targets of a list are class labels: {len(ds.labels)} -> {ds.task.name} (task= for numbers)"
    return ds
