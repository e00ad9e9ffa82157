"""Short texts for sentence classification: reading, tokenising, a vocabulary, fixed-length ids.

Texts come from a CSV with a text column (``text``, else ``--text-column``) and a target column,
or, to predict, from a file with one text per line. ``train.csv`` / ``validation.csv`` /
``test.csv`` side by side (name one of them, or their folder) are used as the splits (without
``validation.csv``, ``val_fraction`` of ``train.csv`` is held out by a stable hash); a single
CSV is split by a stable hash of each text, so the same sentence always lands in the same split.

Tokenising needs no download: lower-cased words, with numbers and apostrophe endings kept
together and every other symbol a token of its own (``TOKEN_RE``), as Kim (2014) cleaned
his sentences. The character level reads the text as its characters.

>>> tokenize("What's the capital of France? It's 3.5 km!")
['what', "'s", 'the', 'capital', 'of', 'france', '?', 'it', "'s", '3.5', 'km', '!']
>>> vocab = Vocabulary.build([["a", "b"], ["a"]])
>>> vocab.encode([["a", "c"]], length=4).tolist()
[[2, 1, 0, 0]]
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from .labels_csv import infer_task_name
from .split import assign_split

TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)*|n't|'\w+|\w+|[^\w\s]")  # numbers, n't 's 'll, words, symbols
TEXT_COLUMNS = ("text", "sentence", "review", "question", "comment")
TARGET_COLUMNS = ("label", "target", "class", "y")
SPLIT_FILES = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
PAD, UNK = "<pad>", "<unk>"
LEVELS = ("word", "char")


def tokenize(text: str, level: str = "word") -> list[str]:
    """Words (lower case, ``TOKEN_RE``) or characters (lower case, spaces kept once)."""
    text = str(text).lower()
    if level == "char":
        return list(" ".join(text.split()))
    return TOKEN_RE.findall(text.replace("n't", " n't"))


@dataclass(frozen=True)
class TextSample:
    text: str
    label: str     # the target as text; the task parses it
    split: str     # "train" | "val" | "test"
    row: str       # where it came from, e.g. "train.csv:12"

    @property
    def digest(self) -> str:
        """sha256 of the normalised text: the same sentence in two rows has the same digest."""
        return hashlib.sha256(" ".join(tokenize(self.text)).encode("utf-8")).hexdigest()


@dataclass
class TextDataset:
    source: str
    samples: list[TextSample]
    task_name: str
    task_reason: str
    text_column: str
    target_column: str
    notes: list[str] = field(default_factory=list)

    def subset(self, split: str) -> list[TextSample]:
        return [s for s in self.samples if s.split == split]

    def counts(self) -> dict[str, int]:
        return dict(Counter(s.split for s in self.samples))

    def describe(self) -> str:
        c = self.counts()
        return (f"{self.source}: {len(self.samples)} texts (train {c.get('train', 0)}, validation "
                f"{c.get('val', 0)}, test {c.get('test', 0)}); text column {self.text_column!r}, "
                f"target column {self.target_column!r}")


def split_files(data: str | Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., "test": ...}`` when ``data`` is (or sits beside) ``train.csv``."""
    p = Path(data).expanduser()
    folder = p if p.is_dir() else p.parent
    if p.is_file() and p.name not in SPLIT_FILES.values():
        return None
    found = {s: folder / n for s, n in SPLIT_FILES.items() if (folder / n).is_file()}
    return found if "train" in found else None


def is_text_csv(data: str | Path, text_column: str | None = None) -> bool:
    """True when ``data`` is a CSV (or a folder holding ``train.csv``) with a text column."""
    files = split_files(data)
    p = files["train"] if files else Path(data).expanduser()
    if not p.is_file() or p.suffix.lower() not in (".csv", ".tsv"):
        return False
    header = [h.strip().lower() for h in _header(p)]
    return (text_column or "").lower() in header if text_column else any(c in header for c in TEXT_COLUMNS)


def read_texts(data: str | Path, *, text_column: str | None = None, target_column: str | None = None,
               task: str = "auto", val_fraction: float = 0.1, test_fraction: float = 0.1) -> TextDataset:
    """Read a labelled text CSV (or the split files beside it) into a ``TextDataset``."""
    files = split_files(data)
    rows: list[tuple[str, str, str, str]] = []  # text, target, split, row
    tcol = gcol = ""
    notes = []
    for split, path in (files or {"": Path(data).expanduser()}).items():
        tcol, gcol, found = _read_rows(path, text_column, target_column)
        held_out = files is not None and split == "train" and "val" not in files  # TREC: no validation file
        for n, text, target in found:
            key = " ".join(tokenize(text))
            s = split or assign_split(key, val_fraction, test_fraction)
            if held_out and assign_split(key, val_fraction, 0.0) == "val":
                s = "val"
            rows.append((text, target, s, f"{path.name}:{n}"))
    if files:
        notes.append("splits from " + ", ".join(p.name for p in files.values()) + (
            "" if "val" in files else f"; validation: {val_fraction:.0%} of train.csv by a stable hash"))
    if not rows:
        raise HeadstartError(f"{data} holds no rows with a text. Expected a CSV with a header, e.g. 'text,label'.")
    name, reason = (task, "given") if task != "auto" else infer_task_name([r[1] for r in rows], gcol)
    return TextDataset(str(data), [TextSample(*r) for r in rows], name, reason, tcol, gcol, notes)


def read_lines(data: str | Path, text_column: str | None = None) -> list[str]:
    """Texts to predict: a CSV's text column, or one text per line of any other file."""
    p = Path(data).expanduser()
    if not p.is_file():
        raise HeadstartError(f"text file {str(data)!r} does not exist. Expected a CSV with a text column or a "
                             "text file with one text per line.")
    if p.suffix.lower() in (".csv", ".tsv"):
        return [t for _, t, _ in _read_rows(p, text_column, None, need_target=False)[2]]
    return [line.strip() for line in p.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def _header(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return next(csv.reader(f, _dialect(path)), [])


def _dialect(path: Path):
    return csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel


def _read_rows(path: Path, text_column: str | None, target_column: str | None, need_target: bool = True):
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, _dialect(path))
            header = [h.strip() for h in next(reader, [])]
            table = [(reader.line_num, r) for r in reader if any(c.strip() for c in r)]
    except UnicodeDecodeError as e:
        raise HeadstartError(f"{path} is not UTF-8 text ({e}). Save it as UTF-8.") from None
    ti = _column(path, header, text_column, TEXT_COLUMNS, "text", "--text-column")
    gi = _column(path, header, target_column, TARGET_COLUMNS, "target", "--target-column", skip=ti) \
        if need_target else ti
    out = []
    for n, r in table:
        if max(ti, gi) >= len(r):
            raise HeadstartError(f"{path} line {n} has {len(r)} cells, the header {len(header)}: {r!r}. "
                                 "Quote texts that hold commas.")
        out.append((n, r[ti], r[gi].strip()))
    return header[ti], header[gi], [(n, t, g) for n, t, g in out if t.strip()]


def _column(path: Path, header: list[str], given: str | None, names: Sequence[str], what: str, flag: str,
            skip: int = -1) -> int:
    lower = [h.lower() for h in header]
    if given is not None:
        if given.lower() not in lower:
            raise HeadstartError(f"{path} has no {what} column {given!r}; its columns are {header}. "
                                 f"Fix: pass one of them with {flag}.")
        return lower.index(given.lower())
    for n in names:
        if n in lower and lower.index(n) != skip:
            return lower.index(n)
    others = [i for i in range(len(header)) if i != skip]
    if what == "target" and len(others) == 1:
        return others[0]
    raise HeadstartError(f"{path} has no {what} column: its columns are {header}, expected one named "
                         f"{' or '.join(map(repr, names[:2]))}. Fix: name it with {flag}.")


@dataclass
class Vocabulary:
    """Token -> id; 0 pads, 1 stands for tokens never seen in training."""

    tokens: list[str]

    def __post_init__(self):
        self.index = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(cls, texts: Iterable[list[str]], min_count: int = 1, extra: Iterable[str] = ()) -> "Vocabulary":
        counts = Counter(t for toks in texts for t in toks)
        kept = sorted((t for t, c in counts.items() if c >= min_count), key=lambda t: (-counts[t], t))
        kept += [t for t in dict.fromkeys(extra) if t not in counts]
        return cls([PAD, UNK, *kept])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, texts: Sequence[list[str]], length: int) -> np.ndarray:
        """Token lists -> ids (N, length): cut at ``length``, padded with 0 ("fixed size, can use padding")."""
        out = np.zeros((len(texts), length), np.int64)
        for i, toks in enumerate(texts):
            ids = [self.index.get(t, 1) for t in toks[:length]]
            out[i, :len(ids)] = ids
        return out

    def coverage(self, texts: Sequence[list[str]]) -> float:
        """Share of tokens in ``texts`` that the vocabulary knows."""
        n = sum(len(t) for t in texts)
        return sum(t in self.index for toks in texts for t in toks) / n if n else 1.0


def fixed_length(token_lists: Sequence[list[str]], quantile: float = 0.99, floor: int = 5, cap: int = 400) -> int:
    """The padded length: long enough for ``quantile`` of the training texts, at least the widest filter."""
    lengths = [len(t) for t in token_lists] or [floor]
    return int(min(cap, max(floor, np.quantile(lengths, quantile))))
