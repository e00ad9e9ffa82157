"""A model argument checked for the mistakes people make with it, before anything loads:
a URL, standard input, an image or an exported file, a folder of images (arguments swapped)."""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import HeadstartError

FILE_HINTS = {".onnx": " (an exported model, for ONNX Runtime)", ".pt": " (an exported model, for torch.jit.load)",
              ".zip": " (a zipped model folder: unzip it first)"}


def check_model_arg(model: str, usage: str) -> None:
    """Refuse ``model`` with a message that says what it is and what ``usage`` expects, when it
    is plainly not a model folder; a folder that may be one is left to the loader's checks."""
    from ..data.images import IMAGE_EXTENSIONS
    from ..data.video import VIDEO_EXTENSIONS

    path = Path(model)
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", model):
        raise HeadstartError(f"{model!r} is a URL; headstart reads model folders from disk and downloads nothing. "
                             f"Download and unpack it first. Usage: {usage}")
    if model == "-":
        raise HeadstartError(f"the model cannot come from standard input; give a model folder. Usage: {usage}")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS or suffix in VIDEO_EXTENSIONS:
            raise HeadstartError(f"{model!r} is an {'image' if suffix in IMAGE_EXTENSIONS else 'video'} file, not a "
                                 f"model folder: the model comes first. Usage: {usage}")
        hint = FILE_HINTS.get(suffix, "")
        raise HeadstartError(f"{model!r} is a file{hint}; give the model folder written by `headstart train` "
                             f"(config.json + safetensors). Usage: {usage}")
    if path.is_dir() and not (path / "config.json").exists() and _holds_images(path, IMAGE_EXTENSIONS):
        raise HeadstartError(f"{model!r} is a folder of images, not a model folder (it has no config.json): were "
                             f"the arguments swapped? Usage: {usage}")


def _holds_images(folder: Path, suffixes, limit: int = 200) -> bool:
    """Whether an image file sits in ``folder`` or one level below (looking at ``limit`` entries at most)."""
    seen = 0
    try:
        for entry in folder.iterdir():
            candidates = [entry] if not entry.is_dir() else list(_first(entry.iterdir(), limit))
            for c in candidates:
                if c.suffix.lower() in suffixes:
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
