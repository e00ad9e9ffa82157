"""Do heat maps mean something? How often the heat map's peak lands on the object, on the
synthetic object set, for each heat-map method.

    .venv/bin/python benchmarks/localisation.py [--n-test 100] [--embedded]

tests/objects.py draws a yellow cross or square (the class) at a random place on clutter. A
scratch CNN (the test's, trained on 80 images per class at 48 px) and, with --embedded, the
frozen embedded EfficientNet-Lite0 with a head (trained on 200 images per class at 128 px) are
fitted. Each method is measured on two fresh sets of ``--n-test`` images per class: the
validation set (seed 1), on which the default method is chosen, and the test set (seed 2),
which only reports. It prints the accuracy and how often the predicted class's heat-map peak
falls inside the object's box (and within 1/16 of the input of it).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from objects import hits, trained_model, write_set  # noqa: E402


def rate(clf, root: Path, n: int, size: int, name: str) -> None:
    from headstart import explain
    from headstart.lab.gradcam import METHODS

    p = clf.backbone_.preprocess  # square images: resized to resize_size, then the centre input_size kept
    scale, shift = (p.resize_size / size, (p.resize_size - p.input_size) / 2) if p.resize == "crop" else \
        (p.input_size / size, 0.0)
    for split, seed in (("validation", 1), ("test", 2)):
        boxes = write_set(root / f"{name[:7]}-{split}-{size}", n, size=size, seed=seed)
        for method in METHODS:
            t = time.perf_counter()
            rows = explain(clf, list(boxes), method=method)
            ms = 1000 * (time.perf_counter() - t) / len(rows)
            right = sum(r.maps[0].target == Path(r.file).parent.name for r in rows)
            on = hits(rows, boxes, 0, scale, shift)
            near = hits(rows, boxes, p.input_size // 16, scale, shift)
            print(f"{name}, {split}, {method}: accuracy {right}/{len(rows)}, peak on the object {on}/{len(rows)} "
                  f"({on / len(rows):.1%}), within {p.input_size // 16} input px {near}/{len(rows)}; "
                  f"explain {ms:.0f} ms/image", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-test", type=int, default=100, help="images per class in each of the two sets")
    ap.add_argument("--embedded", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp())
    rate(trained_model(root / "scratch"), root, args.n_test, 48, "scratch CNN (48 px)")
    if args.embedded:
        import headstart

        write_set(root / "emb" / "train", 200, size=128, seed=0)
        clf = headstart.ImageClassifier(engine="torch", use_cache=False).fit(root / "emb" / "train")
        rate(clf, root, args.n_test, 128, "efficientnet_lite0 frozen + head (128 px)")


if __name__ == "__main__":
    main()
