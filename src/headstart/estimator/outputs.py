"""Predictions as rows (one dict per file, in input order), and where they go besides the
screen: copies of the images sorted into one folder per label (never moves or overwrites
anything), and a Parquet file of the rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from ..errors import HeadstartError
from .sorting import sort_into  # noqa: F401  (re-exported: the CLI's --sort-into)

PARQUET_ROWS = 10_000  # rows per row group: memory stays flat however many files


def prediction_rows(task, paths: Sequence, scores, failures: Sequence, top_k: int) -> list[dict]:
    """One row per path, in order: ``{"file", **the task's decoded scores}``, or ``{"file",
    "error", "reason"}`` for the paths ``failures`` name (``Failure.index`` into ``paths``).
    ``scores`` holds the rows of the other paths only, in order."""
    failed = {f.index: f for f in failures}
    decoded = iter(task.decode(scores, top_k) if len(scores) else [])
    return [{"file": str(p), "error": failed[i].detail, "reason": failed[i].reason} if i in failed
            else {"file": str(p), **next(decoded)} for i, p in enumerate(paths)]


def require_pyarrow():
    try:
        import pyarrow
    except ImportError:
        raise HeadstartError("--out FILE.parquet needs pyarrow, which is not installed here. Install it with: "
                             "pip install 'headstart[cluster]' (or pip install pyarrow), or print the "
                             "predictions with --format csv instead.") from None
    return pyarrow


def parquet_schema(task):
    """One column per key of ``predict --format json``'s rows: ``file``, the task's fields
    (typed: nested lists for ``top``, a map for multilabel ``probabilities``), then ``reason``
    and ``error``, null except for files that could not be read."""
    import numpy as np

    pa = require_pyarrow()
    sample = task.decode(np.full((1, task.out_width), 0.5, np.float32), top_k=1)[0]
    fields = [pa.field("file", pa.string())]
    for k, v in sample.items():
        if isinstance(v, dict):  # multilabel probabilities: label -> probability
            fields.append(pa.field(k, pa.map_(pa.string(), pa.float64())))
        else:
            fields.append(pa.field(k, pa.array([v]).type))
    return pa.schema([*fields, pa.field("reason", pa.string()), pa.field("error", pa.string())])


def write_parquet(rows: Iterable[dict], task, path: str | Path) -> tuple[int, int]:
    """Write ``predict_files``-shaped ``rows`` (a list or a generator) to ``path`` atomically,
    ``PARQUET_ROWS`` at a time; returns (rows written, rows with an error)."""
    import pyarrow.parquet as pq

    from ..paths import atomic_path

    pa = require_pyarrow()
    schema = parquet_schema(task)
    n = failed = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        chunk: list[dict] = []
        for r in rows:
            chunk.append(r)
            n += 1
            failed += "error" in r
            if len(chunk) == PARQUET_ROWS:
                writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
                chunk = []
        if chunk or n == 0:
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
    return n, failed
