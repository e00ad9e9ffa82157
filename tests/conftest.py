"""Shared fixtures: tiny real images written with Pillow into ``tmp_path``.

Helpers are plain functions so a test can build exactly the folder it needs; fixtures wrap
the common cases. Images are small (24-32 px) and never byte-identical unless asked.
"""

from __future__ import annotations

import csv
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# One base colour per class, so a model can tell the classes of ``class_folder`` apart.
CLASS_COLORS = [(220, 40, 40), (40, 180, 60), (50, 70, 220), (230, 200, 40), (160, 60, 200)]


def write_image(path: str | Path, size: tuple[int, int] = (32, 32),
                color: tuple[int, ...] | int | None = None, fmt: str | None = None,
                mode: str = "RGB", seed: int | None = None, noise: int = 40,
                **save_kwargs) -> Path:
    """Write a small image and return its path; parents are created.

    ``color=None`` gives pure random noise; with a colour, noise of +-``noise`` is added around
    it (``noise=0`` for a flat image). The noise seed comes from the path unless given, so
    every file differs. ``fmt`` defaults to what the extension says.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(path).encode()) if seed is None else seed)
    w, h = size
    if color is None:
        pixels = rng.integers(0, 256, (h, w, 3))
    else:
        base = np.broadcast_to(np.asarray(color if isinstance(color, tuple) else (color,) * 3)[:3],
                               (h, w, 3))
        pixels = base + (rng.integers(-noise, noise + 1, (h, w, 3)) if noise else 0)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    if mode != "RGB":
        img = img.convert(mode)
    img.save(path, format=fmt, **save_kwargs)
    return path


def make_class_folder(root: str | Path, classes: tuple[str, ...] = ("cat", "dog", "fish"),
                      n: int = 6, size: tuple[int, int] = (32, 32), ext: str = ".png") -> Path:
    """``root/<class>/<class>_<i><ext>``: n distinct noisy images per class, class-coloured."""
    root = Path(root)
    for k, label in enumerate(classes):
        for i in range(n):
            write_image(root / label / f"{label}_{i:03d}{ext}", size,
                        color=CLASS_COLORS[k % len(CLASS_COLORS)])
    return root


def make_png_bomb(path: str | Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (IHDR patched, CRC recomputed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (1, 1)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = data.index(b"IHDR")  # chunk: length(4) type(4) data(13) crc(4)
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def write_csv(path: str | Path, header: list[str], rows: list) -> Path:
    """A CSV of labels (header row, then one row per image)."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def truncate_file(path: str | Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (an interrupted download)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def folder_state(root: str | Path) -> dict[str, tuple[int, int]]:
    """rel path -> (size, mtime_ns) of everything under ``root``, to prove it was not touched."""
    root = Path(root)
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            state[p.relative_to(root).as_posix()] = (st.st_size, st.st_mtime_ns)
    return state


@pytest.fixture
def torch_threads():
    """``torch_threads(n)``: PyTorch on ``n`` threads for the test; the count before is put back."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """3 classes (cat, dog, fish) x 6 distinct 32x32 PNGs in ``tmp_path / "photos"``."""
    return make_class_folder(tmp_path / "photos")


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Every test run gets its own feature / ONNX cache, never the user's ~/.cache.

    Session-scoped so the backbone's ONNX export is made once per run.
    """
    old = os.environ.get("HEADSTART_CACHE_DIR")
    os.environ["HEADSTART_CACHE_DIR"] = str(tmp_path_factory.mktemp("headstart-cache"))
    yield
    if old is None:
        os.environ.pop("HEADSTART_CACHE_DIR", None)
    else:
        os.environ["HEADSTART_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def backbone():
    """The real embedded EfficientNet-Lite0 (loaded once per run)."""
    from headstart.backbones import create_backbone

    return create_backbone("efficientnet_lite0")


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A real model folder: the embedded backbone + a head trained on 3 coloured classes."""
    from headstart import ImageClassifier

    root = tmp_path_factory.mktemp("trained")
    data = make_class_folder(root / "data", n=10, size=(48, 48))
    clf = ImageClassifier(val_fraction=0.2, test_fraction=0.2).fit(data)
    clf.save(root / "model")
    return root / "model", data


# A local Ray with 2 CPUs for the cluster tests (test_ray.py, test_distributed.py), one per module.
@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray", reason="Ray is optional: pip install 'headstart[cluster]'")
    pytest.importorskip("pyarrow", reason="pyarrow comes with headstart[cluster]")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def objects_model(tmp_path_factory):
    """A scratch CNN that tells a small cross from a small square on clutter (tests/objects.py)."""
    from objects import trained_model

    return trained_model(tmp_path_factory.mktemp("objects"))
