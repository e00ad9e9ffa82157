"""The demo behind `make demo`: real photos, offline, end to end.

scikit-image ships three real texture photos (brick, grass, gravel). We cut patches from
each, from three side-by-side bands of the photo (60 % train, 20 % validation, 20 % test),
so no validation or test patch overlaps a training one; train a head on the embedded
EfficientNet-Lite0, print the report, and predict a few held-out patches through the same
model folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out")
PATCH = 96


def make_dataset(root: Path, per_class: int = 60) -> None:
    rng = np.random.default_rng(0)
    for name in ("brick", "grass", "gravel"):
        photo = getattr(data, name)()  # (512, 512) greyscale uint8
        h, w = photo.shape[:2]
        a, b = int(w * 0.6), int(w * 0.8)
        bands = (("train", (0, a), per_class), ("val", (a, b), per_class // 4), ("test", (b, w), per_class // 3))
        for split, (x0, x1), n in bands:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                y = rng.integers(0, h - PATCH)
                x = rng.integers(x0, x1 - PATCH + 1)
                Image.fromarray(photo[y:y + PATCH, x:x + PATCH]).save(folder / f"{name}-{i:03d}.png")


def main() -> int:
    data_dir = OUT / "textures"
    if data_dir.exists():
        shutil.rmtree(data_dir)
    make_dataset(data_dir)
    print(f"demo data: {data_dir} (patches of scikit-image's brick, grass and gravel photos)\n", flush=True)
    exe = [sys.executable, "-m", "headstart.cli"]
    subprocess.run([*exe, "train", str(data_dir), "--out", str(OUT / "model"), "--overwrite"], check=True)  # a rerun redoes it
    print("\n$ headstart predict on three held-out patches", flush=True)
    samples = [data_dir / "test" / c / f"{c}-000.png" for c in ("brick", "grass", "gravel")]
    subprocess.run([*exe, "predict", str(OUT / "model"), *map(str, samples), "--quiet"], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
