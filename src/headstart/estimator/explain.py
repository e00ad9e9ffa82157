"""``explain``: a fitted model's heat maps (gradient x activation, ``lab.gradcam``) for images,
as arrays and as pictures (the input, then the heat map of the prediction and of each class
asked for).

>>> rows = explain(load("model/"), ["cat.jpg"], classes=["dog"], out="why/")   # doctest: +SKIP
>>> rows[0].maps[0].target, rows[0].png
('cat', PosixPath('why/cat.png'))
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import HeadstartError

BATCH = 16  # images per backward pass: memory stays flat in the number of images


@dataclass
class Explanation:
    """One image: its picture as the network saw it, and its heat maps (or why it failed)."""

    file: str
    picture: np.ndarray | None = None      # (H, W, 3) uint8: the network's input, denormalised
    maps: list = field(default_factory=list)  # lab.gradcam.HeatMap, the prediction's first
    png: Path | None = None
    error: str = ""

    def to_dict(self) -> dict:
        if self.error:
            return {"file": self.file, "error": self.error}
        size = self.picture.shape[:2]
        return {"file": self.file, "png": str(self.png) if self.png else None,
                "maps": [{"target": m.target, "score": round(m.score, 4), "predicted": m.predicted,
                          "peak": [round(v / s, 3) for v, s in zip(m.peak(size), size)]} for m in self.maps]}


def explain(model, images, classes=(), out: str | Path | None = None,
            method: str = "grad-x-activation") -> list[Explanation]:
    """Heat maps for ``images`` (image files, a folder, or PIL images): the predicted class's,
    and each of ``classes`` (names of the model's classes or labels; "value" for a numeric task).
    ``model``: a fitted ``ImageClassifier`` or a model folder. With ``out``, writes one PNG per
    image and ``explain.json`` there. ``method``: see ``lab.gradcam.grad_cam``."""
    from ..lab.gradcam import grad_cam, target_names
    from .classifier import load
    from .inputs import classify

    clf = load(model) if isinstance(model, (str, Path)) else model
    clf._check_fitted()
    classes = [classes] if isinstance(classes, str) else list(classes)
    unknown = [c for c in classes if c not in target_names(clf.task_)]
    if unknown:
        raise HeadstartError(f"cannot explain {unknown}: the model's targets are {target_names(clf.task_)}. "
                             "Ask for one of those (--class NAME).")
    kind, items = classify(images, "explain")
    if kind == "arrays":
        raise HeadstartError("explain takes image files, a folder or PIL images; save the array's images as "
                             "files first (they need a picture to draw the heat map on).")
    names = [str(p) for p in items] if kind == "paths" else [f"image {i}" for i in range(len(items))]
    rows = [Explanation(n) for n in names]
    bb = clf.backbone_
    for start in range(0, len(items), BATCH):
        ok, x = _inputs(items[start:start + BATCH], rows[start:start + BATCH], bb.preprocess)
        if not ok:
            continue
        for row, maps, pic in zip(ok, grad_cam(bb, clf.head_, clf.task_, x, [None, *classes], method), _pictures(x, bb)):
            row.maps, row.picture = maps, pic
    if out is not None:
        _write(rows, Path(out))
    return rows


def _inputs(items, rows, p):
    """(the rows whose image decoded, their inputs (n, C, H, W)); failures noted in their row."""
    from ..data.images import ImageDecodeError
    from ..data.inputs import load_input
    from ..data.transforms import preprocess

    ok, arrays = [], []
    for item, row in zip(items, rows):
        try:
            arrays.append(load_input(item, p) if isinstance(item, (str, Path)) else preprocess(item, p))
            ok.append(row)
        except ImageDecodeError as e:
            row.error = str(e)
    return ok, (np.stack(arrays) if arrays else None)


def _pictures(x: np.ndarray, bb) -> list[np.ndarray]:
    from ..lab.featuremaps import _input_picture

    return [_input_picture(xi, bb.preprocess) for xi in x]


def _write(rows: list[Explanation], out: Path) -> None:
    from ..lab.gradcam import render
    from ..paths import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    for i, row in enumerate(rows):
        if row.error:
            continue
        stem = Path(row.file).stem if Path(row.file).suffix else f"image-{i}"  # PIL images have no name
        name = stem if stem not in used else f"{stem}-{i}"
        used.add(name)
        row.png = out / f"{name}.png"
        render(row.picture, row.maps, title=Path(row.file).name).save(row.png, compress_level=1)
    atomic_write_text(out / "explain.json", json.dumps([r.to_dict() for r in rows], indent=2))
