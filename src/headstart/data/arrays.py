"""Images given as in-memory arrays, as a scikit-learn or Keras user has them.

``X`` is (N, H, W) grey or (N, H, W, C) with C = 1 (grey) or 3 (RGB), uint8 in 0..255 or
float in 0..1 (or 0..255); ``y`` holds one label per image. ``as_uint8`` checks and converts;
``stable_split`` gives each image a validation / training place from the bytes of the image
itself (like the folder split, adding images never moves old ones).
"""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import HeadstartError
from .split import assign_split


def is_array_input(data) -> bool:
    """True for a NumPy array, anything with ``__array__`` (a tensor), or a list of arrays;
    False for a folder or a list of file paths."""
    if isinstance(data, (str, bytes)) or hasattr(data, "__fspath__"):
        return False
    if isinstance(data, np.ndarray):
        return data.dtype.kind in "biuf"  # numbers; an array of path strings is not images
    if hasattr(data, "__array__"):  # a tensor, an xarray, ...
        return True
    return isinstance(data, (list, tuple)) and len(data) > 0 and isinstance(data[0], np.ndarray)


def as_uint8(X) -> np.ndarray:
    """(N, H, W) or (N, H, W, C) images -> uint8 (N, H, W, C) with C in (1, 3).

    >>> as_uint8(np.zeros((2, 28, 28))).shape
    (2, 28, 28, 1)
    """
    try:
        x = np.asarray(X)
    except ValueError as e:
        raise HeadstartError(f"images must have one shape, got a ragged list ({e}); resize them "
                             "to one size first, or save them to a folder and fit(FOLDER)") from None
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or min(x.shape) < 1:
        raise HeadstartError(
            f"images must be an array of shape (N, H, W) for grey or (N, H, W, C) with C = 1 or 3, "
            f"got shape {tuple(np.shape(X))}. Channels come last (Keras' layout); for (N, C, H, W) "
            "use X.transpose(0, 2, 3, 1); for RGBA drop the alpha: X[..., :3]")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x) if x.flags.writeable else x.copy()  # torch needs writable
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise HeadstartError(f"images must hold numbers (uint8 or float), got dtype {x.dtype}")
    lo, hi = float(np.min(x)), float(np.max(x))
    if not np.isfinite([lo, hi]).all():
        raise HeadstartError("images contain NaN or infinite values; replace them before fitting")
    if lo < 0 or hi > 255:
        raise HeadstartError(f"image values must be in 0..1 (float) or 0..255, got {lo:g}..{hi:g}; "
                             "rescale them, e.g. (X - X.min()) / (X.max() - X.min())")
    scale = 255.0 if np.issubdtype(x.dtype, np.floating) and hi <= 1.0 else 1.0
    return np.ascontiguousarray(np.clip(np.rint(x * scale), 0, 255).astype(np.uint8))


def as_labels(y, n: int) -> list:
    """One label per image as plain Python values (numbers stay numbers, strings strings)."""
    labels = np.asarray(y)
    if labels.ndim != 1 or len(labels) != n:
        raise HeadstartError(f"y must hold one label per image: {n} images, but y has shape "
                             f"{tuple(labels.shape)}; pass a 1-D list or array of {n} labels")
    return labels.tolist()


def stable_split(x: np.ndarray, val_fraction: float) -> np.ndarray:
    """"train" or "val" for each image, from the SHA-1 of its pixels (identical images share
    a split, so a duplicate never leaks into validation)."""
    keys = [hashlib.sha1(img.tobytes()).hexdigest() for img in x]
    return np.array([assign_split(k, val_fraction, 0.0) for k in keys])


def to_input_size(x: np.ndarray, p) -> np.ndarray:
    """uint8 (N, H, W, C) -> uint8 (N, S, S, p.channels) at the backbone's input size, resized
    with its ``resize`` mode (crop, pad, stretch); no copy when nothing changes."""
    from PIL import Image

    from .transforms import resize_image

    s = p.input_size
    if x.shape[1:3] == (s, s) and x.shape[3] == p.channels:
        return x
    mode = "RGB" if p.channels == 3 else "L"
    out = np.empty((len(x), s, s, p.channels), np.uint8)
    for i, img in enumerate(x):
        im = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).convert(mode)
        out[i] = np.asarray(resize_image(im, p), np.uint8).reshape(s, s, p.channels)
    return out


def grey_to_one_channel(x: np.ndarray, tolerance: int = 2) -> np.ndarray | None:
    """When every RGB image of ``x`` (N, H, W, 3) is grey (channels within ``tolerance``, for
    JPEG noise), its luma (N, H, W, 1) as PIL computes it; else None."""
    for i in range(0, len(x), 4096):  # in chunks: bounded memory
        c = x[i:i + 4096].astype(np.int16)
        if (np.abs(c[..., 0] - c[..., 1]).max() > tolerance
                or np.abs(c[..., 1] - c[..., 2]).max() > tolerance):
            return None
    luma = (x[..., 0].astype(np.uint32) * 19595 + x[..., 1].astype(np.uint32) * 38470
            + x[..., 2].astype(np.uint32) * 7471 + 0x8000) >> 16  # PIL's convert("L")
    return luma.astype(np.uint8)[..., None]


__all__ = ["as_labels", "as_uint8", "grey_to_one_channel", "is_array_input", "stable_split",
           "to_input_size"]
