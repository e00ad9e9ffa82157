"""Pictures of what a CNN sees: feature maps from an early, a middle and a late stage, and the
first layer's filters (the lecture: pixel -> edge -> texture -> motif -> part -> object).

``render(compute_feature_maps(backbone, image))`` is one picture (``headstart featuremaps``):

- row 1: the image as the network gets it (resized, cropped or padded), and the first
  convolution's filters, each a small tile (colour when the filter sees RGB);
- one row per stage (early, middle, late): the most active maps of that stage for this image,
  each scaled to its own range (bright = strong response), enlarged with nearest-neighbour
  so each pixel of a late, coarse map stays visible.

Works for every backbone whose ``stages()`` are convolutional: the embedded EfficientNet-Lite
and CNNs built from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backbones import DEFAULT_BACKBONE
from ..errors import HeadstartError

TILE = 72           # px per map / filter tile
MAPS_PER_STAGE = 16
FILTERS = 32


@dataclass
class FeatureMaps:
    """What the picture shows, as arrays (also handy in a notebook)."""

    image: np.ndarray                 # (H, W, 3) uint8: the network's input, denormalised
    filters: np.ndarray               # (F, k, k, 3) float in 0..1: the first conv's filters
    stages: list[tuple[str, np.ndarray]]  # (title, maps (N, h, w) float in 0..1), early -> late


def compute_feature_maps(backbone, img, maps_per_stage: int = MAPS_PER_STAGE) -> FeatureMaps:
    """Run one PIL image through ``backbone`` and collect the maps of three of its stages."""
    import torch
    from torch import nn

    from ..data.transforms import preprocess

    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise HeadstartError(
            f"backbone {backbone.name!r} has no convolution layers, so it has no feature maps "
            "or filters to show. Use a model with conv layers, e.g. one trained with "
            f'--backbone "scratch:conv32-bn-relu-maxpool,conv64-bn-relu-gap" or the default {DEFAULT_BACKBONE}')
    stages = backbone.stages()
    picks = sorted({0, len(stages) // 2, len(stages) - 1})
    captured: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def hook(_module, _inputs, output) -> None:
            if isinstance(output, torch.Tensor) and output.ndim == 4:
                captured[i] = output.detach()
        return hook

    # A stage that is only a grouping (EfficientNet's stem) is never called itself: its last
    # layer is. The stage's own hook runs after its last child's, so it wins when it runs.
    handles = []
    for i in picks:
        handles.append(stages[i].register_forward_hook(keep(i)))
        children = list(stages[i].children())
        if children:
            handles.append(children[-1].register_forward_hook(keep(i)))
    p = backbone.preprocess
    x = torch.from_numpy(preprocess(img, p))[None]  # (1, C, H, W)
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(x.to(next(backbone.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        backbone.train(was_training)
    names = {picks[0]: "early", picks[-1]: "late"}
    if len(picks) == 3:
        names[picks[1]] = "middle"
    rows = []
    for i in picks:
        if i not in captured:
            continue
        fmap = captured[i][0].float().cpu().numpy()  # (C, h, w)
        order = np.argsort(-fmap.mean((1, 2)))[:maps_per_stage]  # the most active maps
        title = (f"{names[i]}: stage {i + 1} of {len(stages)}, {fmap.shape[0]} maps of "
                 f"{fmap.shape[1]}x{fmap.shape[2]} (the {len(order)} most active)")
        rows.append((title, np.stack([_unit(fmap[c]) for c in order])))
    shown, filters = _input_picture(x[0].numpy(), p), _first_filters(convs[0])
    return FeatureMaps(shown, filters, rows)


def _input_picture(x, p) -> np.ndarray:
    """The network's input (C, H, W), denormalised to an (H, W, 3) uint8 picture."""
    mean = np.asarray(p.mean, np.float32)[:, None, None]
    std = np.asarray(p.std, np.float32)[:, None, None]
    shown = np.clip((x * std + mean) * 255, 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return np.repeat(shown, 3, axis=2) if shown.shape[2] == 1 else shown


def _first_filters(conv) -> np.ndarray:
    """The first convolution's filters as (F, k, k, 3) tiles in 0..1 (grey ones repeated)."""
    w = conv.weight.detach().float().cpu().numpy()[:FILTERS]  # (F, C_in, k, k)
    w = w if w.shape[1] == 3 else np.repeat(w.mean(1, keepdims=True), 3, axis=1)
    return np.stack([_unit(f) for f in w]).transpose(0, 2, 3, 1)  # (F, k, k, 3)


def render(fm: FeatureMaps, title: str = "") -> "Image.Image":  # noqa: F821
    """The picture: input and filters on top, then one band of maps per stage."""
    from PIL import Image, ImageDraw

    per_row = 8
    pad, text_h = 6, 16
    width = pad + per_row * (TILE + pad)
    bands: list[tuple[str, list[np.ndarray]]] = []
    bands.append((f"input ({fm.image.shape[1]}x{fm.image.shape[0]}) and the first layer's "
                  f"{len(fm.filters)} filters ({fm.filters.shape[1]}x{fm.filters.shape[2]})",
                  [fm.image] + [np.uint8(f * 255) for f in fm.filters]))
    for name, maps in fm.stages:
        bands.append((name, [np.uint8(m * 255) for m in maps]))
    heights = [text_h + ((len(t) + per_row - 1) // per_row) * (TILE + pad) for _, t in bands]
    top = text_h + pad if title else 0
    canvas = Image.new("RGB", (width, top + sum(heights) + pad), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad // 2), title, fill="black")
    y = top
    for (name, tiles), h in zip(bands, heights):
        draw.text((pad, y + 2), name, fill="black")
        for k, tile in enumerate(tiles):
            im = Image.fromarray(tile).convert("RGB")
            im = im.resize(_fit(im.size), Image.Resampling.NEAREST)
            col, row = k % per_row, k // per_row
            canvas.paste(im, (pad + col * (TILE + pad), y + text_h + row * (TILE + pad)))
        y += h
    return canvas


def _unit(a: np.ndarray) -> np.ndarray:
    """Scale to 0..1 (a flat array becomes all zeros)."""
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _fit(size: tuple[int, int]) -> tuple[int, int]:
    w, h = size
    s = TILE / max(w, h)
    return max(1, round(w * s)), max(1, round(h * s))
