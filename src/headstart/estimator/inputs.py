"""What ``predict`` and friends were given: image files, PIL images, or images in memory; and a
clear refusal of anything else (a string is a folder or a file, never its characters)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import HeadstartError

_TAKES = ("a folder, an image file, a list of image file paths, a list of PIL images, or an array of images "
          "(N, H, W) / (N, H, W, C)")


def is_array_input(data) -> bool:
    from ..data.arrays import is_array_input as arrays

    return arrays(data)


def classify(X, what: str) -> tuple[str, object]:
    """("paths", [Path, ...]), ("images", [PIL.Image, ...]) or ("arrays", X)."""
    if is_array_input(X):
        return "arrays", X
    if isinstance(X, (list, tuple)) and X and all(_is_pil(x) for x in X):
        return "images", list(X)
    return "paths", image_paths(X, what)


def image_paths(X, what: str) -> list[Path]:
    """Image files in the order given; a folder (alone or in a list) stands for its images, sorted."""
    from ..data.scan import find_images

    if isinstance(X, (str, os.PathLike)):
        X = [X]
    elif hasattr(X, "tolist") and not isinstance(X, (bytes, list, tuple)):  # a NumPy array of paths
        X = X.tolist()
    if not isinstance(X, (list, tuple)) or not all(isinstance(x, (str, os.PathLike)) for x in X):
        got = type(X).__name__ + (f" of {', '.join(sorted({type(x).__name__ for x in X}))}"
                                  if isinstance(X, (list, tuple)) and X else "")
        raise HeadstartError(f"{what} takes {_TAKES}; got {got}.")
    out: list[Path] = []
    for x in X:
        out += find_images([x]) if Path(x).is_dir() else [Path(x)]
    return out


def _is_pil(x) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(x, Image.Image)
