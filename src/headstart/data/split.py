"""The stable hash split: an image's split depends on its own name only.

As in TensorFlow's ``retrain.py`` (``which_set``), the SHA-1 of a key is turned into a number
in [0, 1]; the number picks the split. Adding or removing other images never moves an image
from one split to another, so a test set stays a test set as the data set grows.

The key is the image's path *relative to its class folder* (e.g. ``"2021/img_001.jpg"``), so
an image also keeps its split when a class folder is renamed or the image is moved to another
class to fix its label: a relabelled test image never leaks into training. Renaming the file
itself (or a sub-folder inside the class) may move it.
"""

from __future__ import annotations

import hashlib
import unicodedata

from ..errors import HeadstartError

SPLITS = ("train", "val", "test")
_MAX = 2**27 - 1  # retrain.py's MAX_NUM_IMAGES_PER_CLASS


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise a ``HeadstartError`` unless each fraction is in [0, 1) and they sum below 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise HeadstartError(
                f"{name} must be a number in [0, 1), got {value!r}. "
                f"Fix: pass a fraction such as {name}=0.1 (10% of the images).")
    if val_fraction + test_fraction >= 1:
        raise HeadstartError(
            f"val_fraction + test_fraction must be below 1 so that some images are left to "
            f"train on, got {val_fraction} + {test_fraction} = {val_fraction + test_fraction}. "
            f"Fix: lower one of them, e.g. val_fraction=0.1, test_fraction=0.1.")


def hash_fraction(rel_key: str) -> float:
    """The key's stable position in [0, 1]."""
    # NFC: macOS writes decomposed accents, Linux keeps what it is given; same name, same split.
    key = unicodedata.normalize("NFC", rel_key.replace("\\", "/"))
    # surrogateescape: a file name that is not valid UTF-8 hashes by its own bytes.
    h = int(hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest(), 16)
    return (h % (_MAX + 1)) / _MAX


def assign_split(rel_key: str, val_fraction: float, test_fraction: float) -> str:
    """``"val"``, ``"test"`` or ``"train"`` for ``rel_key``, stable across runs and machines.

    >>> assign_split("img_001.jpg", 0.1, 0.1) in ("train", "val", "test")
    True
    """
    check_fractions(val_fraction, test_fraction)
    x = hash_fraction(rel_key)
    if x < val_fraction:
        return "val"
    if x < val_fraction + test_fraction:
        return "test"
    return "train"
