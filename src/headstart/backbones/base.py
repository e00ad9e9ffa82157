"""The one interface every backbone offers, pretrained or built from scratch.

A backbone maps a batch of preprocessed images to a feature vector per image:
``forward(x: (B, C, H, W)) -> (B, feature_dim)``. A head (see ``heads.py``) sits on top.
Preprocessing belongs to the backbone (``preprocess``), never to a per-command flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..data.transforms import Preprocess


class Backbone(nn.Module):
    """Base class: subclasses set the attributes below and implement ``forward``.

    Attributes:
        name: registry name, e.g. ``"efficientnet_lite0"``.
        preprocess: how pixels become this backbone's input.
        feature_dim: length of the feature vector ``forward`` returns.
        pretrained: True when the weights come from elsewhere (features can be cached while
            the backbone is frozen); False for a CNN built from scratch (trained end to end).
        weights_id: identifies the weights (a file digest or the package release); part of
            the feature-cache key so different weights never share features.
    """

    name: str
    preprocess: Preprocess
    feature_dim: int
    pretrained: bool = True
    weights_id: str = ""

    def stages(self) -> list[nn.Module]:
        """The body's stages from input to output (fine-tuning and feature maps use them)."""
        raise NotImplementedError

    def cam_layers(self) -> list[nn.Module] | None:
        """The modules whose feature maps heat maps (Grad-CAM) weigh; None: the last one the
        forward pass makes (``lab.gradcam.cam_layers`` finds it)."""
        return None

    def spec(self) -> dict:
        """JSON-able description from which ``create_backbone`` rebuilds this backbone."""
        return {"name": self.name}

    @property
    def trained_from_scratch(self) -> bool:
        """Built from a spec and trained end to end: nothing frozen, no features to cache."""
        return not self.pretrained

    @property
    def weights_in_folder(self) -> bool:
        """Whether a model folder must hold these weights (they are not in an installed package)."""
        return True

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one preprocessed image."""
        p = self.preprocess
        return (p.channels, p.input_size, p.input_size)

    def engine(self, prefer: str = "auto", threads: int | None = None, spin: bool = True,
               arena: bool | str = True):
        """This backbone for inference: ``engine(x (B, C, H, W)) -> (B, feature_dim)`` with ONNX
        Runtime (exported once, cached by ``cache_key``) or PyTorch; see ``engines.make_engine``."""
        from .engines import make_engine

        return make_engine(self, self.cache_key, self.input_shape, prefer=prefer, threads=threads, spin=spin,
                           arena=arena)

    @property
    def cache_key(self) -> str:
        """Changes whenever the features for the same image could change."""
        return f"{self.name}|{self.weights_id}|{self.preprocess.key()}"


@dataclass(frozen=True)
class BackboneInfo:
    """One line of ``headstart backbones``."""

    name: str
    description: str
    available: bool
    why_not: str = ""  # when unavailable: what is missing and how to get it
    input_size: int | None = None
