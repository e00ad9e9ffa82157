"""Heads: what sits on top of a backbone's features and makes the task's output.

Every head standardises its input with statistics learned from the training features, so a
saved head is self-contained. ``mlp`` (the default) is more accurate than a single softmax layer
at the same cost (docs/benchmarks.md); ``linear`` is the retrain.py-style last layer.
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("mlp", "linear")


class BankDropout(nn.Module):
    """Dropout with masks drawn from a bank of 8,192 pre-drawn random masks.

    Same expectation and per-unit keep rate as ``nn.Dropout``; each sample gets a random mask
    row: drawing fresh Bernoulli noise every step was a large share of the head's training time
    on a CPU, picking bank rows is cheap. The bank is drawn from torch's global generator, so
    seeded runs stay reproducible, and kept in the input's dtype (in bfloat16, 1 / (1 - p) is
    rounded by at most 0.4 %).
    """

    BANK = 8192

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self._bank: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, D) -> (B, D)
        if not self.training or self.p == 0:
            return x
        if self._bank is None or self._bank.shape[1] != x.shape[1]:  # kept units, pre-scaled by 1 / (1 - p)
            self._bank = (torch.rand(self.BANK, x.shape[1]) >= self.p).to(x.dtype) * (1.0 / (1.0 - self.p))
        if self._bank.dtype != x.dtype:
            self._bank = self._bank.to(x.dtype)
        rows = torch.randint(0, self.BANK, (x.shape[0],))
        return x * self._bank.index_select(0, rows)  # index_select: several times faster than bank[rows] here


def release_dropout_banks(model: nn.Module) -> None:
    """A trained model only predicts: its dropout banks go (8,192 masks, ~60 MB for 1,904 features;
    a further training step draws a new one)."""
    for m in model.modules():
        if isinstance(m, BankDropout):
            m._bank = None


class Head(nn.Module):
    def __init__(self, in_dim: int, out_dim: int, kind: str = "mlp", hidden: int = 512,
                 input_dropout: float = 0.2, dropout: float = 0.25):
        super().__init__()
        if kind not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {kind!r}")
        self.kind, self.in_dim, self.out_dim, self.hidden = kind, in_dim, out_dim, hidden
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))
        if kind == "mlp":
            self.net = nn.Sequential(BankDropout(input_dropout), nn.Linear(in_dim, hidden), nn.GELU(),
                                     BankDropout(dropout), nn.Linear(hidden, out_dim))
        else:
            self.net = nn.Sequential(BankDropout(input_dropout), nn.Linear(in_dim, out_dim))

    def set_input_stats(self, features: torch.Tensor) -> None:
        """Standardise with the training features' mean and std (per dimension)."""
        self.mean.copy_(features.mean(0))
        std = ((features - self.mean).square_().sum(0) / max(len(features) - 1, 1)).sqrt_()  # 2x faster than std(0)
        # Floor: a feature (nearly) constant in training must not turn a small change at test
        # time into a huge input (plain synthetic images leave many features dead; counts and
        # numbers, unlike softmax, do not saturate).
        alive = std[std > 1e-6]
        floor = 0.01 * float(alive.median()) if len(alive) else 1e-6
        self.std.copy_(std.clamp_min(max(floor, 1e-6)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.net((x - self.mean) / self.std)

    def config(self) -> dict:
        return {"kind": self.kind, "in_dim": self.in_dim, "out_dim": self.out_dim, "hidden": self.hidden}


class Predictor(nn.Module):
    """Backbone and head as one module: images in, raw task outputs (logits) out."""

    def __init__(self, backbone: nn.Module, head: Head):
        super().__init__()
        self.backbone, self.head = backbone, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, out_dim)
        return self.head(self.backbone(x))
