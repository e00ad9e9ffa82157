"""open_image decodes what users expect to see; image_problem names every bad file."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from conftest import make_png_bomb, truncate_file, write_image
from PIL import Image

from headstart.data import images
from headstart.data.images import (
    BAD_REASONS,
    MIN_SIDE,
    ImageDecodeError,
    image_problem,
    is_image_path,
    open_image,
)
from headstart.errors import HeadstartError


def pixel(img: Image.Image, xy: tuple[int, int]) -> np.ndarray:
    return np.asarray(img, dtype=int)[xy[1], xy[0]]


# --- open_image ---------------------------------------------------------------------------

def test_rgb_from_path_bytes_and_stream(tmp_path):
    path = write_image(tmp_path / "a.png", (40, 30))
    for source in (path, str(path), path.read_bytes(), io.BytesIO(path.read_bytes())):
        img = open_image(source)
        assert (img.mode, img.size) == ("RGB", (40, 30))
        np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(path)))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (20, 20), (255, 0, 0, 0)).save(path)  # pure cyan
    img = open_image(path)
    assert img.mode == "RGB"
    assert np.abs(pixel(img, (10, 10)) - (0, 255, 255)).max() < 10


def test_palette_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (20, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # 0: black (transparent), 1: red
    img.paste(1, (10, 0, 20, 20))
    img.save(tmp_path / "p.png", transparency=0)
    out = open_image(tmp_path / "p.png")
    assert out.mode == "RGB"
    assert tuple(pixel(out, (2, 5))) == (255, 255, 255)
    assert tuple(pixel(out, (15, 5))) == (255, 0, 0)


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_composited_on_white(tmp_path, mode):
    a = np.zeros((20, 20, 4), np.uint8)
    a[:, 10:] = (0, 0, 0, 255)  # right half opaque black, left half fully transparent
    Image.fromarray(a, "RGBA").convert(mode).save(tmp_path / "a.png")
    out = open_image(tmp_path / "a.png")
    assert tuple(pixel(out, (2, 2))) == (255, 255, 255)
    assert tuple(pixel(out, (15, 2))) == (0, 0, 0)


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    a = np.array([[65535, 32768], [0, 257]], dtype=np.uint16).repeat(10, 0).repeat(10, 1)
    Image.fromarray(a).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    grey = np.asarray(open_image(tmp_path / "g16.png", mode="L"))
    assert [grey[0, 0], grey[0, 10], grey[10, 0], grey[10, 10]] == [255, 128, 0, 1]
    rgb = np.asarray(open_image(tmp_path / "g16.png"))
    assert rgb.shape == (20, 20, 3) and tuple(rgb[0, 10]) == (128, 128, 128)


def test_grey_gives_three_channels_or_one(tmp_path):
    path = write_image(tmp_path / "g.jpg", (24, 24), mode="L")
    assert np.asarray(open_image(path)).shape == (24, 24, 3)
    assert np.asarray(open_image(path, mode="L")).shape == (24, 24)
    colour = write_image(tmp_path / "c.png", (24, 24))
    assert open_image(colour, mode="L").mode == "L"
    with pytest.raises(ValueError, match="mode must be"):
        open_image(colour, mode="RGBA")


def test_exif_orientation_is_applied(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide x 20 high
    a[:10, :10] = (255, 0, 0)  # red block at the stored top-left
    img = Image.fromarray(a)
    exif = img.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    out = open_image(tmp_path / "rot.jpg")
    assert out.size == (20, 40)
    assert pixel(out, (15, 4))[0] > 200  # the top-left block is now at the top-right
    assert pixel(out, (4, 4))[0] < 50


def test_animated_gif_gives_first_frame(tmp_path):
    red, blue = Image.new("RGB", (20, 20), (255, 0, 0)), Image.new("RGB", (20, 20), (0, 0, 255))
    red.save(tmp_path / "anim.gif", save_all=True, append_images=[blue], duration=50, loop=0)
    assert Image.open(tmp_path / "anim.gif").n_frames == 2
    assert tuple(pixel(open_image(tmp_path / "anim.gif"), (5, 5))) == (255, 0, 0)


def test_draft_size_decodes_large_jpeg_smaller(tmp_path):
    path = write_image(tmp_path / "big.jpg", (800, 600), color=(90, 120, 150))
    assert open_image(path).size == (800, 600)
    small = open_image(path, draft_size=100)
    assert small.size == (200, 150)  # 1/4 keeps the short side >= 100; 1/8 would not
    assert min(open_image(path, draft_size=300).size) >= 300
    assert open_image(path, mode="L", draft_size=100).mode == "L"
    png = write_image(tmp_path / "big.png", (200, 160))
    assert open_image(png, draft_size=20).size == (200, 160)  # only JPEG has a draft mode


def test_decode_errors_name_file_reason_and_fix(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello, not a picture")
    with pytest.raises(ImageDecodeError) as info:
        open_image(text)
    e = info.value
    assert isinstance(e, HeadstartError) and e.reason == "not_an_image"
    assert str(text) in str(e) and "Fix:" in str(e)

    cut = truncate_file(write_image(tmp_path / "cut.jpg", (64, 64)))
    with pytest.raises(ImageDecodeError, match="truncated") as info:
        open_image(cut)
    assert info.value.reason == "truncated" and "download" in str(info.value)

    with pytest.raises(ImageDecodeError) as info:
        open_image(tmp_path / "missing.png")
    assert info.value.reason == "unreadable" and "missing.png" in str(info.value)

    with pytest.raises(ImageDecodeError, match="<5 bytes>"):
        open_image(b"hello")


def test_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    bomb = make_png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(ImageDecodeError) as info:
        open_image(bomb)
    assert info.value.reason == "decompression_bomb"
    # Our own limit, below PIL's: the message gives the size and the limit.
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(ImageDecodeError, match=r"40x40 = 1,600 pixels \(limit 1,000\)"):
        open_image(write_image(tmp_path / "a.png", (40, 40)))


# --- image_problem ------------------------------------------------------------------------

def test_good_image_has_no_problem(tmp_path):
    path = write_image(tmp_path / "ok.jpg", (MIN_SIDE, 40))
    assert image_problem(path, deep=False) is None
    assert image_problem(path, deep=True) is None


def test_every_bad_reason_is_found(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("name says jpeg, content says text")
    truncate_file(write_image(tmp_path / "cut.jpg", (64, 64)))
    write_image(tmp_path / "tiny.png", (5, 5))
    make_png_bomb(tmp_path / "bomb.png", 100_000, 100_000)
    good = bytearray(write_image(tmp_path / "corrupt.png", (64, 64)).read_bytes())
    start = good.index(b"IDAT") + 20
    good[start:start + 40] = bytes(b ^ 0xFF for b in good[start:start + 40])
    (tmp_path / "corrupt.png").write_bytes(bytes(good))
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")

    expected = {"empty.jpg": "empty", "text.jpg": "not_an_image", "cut.jpg": "truncated",
                "tiny.png": "too_small", "bomb.png": "decompression_bomb",
                "corrupt.png": "corrupt", "dangling.png": "unreadable"}
    deep = {name: image_problem(tmp_path / name, deep=True) for name in expected}
    assert {name: p[0] for name, p in deep.items()} == expected
    assert "5x5" in deep["tiny.png"][1]
    assert set(expected.values()) == set(BAD_REASONS)

    # The header check can't see past the header: truncation and bad data pass it.
    shallow = {name: image_problem(tmp_path / name, deep=False) for name in expected}
    assert shallow.pop("cut.jpg") is None and shallow.pop("corrupt.png") is None
    assert {name: p[0] for name, p in shallow.items()} == {
        k: v for k, v in expected.items() if k not in ("cut.jpg", "corrupt.png")}


def test_is_image_path_ignores_case():
    assert is_image_path("a/B.JPG") and is_image_path("x.Tiff") and is_image_path("y.webp")
    assert not is_image_path("notes.txt") and not is_image_path("jpg")
