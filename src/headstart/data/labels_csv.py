"""Labels from a CSV (or a mapping) instead of folders: one row per image, a path and a target.

::

    path,count                    paths are relative to DATA (absolute paths work too)
    2024/img_001.jpg,3            the target column: names (classes), 'a|b' (several labels),
    2024/img_002.jpg,0            real numbers (continuous) or whole numbers (count)

The result holds the same ``Sample`` objects as ``scan`` (``label`` is the target cell as
text; the task parses it), each with its content digest and the same stable split, keyed by
the path as written in the CSV. So the feature cache and everything after it are shared with
folder data sets. Nothing in DATA or the CSV is ever written.

Problems with rows (files that do not exist, duplicate rows, targets the task cannot read)
stop loading with every problem listed, unless ``skip_bad_rows`` is set: then those rows are
left out and reported in ``skipped_rows``.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from ..errors import HeadstartError
from ..tasks import LABEL_SEP, Task, make_task
from .dataset import Dataset, RowProblem
from .scan import _Candidate, _check_files, _check_root
from .split import assign_split, check_fractions

TARGET_COLUMNS = ("label", "target", "count", "value")
MAX_CLASSES = 100  # more distinct names than this, in over half the rows: probably not classes
_COUNT_NAME = re.compile(r"count|number|quantity|qty|how_?many|^num|^n$|^n_|_n$", re.IGNORECASE)
_CLASS_NAME = re.compile(r"label|class|category|species|kind|type", re.IGNORECASE)
_SHOW = 20  # problems of one kind listed in a message (missing files: all of them)


def load_labels(data: str | Path, labels: str | Path | Mapping, *, task: str | Task = "auto",
                loss: str = "auto", path_column: str | None = None, target_column: str | None = None,
                val_fraction: float = 0.1, test_fraction: float = 0.1, skip_bad_rows: bool = False,
                deep: bool = False, progress: bool = False) -> Dataset:
    """Read the images listed in ``labels`` (a CSV file, or a mapping path -> target), with paths
    relative to ``data``, choose the task (or check the rows against the one given) and split.

    >>> r = load_labels("photos/", "photos/labels.csv")        # doctest: +SKIP
    >>> r.task.name, r.task_reason                               # doctest: +SKIP
    ('count', "every value is a whole number >= 0 and the column is named 'count'")
    """
    check_fractions(val_fraction, test_fraction)
    root = _check_root(data)
    source, header, rows = _read(labels)
    pcol, tcol = _columns(source, header, path_column, target_column)
    pi, ti = header.index(pcol), header.index(tcol)
    lines = [(line, row[pi].strip() if pi < len(row) else "", row[ti].strip() if ti < len(row) else "")
             for line, row in rows]
    if not lines:
        raise HeadstartError(f"{source} has a header ({', '.join(header)}) but no rows. "
                             "Expected one row per image: its path and its target.")
    training = not isinstance(task, Task)
    if isinstance(task, Task):
        chosen, reason = task, f"the model's task ({task.name})"
    elif task == "auto":
        name, reason = infer_task_name([t for _, _, t in lines], tcol)
        chosen = make_task(name, loss)
    else:
        chosen, reason = make_task(task, loss), "set by you (--task / task=)"
    if training:
        _check_column(source, tcol, chosen, [t for _, _, t in lines])

    good, problems = _check_rows(root, lines, chosen)
    if problems and not skip_bad_rows:
        raise _rows_error(source, root, pcol, tcol, chosen, problems, len(lines))
    check = [_Candidate(path, rel, target, assign_split(rel, val_fraction, test_fraction))
             for path, rel, target in good]
    samples, bad = _check_files(check, deep=deep, progress=progress)
    if not samples:
        raise HeadstartError(f"none of the {len(lines)} rows of {source} names a usable image under '{root}' "
                             f"({len(problems)} bad rows, {len(bad)} unreadable images). "
                             "Fix the paths (they are relative to DATA) or the images.")
    notes = []
    if problems:
        notes.append(f"skipped {len(problems)} bad row(s) of {source} (skip_bad_rows): "
                     + "; ".join(p.describe() for p in problems[:5]) + (" ..." if len(problems) > 5 else ""))
    if training:
        _check_column(source, tcol, chosen, [s.label for s in samples])
    return Dataset(root=root, layout="csv", samples=samples, bad=bad, notes=notes, source=source, task=chosen,
                   task_reason=reason, path_column=pcol, target_column=tcol, skipped_rows=problems)


def listed_files(data: str | Path, labels: str | Path, *, path_column: str | None = None) -> list[Path]:
    """The image files a CSV lists (paths relative to ``data``), in its order, for prediction;
    the target column is not needed. Files that do not exist are all listed in the error."""
    root = _check_root(data)
    source, header, rows = _read(labels, min_columns=1)
    pcol = _columns(source, header, path_column, None, need_target=False)[0]
    pi = header.index(pcol)
    files, missing = [], []
    for line, row in rows:
        cell = row[pi].strip() if pi < len(row) else ""
        path = Path(os.path.normpath(root / cell.replace("\\", "/")))
        if cell and path.is_file():
            files.append(path)
        else:
            missing.append((line, cell))
    if missing:
        raise HeadstartError(f"{len(missing)} of the {len(rows)} files listed in {source} (column {pcol!r}) do not "
                             f"exist under '{root}':\n" + "\n".join(f"  line {n}: {c!r}" for n, c in missing)
                             + "\nFix the paths (they are relative to DATA) or the DATA folder.")
    return list(dict.fromkeys(files))


def infer_task_name(values: list[str], column: str) -> tuple[str, str]:
    """The task a target column holds, and why: ``a|b`` cells -> multilabel; numbers ->
    continuous (count only when every value is a whole number >= 0 *and* the column is named
    like a count; binary for two distinct numbers); names -> binary (2) or multiclass."""
    cells = [v.strip() for v in values if v.strip()]
    if not cells:
        raise HeadstartError(f"the target column {column!r} is empty. Expected a target in every row; "
                             "choose the column with --target-column.")
    if any(LABEL_SEP in v for v in cells):
        example = next(v for v in cells if LABEL_SEP in v)
        return "multilabel", f"cells hold several labels separated by '{LABEL_SEP}' (e.g. {example!r})"
    numbers = [x for x in map(_number, cells) if x is not None]
    if len(numbers) >= 0.9 * len(cells):  # a few non-numbers are bad rows, reported as such
        distinct = sorted(set(numbers))
        whole = all(x >= 0 and x == int(x) for x in numbers)
        if whole and _COUNT_NAME.search(column):
            return "count", f"every value is a whole number >= 0 and the column is named {column!r}"
        if len(distinct) == 2:
            return "binary", f"the values are numbers with only two distinct values ({_fmt(distinct[0])}, {_fmt(distinct[1])})"
        if whole and _CLASS_NAME.search(column) and len(distinct) <= MAX_CLASSES:
            return "multiclass", (f"the values are {len(distinct)} distinct whole numbers in a column named "
                                  f"{column!r} (class ids); use --task count or continuous if they are amounts")
        why = f"the values are numbers ({_fmt(distinct[0])} to {_fmt(distinct[-1])})"
        if whole:
            why += (f"; they are all whole numbers >= 0 but the column {column!r} is not named like a count, "
                    "so counts are not assumed: use --task count for counts")
        return "continuous", why
    distinct = sorted(set(cells))
    if len(distinct) == 2:
        return "binary", f"the values are names with two distinct values ({distinct[0]!r}, {distinct[1]!r})"
    return "multiclass", f"the values are names ({len(distinct)} distinct, e.g. {', '.join(map(repr, distinct[:3]))})"


# --- reading ----------------------------------------------------------------------------------

def _read(labels, min_columns: int = 2) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    if isinstance(labels, Mapping):
        rows = [(i + 2, [str(k), LABEL_SEP.join(map(str, v)) if isinstance(v, (list, tuple, set)) else str(v)])
                for i, (k, v) in enumerate(labels.items())]
        return "<mapping>", ["path", "target"], rows
    path = Path(labels).expanduser()
    if not path.is_file():
        raise HeadstartError(f"labels file '{labels}' does not exist (looked in {path.resolve()}). "
                             "Expected a CSV with a header row, e.g. 'path,label'. Fix: check the path.")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise HeadstartError(f"'{labels}' is not UTF-8 text ({e}). Save the CSV as UTF-8.") from e
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(text.splitlines(), dialect)
    header = [h.strip() for h in next(reader, [])]
    if len(header) < min_columns or not any(header):
        raise HeadstartError(f"'{labels}' has no header row with at least {min_columns} column(s) (got {header}). "
                             "Expected e.g. 'path,label' then one row per image.")
    rows = [(reader.line_num, row) for row in reader if any(c.strip() for c in row)]
    return str(labels), header, rows


def _columns(source: str, header: list[str], path_column: str | None, target_column: str | None,
             need_target: bool = True) -> tuple[str, str | None]:
    lower = {h.lower(): h for h in header}

    def pick(given: str | None, what: str, flag: str) -> str | None:
        if given is None:
            return None
        if given in header:
            return given
        if given.lower() in lower:
            return lower[given.lower()]
        raise HeadstartError(f"{source} has no {what} column {given!r}; its columns are {header}. "
                             f"Fix: pass one of them with {flag}.")

    pcol = pick(path_column, "path", "--path-column") or lower.get("path") or header[0]
    if not need_target:
        return pcol, None
    tcol = pick(target_column, "target", "--target-column")
    if tcol is None:
        tcol = next((lower[n] for n in TARGET_COLUMNS if n in lower and lower[n] != pcol), None)
        tcol = tcol or next(h for h in header if h != pcol)
    if pcol == tcol:
        raise HeadstartError(f"the path and target columns are both {pcol!r} in {source}. "
                             "Fix: name them with --path-column and --target-column.")
    return pcol, tcol


def _number(v: str) -> float | None:
    try:
        x = float(v)
    except ValueError:
        return None
    return x if x == x and abs(x) != float("inf") else None


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


# --- checking ---------------------------------------------------------------------------------

def _check_column(source: str, column: str, task: Task, values: list[str]) -> None:
    """Whole-column problems that mean the wrong column or the wrong task."""
    cells = [v for v in values if v.strip()]
    if task.has_classes:
        distinct = set(cells)
        if len(distinct) > MAX_CLASSES and len(distinct) > 0.5 * len(cells):
            numeric = sum(_number(v) is not None for v in cells) >= 0.9 * len(cells)
            raise HeadstartError(
                f"column {column!r} of {source} has {len(distinct)} distinct values in {len(cells)} rows "
                f"(e.g. {', '.join(map(repr, sorted(distinct)[:3]))}): far too many for classes; it is "
                "probably not the label column. Fix: choose the column with --target-column"
                + (", or use --task continuous / count for numbers." if numeric else "."))
    parsed = []
    for v in values:
        try:
            parsed.append(task.parse(v))
        except ValueError:
            pass
    distinct = {t for p in parsed for t in p} if task.name == "multilabel" else set(parsed)
    if parsed and len(distinct) < 2:
        raise HeadstartError(
            f"every usable row of {source} has the same {'label' if task.name == 'multilabel' else 'value'} "
            f"in column {column!r} ({sorted(map(str, distinct)) or 'none'}); there is nothing to learn. "
            "Expected at least two distinct targets. Fix: check --target-column, or add images of other targets.")


def _check_rows(root: Path, lines: list[tuple[int, str, str]], task: Task):
    """(usable rows as (path, rel, target), problems); each problem row is left out."""
    problems: list[RowProblem] = []
    seen: dict[Path, tuple[int, str, object]] = {}
    conflicted: set[Path] = set()
    good: dict[Path, tuple[Path, str, str]] = {}
    for line, cell, target in lines:
        if not cell:
            problems.append(RowProblem(line, cell, "no path", "the path cell is empty"))
            continue
        rel = cell.replace("\\", "/")
        path = Path(os.path.normpath(root / rel))
        try:
            value = task.parse(target)
        except ValueError as e:
            problems.append(RowProblem(line, cell, "bad target", f"target {str(e) if target else 'is missing'}"))
            continue
        if path in seen:
            first, _, first_value = seen[path]
            if first_value == value:
                problems.append(RowProblem(line, cell, "duplicate row", f"repeats line {first}"))
            else:
                problems.append(RowProblem(line, cell, "conflicting duplicate",
                                           f"line {first} gives the same file another target ({first_value!r} vs {value!r})"))
                conflicted.add(path)
            continue
        seen[path] = (line, cell, value)
        if not path.is_file():
            problems.append(RowProblem(line, cell, "missing file", f"no file at {path}"))
            continue
        key = path.relative_to(root).as_posix() if path.is_relative_to(root) else path.as_posix()
        good[path] = (path, key, target)
    for path in conflicted:  # neither target can be trusted
        line, cell, _ = seen[path]
        if good.pop(path, None):
            problems.append(RowProblem(line, cell, "conflicting duplicate", "another row gives this file another target"))
    return list(good.values()), sorted(problems, key=lambda p: p.line)


def _rows_error(source, root, pcol, tcol, task, problems, n_rows) -> HeadstartError:
    by = Counter(p.reason for p in problems)
    parts = [f"{n_rows} rows of {source} (path column {pcol!r}, target column {tcol!r}, task {task.name}) "
             f"have {len(problems)} problem(s): " + ", ".join(f"{n} {r}" for r, n in by.items()) + "."]
    missing = [p for p in problems if p.reason == "missing file"]
    if missing:
        hint = (" None of the listed files exist: paths are relative to DATA, so DATA is probably the "
                "wrong folder." if len(missing) == n_rows else "")
        parts.append(f"Files that do not exist under '{root}' ({len(missing)}):{hint}\n"
                     + "\n".join(f"  {p.describe()}" for p in missing))
    for reason in ("bad target", "duplicate row", "conflicting duplicate", "no path"):
        rows = [p for p in problems if p.reason == reason]
        if rows:
            more = f"\n  ... and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
            parts.append(f"{reason} ({len(rows)}):\n" + "\n".join(f"  {p.describe()}" for p in rows[:_SHOW]) + more)
    parts.append("Fix the CSV, or pass --skip-bad-rows (skip_bad_rows=True) to leave these rows out; "
                 "the report then says how many were skipped.")
    return HeadstartError("\n".join(parts))
