"""Heat maps (Grad-CAM, ``lab.gradcam``) for the report's worst-predicted images: where in each
image the wrong prediction came from. A handful of images, one backward pass: cheap."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np

from ..errors import HeadstartError


def heat_thumbs(clf, rels: list[str], root, px: int = 240) -> dict[str, dict]:
    """{relative file: {"alt", "src": data URI}} of the predicted target's heat map; files that
    cannot be read, and models without feature maps, get none (the report never fails for it)."""
    from ..data.images import ImageDecodeError
    from ..data.inputs import load_input
    from ..lab.featuremaps import _input_picture
    from ..lab.gradcam import grad_cam, overlay

    if root is None or not rels or not all(hasattr(clf, a) for a in ("backbone_", "head_", "task_")):
        return {}
    p = clf.backbone_.preprocess
    ok, arrays = [], []
    for rel in rels:
        try:
            arrays.append(load_input(Path(root) / rel, p))
            ok.append(rel)
        except (ImageDecodeError, OSError):
            continue
    if not arrays:
        return {}
    x = np.stack(arrays)
    try:
        maps = grad_cam(clf.backbone_, clf.head_, clf.task_, x, [None])
    except HeadstartError:  # no feature maps (e.g. a transformer): the gallery shows thumbnails only
        return {}
    out = {}
    for rel, xi, (m,) in zip(ok, x, maps):
        picture = _input_picture(xi, p)
        out[rel] = {"alt": f"heat map of {m.target} for {rel}", "target": m.target,
                    "src": _data_uri(overlay(picture, m.upsampled(picture.shape[:2])), px)}
    return out


def _data_uri(pixels: np.ndarray, px: int) -> str:
    from PIL import Image

    img = Image.fromarray(pixels)
    img.thumbnail((px, px))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=82)
    return f"data:image/jpeg;base64,{base64.b64encode(buf.getvalue()).decode()}"
