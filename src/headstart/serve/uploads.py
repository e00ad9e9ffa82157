"""Uploaded bytes -> decoded images, or a rejection a client can act on.

The type is decided by the content (Pillow opens it), never by the file name or the declared
content type. The pixel count is read from the header and checked before anything is decoded,
so a small file that claims a huge image (a decompression bomb) costs no memory.
"""

from __future__ import annotations

import io
import threading

import numpy as np
from PIL import Image

from ..data.images import ImageDecodeError, open_image
from ..data.inputs import load_input
from ..data.transforms import Preprocess

# Decoding is CPU and memory heavy: a few at a time, whatever the number of requests.
DECODE_SLOTS = threading.BoundedSemaphore(4)

_STATUS = {"not_an_image": 415, "decompression_bomb": 413}  # everything else: 422


class Rejection(Exception):
    """A request the server refuses: HTTP ``status`` (4xx) and a human ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def describe(index: int, filename: str | None) -> str:
    return f"image {index + 1}" + (f" ({filename!r})" if filename else "")


def image_size(data: bytes, filename: str | None, index: int, *, max_pixels: int) -> tuple[int, int]:
    """(width, height) from the upload's header, nothing decoded; raises ``Rejection`` for an
    empty upload, one that is not an image, or one over ``max_pixels``."""
    what = describe(index, filename)
    if not data:
        raise Rejection(422, f"{what} is empty (0 bytes): send the image file's content.")
    try:
        with Image.open(io.BytesIO(data)) as header:
            w, h = header.size
    except Image.DecompressionBombError as e:  # so large that Pillow refuses even to open it
        raise Rejection(413, f"{what} is a decompression bomb or a huge image ({e}); this server takes at most "
                             f"{max_pixels:,} pixels: resize it first.") from None
    except Exception:
        raise Rejection(415, f"{what} is not an image: no image format recognises its content "
                             "(whatever its name or content type says). Send a JPEG, PNG, WebP, GIF, BMP or TIFF.") from None
    if w * h > max_pixels:
        raise Rejection(413, f"{what} claims {w}x{h} = {w * h:,} pixels, over this server's limit of "
                             f"{max_pixels:,} (a decompression bomb, or a very large image): resize it first.")
    return w, h


def decode_upload(data: bytes, filename: str | None, index: int, *, max_pixels: int,
                  mode: str = "RGB", draft_size: int | None = None, preprocess: Preprocess | None = None
                  ) -> Image.Image | np.ndarray:
    """The upload as a loaded ``mode`` image, or with ``preprocess`` the model's input array
    (``data.inputs.load_input``, made while the decoding slot is held); raises ``Rejection``
    naming the image otherwise."""
    image_size(data, filename, index, max_pixels=max_pixels)
    what = describe(index, filename)
    with DECODE_SLOTS:
        try:
            return open_image(data, mode=mode, draft_size=draft_size) if preprocess is None else \
                load_input(data, preprocess)
        except ImageDecodeError as e:
            raise Rejection(_STATUS.get(e.reason, 422), f"{what} cannot be used: {e.detail}.") from None
