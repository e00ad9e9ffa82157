"""What an export is checked and calibrated on, and how an int8 export reports its cost.

Both int8 paths (ONNX Runtime static QDQ in ``export.py``, NNCF on the OpenVINO IR in
``export_openvino.py``) calibrate on the same training images and report the same fields:
bytes, images/s, top-1 agreement and largest probability change against fp32 on the check
images, and the test-split accuracy change where the data folder is still there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from .folder import SavedModel

N_CHECK_IMAGES = 16       # real images used for the parity check
N_CALIBRATION = 64        # training images used to calibrate static int8 quantization
MIN_CALIBRATION = 8       # fewer training images than this: weights-only int8 instead

Run = Callable[[np.ndarray], np.ndarray]   # (B, C, H, W) preprocessed images -> (B, n_outputs)


# ---- parity and calibration inputs -----------------------------------------------------------
def check_images(saved: SavedModel, n: int = N_CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``n`` real images from the model's recorded data folder, through its preprocessing;
    random pixels (also through the preprocessing) when that folder is gone."""
    from PIL import Image

    from ..data.transforms import preprocess

    p = saved.backbone.preprocess
    paths = _data_images(saved, ("test", "val", "train"))[:n]
    arrays = decode(paths, p)
    if len(arrays) >= 2:
        return np.stack(arrays), f"images from {data_dir(saved)}"
    rng = np.random.default_rng(0)
    mode = "RGB" if p.channels == 3 else "L"
    arrays = [preprocess(Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).convert(mode), p)
              for _ in range(4)]
    return np.stack(arrays), "random-pixel images (the training data folder is not available)"


def calibration_images(saved: SavedModel, log) -> tuple[np.ndarray | None, dict]:
    """Up to ``N_CALIBRATION`` training images spread over the sorted training split (so over
    the classes), preprocessed; ``None`` when fewer than ``MIN_CALIBRATION`` can be read."""
    train = [s.path for s in data_samples(saved, "train")]
    picked = spread(train, N_CALIBRATION)
    arrays = decode(picked, saved.backbone.preprocess)
    about = {"calibration_images": len(arrays), "calibration_source": str(data_dir(saved) or ""),
             "calibration_files": [str(p) for p in picked]}
    if len(arrays) < MIN_CALIBRATION:
        log(f"int8: {len(arrays)} training images found (config.json training.data: "
            f"{saved.config.get('training', {}).get('data')!r}); calibration needs {MIN_CALIBRATION}, "
            "so only the weights are quantized")
        return None, {**about, "calibration_images": 0, "calibration_files": []}
    log(f"int8: calibrating on {len(arrays)} of the {len(train)} training images in {data_dir(saved)}, "
        "evenly spaced in their sorted list (so every class has its share)")
    return np.stack(arrays), about


def data_dir(saved: SavedModel) -> Path | None:
    d = saved.config.get("training", {}).get("data")
    return Path(d) if d and Path(d).is_dir() else None


def data_samples(saved: SavedModel, split: str) -> list:
    from ..data.scan import scan

    root = data_dir(saved)
    if root is None:
        return []
    t = saved.config.get("training", {})
    try:  # a folder of class folders; a CSV-labelled folder gives no split here (falls back)
        result = scan(root, val_fraction=t.get("val_fraction", 0.1), test_fraction=t.get("test_fraction", 0.1))
    except HeadstartError:
        return []
    return result.subset(split)


def _data_images(saved, splits) -> list[Path]:
    for split in splits:
        samples = data_samples(saved, split)
        if samples:
            return [s.path for s in spread(samples, N_CHECK_IMAGES)]
    return []


def spread(items: list, n: int) -> list:
    """Every k-th item, at most ``n`` of them: a sorted list of files gives every class its share."""
    return items[::max(1, len(items) // n)][:n]


def decode(paths, p) -> list[np.ndarray]:
    from ..features import load_batches

    out = []
    for _, batch, _ in load_batches(list(paths), p, 32):
        out.extend(batch)
    return out


# ---- what int8 changes -----------------------------------------------------------------------
def int8_report(saved: SavedModel, mode: str, about: dict, fp32: Run, int8: Run, sizes: tuple[int, int],
                x: np.ndarray, reference: np.ndarray, log) -> dict:
    """Size, images/s, agreement with the fp32 reference on ``x``, and the test accuracy change;
    ``about`` says how it was made (calibration images, seconds)."""
    got = int8(x)
    info = {"mode": mode, **about, "max_abs_diff": float(np.abs(got - reference).max()),
            "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean()),
            "bytes_fp32": sizes[0], "bytes_int8": sizes[1],
            "images_per_s_fp32": images_per_s(fp32, x), "images_per_s_int8": images_per_s(int8, x)}
    log(f"int8 ({mode}, {about['calibration_seconds']:.1f} s): {info['bytes_fp32'] / 1e6:.1f} MB -> "
        f"{info['bytes_int8'] / 1e6:.1f} MB; {info['images_per_s_fp32']:.1f} -> {info['images_per_s_int8']:.1f} "
        f"images/s; top-1 agreement with fp32 {info['top1_agreement']:.3f} on the check images; "
        f"largest probability change {info['max_abs_diff']:.3f}")
    info.update(accuracy_change(saved, fp32, int8, log))
    return info


def images_per_s(run: Run, x: np.ndarray, repeats: int = 3) -> float:
    run(x[:8])  # warm-up
    t = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return repeats * len(x) / (time.perf_counter() - t)


def accuracy_change(saved: SavedModel, fp32: Run, int8: Run, log) -> dict:
    """Accuracy of the fp32 and the int8 file on the data's test split (same engine, same batches)."""
    samples = data_samples(saved, "test") if saved.task.has_classes else []
    if not samples:
        log("int8: accuracy change not measured (needs a classifier and its data folder, "
            "config.json training.data, with a test split).")
        return {}
    from ..features import load_batches

    y, p32, p8 = [], [], []
    for idx, batch, _ in load_batches([s.path for s in samples], saved.backbone.preprocess, 32):
        p32.append(fp32(batch))
        p8.append(int8(batch))
        y.extend(samples[i].label for i in idx)
    t = saved.task.index(y)
    a32 = float((saved.task.predicted_index(np.concatenate(p32)) == t).mean())
    a8 = float((saved.task.predicted_index(np.concatenate(p8)) == t).mean())
    log(f"int8: test accuracy {a32:.4f} (fp32) -> {a8:.4f} (int8), change {100 * (a8 - a32):+.2f} points "
        f"on {len(t)} test images")
    return {"test_accuracy_fp32": a32, "test_accuracy_int8": a8, "n_test_images": len(t)}
