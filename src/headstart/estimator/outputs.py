"""Predictions as rows (one dict per file, in input order), and where they go besides the
screen: copies of the images sorted into one folder per label (never moves or overwrites
anything), and a Parquet file of the rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
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


def mark_unsure(rows: Iterable[dict], min_confidence: float) -> Iterator[dict]:
    """Each row, with ``"unsure": True`` when its class's probability is below ``min_confidence``
    (``False`` otherwise; rows of unreadable files unchanged). Lazy: works on a generator."""
    for r in rows:
        if "probability" in r and "label" in r:
            r["unsure"] = r["probability"] < min_confidence
        yield r


def table_lines(rows: Sequence[dict], task, min_confidence: float | None = None) -> list[str]:
    """``predict``'s table: a header and one aligned row per file, in input order. Classes get
    FILE, LABEL, PROB, TOP k and NOTE (a tuned binary threshold, an unsure prediction, or why a
    file could not be read); other tasks get FILE and their CSV columns."""
    has_classes = getattr(task, "has_classes", False)
    k = max((len(r.get("top", ())) for r in rows), default=0)
    head = ["FILE", "LABEL", "PROB", f"TOP {k}", "NOTE"] if has_classes else \
        ["FILE", *(c.upper() for c in task.columns), "NOTE"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["file"], "ERROR", *[""] * (len(head) - 3), f"{r['reason']}: {r['error']}"])
        elif has_classes:
            top = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in r["top"])
            body.append([r["file"], str(r["label"]), f"{r['probability']:.2f}", top, _note(r, task, min_confidence)])
        else:
            body.append([r["file"], *task.cells(r), ""])
    if not has_classes and "interval_low" in task.columns:  # a count: one column, its level named
        i = 1 + list(task.columns).index("interval_low")
        head = [*head[:i], f"{task.LEVEL:.0%} INTERVAL", *head[i + 2:]]
        body = [row if row[1] == "ERROR" else [*row[:i], f"{row[i]}-{row[i + 1]}", *row[i + 2:]] for row in body]
    if not any(row[-1] for row in body):  # no notes: no NOTE column
        head, body = head[:-1], [row[:-1] for row in body]
    right = {"PROB", "VALUE", "EXPECTED", "COUNT", "PROBABILITY", "INTERVAL_LOW", "INTERVAL_HIGH"}
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        out = [c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells[:-1], widths, head)]
        return "  ".join([*out, cells[-1]]).rstrip()

    return [line(head), *map(line, body)]


def _note(r: dict, task, min_confidence: float | None) -> str:
    notes = []
    t = r.get("threshold", 0.5)
    if t != 0.5:  # a tuned binary threshold: say which side of it the positive class fell
        pos = task.labels[1]
        p_pos = r["probability"] if r["label"] == pos else 1 - r["probability"]
        notes.append(f"p({pos}) {p_pos:.2f} {'>=' if p_pos >= t else '<'} threshold {t:.2f}")
    if r.get("unsure"):
        notes.append(f"unsure: below --min-confidence {min_confidence:g}")
    return "; ".join(notes)


def require_pyarrow():
    try:
        import pyarrow
    except ImportError:
        raise HeadstartError("--out FILE.parquet needs pyarrow, which is not installed here. Install it with: "
                             "pip install 'headstart[cluster]' (or pip install pyarrow), or print the "
                             "predictions with --format csv instead.") from None
    return pyarrow


def parquet_schema(task, unsure: bool = False):
    """One column per key of ``predict --format json``'s rows: ``file``, the task's fields
    (typed: nested lists for ``top``, a map for multilabel ``probabilities``), ``unsure`` with
    ``--min-confidence``, then ``reason`` and ``error``, null except for files that could not be read."""
    import numpy as np

    pa = require_pyarrow()
    sample = task.decode(np.full((1, task.out_width), 0.5, np.float32), top_k=1)[0]
    fields = [pa.field("file", pa.string())]
    for k, v in sample.items():
        if isinstance(v, dict):  # multilabel probabilities: label -> probability
            fields.append(pa.field(k, pa.map_(pa.string(), pa.float64())))
        else:
            fields.append(pa.field(k, pa.array([v]).type))
    if unsure:
        fields.append(pa.field("unsure", pa.bool_()))
    return pa.schema([*fields, pa.field("reason", pa.string()), pa.field("error", pa.string())])


def write_parquet(rows: Iterable[dict], task, path: str | Path, unsure: bool = False) -> tuple[int, int]:
    """Write ``predict_files``-shaped ``rows`` (a list or a generator) to ``path`` atomically,
    ``PARQUET_ROWS`` at a time; returns (rows written, rows with an error)."""
    import pyarrow.parquet as pq

    from ..paths import atomic_path

    pa = require_pyarrow()
    schema = parquet_schema(task, unsure)
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
