"""`headstart summary` and `headstart filter`, run through their argparse wiring."""

from __future__ import annotations

import argparse

import numpy as np
import pytest
from PIL import Image

from headstart.cli import lab as cli_lab
from headstart.errors import HeadstartError


def _run(add, run, argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    add(p)
    return run(p.parse_args(argv))


def summary(*argv: str) -> int:
    return _run(cli_lab.add_arguments_summary, cli_lab.run_summary, list(argv))


def filter_(*argv: str) -> int:
    return _run(cli_lab.add_arguments_filter, cli_lab.run_filter, [str(a) for a in argv])


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    """A real photo when scikit-image is installed, else a drawn scene."""
    path = tmp_path_factory.mktemp("img") / "photo.jpg"
    try:
        from skimage.data import astronaut
        Image.fromarray(astronaut()).save(path, quality=90)
    except ImportError:
        rng = np.random.default_rng(0)
        a = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        Image.fromarray(a).save(path)
    return str(path)


@pytest.fixture
def square(tmp_path) -> str:
    """A white 10x10 square on black, 30x30: its only edges are the square's outline."""
    a = np.zeros((30, 30), np.uint8)
    a[10:20, 10:20] = 255
    path = tmp_path / "square.png"
    Image.fromarray(a).save(path)
    return str(path)


def test_summary_prints_the_lecture_lines(capsys):
    assert summary("conv8-bn-relu-maxpool,conv16-relu-gap", "--input", "400x400x3") == 0
    out = capsys.readouterr().out
    assert "480000 x 480000 + 480000 + 1 = 230,400,480,001 parameters (about 230 billion)" in out
    assert "480000 x 1000 + 1000 + 1 = 480,001,001 parameters (about 480 million)" in out
    assert "body.0.conv8 (Conv2d)" in out and "8x400x400" in out
    assert "a feature vector of 16 per image" in out


def test_summary_default_input_and_grey(capsys):
    summary("conv8-maxpool,fc")
    out = capsys.readouterr().out
    assert "input 64x64x3" in out and "8x32x32" in out
    summary("scratch:conv8-maxpool,fc", "--input", "28x28x1")
    out = capsys.readouterr().out
    assert "input 28x28x1" in out and "784 x 784 + 784 + 1" in out


@pytest.mark.parametrize("argv, words", [
    (["conv8-relu,fx"], ["unknown layer 'fx'", "^^"]),
    (["conv8", "--input", "400x300x3"], ["square images", "--input 400x300x3", "400x400x3"]),
    (["conv8", "--input", "64x64"], []),
    (["conv8", "--input", "64x64x2"], ["channels must be 1 (grey) or 3 (colour), got 2"]),
    (["conv8", "--input", "big"], ["'big' is not HxWxC"]),
])
def test_summary_errors(argv, words, capsys):
    if not words:
        assert summary(*argv) == 0  # HxW means one channel
        return
    with pytest.raises(HeadstartError) as info:
        summary(*argv)
    for word in words:
        assert word in str(info.value)


def test_summary_of_a_folder_that_is_not_a_model(tmp_path):
    # model folders are summarised (tests/test_featuremaps.py); any other folder is an error
    with pytest.raises(HeadstartError, match="not a complete headstart model folder"):
        summary(str(tmp_path))


def test_filter_laplacian_of_a_square_shows_its_outline(square, tmp_path):
    out = tmp_path / "edges.png"
    assert filter_(square, "--kernel", "laplacian", "--out", out) == 0
    edges = np.asarray(Image.open(out))
    assert edges.shape == (30, 30) and edges.dtype == np.uint8
    assert edges.max() == 255
    assert edges[12:18, 12:18].max() == 0  # inside the square: flat
    assert edges[:8].max() == 0 and edges[:, :8].max() == 0  # background and the frame: flat
    assert edges[10, 10:20].min() > 0 and edges[9, 10:20].min() > 0  # both sides of the edge
    # the matrix form of the same kernel gives the same picture
    again = tmp_path / "again.png"
    filter_(square, "--kernel", "0,1,0;1,-4,1;0,1,0", "--out", again)
    assert np.array_equal(np.asarray(Image.open(again)), edges)


def test_filter_photo_grey_and_colour(photo, tmp_path, capsys):
    grey, colour = tmp_path / "grey.png", tmp_path / "colour.png"
    filter_(photo, "--out", grey)  # laplacian, grey by default
    filter_(photo, "--kernel", "sobel-x", "--colour", "--out", colour)
    size = Image.open(photo).size
    g, c = Image.open(grey), Image.open(colour)
    assert (g.mode, g.size, c.mode, c.size) == ("L", size, "RGB", size)
    a = np.asarray(g)
    assert a.max() == 255 and np.median(a) < 40  # mostly dark, bright at edges
    assert "grey, kernel laplacian" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colour.png", "grey.png"]  # no temps


def test_filter_replaces_an_existing_file(square, tmp_path):
    out = tmp_path / "sub" / "out.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    filter_(square, "--kernel", "identity", "--out", out)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(square)))
    assert [p.name for p in out.parent.iterdir()] == ["out.png"]


@pytest.mark.parametrize("argv, words", [
    (["{missing}", "--out", "{out}"], ["image not found", "missing.png"]),
    (["{text}", "--out", "{out}"], ["cannot read", "notes.txt", "as an image"]),
    (["{square}", "--out", "{tmp}/edges.jpg"], ["--out must name a .png file", "edges.jpg"]),
    (["{square}", "--kernel", "lapl", "--out", "{out}"], ["did you mean 'laplacian'"]),
    (["{square}", "--kernel", "1,2;3", "--out", "{out}"], ["ragged"]),
    (["{square}", "--kernel", "1,2,3;4,5,6", "--out", "{out}"], ["not square"]),
])
def test_filter_errors(argv, words, square, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    names = {"missing": tmp_path / "missing.png", "out": tmp_path / "out.png", "text": text,
             "square": square, "tmp": tmp_path}
    with pytest.raises(HeadstartError) as info:
        filter_(*(a.format(**names) for a in argv))
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "out.png").exists()
