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

``quantize="int8"`` calibrates on the model's own training images (ONNX: ONNX Runtime static
QDQ, below; OpenVINO IR: NNCF, ``export_openvino``) and reports what it changes the same way
for both (``export_checks.int8_report``).

>>> r = export_model("model/", "onnx")          # doctest: +SKIP
>>> r.path, r.max_abs_diff                      # doctest: +SKIP
(PosixPath('model/model.onnx'), 2.4e-07)
"""

from __future__ import annotations

import json
import math
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
from .export_checks import calibration_images, check_images, int8_report
from .export_openvino import quantize_ir, require_nncf, runner, write_ir
from .folder import SavedModel, load_model

FORMATS = {"onnx": ".onnx", "torchscript": ".pt", "openvino": ".xml"}
TOLERANCE = 1e-4          # largest allowed |p_torch - p_export| on any probability


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
    out = _out_path(Path(model_dir), out, fmt, quantize)
    saved = load_model(model_dir)
    if min_accuracy is not None:
        _check_min_accuracy(saved.config, min_accuracy, Path(model_dir))
    model = ProbabilityModel(saved.backbone, saved.head, saved.task).eval().cpu()
    x, source = check_images(saved)
    with torch.inference_mode():  # the reference: PyTorch logits through the task's own activation
        reference = saved.task.activate(saved.head(saved.backbone(torch.from_numpy(x))).numpy())
    meta, shape = metadata(saved), tuple(x.shape[1:])
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

    def finish_ir(ir, xml: Path) -> Path:  # checked f32 IR in, the IR to install out
        fp32 = runner(xml)  # compiled once: the parity check, then int8's fp32 side
        check(fp32(x))
        if quantize:
            xml, result.quantized = quantize_ir(saved, ir, xml, fp32, x, reference, log)
        return xml

    if fmt == "openvino":
        write_ir(lambda path: _write_onnx(model, path, shape, meta), out, meta, finish_ir)
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


def _out_path(model_dir: Path, out: str | Path | None, fmt: str, quantize: str | None) -> Path:
    """The file to write, once the choices are known to make sense (before any work is done)."""
    if fmt not in FORMATS:
        raise HeadstartError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}.")
    if quantize not in (None, "int8"):
        raise HeadstartError(f"unknown --quantize {quantize!r}; the only choice is int8.")
    if quantize and fmt == "torchscript":
        raise HeadstartError("--quantize int8 works with --format onnx (ONNX Runtime) or --format openvino "
                             "(NNCF), got --format torchscript. Export to one of those to quantize.")
    if quantize and fmt == "openvino":
        require_nncf()
    path = Path(out) if out else model_dir / ("model" + ("-int8" if quantize else "") + FORMATS[fmt])
    if path.is_dir():
        raise HeadstartError(f"--out {str(path)!r} is a folder; give a file name such as {path / ('model' + FORMATS[fmt])}.")
    return path


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
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calib, about = calibration_images(saved, log)
    fp32_bytes, fp32 = fp32_path.stat().st_size, _session(fp32_path)  # the session keeps the fp32 graph
    with tempfile.TemporaryDirectory(dir=fp32_path.parent) as d:
        pre, q = Path(d) / "pre.onnx", Path(d) / "q.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        t = time.perf_counter()
        if calib is not None:
            mode = f"static, calibrated on {len(calib)} training images"
            quantize_static(str(pre), str(q), _Calibration(calib), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        else:
            mode = "dynamic (weights only; no training images for calibration)"
            quantize_dynamic(str(pre), str(q), weight_type=QuantType.QUInt8)
        about["calibration_seconds"] = time.perf_counter() - t
        proto = onnx.load(str(q))
        src = {p.key: p.value for p in onnx.load(str(fp32_path)).metadata_props}
        del proto.metadata_props[:]
        for k, v in {**src, "headstart.quantization": f"int8 {mode}"}.items():
            e = proto.metadata_props.add()
            e.key, e.value = k, v
        onnx.save(proto, str(fp32_path))
    return int8_report(saved, mode, about, _runner(fp32), _runner(_session(fp32_path)),
                       (fp32_bytes, fp32_path.stat().st_size), x_check, reference, log)


def _runner(session):
    return lambda x: session.run(None, {"input": x})[0]
