"""Any timm architecture with weights from a local file: never a silent download."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from ..data.transforms import Preprocess
from ..errors import HeadstartError
from .base import Backbone


def load_weights_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a PyTorch state dict read with ``weights_only=True`` (no pickle code)."""
    path = Path(path)
    if not path.is_file():
        raise HeadstartError(
            f"weights file {str(path)!r} does not exist.\n"
            "headstart never downloads weights. Get the file on a machine with internet access "
            "(for a timm model: timm.create_model(NAME, pretrained=True) then "
            "safetensors.torch.save_file(model.state_dict(), 'NAME.safetensors')), copy it here "
            "and pass --weights PATH.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a plain state dict"
        raise HeadstartError(
            f"could not read {str(path)!r} as a state dict with weights_only=True ({e}).\n"
            "Expected a .safetensors file or a torch.save(model.state_dict()) file.") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise HeadstartError(f"{str(path)!r} holds a {type(sd).__name__}, expected a state dict.")
    return sd


class TimmBackbone(Backbone):
    """A timm model with its classifier removed; features = its pooled output."""

    def __init__(self, arch: str, weights: str | Path | None = None,
                 state_dict: dict[str, torch.Tensor] | None = None):
        """Weights from ``weights`` (a file), or ``state_dict`` (from a saved model folder)."""
        super().__init__()
        import timm

        if arch not in timm.list_models():
            close = [n for n in timm.list_models() if arch.split("_")[0] in n][:8]
            raise HeadstartError(f"unknown backbone {arch!r}. Close timm names: {', '.join(close) or 'none'}. "
                                 "Run `headstart backbones` for the list.")
        if state_dict is not None:  # a saved model folder: classifier already removed
            model = timm.create_model(arch, pretrained=False, num_classes=0)
            model.load_state_dict({k.removeprefix("model."): v for k, v in state_dict.items()})
            self._setup(arch, model, "", "saved")
            return
        if weights is None:
            raise HeadstartError(
                f"backbone {arch!r} has no embedded weights; pass --weights FILE (safetensors or a state dict). "
                "headstart never downloads weights.")
        model = timm.create_model(arch, pretrained=False)
        sd = load_weights_file(weights)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        head = {n for n, _ in model.get_classifier().named_parameters(prefix=model.default_cfg.get("classifier", ""))}
        missing = [k for k in missing if k not in head]
        if missing or unexpected:
            raise HeadstartError(
                f"weights {str(weights)!r} do not fit {arch!r}: {len(missing)} missing keys "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
                "Check that the file was saved from the same architecture.")
        model.reset_classifier(0)
        with open(weights, "rb") as f:
            self._setup(arch, model, str(weights), hashlib.file_digest(f, "sha256").hexdigest()[:16])

    def _setup(self, arch: str, model: nn.Module, weights_path: str, weights_id: str) -> None:
        self.model = model.eval()
        self.name = arch
        self.weights_path = weights_path
        self.weights_id = weights_id
        cfg = model.pretrained_cfg
        size = cfg["input_size"][-1]
        self.preprocess = Preprocess(input_size=size, resize_size=int(round(size / cfg.get("crop_pct", 0.875))),
                                     mean=tuple(cfg["mean"]), std=tuple(cfg["std"]),
                                     interpolation=cfg.get("interpolation", "bicubic") if cfg.get("interpolation") in ("bicubic", "bilinear", "nearest") else "bicubic")
        self.feature_dim = model.num_features

    def stages(self) -> list[nn.Module]:
        return [m for m in self.model.children() if any(p.numel() for p in m.parameters())]

    def spec(self) -> dict:
        return {"name": self.name}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, feature_dim)
        return self.model(x)
