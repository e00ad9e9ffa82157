"""Scan a folder of images: its layout, labels, stable splits, bad files and exact duplicates.

Two layouts are understood::

    root/cat/001.jpg                    "classes": every image gets a split by the stable hash
    root/train/cat/001.jpg              "splits": the folders say the split; a missing val or
    root/val/cat/002.jpg                test folder is carved from train by the stable hash
    root/test/cat/003.jpg

Scanning only reads: nothing in the user's folder is ever written, moved or deleted.
"""

from __future__ import annotations

import contextvars
import hashlib
import os
import sys
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..errors import HeadstartError
from .dataset import BadFile, Dataset, DuplicateGroup, Sample
from .images import IMAGE_EXTENSIONS, image_problem, is_image_path, special_kind
from .split import assign_split, check_fractions

_SPLIT_ALIASES = {"train": "train", "val": "val", "validation": "val", "valid": "val",
                  "test": "test"}
_SKIP_DIRS = {"__MACOSX"}  # resource forks left by zip files made on macOS
_LAYOUT_HELP = """one sub-folder per class:
    {root}/
      cat/001.jpg, cat/002.jpg, ...
      dog/001.jpg, ...
  or split folders holding class folders:
    {root}/
      train/cat/001.jpg, train/dog/...
      val/cat/...    (optional; also 'validation' or 'valid')
      test/cat/...   (optional)"""


@dataclass(frozen=True)
class _Candidate:
    path: Path
    rel: str
    label: str
    split: str


def scan(root: str | Path, *, val_fraction: float = 0.1, test_fraction: float = 0.1,
         deep: bool = False, progress: bool = False) -> Dataset:
    """Find the labelled images under ``root``, check them and give each a stable split.

    ``deep=False`` checks headers only (fast); ``deep=True`` decodes every image.

    >>> result = scan("photos/")  # doctest: +SKIP
    >>> result.labels, len(result.subset("train"))  # doctest: +SKIP
    (['cat', 'dog'], 1630)
    """
    check_fractions(val_fraction, test_fraction)
    root = _check_root(root)
    notes: list[str] = []
    layout, candidates = _collect(root, val_fraction, test_fraction, notes)
    samples, bad = _check_files(candidates, deep=deep, progress=progress)
    _check_labels(root, candidates, samples, bad, notes)
    if layout == "splits":
        _note_unseen_labels(samples, notes)
    return Dataset(root=root, layout=layout, samples=samples, bad=bad, duplicates=_duplicates(samples),
                   notes=notes, source=str(root))


def find_images(paths: Sequence[str | Path], *, as_given: bool = False) -> list[Path]:
    """Image files among ``paths``: files as given, folders searched recursively.

    Returns absolute paths, sorted and without repeats. Hidden files and folders are skipped.
    ``as_given=True`` keeps the arguments' order, repeats and spelling (a relative path stays
    relative; a folder's images follow its spelling, sorted): what ``predict`` prints.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    found: set[Path] = set()
    listed: list[Path] = []
    unreadable: list[str] = []
    for p in map(Path, paths):
        full = Path(os.path.abspath(p))
        if full.is_dir():
            inside = [f for f in _walk(full, unreadable) if is_image_path(f) and f.is_file()]
            found.update(inside)
            listed += [p / f.relative_to(full) for f in inside]
        elif full.is_file():
            if not is_image_path(full):
                raise HeadstartError(
                    f"'{p}' is not an image file by its name. Expected one of the extensions "
                    f"{_extensions()}. Fix: pass image files or folders that contain them.")
            found.add(full)
            listed.append(p)
        elif full.exists():
            raise HeadstartError(
                f"'{p}' is {special_kind(full.stat().st_mode)}, not an image file. headstart reads image "
                "files only (a pipe would wait forever). Fix: pass image files or folders that contain them.")
        else:
            raise HeadstartError(
                f"'{p}' does not exist (looked in {full}). Expected an image file or a folder "
                f"of images. Fix: check the spelling and the current folder ({os.getcwd()}).")
    for note in unreadable:
        print(f"warning: {note}", file=sys.stderr)
    return listed if as_given else sorted(found)


def file_sha256(path: str | Path) -> str:
    """sha256 hex digest of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# --- finding the files ----------------------------------------------------------------------

def _check_root(root: str | Path) -> Path:
    path = Path(root).expanduser()
    if not path.exists():
        raise HeadstartError(
            f"Image folder '{root}' does not exist. Expected a folder with "
            f"{_LAYOUT_HELP.format(root=path.name or root)}\n"
            f"Fix: check the path (relative paths start at {os.getcwd()}).")
    if not path.is_dir():
        raise HeadstartError(
            f"'{root}' is a file, not a folder. Expected a folder with "
            f"{_LAYOUT_HELP.format(root='photos')}\n"
            f"Fix: pass the folder that holds the class folders (perhaps '{path.parent}').")
    return path.resolve()


def _collect(root: Path, val_fraction: float, test_fraction: float,
             notes: list[str]) -> tuple[str, list[_Candidate]]:
    """Detect the layout and list every image-named file with its label and split."""
    tops = _subdirs(root)
    split_dirs = {name: _SPLIT_ALIASES[name.lower()] for name in tops
                  if name.lower() in _SPLIT_ALIASES}
    if "train" in split_dirs.values():
        layout = "splits"
        others = [name for name in tops if name not in split_dirs]
        if others:
            raise HeadstartError(
                f"'{root}' mixes split folders ({', '.join(split_dirs)}) with other folders "
                f"({', '.join(others)}). Expected either {_LAYOUT_HELP.format(root=root.name)}\n"
                f"Fix: move {', '.join(repr(o) for o in others)} into the split folders, "
                f"or rename the split folders if they are classes.")
        bases = [(root / name, split) for name, split in split_dirs.items()]
        _note_split_folders(split_dirs, val_fraction, test_fraction, notes)
    else:
        layout = "classes"
        bases = [(root, "train")]
    present = set(split_dirs.values()) if layout == "splits" else set()
    carve_val = 0.0 if "val" in present else val_fraction
    carve_test = 0.0 if "test" in present else test_fraction

    candidates: list[_Candidate] = []
    unreadable: list[str] = []
    loose: list[str] = []
    ignored: Counter[str] = Counter()
    for base, split in bases:
        for f in _files_in(base):  # files beside the class folders belong to no class
            if is_image_path(f):
                loose.append(f.relative_to(root).as_posix())
            else:
                ignored[f.suffix.lower() or "(none)"] += 1
        for label in _subdirs(base):
            class_dir = base / label
            n_before = len(candidates)
            for f in _walk(class_dir, unreadable):
                if not is_image_path(f):
                    ignored[f.suffix.lower() or "(none)"] += 1
                    continue
                key = f.relative_to(class_dir).as_posix()
                s = assign_split(key, carve_val, carve_test) if split == "train" else split
                candidates.append(_Candidate(f, f.relative_to(root).as_posix(), label, s))
            if len(candidates) == n_before:
                notes.append(f"Folder '{class_dir.relative_to(root).as_posix()}' has no images; "
                             f"it is not used as a class.")
    notes.extend(f"{n[0].upper()}{n[1:]}" for n in unreadable)
    if loose:
        notes.append(f"Ignored {len(loose)} image(s) lying outside any class folder, e.g. "
                     f"'{loose[0]}'; move them into a class folder to use them.")
    if ignored:
        kinds = ", ".join(f"{ext}: {n}" for ext, n in sorted(ignored.items()))
        notes.append(f"Ignored {sum(ignored.values())} file(s) that are not images by their "
                     f"extension ({kinds}).")
    if not candidates:
        raise _no_images_error(root, loose, ignored)
    return layout, candidates


def _note_split_folders(split_dirs: dict[str, str], val_fraction: float,
                        test_fraction: float, notes: list[str]) -> None:
    present = Counter(split_dirs.values())
    if present["val"] > 1:
        names = [n for n, s in split_dirs.items() if s == "val"]
        notes.append(f"Folders {', '.join(names)} are all used as the val split.")
    for split, fraction in (("val", val_fraction), ("test", test_fraction)):
        if present[split]:
            continue
        if fraction:
            notes.append(f"No {split} folder: {fraction:.0%} of train is held out as {split} "
                         f"by a stable hash of each file name.")
        else:
            notes.append(f"No {split} folder and {split}_fraction=0: there is no {split} split.")


def _no_images_error(root: Path, loose: list[str], ignored: Counter[str]) -> HeadstartError:
    found = []
    if loose:
        found.append(f"{len(loose)} image(s) directly in the folder, outside class folders "
                     f"(e.g. '{loose[0]}'); move them into one sub-folder per class")
    if ignored:
        found.append(f"{sum(ignored.values())} other file(s) ({', '.join(sorted(ignored))})")
    seen = "; ".join(found) if found else "nothing usable"
    return HeadstartError(
        f"No images found in class folders under '{root}' (found: {seen}). "
        f"Expected image files ({_extensions()}) in {_LAYOUT_HELP.format(root=root.name)}\n"
        f"Fix: arrange the images in one sub-folder per class.")


def _subdirs(folder: Path) -> list[str]:
    return sorted(p.name for p in _listing(folder)
                  if p.is_dir() and not _hidden(p.name) and p.name not in _SKIP_DIRS)


def _files_in(folder: Path) -> list[Path]:
    return sorted(p for p in _listing(folder) if not _hidden(p.name) and not p.is_dir())


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as e:
        raise HeadstartError(f"cannot read folder '{folder}' ({e.strerror}). Expected a folder headstart may "
                             "list. Fix its permissions (chmod +rx) or pass another folder.") from None


def _walk(folder: Path, unreadable: list[str] | None = None) -> Iterator[Path]:
    """Non-hidden files under ``folder``, sorted; follows symlinks without looping. A folder
    that cannot be listed is described in ``unreadable`` (never skipped without a word)."""
    seen: set[tuple[int, int]] = set()

    def report(e: OSError) -> None:
        if unreadable is not None:
            unreadable.append(f"cannot read folder '{e.filename}' ({e.strerror}): its images are not used. "
                              "Fix its permissions (chmod +rx) to include them.")

    for dirpath, dirnames, filenames in os.walk(folder, onerror=report, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in seen:  # a symlink back to a folder already walked
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not _hidden(d) and d not in _SKIP_DIRS)
        yield from (Path(dirpath, f) for f in sorted(filenames) if not _hidden(f))


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _extensions() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


# --- checking the files ---------------------------------------------------------------------

_KNOWN_DIGESTS: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar("known_digests",
                                                                                        default=None)


@contextmanager
def known_digests(digests: Mapping[str | Path, str]):
    """Within the block, scans take these files' sha256 (computed elsewhere: by the workers of
    a ``--ray`` job) instead of reading every file again; headers are still checked.

    >>> with known_digests({"photos/a.jpg": "9f86d0..."}):   # doctest: +SKIP
    ...     result = scan("photos")
    """
    token = _KNOWN_DIGESTS.set({os.path.abspath(p): d for p, d in digests.items() if d})
    try:
        yield
    finally:
        _KNOWN_DIGESTS.reset(token)


def _check_files(candidates: list[_Candidate], *, deep: bool,
                 progress: bool) -> tuple[list[Sample], list[BadFile]]:
    """Header (or full) check and sha256 of every file, four threads at a time."""
    known = _KNOWN_DIGESTS.get() or {}  # (read here: the pool's threads do not see the caller's context)

    def check(c: _Candidate) -> Sample | BadFile:
        problem = image_problem(c.path, deep=deep)
        if problem is None:
            try:
                digest = known.get(os.path.abspath(c.path)) or file_sha256(c.path)
                return Sample(c.path, c.rel, c.label, c.split, digest)
            except OSError as e:
                problem = ("unreadable", f"{type(e).__name__}: {e.strerror or e}")
        return BadFile(c.path, c.rel, *problem)

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(tqdm(pool.map(check, candidates), total=len(candidates),
                            disable=not progress, file=sys.stderr, unit="img", desc="Scanning"))
    samples = sorted((r for r in results if isinstance(r, Sample)), key=lambda s: s.rel)
    bad = sorted((r for r in results if isinstance(r, BadFile)), key=lambda b: b.rel)
    return samples, bad


def _check_labels(root: Path, candidates: list[_Candidate], samples: list[Sample],
                  bad: list[BadFile], notes: list[str]) -> list[str]:
    """The usable class names; fails when a class has no good image or fewer than 2 remain."""
    labels = sorted({s.label for s in samples})
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    label_of = {c.rel: c.label for c in candidates}
    for b in bad:
        reasons[label_of[b.rel]][b.reason] += 1
    dead = sorted(set(reasons) - set(labels))
    if dead:
        lines = [f"  '{label}': " + ", ".join(f"{n} {r}" for r, n in reasons[label].items())
                 for label in dead]
        raise HeadstartError(
            f"Every image of class(es) {', '.join(map(repr, dead))} under '{root}' is "
            f"unusable:\n" + "\n".join(lines) + "\nExpected at least one readable image per "
            "class. Fix: replace the bad files (the scan's bad-file list names each one "
            "and why) or remove the class folder.")
    if len(labels) < 2:
        n = len(samples)
        raise HeadstartError(
            f"Found only one class, {labels[0]!r} ({n} image(s)), under '{root}'. "
            f"A classifier needs at least two classes, each in its own sub-folder. "
            f"Expected {_LAYOUT_HELP.format(root=root.name)}\n"
            + (f"Did you mean '{root / labels[0]}'? Its sub-folders look like classes or splits.\n"
               if _has_subfolders(root / labels[0]) else "")
            + "Fix: add a folder of images for each other class.")
    return labels


def _has_subfolders(folder: Path) -> bool:
    """Whether ``folder`` holds two or more sub-folders: data given one level too high."""
    try:
        return sum(1 for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")) >= 2
    except OSError:
        return False


def _note_unseen_labels(samples: list[Sample], notes: list[str]) -> None:
    in_train = {s.label for s in samples if s.split == "train"}
    for split in ("val", "test"):
        extra = sorted({s.label for s in samples if s.split == split} - in_train)
        if extra:
            notes.append(f"Class(es) {', '.join(map(repr, extra))} appear in {split} but not in "
                         f"train; the model cannot learn to predict them.")


def _duplicates(samples: list[Sample]) -> list[DuplicateGroup]:
    by_digest: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:  # sorted by rel, so groups are too
        by_digest[s.digest].append(s)
    return [DuplicateGroup(rels=[s.rel for s in g], labels=[s.label for s in g],
                           splits=[s.split for s in g],
                           spans_classes=len({s.label for s in g}) > 1,
                           spans_splits=len({s.split for s in g}) > 1)
            for g in by_digest.values() if len(g) > 1]
