"""The feature cache: one SQLite file of vectors keyed by (backbone cache key, sha256 of the file).

Renaming or moving a file reuses its features, editing it recomputes them, and another backbone
or another preprocessing never shares them. Each batch is committed in its own transaction, so
an interrupted extraction keeps every finished batch and the next run continues from there.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..paths import cache_dir


class FeatureCache:
    """An SQLite file of feature vectors. Safe to interrupt; safe for several readers.

    The cache is only a cache: a damaged file is moved aside (``features.sqlite.damaged-TIME``),
    said so on stderr, and a new one is started; the features are computed again.
    """

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / "features.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.quarantined: Path | None = None
        self._db = self._guarded(self._open)

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=60)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(
                "CREATE TABLE IF NOT EXISTS features (backbone TEXT NOT NULL, digest TEXT NOT NULL, "
                "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (backbone, digest))")
            db.commit()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _guarded(self, action):
        """Run ``action``; if the file proves damaged, quarantine it, start afresh, run it again."""
        try:
            return action()
        except sqlite3.DatabaseError as e:
            if isinstance(e, sqlite3.OperationalError) or self.quarantined is not None:
                raise  # locked or busy is not damage; a second failure is not the file's fault
            self._quarantine(e)
            return action()

    def _quarantine(self, error: Exception) -> None:
        if getattr(self, "_db", None) is not None:
            self._db.close()
        stamp = time.strftime("%Y%m%d-%H%M%S")
        moved = next(m for k in range(1, 10_000) if not (m := self.path.with_name(
            f"{self.path.name}.damaged-{stamp}" + (f"-{k}" if k > 1 else ""))).exists())
        os.replace(self.path, moved)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        self.quarantined = moved
        print(f"warning: the feature cache {str(self.path)!r} is damaged ({error}); moved it to {str(moved)!r} and "
              "started a new one (features are computed again). Delete the damaged copy when done.",
              file=sys.stderr)
        if getattr(self, "_db", None) is not None:
            self._db = self._open()

    def get(self, backbone: str, digests: Sequence[str]) -> dict[str, np.ndarray]:
        return self._guarded(lambda: self._get(backbone, digests))

    def _get(self, backbone: str, digests: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(digests))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = self._db.execute(
                f"SELECT digest, dim, vec FROM features WHERE backbone = ? AND digest IN ({','.join('?' * len(chunk))})",
                [backbone, *chunk]).fetchall()
            for digest, dim, vec in rows:
                a = np.frombuffer(vec, dtype=np.float32)
                if a.size == dim:  # a damaged row is recomputed, never trusted
                    found[digest] = a
        return found

    def put(self, backbone: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        rows = [(backbone, d, int(v.size), np.asarray(v, np.float32).tobytes()) for d, v in items]

        def insert():
            with self._db:  # one transaction: all rows or none
                self._db.executemany(
                    "INSERT OR REPLACE INTO features (backbone, digest, dim, vec) VALUES (?, ?, ?, ?)", rows)
        self._guarded(insert)

    def digests(self, backbone: str) -> list[str]:
        """Every digest held whole for ``backbone`` (a damaged row is left out: it will be recomputed)."""
        return self._guarded(lambda: [d for (d,) in self._db.execute(
            "SELECT digest FROM features WHERE backbone = ? AND length(vec) = 4 * dim", [backbone])])

    def count(self, backbone: str | None = None) -> int:
        if backbone is None:
            return self._guarded(lambda: self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0])
        return self._guarded(lambda: self._db.execute(
            "SELECT COUNT(*) FROM features WHERE backbone = ?", [backbone]).fetchone()[0])

    def close(self) -> None:
        self._db.close()
