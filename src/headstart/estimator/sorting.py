"""``predict --sort-into DIR``: copies of the images in one folder per predicted label.

Copies only, never moves or overwrites. Each label gets a folder of its own even when two labels
sanitise to the same name (``cat?`` and ``cat!``), and nothing is written through a symbolic
link planted in ``DIR``: a copy is created with ``O_EXCL | O_NOFOLLOW``, never opened if it exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from ..errors import HeadstartError


def safe_name(label) -> str:
    """A folder name for ``label`` (a name or a number) on any file system: letters, digits and ``-_. `` only."""
    name = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in str(label)).strip(". ")
    return name or "_"


def label_folders(labels: Iterable) -> dict:
    """label -> folder name, one folder per label: labels whose names collide (also when only the
    case differs, as on macOS and Windows) all get a short digest of the label appended."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label in sorted(set(labels), key=str):
        groups[safe_name(label).casefold()].append(label)
    out = {}
    for members in groups.values():
        for label in members:
            name = safe_name(label)
            digest = hashlib.sha1(repr(label).encode("utf-8", "surrogateescape")).hexdigest()[:8]
            out[label] = name if len(members) == 1 else f"{name}-{digest}"
    return out


def sort_into(rows: list[dict], out: Path, notes: list[str] | None = None) -> int:
    """Copy each predicted file to ``out/<label folder>/<name>``; a name already there gets a
    suffix. ``notes`` receives a line for each label whose folder name is not the label itself."""
    out = Path(out)
    folders = label_folders(r["label"] for r in rows if "label" in r)
    if notes is not None:
        notes.extend(f"label {label!r} -> folder {name!r}" for label, name in
                     sorted(folders.items(), key=lambda kv: kv[1]) if name != str(label))
    n = 0
    for r in rows:
        if "label" not in r:
            continue
        src = Path(r["file"])
        dest_dir = out / folders[r["label"]]
        if dest_dir.is_symlink() or (dest_dir.exists() and not dest_dir.is_dir()):
            raise HeadstartError(f"'{dest_dir}' is a symbolic link or a file; --sort-into writes only into real "
                                 f"folders inside '{out}'. Remove it, or choose an empty --sort-into folder.")
        dest_dir.mkdir(parents=True, exist_ok=True)
        _copy_new(src, dest_dir)
        n += 1
    return n


def _copy_new(src: Path, dest_dir: Path) -> Path:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for k in range(100_000):
        dest = dest_dir / (src.name if k == 0 else f"{src.stem}-{k}{src.suffix}")
        try:
            fd = os.open(dest, flags, 0o644)  # fails on anything there, a dangling link included
        except FileExistsError:
            continue
        with open(src, "rb") as f, os.fdopen(fd, "wb") as g:
            shutil.copyfileobj(f, g)
        shutil.copystat(src, dest, follow_symlinks=False)
        return dest
    raise HeadstartError(f"'{dest_dir}' already holds 100,000 copies named like '{src.name}'; "
                         "choose an empty --sort-into folder.")
