"""The lecture's lab commands, ready for ``cli.py`` to wire in.

``headstart summary SPEC [--input HxWxC]``: each layer of a CNN built from a spec with its
output shape and parameters, the total, and what a fully connected layer would cost instead.
``headstart summary MODEL_DIR``: the same table for a saved model's backbone, then its head.

``headstart featuremaps MODEL_DIR IMAGE --out maps.png``: see ``lab/featuremaps.py``.

``headstart filter IMAGE --kernel laplacian --out edges.png``: convolve an image with a
kernel (the lecture's Laplacian example) and write the response as a PNG.

Heavy imports (NumPy, PIL, torch) happen inside the commands so ``--help`` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import HeadstartError

DEFAULT_SUMMARY_INPUT = "64x64x3"


def add_arguments_summary(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", metavar="SPEC",
                   help='a CNN spec, e.g. "conv32-bn-relu-maxpool,conv64-bn-relu-gap", '
                        "or a model folder (its backbone's layers)")
    p.add_argument("--input", default=DEFAULT_SUMMARY_INPUT, metavar="HxWxC",
                   help=f"input shape: height x width x channels (default {DEFAULT_SUMMARY_INPUT};"
                        " 400x400x3 reproduces the lecture's 230-billion example)")


def run_summary(args: argparse.Namespace) -> int:
    """Print the layer table of ``args.spec`` on an ``args.input`` image; returns 0."""
    from ..backbones.scratch import ScratchBackbone
    from ..lab.summary import format_summary, parse_input_shape, summarize_module

    if Path(args.spec).is_dir():  # a model folder: its backbone's layers
        return run_summary_model(args)
    shape = parse_input_shape(args.input or DEFAULT_SUMMARY_INPUT)
    h, w, c = shape
    if h != w:
        raise HeadstartError(
            f"CNNs built from a spec take square images, got --input {args.input}; "
            f"use e.g. {max(h, w)}x{max(h, w)}x{c}")
    backbone = ScratchBackbone(args.spec, input_size=h, channels=c)
    print(f"{backbone.name}: a feature vector of {backbone.feature_dim} per image")
    print(format_summary(summarize_module(backbone, shape), shape))
    return 0


def run_summary_model(args: argparse.Namespace) -> int:
    """The layers of a saved model's backbone (at its own input size), then its head."""
    from ..estimator.classifier import load
    from ..lab.summary import format_summary, summarize_module

    clf = load(args.spec)
    bb, p = clf.backbone_, clf.backbone_.preprocess
    shape = (p.input_size, p.input_size, p.channels)
    if args.input not in (None, DEFAULT_SUMMARY_INPUT) and args.input != "x".join(map(str, shape)):
        raise HeadstartError(f"{args.spec!r} is a model folder; its backbone takes "
                             f"{'x'.join(map(str, shape))} images, so --input {args.input} does not "
                             "apply. Drop --input")
    module = getattr(bb, "model", bb)  # the timm model inside a pretrained backbone
    print(f"{args.spec}: backbone {bb.name}, {p.resize} to {p.input_size}x{p.input_size}, "
          f"{p.channels} channel{'s' if p.channels > 1 else ''}; features: {bb.feature_dim} per image")
    print(format_summary(summarize_module(module, shape), shape))
    h = clf.head_
    n_head = sum(t.numel() for t in h.parameters())
    print(f"\nhead ({h.kind}): {h.in_dim} features -> {h.out_dim} outputs, {n_head:,} parameters; "
          f"task {clf.task_.name}")
    return 0


def add_arguments_filter(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", metavar="IMAGE", help="an image file (JPEG, PNG, ...)")
    p.add_argument("--kernel", default="laplacian", metavar="KERNEL",
                   help="laplacian, sobel-x, sobel-y, sharpen, box, identity, or a square "
                        'matrix such as "0,1,0;1,-4,1;0,1,0" (default laplacian)')
    p.add_argument("--out", required=True, metavar="OUT.png", help="the PNG to write")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--grey", "--gray", dest="grey", action="store_true", default=True,
                      help="convolve the grey image, as on the lecture's slide (default)")
    mode.add_argument("--colour", "--color", dest="grey", action="store_false",
                      help="convolve each colour channel on its own")


def run_filter(args: argparse.Namespace) -> int:
    """Convolve ``args.image`` with ``args.kernel`` and write ``args.out``, the same size.

    The PNG shows the absolute response, scaled so the strongest response is 255.
    """
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    from ..lab.ops import conv2d, parse_kernel

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise HeadstartError(f"--out must name a .png file, got {args.out!r}; e.g. --out edges.png")
    kernel = parse_kernel(args.kernel).astype(np.float32)
    try:
        with Image.open(args.image) as img:
            img = ImageOps.exif_transpose(img)
            img = img.convert("L" if args.grey else "RGB")
    except FileNotFoundError:
        raise HeadstartError(f"image not found: {args.image!r}; check the path") from None
    except (UnidentifiedImageError, OSError) as e:
        raise HeadstartError(
            f"cannot read {args.image!r} as an image ({e}); give a JPEG, PNG, BMP, ...") from None
    a = np.asarray(img, dtype=np.float32)  # (H, W) or (H, W, 3), 0-255
    # Output as large as the input ('same'), but padded by repeating the border pixels rather
    # than with zeros, so the picture's frame does not light up as a false edge.
    before = (kernel.shape[0] - 1) // 2
    after = kernel.shape[0] - 1 - before
    padded = np.pad(a, [(before, after)] * 2 + [(0, 0)] * (a.ndim - 2), mode="edge")
    if a.ndim == 2:
        response = conv2d(padded, kernel)  # (H, W)
    else:  # each channel on its own: a loop over 3 channels, not over pixels
        response = np.stack([conv2d(padded[:, :, ch], kernel) for ch in range(3)], -1)
    magnitude = np.abs(response)
    peak = float(magnitude.max())
    scaled = magnitude * (255.0 / peak) if peak > 0 else magnitude
    pixels = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    _write_png(Image.fromarray(pixels), out)
    print(f"wrote {out} ({a.shape[1]}x{a.shape[0]}, {'grey' if a.ndim == 2 else 'colour'}, "
          f"kernel {args.kernel}; |response| scaled so that 255 = {peak:.4g})")
    return 0


def _write_png(img, out: Path) -> None:
    """Atomically: no half-written PNG is ever left under ``out``."""
    from ..paths import atomic_path

    try:
        with atomic_path(out) as tmp:
            img.save(tmp, format="PNG")
    except OSError as e:
        raise HeadstartError(f"cannot write {str(out)!r}: {e}; choose another --out") from None


def run_featuremaps(args) -> int:
    """``headstart featuremaps MODEL_DIR IMAGE --out maps.png``."""
    from pathlib import Path

    from ..data.images import ImageDecodeError, open_image
    from ..estimator import load
    from ..lab.featuremaps import compute_feature_maps, render

    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise HeadstartError(f"--out must name a .png file, got {args.out!r}; e.g. --out maps.png")
    if not Path(args.image).is_file():
        raise HeadstartError(f"image not found: {args.image!r}; give a JPEG, PNG, ... file")
    clf = load(args.model)
    bb = clf.backbone_
    try:
        img = open_image(args.image, mode="RGB" if bb.preprocess.channels == 3 else "L")
    except ImageDecodeError as e:
        raise HeadstartError(f"cannot use {args.image!r}: {e.detail}; give a JPEG, PNG, ... file") from None
    fm = compute_feature_maps(bb, img)
    _write_png(render(fm, f"{bb.name}  -  {Path(args.image).name}"), out)
    print(f"wrote {out}: the input, {len(fm.filters)} first-layer filters and the maps of "
          f"{len(fm.stages)} stages ({', '.join(t.split(':')[0] for t, _ in fm.stages)})")
    return 0


def add_arguments_featuremaps(p) -> None:
    p.add_argument("model", metavar="MODEL_DIR", help="a model folder (headstart train ... --out MODEL_DIR)")
    p.add_argument("image", metavar="IMAGE", help="an image file")
    p.add_argument("--out", required=True, metavar="OUT.png", help="the PNG to write")


def register(sub) -> None:
    """Add ``summary`` and ``filter`` to the ``headstart`` command."""
    p = sub.add_parser("summary", help="layers, output shapes and parameter counts of a CNN spec")
    add_arguments_summary(p)
    p.set_defaults(run=run_summary)
    p = sub.add_parser("filter", help="convolve an image with a kernel (e.g. the lecture's Laplacian)")
    add_arguments_filter(p)
    p.set_defaults(run=run_filter)
    p = sub.add_parser("featuremaps", help="feature maps of an early, middle and late stage, and "
                       "the first layer's filters, as a PNG")
    add_arguments_featuremaps(p)
    p.set_defaults(run=run_featuremaps)
