"""CNNs built from scratch, from a short spec string.

Example: ``conv32-bn-relu-maxpool,conv64-bn-relu-maxpool,conv128-bn-relu-avgpool,fc``.

Grammar: blocks are separated by commas and become the stages of the network; the tokens
of a block are separated by dashes and applied in order. Tokens (case-insensitive):

- ``conv<F>[k<K>][s<S>][p<P>]``: convolution with F filters, a K x K kernel (default 3),
  stride S (default 1) and zero padding P (default K // 2, which keeps the size);
- ``bn``: batch normalization (BatchNorm2d on maps, BatchNorm1d after ``gap`` / ``fc``);
- ``relu``, ``gelu``: activations;
- ``maxpool[<K>][s<S>]``, ``avgpool[<K>][s<S>]``: pooling over K x K windows (default 2)
  with stride S (default K), e.g. ``maxpool3s1``;
- ``gap``: global average pooling, one value per channel, flattened;
- ``dropout[<P>]``: dropout with probability P (default 0.5), e.g. ``dropout0.25``;
- ``fc``: flatten the maps into the feature vector (the head on top is then the fully
  connected layer); ``fc<N>``: flatten if not yet, then a fully connected layer of N units.

After ``gap`` or ``fc`` only ``fc<N>``, ``bn``, ``relu``, ``gelu`` and ``dropout`` may follow.
The feature vector is the last output, flattened if it is still a feature map. A convolution
followed by ``bn`` has no bias (the batch norm's shift replaces it).

>>> ScratchBackbone("conv8-bn-relu-maxpool,conv16-relu-gap", input_size=32).feature_dim
16
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import torch
from torch import nn

from ..data.transforms import RESIZE_MODES, Preprocess
from ..errors import HeadstartError
from .base import Backbone

__all__ = ["ScratchBackbone", "Token", "parse_spec", "VALID_TOKENS"]

VALID_TOKENS = ("conv<F>[k<K>][s<S>][p<P>] (e.g. conv32, conv64k5s2), bn, relu, gelu, "
                "maxpool[<K>][s<S>], avgpool[<K>][s<S>], gap, dropout[<P>] (e.g. dropout0.25), "
                "fc, fc<N> (e.g. fc128)")
_PATTERNS = {
    "conv": re.compile(r"conv(?P<value>\d+)(?:k(?P<kernel>\d+))?(?:s(?P<stride>\d+))?"
                       r"(?:p(?P<padding>\d+))?"),
    "maxpool": re.compile(r"maxpool(?P<kernel>\d+)?(?:s(?P<stride>\d+))?"),
    "avgpool": re.compile(r"avgpool(?P<kernel>\d+)?(?:s(?P<stride>\d+))?"),
    "dropout": re.compile(r"dropout(?P<value>\d*\.?\d+)?"),
    "fc": re.compile(r"fc(?P<value>\d+)?"),
    "bn": re.compile(r"bn"), "relu": re.compile(r"relu"), "gelu": re.compile(r"gelu"),
    "gap": re.compile(r"gap"),
}
_SPATIAL = {"conv", "maxpool", "avgpool"}  # need a (B, C, H, W) feature map


@dataclass(frozen=True)
class Token:
    """One layer of a spec, as written (``text``, at offset ``pos`` of the spec string).

    ``value`` is the filters of ``conv``, the units of ``fc<N>`` (None for a bare ``fc``) or
    the probability of ``dropout``; ``kernel``/``stride``/``padding`` apply to conv and pools.
    """

    kind: str
    text: str
    pos: int
    value: float | None = None
    kernel: int | None = None
    stride: int | None = None
    padding: int | None = None


def _point(spec: str, pos: int, length: int, problem: str, fix: str) -> HeadstartError:
    """An error showing the spec with carets under the offending token."""
    return HeadstartError(f"CNN spec: {problem}:\n  {spec}\n  {' ' * pos}{'^' * max(1, length)}"
                          f"\n{fix}")


def _parse_token(spec: str, text: str, pos: int) -> Token:
    low = text.lower()
    for kind, pattern in _PATTERNS.items():
        m = pattern.fullmatch(low)
        if m:
            break
    else:
        word = re.match(r"[a-z]*", low).group()
        close = difflib.get_close_matches(word, _PATTERNS, n=1) if word else []
        hint = f"did you mean {close[0]!r}? " if close else ""
        what = "an empty layer" if not text else f"unknown layer {text!r}"
        raise _point(spec, pos, len(text), what, f"{hint}valid tokens: {VALID_TOKENS}")
    g = {k: v for k, v in m.groupdict().items() if v is not None}
    tok = Token(kind, text, pos, value=float(g["value"]) if "value" in g else None,
                kernel=int(g["kernel"]) if "kernel" in g else None,
                stride=int(g["stride"]) if "stride" in g else None,
                padding=int(g["padding"]) if "padding" in g else None)
    if kind == "dropout" and not 0 <= (tok.value if tok.value is not None else 0.5) < 1:
        raise _point(spec, pos, len(text), f"dropout probability {tok.value:g} is not in [0, 1)",
                     "write it as a fraction, e.g. dropout0.25")
    if (kind in ("conv", "fc") and tok.value == 0) or tok.kernel == 0 or tok.stride == 0:
        raise _point(spec, pos, len(text), f"layer {text!r} has a size of zero",
                     "filters, units, kernel and stride must be at least 1, e.g. conv32k3s1")
    return tok


def parse_spec(spec: str) -> list[list[Token]]:
    """Blocks of tokens from a spec (a leading ``scratch:`` is allowed); see the module doc.

    >>> [[t.text for t in block] for block in parse_spec("conv32-relu,fc")]
    [['conv32', 'relu'], ['fc']]
    """
    prefix = re.match(r"\s*scratch:", spec, re.IGNORECASE)
    offset = prefix.end() if prefix else 0  # token positions index the spec as written
    blocks: list[list[Token]] = []
    for part in spec[offset:].split(","):
        block, start = [], offset
        for piece in part.split("-"):
            text = piece.strip()
            block.append(_parse_token(spec, text, start + len(piece) - len(piece.lstrip())))
            start += len(piece) + 1
        blocks.append(block)
        offset += len(part) + 1
    return blocks


def _add(seq: nn.Sequential, token: Token, layer: nn.Module, name: str = "") -> None:
    name = name or token.text.lower().replace(".", "_")  # module names cannot hold dots
    base, n = name, 2
    while name in seq._modules:
        name, n = f"{base}_{n}", n + 1
    seq.add_module(name, layer)


def _build(spec: str, blocks: list[list[Token]], channels: int, size: int):
    """-> (body stages, neck, feature_dim, flattens_map); checks every shape on the way."""
    shape: tuple[int, ...] = (channels, size, size)  # per image: (C, H, W), then (N,)
    stages, neck = [], nn.Sequential()
    flattened_map = False  # the feature vector depends on the input size
    for b, block in enumerate(blocks, 1):
        stage = nn.Sequential()
        for i, t in enumerate(block):
            target = stage if len(shape) == 3 else neck
            if len(shape) == 1 and t.kind in _SPATIAL | {"gap"}:
                raise _point(spec, t.pos, len(t.text), f"{t.text!r} needs a feature map, but "
                             f"the features are already flattened to {shape[0]}",
                             "move it before 'gap' / 'fc', or remove it")
            if t.kind in _SPATIAL:
                k = t.kernel or (3 if t.kind == "conv" else 2)
                s = t.stride or (1 if t.kind == "conv" else k)
                p = (k // 2 if t.padding is None else t.padding) if t.kind == "conv" else 0
                c, h, w = shape
                oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
                if oh < 1 or ow < 1:
                    raise _point(spec, t.pos, len(t.text),
                                 f"layer {t.text!r} (block {b}) gets a {h}x{w}x{c} feature map "
                                 f"and would shrink it to nothing ({k}x{k} window, stride {s})",
                                 "remove a pooling or strided layer, or use a larger input "
                                 f"size than {size}")
                if t.kind == "conv":
                    f = int(t.value)
                    nxt = block[i + 1].kind if i + 1 < len(block) else ""
                    layer = nn.Conv2d(c, f, k, s, p, bias=nxt != "bn")  # bn brings its own shift
                    shape = (f, oh, ow)
                else:
                    layer = (nn.MaxPool2d if t.kind == "maxpool" else nn.AvgPool2d)(k, s)
                    shape = (c, oh, ow)
                _add(target, t, layer)
            elif t.kind in ("gap", "fc"):
                if len(shape) == 3:
                    if t.kind == "gap":
                        _add(neck, t, nn.AdaptiveAvgPool2d(1))
                        shape = (shape[0], 1, 1)
                    else:
                        flattened_map = True
                    _add(neck, t, nn.Flatten(), "flatten")
                    shape = (shape[0] * shape[1] * shape[2],)
                if t.value is not None:
                    _add(neck, t, nn.Linear(shape[0], int(t.value)))
                    shape = (int(t.value),)
            elif t.kind == "bn":
                bn = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
                _add(target, t, bn(shape[0]))
            elif t.kind in ("relu", "gelu"):
                _add(target, t, nn.ReLU() if t.kind == "relu" else nn.GELU())
            else:  # dropout
                _add(target, t, nn.Dropout(0.5 if t.value is None else t.value))
        if len(stage):
            stages.append(stage)
    if len(shape) == 3:  # still a feature map: flatten it into the feature vector
        neck.add_module("flatten", nn.Flatten())
        flattened_map, shape = True, (shape[0] * shape[1] * shape[2],)
    if not stages:
        raise HeadstartError(f"the CNN spec {spec!r} has no conv or pooling layer before "
                             "'gap' / 'fc'; start with e.g. conv32-bn-relu-maxpool")
    return stages, neck, shape[0], flattened_map


class ScratchBackbone(Backbone):
    """A CNN built from a spec and trained end to end (nothing pretrained, nothing cached).

    ``input_size`` is the square side every image is resized to (``resize``: crop, pad or
    stretch); ``channels`` is 1 for grey images or 3 for colour. Weights start from Kaiming
    initialisation.
    """

    pretrained = False

    def __init__(self, spec: str, input_size: int = 64, channels: int = 3, resize: str = "pad"):
        super().__init__()
        spec = spec.strip()
        if spec.lower().startswith("scratch:"):
            spec = spec[8:].strip()
        if channels not in (1, 3):
            raise HeadstartError(f"channels must be 1 (grey) or 3 (colour), got {channels!r}")
        if resize not in RESIZE_MODES:
            raise HeadstartError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {resize!r}")
        if not isinstance(input_size, int) or input_size < 1:
            raise HeadstartError(f"input_size must be a positive integer, got {input_size!r}")
        body, neck, self.feature_dim, self._fixed_size = _build(
            spec, parse_spec(spec), channels, input_size)
        self.body = nn.ModuleList(body)
        self.neck = neck
        self.name = f"scratch:{spec}"
        self.input_size, self.channels, self.resize = input_size, channels, resize
        self.preprocess = Preprocess(
            input_size=input_size, resize_size=input_size, mean=(0.5,) * channels,
            std=(0.5,) * channels, interpolation="bilinear", resize=resize, channels=channels)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def stages(self) -> list[nn.Module]:
        """One stage per spec block that works on feature maps (before 'gap' / 'fc')."""
        return list(self.body)

    def spec(self) -> dict:
        return {"name": self.name, "input_size": self.input_size, "channels": self.channels,
                "resize": self.resize}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.channels or (
                self._fixed_size and tuple(x.shape[2:]) != (self.input_size,) * 2):
            raise HeadstartError(
                f"{self.name} expects images of shape (B, {self.channels}, {self.input_size}, "
                f"{self.input_size}), got {tuple(x.shape)}; preprocess them with its "
                "`preprocess` settings")
        for stage in self.body:
            x = stage(x)  # (B, C, H, W)
        return self.neck(x)  # (B, feature_dim)
