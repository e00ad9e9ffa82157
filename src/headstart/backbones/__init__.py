"""One registry of backbones: ``create_backbone(name)`` and ``list_backbones()``.

Names: the embedded ``efficientnet_lite0`` (default; ``lite1``/``lite2`` with their extras),
``scratch:<spec>`` for a CNN built from a spec (see ``backbones.scratch``), or any timm
architecture name together with ``weights=FILE``. A backbone answers for itself: its
preprocessing, feature size, whether it is trained from scratch, whether its weights must be
saved in a model folder, and its inference engine (``backbone.engine()``).

This module is light (torch loads with the first backbone), so the command line can name the
default without loading PyTorch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .names import DEFAULT_BACKBONE, SCRATCH_PREFIX, is_scratch

if TYPE_CHECKING:
    from .base import Backbone, BackboneInfo
    from .registry import backbone_from_spec, create_backbone, list_backbones

_LAZY = {"Backbone": "base", "BackboneInfo": "base", "backbone_from_spec": "registry",
         "create_backbone": "registry", "list_backbones": "registry"}

__all__ = ["DEFAULT_BACKBONE", "SCRATCH_PREFIX", "Backbone", "BackboneInfo", "backbone_from_spec",
           "create_backbone", "is_scratch", "list_backbones"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
