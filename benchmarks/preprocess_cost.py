"""Where a prediction's CPU time goes, per image, on one thread: decode, resample, normalise, backbone.

    .venv/bin/python benchmarks/preprocess_cost.py [--data DIR] [--n 128]

Each step runs over the same JPEGs on one thread (best of 5 passes, CPU time per image), so the
figures add up to what one lane spends per image. The crop-resize is timed two ways in the
same run: PIL's bicubic filter (the textbook ``resize(box=...)``) and what headstart uses
(PyTorch's antialiased bicubic on uint8 pixels, normalised on the way: ``preprocess``).
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


def cpu_ms(step, n: int, passes: int = 5) -> float:
    """Least CPU time of ``passes`` runs of ``step()``, in ms per image."""
    best = float("inf")
    for _ in range(passes):
        t = time.process_time()
        step()
        best = min(best, time.process_time() - t)
    return best / n * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help=f"JPEG folder (default {DEFAULT_DATA})")
    ap.add_argument("--n", type=int, default=128, help="images (default 128)")
    args = ap.parse_args()
    if not Path(args.data).is_dir():
        print(f"data folder {args.data} not found: pass --data DIR of JPEG images", file=sys.stderr)
        return 2

    import torch
    from PIL import Image

    from headstart.backbones import create_backbone
    from headstart.data.images import open_image
    from headstart.data.scan import find_images
    from headstart.data.transforms import crop_box, preprocess, to_array
    from headstart.engines import make_engine

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
    rows = [
        ("decode (Pillow, draft mode)", cpu_ms(decode_only, n)),
        ("open_image (decode + EXIF turn + mode)", cpu_ms(lambda: [open_image(f, draft_size=p.draft_size) for f in files], n)),
        ("crop-resize, PIL bicubic", cpu_ms(lambda: [im.resize((s, s), Image.Resampling.BICUBIC,
                                                                box=crop_box(*im.size, p)) for im in images], n)),
        ("crop-resize + normalise, PIL + numpy", cpu_ms(lambda: [to_array(im.resize(
            (s, s), Image.Resampling.BICUBIC, box=crop_box(*im.size, p)), p) for im in images], n)),
        ("crop-resize + normalise, headstart (PyTorch uint8)", cpu_ms(lambda: [preprocess(im, p) for im in images], n)),
        ("backbone, one thread, 4 images per call", cpu_ms(lambda: [run(x[i:i + 4]) for i in range(0, n, 4)], n)),
        ("backbone, one thread, 1 image per call", cpu_ms(lambda: [run(x[i:i + 1]) for i in range(n)], n)),
    ]
    sizes = sorted({im.size for im in images})
    print(f"{n} JPEGs from {args.data} (decoded sizes {sizes[0]} .. {sizes[-1]}); one thread; load average "
          f"{os.getloadavg()[0]:.1f}")
    for name, ms in rows:
        print(f"  {name:<52} {ms:6.2f} CPU ms per image")
    return 0


if __name__ == "__main__":
    sys.exit(main())
