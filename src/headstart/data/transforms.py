"""Turn a decoded image into the fixed-size array a backbone expects.

The lecture: "Input: fixed size, can use padding to make all images same size." Three ways
to get there, chosen by the backbone's :class:`Preprocess` (never by a flag the user must
remember for each command):

- ``crop``: resize the short side to ``resize_size``, then take the centre ``input_size`` square;
- ``pad``: letterbox: fit the long side to ``input_size`` and pad the rest with the mean colour;
- ``stretch``: resize both sides to ``input_size``, ignoring the aspect ratio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
RESIZE_MODES = ("crop", "pad", "stretch")


@dataclass(frozen=True)
class Preprocess:
    """How pixels become a backbone's input tensor; saved in every model folder."""

    input_size: int = 224
    resize_size: int = 256
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    interpolation: str = "bicubic"
    resize: str = "crop"
    channels: int = 3

    def __post_init__(self) -> None:
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}, got {self.resize!r}")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {tuple(_RESAMPLE)}, got {self.interpolation!r}")

    def key(self) -> str:
        """A short string that changes whenever the output pixels would change."""
        mean = ",".join(f"{m:g}" for m in self.mean)
        std = ",".join(f"{s:g}" for s in self.std)
        return (f"{self.resize}{self.input_size}r{self.resize_size}-{self.interpolation}"
                f"-c{self.channels}-m{mean}-s{std}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        d = dict(d)
        d["mean"] = tuple(d["mean"])
        d["std"] = tuple(d["std"])
        return cls(**d)

    @property
    def draft_size(self) -> int:
        """Smallest side the decoder must deliver before resizing (for JPEG draft mode)."""
        return self.resize_size if self.resize == "crop" else self.input_size


def resize_image(img: Image.Image, p: Preprocess) -> Image.Image:
    """Resize (and crop or pad) a decoded image to ``p.input_size`` square."""
    resample = _RESAMPLE[p.interpolation]
    w, h = img.size
    s = p.input_size
    if p.resize == "stretch":
        return img.resize((s, s), resample)
    if p.resize == "pad":
        scale = s / max(w, h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        img = img.resize((nw, nh), resample)
        fill = tuple(int(round(m * 255)) for m in p.mean)
        canvas = Image.new(img.mode, (s, s), fill if img.mode == "RGB" else fill[0])
        canvas.paste(img, ((s - nw) // 2, (s - nh) // 2))
        return canvas
    # crop: short side to resize_size, then the centre square.
    scale = p.resize_size / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    img = img.resize((nw, nh), resample)
    left, top = (nw - s) // 2, (nh - s) // 2
    return img.crop((left, top, left + s, top + s))


def to_array(img: Image.Image, p: Preprocess) -> np.ndarray:
    """Resized image -> normalised float32 array (C, H, W)."""
    a = np.asarray(img, dtype=np.float32) / 255.0
    if a.ndim == 2:
        a = a[:, :, None]
    mean = np.asarray(p.mean[: a.shape[2]], dtype=np.float32)
    std = np.asarray(p.std[: a.shape[2]], dtype=np.float32)
    a = (a - mean) / std
    return np.ascontiguousarray(a.transpose(2, 0, 1))  # (C, H, W)


def preprocess(img: Image.Image, p: Preprocess) -> np.ndarray:
    """Decoded image (RGB or L) -> backbone input (C, H, W), float32."""
    want = "RGB" if p.channels == 3 else "L"
    if img.mode != want:
        img = img.convert(want)
    return to_array(resize_image(img, p), p)
