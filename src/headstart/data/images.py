"""Decode an image file the way a user expects to see it, and say why a file is bad.

``open_image`` returns a fully loaded RGB (or L) image whatever the file holds: EXIF
orientation applied, the first frame of an animation, CMYK converted, transparency on white,
16-bit greyscale scaled to 8 bits. ``image_problem`` answers "why can't this file be used?"
with a short reason code from ``BAD_REASONS`` and a human detail.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import HeadstartError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
MAX_PIXELS = 100_000_000  # width * height above this is refused as a decompression bomb
MIN_SIDE = 16  # px; smaller images carry too little to classify
EXIF_ORIENTATION = 0x0112  # the EXIF tag saying how to turn the stored pixels; 1 = as stored

BAD_REASONS: dict[str, str] = {
    "empty": "the file has zero bytes; copy or download it again, or remove it",
    "unreadable": "the file cannot be read; check its permissions and that the disk is reachable",
    "not_an_image": "the content is not an image whatever its name says; "
                    "re-save it as JPEG or PNG, or remove it",
    "truncated": "the image data ends early (an interrupted copy or download); "
                 "copy or download it again",
    "corrupt": "the image data cannot be decoded; open it in an image editor and re-save it "
               "as JPEG or PNG, or remove it",
    "decompression_bomb": f"the image has more than {MAX_PIXELS:,} pixels; "
                          "resize it below that or remove it",
    "too_small": f"a side is shorter than {MIN_SIDE} px, too small to classify; "
                 "use a larger version or remove it",
}

# PIL warns above MAX_IMAGE_PIXELS and raises above twice that. Lift its threshold to ours
# (never lower it, never touch a limit someone disabled) so that PIL only complains about
# images we refuse anyway; our own check below gives the clear message.
if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS

class ImageDecodeError(HeadstartError):
    """An image file could not be decoded; ``reason`` is a ``BAD_REASONS`` key."""

    def __init__(self, name: str, reason: str, detail: str) -> None:
        self.name = name
        self.reason = reason
        self.detail = detail
        super().__init__(f"Cannot use image {name}: {detail}. Fix: {BAD_REASONS[reason]}.")


def is_image_path(path: str | Path) -> bool:
    """True when the file name ends with one of ``IMAGE_EXTENSIONS`` (any case)."""
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


def open_image(source: str | Path | bytes | BinaryIO, *, mode: str = "RGB",
               draft_size: int | None = None) -> Image.Image:
    """Decode ``source`` into a loaded ``mode`` ("RGB" or "L") image, upright.

    ``draft_size`` lets the JPEG decoder scale down by 1/2 .. 1/8 while keeping both sides
    at least ``draft_size`` px, which makes decoding large photos several times faster.

    >>> open_image("cat.jpg", draft_size=256).size  # doctest: +SKIP
    (504, 378)
    """
    if mode not in ("RGB", "L"):
        raise ValueError(f"mode must be 'RGB' or 'L', got {mode!r}")
    name = _name_of(source)
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with Image.open(fp) as img:
            _check_pixels(img)
            if draft_size and img.format == "JPEG":
                img.draft(mode, (draft_size, draft_size))
            img.load()
            upright = _upright(img)
        return _to_mode(upright, mode)
    except ImageDecodeError as e:
        raise ImageDecodeError(name, e.reason, e.detail) from None
    except Exception as e:
        reason, detail = _classify(e)
        raise ImageDecodeError(name, reason, detail) from e


def image_problem(path: Path, *, deep: bool) -> tuple[str, str] | None:
    """Why ``path`` can't be used as ``(reason, detail)``, or None when it is fine.

    ``deep=False`` reads the header only (size, format: well under a millisecond);
    ``deep=True`` decodes the whole image, which also finds truncated files.
    """
    try:
        st = os.stat(path)
    except OSError as e:
        return _classify(e)
    if not stat.S_ISREG(st.st_mode):  # opening a FIFO would wait for a writer forever
        return "unreadable", f"it is not a regular file but {special_kind(st.st_mode)}"
    if st.st_size == 0:
        return "empty", "the file has zero bytes"
    try:
        if deep:
            # A JPEG draft still entropy-decodes every byte (so truncation shows) and keeps
            # both sides >= MIN_SIDE, so the size check below stays right.
            size = open_image(path, mode="L", draft_size=MIN_SIDE).size
        else:
            with Image.open(path) as img:
                _check_pixels(img)
                size = img.size
    except ImageDecodeError as e:
        return e.reason, e.detail
    except Exception as e:
        return _classify(e)
    if min(size) < MIN_SIDE:
        return "too_small", f"the image is {size[0]}x{size[1]} px (minimum side {MIN_SIDE} px)"
    return None


def special_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def _upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says, as an image in memory.

    A decoded JPEG already is one (Pillow never maps JPEG files into memory), so when there
    is nothing to turn it is returned as it is: copying it cost a third of its decoding time.
    Other formats may map the file, so they are always copied, like turned images.
    """
    try:
        if img.format == "JPEG" and img.getexif().get(EXIF_ORIENTATION, 1) == 1:
            return img
        return ImageOps.exif_transpose(img)  # a new image
    except Exception:  # a malformed EXIF block must not cost the picture
        return img.copy()


def _name_of(source: object) -> str:
    if isinstance(source, (str, Path)):
        return f"'{source}'"
    if isinstance(source, (bytes, bytearray)):
        return f"<{len(source)} bytes>"
    return f"'{getattr(source, 'name', '<stream>')}'"


def _check_pixels(img: Image.Image) -> None:
    w, h = img.size
    if w * h > MAX_PIXELS:
        raise ImageDecodeError(
            "", "decompression_bomb",
            f"the image claims {w}x{h} = {w * h:,} pixels (limit {MAX_PIXELS:,})")


def _classify(e: BaseException) -> tuple[str, str]:
    """Map an exception raised while opening or decoding to ``(reason, detail)``."""
    text = str(e) or type(e).__name__
    if isinstance(e, ImageDecodeError):
        return e.reason, e.detail
    if isinstance(e, Image.DecompressionBombError):
        return "decompression_bomb", text
    if isinstance(e, UnidentifiedImageError):
        return "not_an_image", "no image format recognises its content"
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return "unreadable", f"{type(e).__name__}: {e.strerror or text}"
    if isinstance(e, EOFError) or "truncated" in text.lower():
        return "truncated", text
    return "corrupt", f"{type(e).__name__}: {text}"


def _to_mode(img: Image.Image, mode: str) -> Image.Image:
    """Any PIL mode -> ``mode`` ("RGB" or "L"), with transparency composited on white."""
    if img.mode.startswith("I") or img.mode == "F":
        img = _to_8bit(img)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    if img.mode == "LAB":  # Pillow converts Lab to RGB only; grey goes through RGB
        img = img.convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit / 32-bit / float greyscale -> "L", scaling the range instead of clipping it."""
    a = np.asarray(img)
    if img.mode == "F":
        scale = 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else 1.0
        out = np.clip(np.nan_to_num(a) * scale, 0, 255).round()
    elif img.mode.startswith("I;16") or (a.size and a.max() > 255):
        # 16-bit range: 65535 -> 255, 32768 -> 128 (rounded integer division)
        out = (np.clip(a.astype(np.int64), 0, 65535) + 128) // 257
    else:  # "I" holding 8-bit values
        out = np.clip(a, 0, 255)
    return Image.fromarray(out.astype(np.uint8))  # 2-D uint8 -> "L"
