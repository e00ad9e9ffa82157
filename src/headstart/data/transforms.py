"""Turn a decoded image into the fixed-size array a backbone expects.

The lecture: "Input: fixed size, can use padding to make all images same size." Three ways
to get there, chosen by the backbone's :class:`Preprocess` (never by a flag the user must
remember for each command):

- ``crop``: resize the short side to ``resize_size``, then take the centre ``input_size`` square;
- ``pad``: letterbox: fit the long side to ``input_size`` and pad the rest with the mean colour;
- ``stretch``: resize both sides to ``input_size``, ignoring the aspect ratio.
"""

from __future__ import annotations

import functools
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
    # crop: short side to resize_size, then the centre square. Resampling only the source box
    # the square comes from gives the same pixels (same scale, same filter support) at about
    # half the cost of resizing the whole image and cropping afterwards.
    scale = p.resize_size / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    sx, sy = w / nw, h / nh
    return img.resize((s, s), resample, box=(left * sx, top * sy, (left + s) * sx, (top + s) * sy))


def to_array(img: Image.Image, p: Preprocess) -> np.ndarray:
    """Resized image -> normalised float32 array (C, H, W): ``(pixel / 255 - mean) / std``,
    computed as one multiply-add per channel straight into the output."""
    a = np.asarray(img)
    if a.ndim == 2:
        a = a[:, :, None]
    c = a.shape[2]
    scale, offset = _affine(p.mean[:c], p.std[:c])
    out = np.empty((c, a.shape[0], a.shape[1]), np.float32)
    for i in range(c):
        np.multiply(a[:, :, i], scale[i], out=out[i], casting="unsafe")
        out[i] += offset[i]
    return out


@functools.lru_cache(maxsize=16)
def _affine(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    m, sd = np.asarray(mean, np.float32), np.asarray(std, np.float32)
    return (1.0 / (255.0 * sd)).astype(np.float32), (-m / sd).astype(np.float32)


def preprocess(img: Image.Image, p: Preprocess) -> np.ndarray:
    """Decoded image (RGB or L) -> backbone input (C, H, W), float32."""
    want = "RGB" if p.channels == 3 else "L"
    if img.mode != want:
        img = img.convert(want)
    return to_array(resize_image(img, p), p)
