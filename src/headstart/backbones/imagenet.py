"""The embedded backbone as it was trained: its own 1,000 ImageNet classes, with their names.

The names ship with torchvision (the ``categories`` of its ImageNet weights' metadata, the
standard class order that the EfficientNet-Lite checkpoints use too); nothing is downloaded.
This is the lecture's "select source model" step made visible: what the backbone already knows
before it is retrained.

>>> rows = label_images(["cat.jpg"], top_k=3)                     # doctest: +SKIP
>>> rows[0]["top"][0]
{'label': 'tabby', 'index': 281, 'probability': 0.61}
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from .names import DEFAULT_BACKBONE

N_CLASSES = 1000


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[str, ...]:
    """The 1,000 ImageNet class names in index order (from torchvision's bundled metadata)."""
    from torchvision.models import ResNet50_Weights

    names = tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    if len(names) != N_CLASSES:  # a torchvision that changed its metadata must not mislabel silently
        raise HeadstartError(f"torchvision's ImageNet class list has {len(names)} names, expected {N_CLASSES}.")
    return names


def imagenet_backbone(backbone="efficientnet_lite0"):
    """A backbone that still has its ImageNet classifier (``imagenet_logits``); a clear refusal
    for one that has none (a scratch CNN, a timm backbone whose classifier was removed)."""
    from .registry import create_backbone

    bb = create_backbone(backbone) if isinstance(backbone, str) else backbone
    if not hasattr(bb, "imagenet_logits") or getattr(bb, "weights_in_folder", True):
        raise HeadstartError(
            f"backbone {bb.name!r} has no ImageNet classifier to ask: only the embedded backbones keep "
            f"their 1,000 classes (e.g. {DEFAULT_BACKBONE}; `headstart backbones` lists them). A scratch CNN "
            "or a fine-tuned backbone knows only the classes it was trained on: use `headstart predict`.")
    return bb


def imagenet_probabilities(bb, x: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Softmax over the 1,000 classes (N, 1000) for backbone inputs ``x`` (N, C, H, W)."""
    import torch

    out = []
    bb.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            logits = bb.imagenet_logits(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])))
            out.append(torch.softmax(logits.float(), dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, N_CLASSES), np.float32)


def top_classes(probs: np.ndarray, top_k: int) -> list[list[dict]]:
    """Per row of ``probs`` (N, 1000): the ``top_k`` classes, most probable first."""
    names = imagenet_classes()
    order = np.argsort(-probs, axis=1)[:, :top_k]
    return [[{"label": names[j], "index": int(j), "probability": round(float(p[j]), 4)} for j in row]
            for p, row in zip(probs, order)]


def label_images(images, backbone="efficientnet_lite0", top_k: int = 5) -> list[dict]:
    """The backbone's own ImageNet top-k for image files or PIL images: one row per image,
    ``{"file", "label", "probability", "top": [{"label", "index", "probability"}, ...]}``, or
    ``{"file", "error", "reason"}`` for a file that cannot be decoded (the others still labelled)."""
    from ..data.images import ImageDecodeError
    from ..data.inputs import load_input
    from ..data.transforms import preprocess

    if not isinstance(top_k, int) or not 1 <= top_k <= N_CLASSES:
        raise HeadstartError(f"top_k must be a whole number from 1 to {N_CLASSES}, got {top_k!r}.")
    bb = imagenet_backbone(backbone)
    rows, arrays, where = [], [], []
    for i, item in enumerate(images):
        name = str(item) if isinstance(item, (str, Path)) else f"image {i}"
        try:
            arrays.append(load_input(item, bb.preprocess) if isinstance(item, (str, Path, bytes))
                          else preprocess(item, bb.preprocess))
        except ImageDecodeError as e:
            rows.append({"file": name, "error": str(e), "reason": getattr(e, "reason", "unreadable")})
            continue
        where.append(len(rows))
        rows.append({"file": name})
    if arrays:
        for k, top in zip(where, top_classes(imagenet_probabilities(bb, np.stack(arrays)), top_k)):
            rows[k].update({"label": top[0]["label"], "probability": top[0]["probability"], "top": top})
    return rows
