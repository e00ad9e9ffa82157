"""Where a prediction's CPU time goes, per image, on one thread: decode, resample, normalise, backbone.

    .venv/bin/python benchmarks/preprocess_cost.py [--data DIR] [--n 128] [--rounds 9]

Each step runs over the same JPEGs on one thread (CPU time per image), so the figures add up
to what one lane spends per image. The steps take turns, a pass each per round, in a rotating
order, and the median of the rounds is printed: on a shared machine whose speed drifts by
+-30 % from minute to minute, that compares the steps at the same moments. Timed two ways in
the same run: the crop-resize (PIL's bicubic filter, the textbook ``resize(box=...)``, vs what
headstart uses, PyTorch's antialiased bicubic on uint8 pixels, normalised on the way:
``preprocess``), and the whole file -> input step (Pillow's decoder, ``open_image``, vs
``load_input``, which decodes JPEGs with torchvision's libjpeg-turbo binding).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "datasets" / "clothing-small" / "test"


def median_cpu_ms(steps: list, n: int, rounds: int) -> list[float]:
    """Median CPU ms per image of each ``step()`` over ``rounds`` rounds of one pass each,
    the order rotating from round to round."""
    times = [[] for _ in steps]
    for r in range(rounds):
        for k in range(len(steps)):
            i = (k + r) % len(steps)
            t = time.process_time()
            steps[i]()
            times[i].append((time.process_time() - t) / n * 1000)
    return [float(np.median(t)) for t in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"JPEG folder (default {DEFAULT_DATA})")
    ap.add_argument("--n", type=int, default=128, help="images (default 128)")
    ap.add_argument("--rounds", type=int, default=9, help="passes of each step (default 9)")
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        print(f"data folder {args.data} not found: pass --data DIR of JPEG images", file=sys.stderr)
        return 2

    import torch
    from PIL import Image

    from headstart.backbones import create_backbone
    from headstart.data.images import open_image
    from headstart.data.inputs import jpeg_pixels, load_input
    from headstart.data.scan import find_images
    from headstart.data.transforms import crop_box, preprocess, to_array
    from headstart.backbones.engines import make_engine

    torch.set_num_threads(1)
    files = find_images([args.data])
    files = files[:: max(1, len(files) // args.n)][: args.n]
    n = len(files)
    bb = create_backbone()
    p = bb.preprocess
    run = make_engine(bb, bb.cache_key, (p.channels, p.input_size, p.input_size), prefer="onnxruntime",
                      threads=1, spin=False)

    def decode_only():
        for f in files:
            with Image.open(f) as im:
                im.draft("RGB", (p.draft_size, p.draft_size))
                im.load()

    images = [open_image(f, draft_size=p.draft_size) for f in files]
    x = np.stack([preprocess(im, p) for im in images])
    run(x[:4])
    s = p.input_size
    steps = [
        ("decode (Pillow, draft mode)", decode_only),
        ("decode (torchvision, as load_input does)", lambda: [jpeg_pixels(f, "RGB", p.draft_size) for f in files]),
        ("open_image (decode + EXIF turn + mode)", lambda: [open_image(f, draft_size=p.draft_size) for f in files]),
        ("crop-resize, PIL bicubic", lambda: [im.resize((s, s), Image.Resampling.BICUBIC,
                                                                box=crop_box(*im.size, p)) for im in images]),
        ("crop-resize + normalise, PIL + numpy", lambda: [to_array(im.resize(
            (s, s), Image.Resampling.BICUBIC, box=crop_box(*im.size, p)), p) for im in images]),
        ("crop-resize + normalise, headstart (PyTorch uint8)", lambda: [preprocess(im, p) for im in images]),
        ("file -> input: open_image + preprocess (Pillow decode)",
         lambda: [preprocess(open_image(f, draft_size=p.draft_size), p) for f in files]),
        ("file -> input: headstart (load_input)", lambda: [load_input(f, p) for f in files]),
        ("backbone, one thread, 4 images per call", lambda: [run(x[i:i + 4]) for i in range(0, n, 4)]),
        ("backbone, one thread, 1 image per call", lambda: [run(x[i:i + 1]) for i in range(n)]),
    ]
    rows = list(zip([name for name, _ in steps], median_cpu_ms([step for _, step in steps], n, args.rounds)))
    sizes = sorted({im.size for im in images}, key=lambda wh: wh[0] * wh[1])
    print(f"{n} JPEGs from {args.data} (decoded sizes {sizes[0]} .. {sizes[-1]}); one thread; median of "
          f"{args.rounds} rounds; load average {os.getloadavg()[0]:.1f}")
    for name, ms in rows:
        print(f"  {name:<56} {ms:6.2f} CPU ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
