"""Feature vectors as Parquet shards (digest, backbone, vector): written by ``embed --ray --out DIR``,
read into any machine's ``FeatureCache`` by ``embed --import DIR`` under the same keys."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from .cache import FeatureCache

INSTALL_HINT = "pip install 'headstart[cluster]'   (adds ray[data] and pyarrow)"
SHARD_ROWS = 4096  # rows per Parquet shard


class ShardWriter:
    """Parquet shards (digest, backbone, vector), ``SHARD_ROWS`` rows each, written atomically."""

    def __init__(self, folder: Path, key: str):
        self.folder, self.key, self.rows = folder, key, []
        self.n = 0
        folder.mkdir(parents=True, exist_ok=True)
        self.stamp = f"{int(time.time())}-{os.getpid()}"

    def add(self, rows: list[tuple[str, np.ndarray]]) -> None:
        self.rows += rows
        while len(self.rows) >= SHARD_ROWS:
            self._flush(self.rows[:SHARD_ROWS])
            self.rows = self.rows[SHARD_ROWS:]

    def close(self) -> None:
        if self.rows:
            self._flush(self.rows)
            self.rows = []

    def _flush(self, rows) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from ..paths import atomic_path

        dim = len(rows[0][1])
        table = pa.table({
            "digest": pa.array([d for d, _ in rows], pa.string()),
            "backbone": pa.array([self.key] * len(rows), pa.string()),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(np.concatenate([v for _, v in rows]).astype(np.float32)), dim),
        })
        with atomic_path(self.folder / f"features-{self.stamp}-{self.n:05d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.n += 1


def import_shards(folder: str | Path, cache: FeatureCache) -> int:
    """Put every row of the Parquet shards in ``folder`` into ``cache``; returns the row count."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise HeadstartError(f"reading Parquet shards needs pyarrow. Install it with: {INSTALL_HINT}") from None
    files = sorted(Path(folder).glob("*.parquet"))
    if not files:
        raise HeadstartError(f"no Parquet shards (*.parquet) in {str(folder)!r}. Expected the --out folder of "
                             "`headstart embed DATA --ray --out DIR`.")
    n = 0
    for f in files:
        t = pq.read_table(f, columns=["digest", "backbone", "vector"])
        digests, keys = t["digest"].to_pylist(), t["backbone"].to_pylist()
        vecs = np.asarray(t["vector"].combine_chunks().flatten(), np.float32).reshape(len(digests), -1)
        by_key: dict[str, list] = {}
        for d, k, v in zip(digests, keys, vecs):
            by_key.setdefault(k, []).append((d, v))
        for k, rows in by_key.items():
            cache.put(k, rows)
        n += len(digests)
    return n
