"""``load_input``: the fast JPEG decoder gives exactly the pixels of ``open_image``, and every
file it does not handle (or cannot read) goes the plain way, bad files named as before."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from conftest import make_png_bomb, truncate_file, write_image
from headstart.data.images import ImageDecodeError, open_image
from headstart.data.inputs import jpeg_pixels, load_input
from headstart.data.transforms import Preprocess, preprocess

P = Preprocess()


def plain(path, p: Preprocess = P) -> np.ndarray:
    """The reference: Pillow decodes (draft mode included), then ``preprocess``."""
    return preprocess(open_image(path, mode="RGB" if p.channels == 3 else "L", draft_size=p.draft_size), p)


def orientation(tag: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = tag
    return exif


# name: (size, mode, save options) of JPEGs the fast decoder takes
FAST = {
    "portrait 4:2:0": ((300, 533), "RGB", {"quality": 90}),
    "landscape 4:4:4": ((477, 300), "RGB", {"quality": 95, "subsampling": 0}),
    "progressive": ((400, 400), "RGB", {"progressive": True}),
    "odd size": ((263, 511), "RGB", {"quality": 75}),
    "orientation 1": ((300, 400), "RGB", {"exif": orientation(1)}),
}


@pytest.mark.parametrize("name", FAST)
def test_fast_jpeg_decoding_gives_the_plain_input_exactly(tmp_path, name):
    size, mode, options = FAST[name]
    path = write_image(tmp_path / "a.jpg", size, color=(120, 90, 200), noise=60, mode=mode, **options)
    pixels = jpeg_pixels(path, "RGB", P.draft_size)
    assert pixels is not None, "the fast decoder should take this JPEG"
    assert np.array_equal(pixels.permute(1, 2, 0).numpy(), np.asarray(open_image(path)))
    assert np.array_equal(load_input(path, P), plain(path))
    assert np.array_equal(load_input(path.read_bytes(), P), plain(path))


def test_greyscale_model_takes_greyscale_jpegs_fast(tmp_path):
    p = Preprocess(channels=1, mean=(0.5,), std=(0.5,))
    path = write_image(tmp_path / "g.jpg", (320, 300), color=100, mode="L")
    assert jpeg_pixels(path, "L", p.draft_size) is not None
    x = load_input(path, p)
    assert x.shape == (1, 224, 224)
    assert np.array_equal(x, plain(path, p))


# name: (file name, size, mode, save options) of files that must take the plain way
PLAIN = {
    "turned by EXIF": ("t.jpg", (300, 400), "RGB", {"exif": orientation(6)}),
    "large enough for draft mode": ("big.jpg", (1100, 1030), "RGB", {}),
    "CMYK": ("c.jpg", (300, 300), "CMYK", {}),
    "greyscale for a colour model": ("g.jpg", (300, 300), "L", {}),
    "PNG": ("p.png", (300, 300), "RGB", {}),
}


@pytest.mark.parametrize("name", PLAIN)
def test_other_files_take_the_plain_way_with_the_same_result(tmp_path, name):
    fname, size, mode, options = PLAIN[name]
    path = write_image(tmp_path / fname, size, color=(30, 160, 90), noise=50, mode=mode, **options)
    assert jpeg_pixels(path, "RGB", P.draft_size) is None
    assert np.array_equal(load_input(path, P), plain(path))


def test_turned_jpeg_comes_out_upright(tmp_path):
    # 300 wide, 400 high, stored with "turn 90 degrees clockwise to view": 400 x 300 upright
    path = write_image(tmp_path / "t.jpg", (300, 400), color=(30, 160, 90), exif=orientation(6))
    assert open_image(path).size == (400, 300)
    assert np.array_equal(load_input(path, P), plain(path))


def test_bad_files_are_named_as_before(tmp_path):
    cut = truncate_file(write_image(tmp_path / "cut.jpg", (300, 300), quality=95), keep=0.5)
    assert jpeg_pixels(cut, "RGB", P.draft_size) is None
    with pytest.raises(ImageDecodeError) as e:
        load_input(cut, P)
    assert e.value.reason == "truncated" and "cut.jpg" in str(e.value)
    fake = tmp_path / "fake.jpg"
    fake.write_bytes(b"not a picture at all")
    with pytest.raises(ImageDecodeError) as e:
        load_input(fake, P)
    assert e.value.reason == "not_an_image"
    with pytest.raises(ImageDecodeError) as e:
        load_input(tmp_path / "missing.jpg", P)
    assert e.value.reason == "unreadable"
    with pytest.raises(ImageDecodeError) as e:
        load_input(make_png_bomb(tmp_path / "bomb.png", 20_000, 20_000), P)
    assert e.value.reason == "decompression_bomb"


def test_damaged_but_decodable_jpeg_gives_the_same_input_both_ways(tmp_path):
    # an end-of-image marker in the middle of the scan: both decoders fill in the rest alike
    path = write_image(tmp_path / "d.jpg", (300, 300), quality=90)
    data = bytearray(path.read_bytes())
    data[len(data) // 2:len(data) // 2 + 4] = b"\xff\xd9\x00\x00"
    path.write_bytes(bytes(data))
    assert jpeg_pixels(path, "RGB", P.draft_size) is not None
    assert np.array_equal(load_input(path, P), plain(path))


def test_other_resize_modes_take_the_plain_way(tmp_path):
    path = write_image(tmp_path / "a.jpg", (300, 400), color=(120, 90, 200))
    for p in (Preprocess(resize="pad"), Preprocess(resize="stretch"), Preprocess(interpolation="nearest")):
        assert np.array_equal(load_input(path, p), plain(path, p))
