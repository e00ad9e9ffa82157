"""A model argument checked for the mistakes people make with it, before anything loads:
a URL, standard input, an image or an exported file, a folder of images (arguments swapped)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import HeadstartError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}  # = data.IMAGE_EXTENSIONS
VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
EXPORTED_SUFFIXES = {".onnx": "ONNX Runtime", ".pt": "torch.jit.load", ".xml": "OpenVINO", ".zip": "unzipping"}


def check_model_arg(model: str, usage: str) -> None:
    """Refuse ``model`` with a message that says what it is and what ``usage`` expects, when it
    is plainly not a model folder; a folder that may be one is left to the loader's checks."""
    path = Path(model)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", model):
        raise HeadstartError(f"{model!r} is a URL; headstart reads model folders from disk and downloads nothing. "
                             f"Download and unpack it first. Usage: {usage}")
    if model == "-":
        raise HeadstartError(f"the model cannot come from standard input; give a model folder. Usage: {usage}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES or suffix in VIDEO_SUFFIXES:
            raise HeadstartError(f"{model!r} is an {'image' if suffix in IMAGE_SUFFIXES else 'video'} file, not a "
                                 f"model folder: the model comes first. Usage: {usage}")
        hint = (f" ({suffix} files are exported models, for {EXPORTED_SUFFIXES[suffix]})"
                if suffix in EXPORTED_SUFFIXES else "")
        raise HeadstartError(f"{model!r} is a file{hint}; give the model folder written by `headstart train` "
                             f"(config.json + safetensors). Usage: {usage}")
    if path.is_dir() and not (path / "config.json").exists() and _holds_images(path):
        raise HeadstartError(f"{model!r} is a folder of images, not a model folder (it has no config.json): were "
                             f"the arguments swapped? Usage: {usage}")


def _holds_images(folder: Path, limit: int = 200) -> bool:
    """Whether an image file sits in ``folder`` or one level below (looking at ``limit`` entries at most)."""
    seen = 0
    try:
        for entry in folder.iterdir():
            candidates = [entry] if not entry.is_dir() else list(_first(entry.iterdir(), limit))
            for c in candidates:
                if c.suffix.lower() in IMAGE_SUFFIXES:
                    return True
            seen += 1 + len(candidates)
            if seen > limit:
                return False
    except OSError:
        return False
    return False


def _first(it, n: int):
    for i, x in enumerate(it):
        if i >= n:
            return
        yield x
