"""Where headstart keeps its cache, and atomic writes for everything it saves."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


def cache_dir() -> Path:
    """``$HEADSTART_CACHE_DIR``, else ``$XDG_CACHE_HOME/headstart``, else ``~/.cache/headstart``."""
    root = os.environ.get("HEADSTART_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "headstart" if xdg else Path.home() / ".cache" / "headstart"


@functools.cache
def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: put it straight back
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    A crash or Ctrl-C before the end leaves ``path`` as it was (and no half-written file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes it private; the result follows the umask as a plain file would
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")  # a file name that is not UTF-8


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder; on success it takes the place of ``path`` whole.

    An existing folder at ``path`` is swapped out only after the new one is complete, in one
    atomic exchange where the system has one (Linux ``renameat2``), so an interrupted save never
    leaves a half-written folder under the final name, nor no folder at all. Leftovers of saves
    that were killed (``.NAME.PID.*.tmp``, ``.NAME.old-PID``) are cleaned or restored first.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; a model folder follows the umask like mkdir
    try:
        yield tmp
        if path.exists() and _exchange(tmp, path):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old folder
        elif path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)  # a kill here leaves only `old`: recover_dir puts it back
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def recover_dir(path: str | Path) -> bool:
    """Undo what a killed ``atomic_dir`` left beside ``path``: restore the previous folder when
    ``path`` is missing, remove unfinished temporary folders. True when a folder was restored."""
    path = Path(path)
    restored = False
    for old in sorted(path.parent.glob(f".{glob.escape(path.name)}.old-*")):
        if _owner_alive(old.name.rsplit("-", 1)[-1]):
            continue
        if not path.exists() and not path.is_symlink():
            os.replace(old, path)
            restored = True
        else:
            shutil.rmtree(old, ignore_errors=True)
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:].split(".")
        stale = (not _owner_alive(parts[0])) if parts[0].isdigit() else _older_than(tmp, 3600)
        if stale and tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
    return restored


def _owner_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return int(pid) < 2 ** 31  # alive, owned by someone else
    return True


def _older_than(p: Path, seconds: float) -> bool:
    import time

    try:
        return time.time() - p.stat().st_mtime > seconds
    except OSError:
        return False


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
