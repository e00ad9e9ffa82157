"""Parameter arithmetic: why convolution needs so few parameters (the lecture's slide).

A fully connected layer from a 400x400x3 image (480000 inputs) to as many units costs
``480000 x 480000 + 480000 + 1``, about 230 billion parameters; a 3x3 convolution with 32
filters on the same image costs ``(3 x 3 x 3 + 1) x 32 = 896``.

>>> dense_cost((400, 400, 3), 480000)
230400480001
>>> conv_cost(3, 3, 3, 32)
896
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import HeadstartError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "LayerRow", "conv_cost", "dense_cost", "format_summary", "parse_input_shape",
    "summarize_module",
]


@dataclass(frozen=True)
class LayerRow:
    """One line of a summary: a layer's name, its output shape per image and its parameters."""

    name: str
    output_shape: tuple
    params: int


def dense_cost(input_shape: tuple[int, int, int], outputs: int) -> int:
    """Parameters of a fully connected layer, as the lecture writes: ``n*outputs + outputs + 1``.

    ``n`` is the number of inputs (H*W*C): ``outputs`` weights per input, one bias per output,
    and the lecture's final ``+ 1``.
    """
    n = math.prod(input_shape)
    return n * outputs + outputs + 1


def conv_cost(kh: int, kw: int, c_in: int, filters: int) -> int:
    """Parameters of a convolution: one ``kh x kw x c_in`` kernel and a bias per filter."""
    return (kh * kw * c_in + 1) * filters


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"400x400x3"`` -> ``(400, 400, 3)`` (height, width, channels); ``"28x28"`` means 1 channel.

    >>> parse_input_shape("28x28")
    (28, 28, 1)
    """
    parts = re.split(r"\s*[x×X,]\s*", str(text).strip())
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise HeadstartError(
            f"input shape {text!r} is not HxWxC; write height x width x channels, "
            "e.g. 400x400x3 (colour) or 28x28x1 (grey)")
    shape = tuple(int(p) for p in parts) + ((1,) if len(parts) == 2 else ())
    if min(shape) < 1:
        raise HeadstartError(
            f"input shape {text!r} has a zero size; every dimension must be at least 1, "
            "e.g. 64x64x3")
    return shape  # type: ignore[return-value]


def _about(n: int) -> str:
    """230400480001 -> "230 billion"; three significant figures."""
    for scale, word in ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"),
                        (10**3, "thousand")):
        if n >= scale:
            v = n / scale
            return f"{v:.0f} {word}" if v >= 100 else f"{v:.3g} {word}"
    return str(n)


def _dense_line(input_shape: tuple[int, int, int], outputs: int) -> str:
    n = math.prod(input_shape)
    cost = dense_cost(input_shape, outputs)
    return (f"a fully connected layer from {'x'.join(map(str, input_shape))} = {n} inputs to "
            f"{outputs} units: {n} x {outputs} + {outputs} + 1 = {cost:,} parameters "
            f"(about {_about(cost)})")


def format_summary(layers: list[LayerRow], input_shape: tuple[int, int, int]) -> str:
    """A table of layers (output shape per image, parameters), the total, and what fully
    connected layers on the same input would cost instead (the lecture's two lines)."""
    header = ("layer", "output shape", "params")
    body = [(r.name, "x".join(map(str, r.output_shape)) or "-", f"{r.params:,}") for r in layers]
    total = sum(r.params for r in layers)
    foot = ("total", "", f"{total:,}")
    w = [max(len(row[i]) for row in [header, *body, foot]) for i in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return f"{row[0]:<{w[0]}}  {row[1]:<{w[1]}}  {row[2]:>{w[2]}}".rstrip()

    rule = "  ".join("-" * n for n in w)
    n = math.prod(input_shape)
    out = [f"input {'x'.join(map(str, input_shape))} (height x width x channels); "
           "output shapes per image are channels x height x width", "",
           line(header), rule, *map(line, body), rule, line(foot), "",
           "for comparison:", "  " + _dense_line(input_shape, n),
           "  " + _dense_line(input_shape, 1000)]
    return "\n".join(out)


def summarize_module(module: "nn.Module", input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Run one dummy image of ``input_shape`` (H, W, C) through ``module`` and list its leaf
    layers in call order, each with its output shape (without the batch) and parameters.

    Parameters not held by a leaf layer appear in one extra row, so the total is exact.
    """
    import torch

    h, w, c = input_shape
    rows: list[LayerRow] = []
    seen: set[int] = set()  # parameters already counted (a layer may run twice, or share)
    names = {id(m): name for name, m in module.named_modules()}

    def hook(m, _inputs, output) -> None:
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else ()
        fresh = [p for p in m.parameters(recurse=False) if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        params = sum(p.numel() for p in fresh)
        rows.append(LayerRow(f"{names[id(m)] or 'input'} ({type(m).__name__})", shape, params))

    leaves = [m for m in module.modules() if not any(True for _ in m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    try:
        module.eval()  # a batch of one: batch norm must use its running statistics
        with torch.no_grad():
            module(torch.zeros(1, c, h, w))  # (B, C, H, W)
    except RuntimeError as e:
        raise HeadstartError(
            f"the model cannot take an input of {h}x{w}x{c}: {e}; try the input size it was "
            "built for") from None
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    counted = sum(r.params for r in rows)
    total = sum(p.numel() for p in module.parameters())
    if total != counted:
        rows.append(LayerRow("(other parameters)", (), total - counted))
    return rows
