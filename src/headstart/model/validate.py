"""One validation step for a model folder's ``config.json``, before anything is built from it.

Schema first (types, known keys, sizes that are positive integers), then what the weights must
hold (``expected_head``): shapes are compared with the safetensors headers, so a size in
config.json is never allocated before the weights confirm it. Every refusal names the file,
what is wrong and what to do.
"""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import HeadstartError
from ..heads import HEADS

MAX_DIM = 2 ** 31  # far beyond any real feature vector or class count
BACKBONE_KEYS = {"name", "input_size", "channels", "resize", "stages"}
FIX = "Restore config.json from the original model folder, or retrain with `headstart train`."


def _refuse(path: Path, problem: str, fix: str = FIX) -> HeadstartError:
    return HeadstartError(f"{str(path)!r} {problem}. {fix}")


def _is_int(v) -> bool:
    return type(v) is int  # bool is an int subclass but never a size


def _section(path: Path, config: dict, key: str, kind: type, required: bool = True):
    if key not in config:
        if required:
            raise _refuse(path, f"lacks the key {key!r} every headstart model has")
        return kind()
    value = config[key]
    if not isinstance(value, kind):
        raise _refuse(path, f"has {key!r} as a JSON {type(value).__name__} ({_short(value)}), expected "
                            f"{ {dict: 'an object', list: 'a list', str: 'a string'}[kind] }")
    return value


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_config(path: Path, config, fmt: str, version: int, text: bool = False) -> None:
    """Raise a ``HeadstartError`` naming ``path`` (config.json) unless ``config`` is a well-formed model config."""
    if not isinstance(config, dict):
        raise _refuse(path, f"holds a JSON {type(config).__name__}, expected an object with the model's settings")
    if config.get("format") != fmt:
        raise _refuse(path, f"is not a headstart model config (format {_short(config.get('format'))}, expected "
                            f"{fmt!r})", "Point at a folder written by `headstart train DATA --out MODEL_DIR`.")
    v = config.get("format_version")
    if not _is_int(v):
        raise _refuse(path, f"has format_version {_short(v)} ({type(v).__name__}); it must be the integer {version}")
    if v != version:
        made_by = config.get("versions", {}).get("headstart", "unknown") if isinstance(config.get("versions"),
                                                                                         dict) else "unknown"
        raise _refuse(path, f"has model format version {v}; this headstart reads version {version}",
                      f"Use the headstart version that wrote it ({made_by}), or retrain.")
    for key in ("weights", "weights_path", "head_file", "backbone_file"):
        if key in config:
            raise _refuse(path, f"names a weights file ({key!r}: {_short(config[key])}); a model folder's weights are "
                                "always its own head.safetensors and backbone.safetensors, never a path elsewhere")
    if text:
        return check_text_config(path, config)
    _check_backbone(path, _section(path, config, "backbone", dict))
    _check_head(path, _section(path, config, "head", dict))
    _check_task(path, _section(path, config, "task", dict), _section(path, config, "labels", list))
    for key, kind in (("metrics", dict), ("training", dict), ("history", list), ("params", dict),
                      ("preprocess", dict), ("backbone_weights_id", str)):
        _section(path, config, key, kind, required=False)
    weights = config.get("params", {}).get("weights")
    if weights is not None and not isinstance(weights, str):
        raise _refuse(path, f"has params.weights {_short(weights)}, expected a file name or null")


def _check_backbone(path: Path, spec: dict) -> None:
    if "weights" in spec:
        raise _refuse(path, f"names a backbone weights file ({_short(spec['weights'])}); a model folder's backbone "
                            "weights are always its own backbone.safetensors (or the installed package's)")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _refuse(path, f"has backbone name {_short(name)}, expected a backbone name such as 'efficientnet_lite0'")
    unknown = sorted(set(spec) - BACKBONE_KEYS)
    if unknown:
        raise _refuse(path, f"has unknown backbone settings {unknown}; known: {sorted(BACKBONE_KEYS)}")
    for key in ("input_size", "channels"):
        if key in spec and not (_is_int(spec[key]) and 0 < spec[key] <= 4096):
            raise _refuse(path, f"has backbone {key} {_short(spec[key])}, expected a positive integer up to 4096")
    if "stages" in spec and not (isinstance(spec["stages"], list) and len(spec["stages"]) <= 64
                                 and all(_is_int(s) and 0 <= s < 64 for s in spec["stages"])):
        raise _refuse(path, f"has backbone stages {_short(spec['stages'])}, expected a list of block numbers")
    if "resize" in spec and not isinstance(spec["resize"], str):
        raise _refuse(path, f"has backbone resize {_short(spec['resize'])}, expected a word such as 'pad'")


def _check_head(path: Path, head: dict) -> None:
    if head.get("kind") not in HEADS:
        raise _refuse(path, f"has head kind {_short(head.get('kind'))}, expected one of {list(HEADS)}")
    sizes = ("in_dim", "out_dim", "hidden") if head["kind"] == "mlp" else ("in_dim", "out_dim")
    for key in sizes:
        v = head.get(key, 512 if key == "hidden" else None)
        if not (_is_int(v) and 0 < v <= MAX_DIM):
            raise _refuse(path, f"has head {key} {_short(v)}, expected a positive integer"
                                + (" (the head's size)" if key != "hidden" else ""))
    training = head.get("training", {})
    if not isinstance(training, dict):
        raise _refuse(path, f"has head.training {_short(training)}, expected an object of head settings")
    from ..training.head import HeadConfig

    unknown = sorted(set(training) - set(HeadConfig.__dataclass_fields__))
    if unknown:
        raise _refuse(path, f"has unknown head.training settings {unknown}")


def _check_task(path: Path, task: dict, labels: list) -> None:
    from ..tasks import TASKS, task_from_dict

    if task.get("name") not in TASKS:
        raise _refuse(path, f"has task {_short(task.get('name'))}; this headstart knows {sorted(TASKS)}",
                      "Upgrade headstart to load it, or retrain.")
    for where, names in (("labels", labels), ("task.labels", task.get("labels", []))):
        if not (isinstance(names, list) and all(isinstance(n, (str, int, float)) for n in names)):
            raise _refuse(path, f"has {where} {_short(names)}, expected a list of labels (names or numbers)")
    try:
        fitted = task_from_dict(task)
    except (TypeError, ValueError, HeadstartError) as e:
        raise _refuse(path, f"has a task the {task['name']} task cannot rebuild ({e})") from None
    if fitted.labels and list(labels) != list(fitted.labels):
        raise _refuse(path, f"lists labels {_short(labels)} at the top but the task's labels are "
                            f"{_short(list(fitted.labels))}; predictions would be named wrongly")


def task_of(config: dict):
    from ..tasks import task_from_dict

    return task_from_dict(config["task"])


def expected_head(head: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """name -> (shape, "float") of the tensors the head config.json describes, computed without
    allocating them (a module on PyTorch's meta device)."""
    import torch

    from ..heads import Head

    with torch.device("meta"):
        module = Head(head["in_dim"], head["out_dim"], head["kind"], head.get("hidden", 512))
    return expected_of(module)


def expected_of(module) -> dict[str, tuple[tuple[int, ...], str]]:
    return {k: (tuple(v.shape), "float" if v.is_floating_point() else "int")
            for k, v in module.state_dict().items()}


@functools.lru_cache(maxsize=8)
def expected_named(name: str) -> dict[str, tuple[tuple[int, ...], str]] | None:
    """The tensors a named backbone's ``state_dict`` holds (an embedded EfficientNet-Lite, or a
    timm architecture), from the architecture built on the meta device; None when timm does
    not know the name (building it then fails with its own message)."""
    import torch

    from ..backbones.efficientnet_lite import VARIANTS, EfficientNetLite

    try:
        import timm
    except ImportError:
        return None
    with torch.device("meta"):
        if name in VARIANTS:
            module = EfficientNetLite(name, model=timm.create_model("tf_" + name, pretrained=False))
        elif name in timm.list_models():
            module = torch.nn.ModuleDict({"model": timm.create_model(name, pretrained=False, num_classes=0)})
        else:
            return None
    return expected_of(module)


def check_text_config(path: Path, config: dict) -> None:
    """The text model's part of config.json (``"kind": "text"``): network, vocabulary, task."""
    from ..backbones.text_cnn import TextCNNConfig
    from ..errors import HeadstartError

    network = _section(path, config, "network", dict)
    vocabulary = _section(path, config, "vocabulary", list)
    if not vocabulary or not all(isinstance(t, str) for t in vocabulary):
        raise _refuse(path, "has a vocabulary that is not a non-empty list of strings")
    sizes = {k: network.get(k) for k in ("embed_dim", "filters", "length")}
    widths = network.get("widths")
    if (not all(_is_int(v) and 0 <= v <= 100_000 for v in sizes.values())
            or not isinstance(widths, list) or not widths or not all(_is_int(w) and 0 < w <= 100 for w in widths)):
        raise _refuse(path, f"has text network sizes {_short(network)} that are not small positive integers")
    try:
        TextCNNConfig.from_dict(network)
    except (HeadstartError, TypeError, ValueError) as e:
        raise _refuse(path, f"has a text network that cannot be built ({e})") from None
    _check_task(path, _section(path, config, "task", dict), _section(path, config, "labels", list))
    tfidf = _section(path, config, "tfidf", dict, required=False)
    if tfidf and not (all(isinstance(tfidf.get(k), list) and all(isinstance(t, str) for t in tfidf[k])
                                      for k in ("word", "char")) and isinstance(tfidf.get("C"), (int, float))):
        raise _refuse(path, "has a 'tfidf' part that is not word and char n-gram lists of strings with a number C")


def expected_text(config: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """The text model's tensors as config.json describes them (the CNNs on the meta device)."""
    import torch

    from ..backbones.text_cnn import TextCNNConfig, build_text_cnn
    from ..backbones.text_tfidf import expected_tfidf

    with torch.device("meta"):
        module = build_text_cnn(TextCNNConfig.from_dict(config["network"]), len(config["vocabulary"]),
                                task_of(config).out_dim)
    tfidf = config.get("tfidf")
    return {**expected_of(module), **(expected_tfidf(tfidf, len(config["labels"])) if tfidf else {})}
