"""Preprocessing: the fast paths give the pixels the plain recipe gives."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headstart.data.transforms import Preprocess, crop_box, preprocess, resize_image, to_array


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


@pytest.mark.parametrize("size", [(400, 711), (711, 400), (300, 300), (1000, 257), (150, 90)])
def test_crop_box_is_the_centre_square_of_the_resized_image(size):
    p = Preprocess()
    w, h = size
    x0, y0, x1, y1 = crop_box(w, h, p)
    s, scale = p.input_size, p.resize_size / min(w, h)
    nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
    exact = ((nw - s) // 2 * w / nw, (nh - s) // 2 * h / nh)  # left, top of the textbook crop, in source pixels
    assert abs(x0 - exact[0]) <= 0.5 and abs(y0 - exact[1]) <= 0.5
    assert abs((x1 - x0) - s * w / nw) <= 1 and abs((y1 - y0) - s * h / nh) <= 1
    assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h


@pytest.mark.parametrize("size, share", [((400, 711), 0.995), ((711, 400), 0.995), ((300, 300), 0.995),
                                         ((1000, 257), 0.995), ((150, 90), 0.98)])
def test_crop_resamples_like_pil_bicubic(size, share):
    p = Preprocess()
    img = textured(size)
    fast = np.asarray(resize_image(img, p), np.int16)
    pil = np.asarray(img.resize((224, 224), Image.Resampling.BICUBIC, box=crop_box(*size, p)), np.int16)
    assert fast.shape == pil.shape == (224, 224, 3)
    diff = np.abs(fast - pil)
    # The same antialiased bicubic filter; the two libraries round intermediate values
    # differently, by one level on all but a few pixels (noisy texture is the worst case;
    # enlarging a small image differs a little more, near the box's edges).
    assert (diff <= 1).mean() > share
    assert diff.mean() < 0.4


def test_preprocess_normalises_the_resized_pixels():
    p = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = textured((480, 320))
    np.testing.assert_allclose(preprocess(img, p), to_array(resize_image(img, p), p), atol=1e-5)


def test_to_array_is_the_normalisation_formula():
    p = Preprocess(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    img = resize_image(textured((320, 240)), p)
    want = ((np.asarray(img, np.float64) / 255 - np.array(p.mean)) / np.array(p.std)).transpose(2, 0, 1)
    got = to_array(img, p)
    assert got.dtype == np.float32 and got.shape == (3, 224, 224) and got.flags.c_contiguous
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_grey_input_uses_the_first_channel_constants():
    p = Preprocess(channels=1, mean=(0.25,), std=(0.5,))
    img = textured((300, 260), mode="L")
    got = preprocess(img, p)
    assert got.shape == (1, 224, 224)
    grey = np.asarray(img.resize((224, 224), Image.Resampling.BICUBIC, box=crop_box(300, 260, p)), np.float64)
    assert (np.abs(got[0] - (grey / 255 - 0.25) / 0.5) <= 1 / 255 / 0.5 + 1e-6).mean() > 0.995


@pytest.mark.parametrize("resize", ["pad", "stretch"])
def test_pad_and_stretch_give_the_input_size(resize):
    p = Preprocess(resize=resize)
    assert preprocess(textured((500, 200)), p).shape == (3, 224, 224)
