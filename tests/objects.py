"""A synthetic set where the class is decided by a small object placed at random on a cluttered
background: a yellow cross or a yellow square, ~1/7 of the image wide, among random grey and
muted rectangles and noise. Where the object is, is known, so a heat map can be checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

CLASSES = ("cross", "square")
OBJECT = (255, 220, 0)


def draw(kind: str, size: int, rng: np.random.Generator) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """One image (size, size, 3) uint8 and the object's box (top, left, bottom, right)."""
    px = rng.integers(60, 140, (size, size, 3)).astype(np.float32)
    for _ in range(12):  # clutter: muted rectangles, never the object's saturated yellow
        h, w = rng.integers(3, size // 3, 2)
        y, x = rng.integers(0, size - h), rng.integers(0, size - w)
        px[y:y + h, x:x + w] = rng.integers(20, 200) + rng.integers(-25, 26, 3)
    s = max(5, size // 7) | 1  # odd: the cross has a centre line
    y, x = rng.integers(1, size - s - 1, 2)
    patch = px[y:y + s, x:x + s]
    if kind == "square":
        patch[:] = OBJECT
    else:
        patch[s // 2 - 1:s // 2 + 2, :] = OBJECT
        patch[:, s // 2 - 1:s // 2 + 2] = OBJECT
    return np.uint8(np.clip(px, 0, 255)), (int(y), int(x), int(y + s), int(x + s))


def write_set(root: str | Path, n_per_class: int, size: int = 64, seed: int = 0) -> dict[Path, tuple]:
    """``root/<class>/<i>.png``; returns each file's object box."""
    rng = np.random.default_rng(seed)
    boxes = {}
    for kind in CLASSES:
        for i in range(n_per_class):
            pixels, box = draw(kind, size, rng)
            path = Path(root) / kind / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path)
            boxes[path] = box
    return boxes


def hits(rows, boxes: dict, margin: int, scale: float = 1.0, shift: float = 0.0) -> int:
    """How many explanations put their predicted map's peak within ``margin`` px of the object.
    ``scale`` and ``shift`` map the image's pixels to the network's input (a resize, then a crop)."""
    n = 0
    for r in rows:
        top, left, bottom, right = (v * scale - shift for v in boxes[Path(r.file)])
        y, x = r.maps[0].peak(r.picture.shape[:2])
        n += top - margin <= y < bottom + margin and left - margin <= x < right + margin
    return n


SPEC = "scratch:conv16-bn-relu-maxpool,conv32-bn-relu-maxpool,conv32-bn-relu-gap"


def trained_model(root: Path, size: int = 48, epochs: int = 15):
    """A small scratch CNN fitted on ``write_set`` (80 images per class): a few seconds of CPU."""
    import headstart

    write_set(root / "train", 80, size=size, seed=0)
    clf = headstart.ImageClassifier(backbone=SPEC, epochs=epochs, input_size=size, flip=False, engine="torch")
    return clf.fit(root / "train")
