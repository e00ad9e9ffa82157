"""One ``Dataset`` type for every way images come with targets (``read.read_dataset`` makes it).

A folder of class folders (``scan``), the images a CSV or a ``{path: target}`` mapping lists
relative to a folder (``labels_csv``), and a list of image paths with one target each (what a
scikit-learn user passes as ``fit(X, y)``) all become the same object: good ``samples`` (path,
target, split, content digest), ``bad`` files with their reasons, duplicate groups and notes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import HeadstartError
from .split import SPLITS


@dataclass(frozen=True)
class Sample:
    """One good image: where it is, its target, its split and its content digest."""

    path: Path  # absolute
    rel: str  # posix path relative to the data root (or as given), e.g. "train/cat/1.jpg"
    label: str  # the target as text: a class name, "a|b" labels, a number (the task parses it)
    split: str  # "train" | "val" | "test"
    digest: str  # sha256 hex of the file's bytes


@dataclass(frozen=True)
class BadFile:
    """A file with an image extension that can't be used, and why."""

    path: Path
    rel: str
    reason: str  # a BAD_REASONS key, e.g. "truncated"
    detail: str  # what happened, in words


@dataclass
class DuplicateGroup:
    """Files with exactly the same bytes."""

    rels: list[str]
    labels: list[str]
    splits: list[str]
    spans_classes: bool  # the same picture carries different labels
    spans_splits: bool  # the same picture is in, e.g., train and test (a leak)


@dataclass(frozen=True)
class RowProblem:
    """A row of a labels CSV that cannot be used, and why."""

    line: int  # line number in the CSV (the header is line 1)
    path: str  # the path cell as written
    reason: str  # "missing file", "duplicate row", "conflicting duplicate", "bad target", "no path"
    detail: str

    def describe(self) -> str:
        return f"line {self.line}: {self.path!r}: {self.detail}"


@dataclass
class Dataset:
    """Labelled images, ready for the pipeline. ``task`` is set when the targets came from a CSV
    or a list (the task they hold, unfitted, and ``task_reason`` says why); ``None`` for class
    folders, whose names are the classes."""

    root: Path
    layout: str  # "classes" (root/<class>/*), "splits" (root/<split>/<class>/*), "csv" or "list"
    samples: list[Sample]  # good files only, sorted by rel (a list: in the order given)
    bad: list[BadFile] = field(default_factory=list)
    duplicates: list[DuplicateGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = ""  # the folder, the CSV file, "<mapping>" or "<list>"
    task: object = None  # a headstart.tasks.Task, or None for class folders
    task_reason: str = ""
    path_column: str | None = None
    target_column: str | None = None
    skipped_rows: list[RowProblem] = field(default_factory=list)

    @property
    def from_table(self) -> bool:
        """Targets from a CSV, a mapping or a list (not from folder names)."""
        return self.layout in ("csv", "list")

    @property
    def labels(self) -> list[str]:
        """Sorted class names with at least one good image; [] when the targets are not classes."""
        if self.task is not None and not self.task.has_classes:
            return []
        return sorted({s.label for s in self.samples})

    def subset(self, split: str) -> list[Sample]:
        """The samples of one split ("train", "val" or "test")."""
        if split not in SPLITS:
            raise HeadstartError(f"Unknown split {split!r}; expected one of {SPLITS}.")
        return [s for s in self.samples if s.split == split]

    def counts(self) -> dict[str, dict[str, int]]:
        """label -> split -> number of good samples (every split listed, zeros included);
        one row ``"all"`` when the targets are not classes."""
        labels = self.labels  # (computed from every sample: once)
        out = {k: dict.fromkeys(SPLITS, 0) for k in labels or ["all"]}
        for s in self.samples:
            out[s.label if labels else "all"][s.split] += 1
        return out

    def describe(self) -> str:
        """What was found, in a few lines for the terminal."""
        if self.from_table:
            by_split = Counter(s.split for s in self.samples)
            cols = (f" (path column {self.path_column!r}, target column {self.target_column!r})"
                    if self.path_column else "")
            lines = [f"found {len(self.samples)} images listed in {self.source}{cols}: "
                     + ", ".join(f"{k} {by_split[k]}" for k in SPLITS)]
            if self.bad:
                lines.append(f"  {len(self.bad)} listed files are not readable images; skipped")
        else:
            counts = self.counts()
            lines = [f"found {len(self.samples)} images in {len(counts)} classes ({self.layout} layout)"]
            for label, by_split in counts.items():
                lines.append(f"  {label:<20} " + "  ".join(f"{k} {v:>5}" for k, v in by_split.items()))
            if self.bad:
                lines.append(f"  {len(self.bad)} bad files skipped (run `headstart scan` for the list)")
        return "\n".join(lines + [f"  note: {n}" for n in self.notes])
