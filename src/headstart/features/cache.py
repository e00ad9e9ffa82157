"""The feature cache: one SQLite file of vectors keyed by (backbone cache key, sha256 of the file).

Renaming or moving a file reuses its features, editing it recomputes them, and another backbone
or another preprocessing never shares them. Each batch is committed in its own transaction, so
an interrupted extraction keeps every finished batch and the next run continues from there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..paths import cache_dir


class FeatureCache:
    """An SQLite file of feature vectors. Safe to interrupt; safe for several readers."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else cache_dir() / "features.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS features (backbone TEXT NOT NULL, digest TEXT NOT NULL, "
            "dim INTEGER NOT NULL, vec BLOB NOT NULL, PRIMARY KEY (backbone, digest))")
        self._db.commit()

    def get(self, backbone: str, digests: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(digests))
        for i in range(0, len(unique), 500):
            chunk = unique[i:i + 500]
            rows = self._db.execute(
                f"SELECT digest, dim, vec FROM features WHERE backbone = ? AND digest IN ({','.join('?' * len(chunk))})",
                [backbone, *chunk])
            for digest, dim, vec in rows:
                a = np.frombuffer(vec, dtype=np.float32)
                if a.size == dim:  # a damaged row is recomputed, never trusted
                    found[digest] = a
        return found

    def put(self, backbone: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        with self._db:  # one transaction: all rows or none
            self._db.executemany(
                "INSERT OR REPLACE INTO features (backbone, digest, dim, vec) VALUES (?, ?, ?, ?)",
                [(backbone, d, int(v.size), np.asarray(v, np.float32).tobytes()) for d, v in items])

    def digests(self, backbone: str) -> list[str]:
        """Every digest held whole for ``backbone`` (a damaged row is left out: it will be recomputed)."""
        rows = self._db.execute("SELECT digest FROM features WHERE backbone = ? AND length(vec) = 4 * dim",
                                [backbone])
        return [d for (d,) in rows]

    def count(self, backbone: str | None = None) -> int:
        if backbone is None:
            return self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM features WHERE backbone = ?", [backbone]).fetchone()[0]

    def close(self) -> None:
        self._db.close()
