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
# Bumped whenever the same settings start giving different pixels (cached features then stop
# matching): 2 = crop boxes rounded to whole pixels, resampled by PyTorch.
PIXELS_VERSION = 2


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
                f"-c{self.channels}-m{mean}-s{std}" + (f"-v{PIXELS_VERSION}" if self.resize == "crop" else ""))

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
    if not _torch_crop(p):
        return img.resize((s, s), resample, box=crop_box(w, h, p))
    pixels = _image_crop_resize(img, p).permute(1, 2, 0).squeeze(2)  # (S, S[, C])
    return Image.fromarray(np.ascontiguousarray(pixels.numpy()))


def crop_box(w: int, h: int, p: Preprocess) -> tuple[int, int, int, int]:
    """``crop``: the source pixels ``(left, top, right, bottom)`` the input square comes from.

    It is the centre ``input_size`` square of the image resized to short side ``resize_size``,
    mapped back onto the original and rounded to whole pixels: resampling only this box gives
    that square at about half the cost of resizing the whole image and cropping afterwards.
    """
    s = p.input_size
    scale = p.resize_size / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    left, top = (nw - s) // 2, (nh - s) // 2
    sx, sy = w / nw, h / nh
    x0, y0 = round(left * sx), round(top * sy)
    return x0, y0, min(w, max(x0 + 1, round((left + s) * sx))), min(h, max(y0 + 1, round((top + s) * sy)))


def _torch_crop(p: Preprocess) -> bool:
    """Whether ``crop`` mode resamples with PyTorch (bicubic, bilinear); PIL does "nearest"."""
    return p.resize == "crop" and p.interpolation != "nearest"


def _image_crop_resize(img: Image.Image, p: Preprocess):
    """``crop`` mode as a uint8 tensor (C, S, S), from a PIL image (see ``crop_resize``)."""
    import torch

    a = np.array(img)  # (H, W[, C]) uint8; writable (PyTorch warns about read-only arrays)
    return crop_resize(torch.from_numpy(a[:, :, None] if a.ndim == 2 else a).permute(2, 0, 1), p)


def crop_resize(pixels, p: Preprocess):
    """``crop`` mode on decoded pixels, a uint8 tensor (C, H, W) -> (C, S, S): PyTorch's
    antialiased resampling of the crop box: the same filter as PIL's (tests/test_transforms.py
    bounds the difference) and faster on uint8 images (its vectorised kernel, which wants the box
    contiguous with channels last; benchmarks/preprocess_cost.py)."""
    import torch

    x0, y0, x1, y1 = crop_box(pixels.shape[2], pixels.shape[1], p)
    box = pixels[None, :, y0:y1, x0:x1].contiguous(memory_format=torch.channels_last)
    s = p.input_size
    mode = "bicubic" if p.interpolation == "bicubic" else "bilinear"
    return torch.nn.functional.interpolate(box, size=(s, s), mode=mode, antialias=True)[0]


def normalise(pixels, p: Preprocess) -> np.ndarray:
    """A uint8 tensor (C, S, S) -> float32 (C, S, S): ``(pixel / 255 - mean) / std``, converted
    and laid out (C, H, W) in memory in one pass."""
    import torch

    scale, offset = _affine(p.mean[:p.channels], p.std[:p.channels])
    out = torch.empty(pixels.shape, dtype=torch.float32)
    out.copy_(pixels)
    return out.mul_(torch.from_numpy(scale)[:, None, None]).add_(torch.from_numpy(offset)[:, None, None]).numpy()


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
    if not _torch_crop(p):
        return to_array(resize_image(img, p), p)
    return normalise(_image_crop_resize(img, p), p)
