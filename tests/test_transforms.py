"""Preprocessing: the fast paths give the pixels the plain recipe gives."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headstart.data.transforms import Preprocess, preprocess, resize_image, to_array


def textured(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A photo-like test image: smooth gradients plus fine texture, so resampling matters."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    rng = np.random.default_rng(seed)
    planes = [127 + 100 * np.sin(xx / (7 + 5 * c)) * np.cos(yy / 11) + rng.normal(0, 12, (h, w)) for c in range(3)]
    a = np.clip(np.stack(planes, 2), 0, 255).astype(np.uint8)
    img = Image.fromarray(a, "RGB")
    return img if mode == "RGB" else img.convert(mode)


def reference_crop(img: Image.Image, p: Preprocess) -> Image.Image:
    """The textbook recipe: resize the short side to ``resize_size``, then crop the centre."""
    w, h = img.size
    s, scale = p.input_size, p.resize_size / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    big = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - s) // 2, (nh - s) // 2
    return big.crop((left, top, left + s, top + s))


@pytest.mark.parametrize("size", [(400, 711), (711, 400), (300, 300), (1000, 257)])
def test_crop_resamples_only_the_box_with_the_same_pixels(size):
    p = Preprocess()
    img = textured(size)
    fast = np.asarray(resize_image(img, p), np.int16)
    slow = np.asarray(reference_crop(img, p), np.int16)
    assert fast.shape == slow.shape == (224, 224, 3)
    diff = np.abs(fast - slow)
    # Same filter, same scale: only the rounding of intermediate values differs, by one level
    # at most on all but a handful of pixels (a noisy test image is the worst case for this).
    assert (diff <= 1).mean() > 0.999
    assert diff.mean() < 0.4


def test_to_array_is_the_normalisation_formula():
    p = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = resize_image(textured((320, 240)), p)
    want = ((np.asarray(img, np.float64) / 255 - np.array(p.mean)) / np.array(p.std)).transpose(2, 0, 1)
    got = to_array(img, p)
    assert got.dtype == np.float32 and got.shape == (3, 224, 224) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_grey_input_uses_the_first_channel_constants():
    p = Preprocess(channels=1, mean=(0.25,), std=(0.5,))
    got = preprocess(textured((300, 260), mode="L"), p)
    assert got.shape == (1, 224, 224)
    grey = np.asarray(reference_crop(textured((300, 260), mode="L"), p), np.float64)
    np.testing.assert_allclose(got[0], (grey / 255 - 0.25) / 0.5, atol=2 / 255 / 0.5 + 1e-6)


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_pad_and_stretch_give_the_input_size(resize):
    p = Preprocess(resize=resize)
    assert preprocess(textured((500, 200)), p).shape == (3, 224, 224)
