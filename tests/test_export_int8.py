"""``headstart export --quantize int8``: the OpenVINO IR through NNCF and the ONNX file through
ONNX Runtime, calibrated on the model's training images, reporting the same fields; no
partial file when quantization fails; weights only without training images."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from headstart.errors import HeadstartError
from headstart.model import export as ex

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

REPORT = {"mode", "max_abs_diff", "top1_agreement", "bytes_fp32", "bytes_int8", "images_per_s_fp32",
          "images_per_s_int8", "calibration_images", "calibration_source", "calibration_files",
          "calibration_seconds"}


def _reference(model_dir, x):
    from headstart.model.folder import load_model

    saved = load_model(model_dir)
    m = ex.ProbabilityModel(saved.backbone, saved.head, saved.task).eval()
    with torch.inference_mode():
        return m(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def check_batch(trained_model):
    from headstart.model.folder import load_model

    return ex.check_images(load_model(trained_model[0]))[0]


@pytest.fixture(scope="module")
def ov_int8(trained_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov-int8") / "ir" / "m.xml"
    lines: list[str] = []
    result = ex.export_model(trained_model[0], "openvino", out, quantize="int8", log=lines.append)
    return result, lines


def _train_files(data: Path, model_dir: Path) -> set[str]:
    from headstart.model.export_checks import data_samples
    from headstart.model.folder import load_model

    return {str(s.path) for s in data_samples(load_model(model_dir), "train")}


def test_openvino_int8_ir_runs_and_agrees_with_fp32(trained_model, ov_int8, check_batch):
    result, lines = ov_int8
    out = result.path
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.bin", "m.xml"]  # no temporary left
    model = ov.Core().read_model(str(out))
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # activations quantized
    got = np.asarray(ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})(check_batch)[0])
    ref = _reference(trained_model[0], check_batch)
    assert got.shape == ref.shape
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9
    assert np.abs(got - ref).max() < 0.2
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-4)  # still probabilities
    meta = ex.read_metadata(out)
    assert json.loads(meta["headstart.labels"]) == ["cat", "dog", "fish"]
    assert meta["headstart.quantization"].startswith("int8 static (NNCF), calibrated on")
    assert out.stat().st_size + out.with_suffix(".bin").stat().st_size == result.quantized["bytes_int8"]


def test_openvino_int8_reports_what_it_changes(trained_model, ov_int8):
    result, lines = ov_int8
    q = result.quantized
    assert REPORT | {"test_accuracy_fp32", "test_accuracy_int8", "n_test_images"} == set(q)
    train = _train_files(*trained_model[::-1])
    assert q["calibration_images"] == len(train) == len(q["calibration_files"])  # fewer than 64: all of them
    assert set(q["calibration_files"]) == train
    assert q["calibration_source"] == str(trained_model[1])
    assert q["mode"] == f"static (NNCF), calibrated on {len(train)} training images"
    assert q["top1_agreement"] >= 0.9 and 0 <= q["max_abs_diff"] < 0.2
    assert q["bytes_int8"] < 0.4 * q["bytes_fp32"]  # int8 weights: about a quarter
    assert q["images_per_s_fp32"] > 0 and q["images_per_s_int8"] > 0 and q["calibration_seconds"] > 0
    assert abs(q["test_accuracy_int8"] - q["test_accuracy_fp32"]) <= 0.2 and q["n_test_images"] >= 5
    text = "\n".join(lines)
    assert f"calibrating on {len(train)} of the {len(train)} training images in {trained_model[1]}" in text
    assert "MB ->" in text and "images/s" in text and "test accuracy" in text


@pytest.mark.slow  # ONNX Runtime's static quantization of the backbone: over a minute on 2 busy cores
def test_onnx_int8_reports_the_same_fields(trained_model, ov_int8, tmp_path):
    lines: list[str] = []
    q = ex.export_model(trained_model[0], "onnx", tmp_path / "m.onnx", quantize="int8", log=lines.append).quantized
    assert set(q) == set(ov_int8[0].quantized)
    assert q["mode"].startswith("static, calibrated on") and q["calibration_images"] >= 8
    assert q["calibration_files"] == ov_int8[0].quantized["calibration_files"]  # the same images
    assert q["top1_agreement"] >= 0.9 and q["bytes_int8"] < 0.5 * q["bytes_fp32"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def _without_data(trained_model, tmp_path) -> Path:
    model_dir = tmp_path / "model"
    shutil.copytree(trained_model[0], model_dir, ignore=shutil.ignore_patterns("*.onnx", "*.pt", "*.xml", "*.bin"))
    config = json.loads((model_dir / "config.json").read_text())
    config["training"]["data"] = str(tmp_path / "moved-away")
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir


def test_openvino_int8_without_training_images_quantizes_the_weights_only(trained_model, tmp_path, check_batch):
    lines: list[str] = []
    out = tmp_path / "m.xml"
    q = ex.export_model(_without_data(trained_model, tmp_path), "openvino", out, quantize="int8",
                        log=lines.append).quantized
    assert q["mode"].startswith("weights only (NNCF compress_weights")
    assert q["calibration_images"] == 0 and q["calibration_files"] == []
    assert "test_accuracy_int8" not in q  # no test split to measure on
    assert q["bytes_int8"] < 0.4 * q["bytes_fp32"]  # its agreement is on random pixels: checked below on real ones
    text = "\n".join(lines)
    assert "calibration needs 8, so only the weights are quantized" in text and "moved-away" in text
    assert "random-pixel images" in text  # parity checked on random pixels, and said so
    model = ov.Core().read_model(str(out))
    assert not any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
    got = np.asarray(ov.Core().compile_model(model, "CPU")(check_batch)[0])
    assert (got.argmax(1) == _reference(trained_model[0], check_batch).argmax(1)).mean() >= 0.9


def test_failed_quantization_leaves_the_old_files_and_nothing_else(trained_model, tmp_path, monkeypatch):
    import nncf

    out = tmp_path / "m.xml"
    out.write_text("old graph")
    out.with_suffix(".bin").write_bytes(b"old weights")

    def fail(*args, **kwargs):
        raise RuntimeError("quantization failed half way")

    monkeypatch.setattr(nncf, "quantize", fail)
    with pytest.raises(RuntimeError, match="half way"):
        ex.export_model(trained_model[0], "openvino", out, quantize="int8", log=lambda s: None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.bin", "m.xml"]
    assert out.read_text() == "old graph" and out.with_suffix(".bin").read_bytes() == b"old weights"


def test_openvino_int8_without_nncf_says_how_to_install_it(trained_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nncf", None)  # import nncf raises ImportError
    with pytest.raises(HeadstartError, match=r"needs NNCF, which is not installed.*headstart\[int8\].*--format onnx"):
        ex.export_model(trained_model[0], "openvino", tmp_path / "m.xml", quantize="int8", log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_torchscript_cannot_be_quantized(trained_model, tmp_path):
    with pytest.raises(HeadstartError, match="--quantize int8 works with --format onnx .* or --format openvino"):
        ex.export_model(trained_model[0], "torchscript", tmp_path / "m.pt", quantize="int8")
    assert list(tmp_path.iterdir()) == []
