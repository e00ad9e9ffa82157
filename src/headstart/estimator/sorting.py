"""``predict --sort-into DIR``: copies of the images in one folder per predicted label.

Copies only, never moves or overwrites; a second run into the same folder skips the images
already there with the same bytes (no ``-1`` copies). With ``--min-confidence``, images below it
go to ``unsure/``. Each label gets a folder of its own even when two labels
sanitise to the same name (``cat?`` and ``cat!``), and nothing is written through a symbolic
link planted in ``DIR``: a copy is created with ``O_EXCL | O_NOFOLLOW``, never opened if it exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import HeadstartError

UNSURE = "unsure"  # the folder of images below --min-confidence


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


@dataclass
class Sorted:
    """What ``sort_into`` did: images copied, images skipped because a copy with the same
    bytes was already there (a second run into the same folder), and images sent to
    ``unsure/`` (below ``--min-confidence``; counted in ``copied`` or ``skipped`` too)."""
    copied: int = 0
    skipped: int = 0
    unsure: int = 0
    unsure_folder: str = UNSURE


def sort_into(rows: list[dict], out: Path, notes: list[str] | None = None) -> Sorted:
    """Copy each predicted file to ``out/<label folder>/<name>``, or to ``out/unsure/`` when its
    row says ``"unsure": True``. A file whose bytes are already there under its name (or a
    numbered one) is skipped; another file of the same name gets a suffix. ``notes`` receives
    a line for each folder whose name is not the label itself."""
    out = Path(out)
    folders = label_folders(r["label"] for r in rows if "label" in r)
    taken = {name.casefold() for name in folders.values()}
    unsure = UNSURE if UNSURE not in taken else f"_{UNSURE}"  # a class named "unsure" keeps its folder
    if notes is not None:
        notes.extend(f"label {label!r} -> folder {name!r}" for label, name in
                     sorted(folders.items(), key=lambda kv: kv[1]) if name != str(label))
        if unsure != UNSURE:
            notes.append(f"unsure images -> folder {unsure!r} (a class is named {UNSURE!r})")
    done = Sorted(unsure_folder=unsure)
    for r in rows:
        if "label" not in r:
            continue
        dest_dir = out / (unsure if r.get("unsure") else folders[r["label"]])
        if dest_dir.is_symlink() or (dest_dir.exists() and not dest_dir.is_dir()):
            raise HeadstartError(f"'{dest_dir}' is a symbolic link or a file; --sort-into writes only into real "
                                 f"folders inside '{out}'. Remove it, or choose an empty --sort-into folder.")
        dest_dir.mkdir(parents=True, exist_ok=True)
        if _copy_new(Path(r["file"]), dest_dir) is None:
            done.skipped += 1
        else:
            done.copied += 1
        done.unsure += bool(r.get("unsure"))
    return done


def _copy_new(src: Path, dest_dir: Path) -> Path | None:
    """Copy ``src`` into ``dest_dir`` under the first free name (``name``, ``name-1``, ...),
    or return None when one of the names already holds the same bytes."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for k in range(100_000):
        dest = dest_dir / (src.name if k == 0 else f"{src.stem}-{k}{src.suffix}")
        if os.path.lexists(dest):
            if _same_bytes(src, dest):
                return None
            continue
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


def _same_bytes(src: Path, dest: Path) -> bool:
    """Whether ``dest`` is a regular file (never followed through a link) with ``src``'s bytes."""
    try:
        fd = os.open(dest, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:  # a link, or unreadable: not a copy we made
        return False
    with os.fdopen(fd, "rb") as g, open(src, "rb") as f:
        st = os.fstat(g.fileno())
        if not stat.S_ISREG(st.st_mode) or st.st_size != os.fstat(f.fileno()).st_size:
            return False
        while True:
            a, b = f.read(1 << 20), g.read(1 << 20)
            if a != b:
                return False
            if not a:
                return True
