"""Image file (or its bytes) -> backbone input, by the cheapest decoder that gives the same pixels.

``load_input(source, p)`` is ``preprocess(open_image(source, ...), p)``. For the common case
(a JPEG already upright and in the wanted colour mode, too small for a draft-mode decode
to shrink, resampled by ``crop`` mode) it decodes with libjpeg-turbo through torchvision
instead of Pillow: the same library and settings, so the same pixels (tests/test_inputs.py),
straight into the uint8 tensor the resampler takes, where Pillow's image must first be
unpacked and copied (benchmarks/preprocess_cost.py). Anything else, and any file the fast
decoder refuses, takes ``open_image``, which also names what is wrong with it.

torchvision 0.29 marks its image decoders deprecated (in favour of TorchCodec); the version is
pinned, and without them every file simply takes the Pillow way. One visible difference: for a
damaged JPEG that libjpeg can still decode (Pillow accepts it silently, and the pixels are the
same), libjpeg prints its own one-line notice on stderr, e.g. "Corrupt JPEG data: premature end
of data segment".
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from .images import EXIF_ORIENTATION, _check_pixels, open_image
from .transforms import Preprocess, _torch_crop, crop_resize, normalise, preprocess


def load_input(source: str | Path | bytes, p: Preprocess) -> np.ndarray:
    """The backbone's input (C, H, W) float32 for an image file or its bytes; raises
    ``ImageDecodeError`` (with the reason) for a file that cannot be used."""
    mode = "RGB" if p.channels == 3 else "L"
    if _torch_crop(p):
        pixels = jpeg_pixels(source, mode, p.draft_size)
        if pixels is not None:
            return normalise(crop_resize(pixels, p), p)
    return preprocess(open_image(source, mode=mode, draft_size=p.draft_size), p)


def jpeg_pixels(source: str | Path | bytes, mode: str, draft_size: int | None):
    """The decoded pixels as a uint8 tensor (C, H, W) when torchvision's JPEG decoder gives
    exactly what ``open_image(source, mode=mode, draft_size=draft_size)`` would; else None.

    That is when the file is a JPEG whose colour mode is ``mode``, with no EXIF turn, and
    small enough that a draft-mode decode would not scale it (a side under twice
    ``draft_size``: Pillow then shrinks it in the decoder, which torchvision cannot).
    """
    decode = _decoder()
    if decode is None:
        return None
    try:
        with _opened(source) as f:
            with Image.open(f) as img:
                _check_pixels(img)  # a decompression bomb raises: open_image then refuses it by name
                w, h = img.size
                if (img.format != "JPEG" or img.mode != mode
                        or (draft_size and min(w // draft_size, h // draft_size) >= 2)
                        or img.getexif().get(EXIF_ORIENTATION, 1) != 1):
                    return None
            if isinstance(source, (bytes, bytearray)):
                data = bytearray(source)
            else:
                f.seek(0)
                data = bytearray(f.read())
        import torch

        pixels = decode(torch.frombuffer(data, dtype=torch.uint8))
    except Exception:  # unreadable, truncated, corrupt...: open_image says which
        return None
    return pixels if pixels.shape[0] == (3 if mode == "RGB" else 1) else None


def _opened(source: str | Path | bytes) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")


@functools.cache
def _decoder():
    """torchvision's ``decode_jpeg``, or None where torchvision or its image library is missing."""
    try:
        from torchvision.io import decode_jpeg
    except Exception:
        return None
    return decode_jpeg
