"""Export a model folder as one self-checking file: ONNX, TorchScript, or OpenVINO IR (an
``.xml`` graph beside its ``.bin`` weights).

The exported graph is the whole predictor: preprocessed images (B, C, H, W) in, the task's
probabilities (B, n_classes) out (backbone + head + softmax, or sigmoid for binary). Labels,
preprocessing constants and the task travel inside the file (ONNX ``metadata_props``,
TorchScript extra file ``headstart.json``), so the file alone is enough to predict.

Before the file takes its final name, the same real images (decoded with the model's own
preprocessing) go through PyTorch and through the export; the largest difference on
probabilities must be at most ``TOLERANCE`` or nothing is written (timm ``utils/onnx.py``
checks the same way).

>>> r = export_model("model/", "onnx")          # doctest: +SKIP
>>> r.path, r.max_abs_diff                      # doctest: +SKIP
(PosixPath('model/model.onnx'), 2.4e-07)
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import HeadstartError
from ..paths import atomic_path
from .folder import SavedModel, load_model

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}
TOLERANCE = 1e-4          # largest allowed |p_torch - p_export| on any probability
N_CHECK_IMAGES = 16       # real images used for the parity check
N_CALIBRATION = 64        # training images used to calibrate static int8 quantization


class ProbabilityModel(nn.Module):
    """Backbone + head + the task's activation (``Task.activate`` in torch ops): images in,
    the task's scores out (class probabilities; values in the target's units for regression)."""

    def __init__(self, backbone: nn.Module, head: nn.Module, task):
        super().__init__()
        self.backbone, self.head = backbone, head
        self.kind = task.name
        if self.kind not in ("multiclass", "binary", "multilabel", "continuous", "count"):
            raise HeadstartError(f"export does not know the output of task {self.kind!r} yet; "
                                 "expected multiclass, binary, multilabel, continuous or count.")
        # Affine constants of the regression tasks (continuous: z * std + mean; count: exp(z + log mean)).
        self.scale = float(getattr(task, "std", 1.0)) if self.kind == "continuous" else 1.0
        self.shift = float(getattr(task, "mean", 0.0)) if self.kind == "continuous" else \
            (math.log(max(float(getattr(task, "mean", 1.0)), 1e-3)) if self.kind == "count" else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, n_outputs)
        z = self.head(self.backbone(x))                   # (B, out_dim) raw outputs
        if self.kind == "multiclass":
            return torch.softmax(z, dim=1)
        if self.kind == "binary":
            p = torch.sigmoid(z[:, :1])                   # (B, 1): the second label's probability
            return torch.cat([1 - p, p], dim=1)
        if self.kind == "multilabel":
            return torch.sigmoid(z)
        if self.kind == "continuous":
            return z[:, :1] * self.scale + self.shift
        return torch.exp(torch.clamp(z[:, :1] + self.shift, -30.0, 30.0))


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float                   # fp32 export vs PyTorch on the check images
    n_check_images: int
    check_source: str                     # where the check images came from
    seconds: float
    quantized: dict = field(default_factory=dict)   # int8: mode, agreement, accuracies, speed


def metadata(saved: SavedModel) -> dict[str, str]:
    """What a user of the exported file needs besides the graph (all values are strings)."""
    c = saved.config
    return {
        "headstart.format": "headstart-export",
        "headstart.format_version": "1",
        "headstart.labels": json.dumps(list(saved.labels)),
        "headstart.task": json.dumps(saved.task.to_dict()),
        "headstart.preprocess": json.dumps(saved.backbone.preprocess.to_dict()),
        "headstart.backbone": json.dumps(c.get("backbone", {"name": saved.backbone.name})),
        "headstart.input": "input: float32 (batch, channels, height, width) after preprocess "
                           "(resize, crop, (x/255 - mean) / std)",
        "headstart.output": "probabilities: float32 (batch, n_labels), columns in headstart.labels order",
        "headstart.test_accuracy": json.dumps(_test_accuracy(c)),
    }


def export_model(model_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None, *,
                 min_accuracy: float | None = None, quantize: str | None = None,
                 tolerance: float = TOLERANCE, log=print) -> ExportResult:
    """Export ``model_dir`` to ``out`` (default ``MODEL_DIR/model.onnx`` or ``model.pt``).

    Raises ``HeadstartError`` (and writes nothing) when the model's recorded test accuracy is
    below ``min_accuracy`` or the export disagrees with PyTorch by more than ``tolerance``.
    """
    t0 = time.perf_counter()
    if fmt not in FORMATS:
        raise HeadstartError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if quantize not in (None, "int8"):
        raise HeadstartError(f"unknown --quantize {quantize!r}; the only choice is int8.")
    if quantize and fmt != "onnx":
        raise HeadstartError(f"--quantize int8 works with --format onnx (ONNX Runtime quantization), "
                             f"got --format {fmt}. Export to ONNX to quantize.")
    model_dir = Path(model_dir)
    saved = load_model(model_dir)
    if min_accuracy is not None:
        _check_min_accuracy(saved.config, min_accuracy, model_dir)
    out = Path(out) if out else model_dir / ("model" + ("-int8" if quantize else "") + FORMATS[fmt])
    if out.is_dir():
        raise HeadstartError(f"--out {str(out)!r} is a folder; give a file name such as {out / ('model' + FORMATS[fmt])}.")

    model = ProbabilityModel(saved.backbone, saved.head, saved.task).eval().cpu()
    x, source = check_images(saved)
    with torch.inference_mode():  # the reference: PyTorch logits through the task's own activation
        reference = saved.task.activate(saved.head(saved.backbone(torch.from_numpy(x))).numpy())
    meta = metadata(saved)
    shape = tuple(x.shape[1:])
    result = ExportResult(out, fmt, float("nan"), len(x), source, 0.0)

    def check(got: np.ndarray) -> None:
        result.max_abs_diff = float(np.abs(got - reference).max())
        log(f"parity on {len(x)} {source}: largest |probability difference| PyTorch vs {fmt} = "
            f"{result.max_abs_diff:.2e} (limit {tolerance:.0e})")
        if not result.max_abs_diff <= tolerance:  # also catches NaN
            raise HeadstartError(
                f"the {fmt} export disagrees with PyTorch: largest probability difference "
                f"{result.max_abs_diff:.3e} > {tolerance:.0e}; nothing was written to {str(out)!r}. "
                "Report this with the model folder; try the other --format meanwhile.")

    if fmt == "openvino":
        _export_openvino(model, out, shape, meta, lambda xml: check(_run_openvino(xml, x)))
    else:
        with atomic_path(out) as tmp:
            if fmt == "onnx":
                _write_onnx(model, tmp, shape, meta)
                check(_run_onnx(tmp, x))
            else:
                _write_torchscript(model, tmp, x[:2], meta)
                check(_run_torchscript(tmp, x))
            if quantize:
                result.quantized = _quantize_int8(saved, tmp, x, reference, log)
    result.seconds = time.perf_counter() - t0
    return result


# ---- parity inputs ---------------------------------------------------------------------------
def check_images(saved: SavedModel, n: int = N_CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Up to ``n`` real images from the model's recorded data folder, through its preprocessing;
    random pixels (also through the preprocessing) when that folder is gone."""
    from PIL import Image

    from ..data.transforms import preprocess

    p = saved.backbone.preprocess
    paths = _data_images(saved, ("test", "val", "train"))[:n]
    arrays = _decode(paths, p)
    if len(arrays) >= 2:
        return np.stack(arrays), f"images from {_data_dir(saved)}"
    rng = np.random.default_rng(0)
    mode = "RGB" if p.channels == 3 else "L"
    arrays = [preprocess(Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).convert(mode), p)
              for _ in range(4)]
    return np.stack(arrays), "random-pixel images (the training data folder is not available)"


def _data_dir(saved: SavedModel) -> Path | None:
    d = saved.config.get("training", {}).get("data")
    return Path(d) if d and Path(d).is_dir() else None


def _data_samples(saved: SavedModel, split: str) -> list:
    from ..data.scan import scan

    root = _data_dir(saved)
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
        samples = _data_samples(saved, split)
        if samples:
            # Spread over the classes: every k-th file of the sorted list.
            step = max(1, len(samples) // N_CHECK_IMAGES)
            return [s.path for s in samples[::step]]
    return []


def _decode(paths, p) -> list[np.ndarray]:
    from ..features import load_batches

    out = []
    for _, batch, _ in load_batches(list(paths), p, 32):
        out.extend(batch)
    return out


# ---- writers and runners ---------------------------------------------------------------------
def _write_onnx(model: nn.Module, path: Path, shape, meta: dict[str, str]) -> None:
    import onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter needs no onnxscript
        torch.onnx.export(model, (torch.zeros(1, *shape),), str(path), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["probabilities"],
                          dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}})
    proto = onnx.load(str(path))
    for k, v in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
    proto.doc_string = "headstart predictor: preprocessed images in, probabilities out"
    onnx.save(proto, str(path))


def _session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _run_onnx(path: Path, x: np.ndarray, batch: int = 8) -> np.ndarray:
    s = _session(path)
    return np.concatenate([s.run(None, {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def _write_torchscript(model: nn.Module, path: Path, example: np.ndarray, meta: dict[str, str]) -> None:
    # TorchScript is deprecated upstream but still the one file that C++ / mobile runtimes load.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, torch.from_numpy(example), check_trace=False)
        traced = torch.jit.freeze(traced.eval())
        torch.jit.save(traced, str(path), _extra_files={"headstart.json": json.dumps(meta, indent=2)})


def _run_torchscript(path: Path, x: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        m = torch.jit.load(str(path), map_location="cpu")
    with torch.inference_mode():
        return m(torch.from_numpy(x)).numpy()


def _export_openvino(model: nn.Module, out: Path, shape, meta: dict[str, str], check) -> None:
    """ONNX -> OpenVINO IR (f32 weights: the parity limit is an f32 one), checked by ``check(xml)``
    in a temporary folder beside ``out``, then moved into place weights first, graph last."""
    import openvino as ov

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as d:
        onnx_path, xml = Path(d) / "m.onnx", Path(d) / "m.xml"
        _write_onnx(model, onnx_path, shape, meta)
        ir = ov.convert_model(str(onnx_path))
        for k, v in meta.items():
            ir.set_rt_info(v, ["headstart", k])
        ov.save_model(ir, str(xml), compress_to_fp16=False)
        check(xml)
        os.replace(xml.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(xml, out)


def _run_openvino(xml: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return np.asarray(compiled(x)[0])


def read_metadata(path: str | Path) -> dict[str, str]:
    """The headstart metadata of an exported ``.onnx``, ``.pt`` or OpenVINO ``.xml`` file."""
    path = Path(path)
    if path.suffix == ".xml":
        import openvino as ov

        info = ov.Core().read_model(str(path)).get_rt_info()["headstart"]
        return {k: info[k].astype(str) for k in info.keys()} if hasattr(info, "keys") else dict(info)
    if path.suffix == ".onnx":
        import onnx

        return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    files = {"headstart.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files["headstart.json"])


# ---- accuracy gate and int8 ------------------------------------------------------------------
def _test_accuracy(config: dict) -> float | None:
    acc = config.get("metrics", {}).get("test", {}).get("accuracy")
    return float(acc) if acc is not None else None


def _check_min_accuracy(config: dict, minimum: float, model_dir: Path) -> None:
    if not 0.0 <= minimum <= 1.0:
        raise HeadstartError(f"--min-accuracy must be a fraction between 0 and 1 (e.g. 0.9), got {minimum}.")
    acc = _test_accuracy(config)
    if acc is None:
        raise HeadstartError(
            f"--min-accuracy {minimum}: {str(model_dir)!r} has no recorded test accuracy (config.json "
            "metrics.test.accuracy is missing: the data had no test split). Retrain with a test split "
            "(--test-fraction > 0 or a test/ folder), or export without --min-accuracy.")
    if acc < minimum:
        raise HeadstartError(
            f"refusing to export: the model's recorded test accuracy is {acc:.4f}, below --min-accuracy "
            f"{minimum}. Improve the model (more or cleaner images) or lower --min-accuracy.")


class _Calibration:
    """onnxruntime.quantization's CalibrationDataReader protocol over preprocessed images."""

    def __init__(self, x: np.ndarray, batch: int = 8):
        self._batches = iter([{"input": x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._batches, None)


def _quantize_int8(saved, fp32_path: Path, x_check: np.ndarray, reference: np.ndarray, log) -> dict:
    """Replace the fp32 file at ``fp32_path`` by its int8 version; report what it changes.

    Static (QDQ, per-channel) with a calibration set from the model's training images when
    the data folder is available, dynamic (weights only) otherwise.
    """
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib = _decode(_spread([s.path for s in _data_samples(saved, "train")], N_CALIBRATION), saved.backbone.preprocess)
    with tempfile.TemporaryDirectory(dir=fp32_path.parent) as d:
        pre, q = Path(d) / "pre.onnx", Path(d) / "q.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        if len(calib) >= 8:
            mode = f"static, calibrated on {len(calib)} training images"
            quantize_static(str(pre), str(q), _Calibration(np.stack(calib)), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        else:
            mode = "dynamic (weights only; no training images for calibration)"
            quantize_dynamic(str(pre), str(q), weight_type=QuantType.QUInt8)
        import onnx

        proto = onnx.load(str(q))
        src = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
        del proto.metadata_props[:]
        for k, v in {**src, "headstart.quantization": f"int8 {mode}"}.items():
            e = proto.metadata_props.add()
            e.key, e.value = k, v
        fp32_bytes = fp32_path.stat().st_size
        fp32_speed = _images_per_s(fp32_path, x_check)
        onnx.save(proto, str(fp32_path))
    got = _run_onnx(fp32_path, x_check)
    info = {"mode": mode, "max_abs_diff": float(np.abs(got - reference).max()),
            "top1_agreement": float((got.argmax(1) == reference.argmax(1)).mean()),
            "bytes_fp32": fp32_bytes, "bytes_int8": fp32_path.stat().st_size,
            "images_per_s_fp32": fp32_speed, "images_per_s_int8": _images_per_s(fp32_path, x_check)}
    log(f"int8 ({mode}): {info['bytes_fp32'] / 1e6:.1f} MB -> {info['bytes_int8'] / 1e6:.1f} MB; "
        f"{info['images_per_s_fp32']:.1f} -> {info['images_per_s_int8']:.1f} images/s; top-1 agreement with fp32 "
        f"{info['top1_agreement']:.3f} on the check images; largest probability change {info['max_abs_diff']:.3f}")
    info.update(_test_accuracy_change(saved, fp32_path, log))
    return info


def _spread(items: list, n: int) -> list:
    return items[::max(1, len(items) // n)][:n]


def _images_per_s(path: Path, x: np.ndarray, repeats: int = 3) -> float:
    s = _session(path)
    s.run(None, {"input": x[:8]})
    t = time.perf_counter()
    for _ in range(repeats):
        s.run(None, {"input": x})
    return repeats * len(x) / (time.perf_counter() - t)


def _test_accuracy_change(saved, int8_path: Path, log) -> dict:
    """Accuracy of the fp32 PyTorch predictor and of the int8 file on the data's test split."""
    samples = _data_samples(saved, "test") if saved.task.has_classes else []
    if not samples:
        log("int8: accuracy change not measured (needs a classifier and its data folder, "
            "config.json training.data, with a test split).")
        return {}
    from ..features import load_batches

    p = saved.backbone.preprocess
    model = ProbabilityModel(saved.backbone, saved.head, saved.task).eval()
    s = _session(int8_path)
    y, fp32, int8 = [], [], []
    for idx, batch, _ in load_batches([x.path for x in samples], p, 32):
        with torch.inference_mode():
            fp32.append(model(torch.from_numpy(batch)).numpy())
        int8.append(s.run(None, {"input": batch})[0])
        y.extend(samples[i].label for i in idx)
    t = saved.task.index(y)
    a32 = float((saved.task.predicted_index(np.concatenate(fp32)) == t).mean())
    a8 = float((saved.task.predicted_index(np.concatenate(int8)) == t).mean())
    log(f"int8: test accuracy {a32:.4f} (fp32) -> {a8:.4f} (int8), change {100 * (a8 - a32):+.2f} points "
        f"on {len(t)} test images")
    return {"test_accuracy_fp32": a32, "test_accuracy_int8": a8, "n_test_images": len(t)}
