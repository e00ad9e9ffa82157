"""Copy predicted images into one folder per label (never moves or overwrites anything)."""

from __future__ import annotations

import shutil
from pathlib import Path


def sort_into(rows: list[dict], out: Path) -> int:
    """Copy each predicted file to ``out/<label>/<name>``; a name already there gets a suffix."""
    n = 0
    for r in rows:
        if "label" not in r:
            continue
        src = Path(r["file"])
        dest_dir = out / _safe(r["label"])
        dest_dir.mkdir(parents=True, exist_ok=True)
        dest = dest_dir / src.name
        k = 1
        while dest.exists():
            dest = dest_dir / f"{src.stem}-{k}{src.suffix}"
            k += 1
        shutil.copy2(src, dest)
        n += 1
    return n


def _safe(label: str) -> str:
    name = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in label).strip(". ")
    return name or "_"
