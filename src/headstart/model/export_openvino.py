"""OpenVINO IR export (an ``.xml`` graph beside its ``.bin`` weights) and its post-training int8.

The IR is converted from the checked ONNX graph and written in a temporary folder beside the
output; only when every check has passed does it move into place, weights first, graph last,
so a failed conversion, parity check or quantization leaves no ``.xml`` or ``.bin`` behind.

int8 is NNCF's post-training quantization (``nncf.quantize``: int8 weights and activations,
calibrated on the model's own training images, the ONNX int8 path's images). Without training
images it falls back to ``nncf.compress_weights`` (int8 weights, fp32 activations), as the
ONNX path falls back to dynamic quantization: the file still shrinks about 4x and the log says so.

>>> export_model("model/", "openvino", quantize="int8").quantized["top1_agreement"]   # doctest: +SKIP
1.0
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..errors import HeadstartError
from .export_checks import Run, calibration_images, int8_report
from .folder import SavedModel


def write_ir(write_onnx: Callable[[Path], None], out: Path, meta: dict[str, str],
             finish: Callable[[object, Path], Path]) -> None:
    """ONNX (``write_onnx(path)``) -> OpenVINO IR with f32 weights (the parity limit is an f32 one).

    ``finish(ir, xml)`` checks the written IR and returns the one to install (the same, or an
    int8 version beside it); it runs in the temporary folder, before anything takes ``out``'s name.
    """
    import openvino as ov

    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as d:
        onnx_path, xml = Path(d) / "m.onnx", Path(d) / "m.xml"
        write_onnx(onnx_path)
        ir = ov.convert_model(str(onnx_path))
        for k, v in meta.items():
            ir.set_rt_info(v, ["headstart", k])
        ov.save_model(ir, str(xml), compress_to_fp16=False)
        final = finish(ir, xml)
        os.replace(final.with_suffix(".bin"), out.with_suffix(".bin"))
        os.replace(final, out)


def runner(xml: Path) -> Run:
    """The IR compiled for the CPU in f32 (OpenVINO's default there can be bf16, off by ~0.25)."""
    import openvino as ov

    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return lambda x: np.asarray(compiled(x)[0])


def ir_bytes(xml: Path) -> int:
    return xml.stat().st_size + xml.with_suffix(".bin").stat().st_size


def require_nncf() -> None:
    """Fail before any work when NNCF is missing, saying how to get it."""
    try:
        import nncf  # noqa: F401
    except ImportError:
        raise HeadstartError("--format openvino --quantize int8 needs NNCF, which is not installed. "
                             "Install it (pip install 'headstart[int8]', or pip install nncf), or quantize "
                             "with ONNX Runtime instead: --format onnx --quantize int8.") from None


def quantize_ir(saved: SavedModel, ir, xml: Path, fp32: Run, x: np.ndarray, reference: np.ndarray,
                log) -> tuple[Path, dict]:
    """Write the int8 version of the fp32 IR ``ir`` (saved at ``xml``, compiled as ``fp32``) beside it;
    report what it changes."""
    import nncf
    import openvino as ov

    calib, about = calibration_images(saved, log)
    t = time.perf_counter()
    if calib is not None:
        mode = f"static (NNCF), calibrated on {len(calib)} training images"
        q = nncf.quantize(ir, nncf.Dataset(list(calib[:, None])), subset_size=len(calib))  # one (1, C, H, W) a step
    else:
        mode = "weights only (NNCF compress_weights; no training images for calibration)"
        q = nncf.compress_weights(ir, mode=nncf.CompressWeightsMode.INT8_ASYM)
    about["calibration_seconds"] = time.perf_counter() - t
    q.set_rt_info(f"int8 {mode}", ["headstart", "headstart.quantization"])
    xml8 = xml.with_name("int8.xml")
    ov.save_model(q, str(xml8), compress_to_fp16=False)
    sizes = (ir_bytes(xml), ir_bytes(xml8))
    return xml8, int8_report(saved, mode, about, fp32, runner(xml8), sizes, x, reference, log)
