"""``headstart export``: parity with PyTorch for both formats, metadata, refusals, no half files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from headstart.model import export as ex
from headstart.cli.main import main
from headstart.errors import HeadstartError


def _reference(model_dir, x):
    from headstart import load

    clf = load(model_dir)
    m = ex.ProbabilityModel(clf.backbone_, clf.head_, clf.task_).eval()
    with torch.inference_mode():
        return m(torch.from_numpy(x)).numpy(), clf


@pytest.fixture(scope="module")
def check_batch(trained_model):
    from headstart.model.folder import load_model

    x, source = ex.check_images(load_model(trained_model[0]))
    assert source.startswith("images from"), source  # real images, not the random fallback
    return x


def test_onnx_export_matches_pytorch_and_carries_metadata(trained_model, check_batch, tmp_path, capsys):
    import onnxruntime as ort

    model_dir, _ = trained_model
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_dir), "--format", "onnx", "--out", str(out)]) == 0
    assert "largest |probability difference|" in capsys.readouterr().out
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": check_batch})[0]
    ref, clf = _reference(model_dir, check_batch)
    assert got.shape == (len(check_batch), len(clf.classes_))
    assert np.abs(got - ref).max() <= 1e-4
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-5)  # probabilities, not logits
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["headstart.labels"]) == ["cat", "dog", "fish"]
    assert json.loads(meta["headstart.preprocess"])["input_size"] == 224
    assert json.loads(meta["headstart.task"])["name"] == "multiclass"


def test_torchscript_export_matches_pytorch_and_carries_metadata(trained_model, check_batch, tmp_path):
    model_dir, _ = trained_model
    out = ex.export_model(model_dir, "torchscript", tmp_path / "m.pt", log=lambda s: None).path
    files = {"headstart.json": ""}
    m = torch.jit.load(str(out), _extra_files=files)
    with torch.inference_mode():
        got = m(torch.from_numpy(check_batch)).numpy()
    ref, _ = _reference(model_dir, check_batch)
    assert np.abs(got - ref).max() <= 1e-4
    meta = json.loads(files["headstart.json"])
    assert json.loads(meta["headstart.labels"]) == ["cat", "dog", "fish"]
    assert ex.read_metadata(out) == meta


def test_failing_parity_leaves_no_file(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    out = tmp_path / "m.onnx"
    # A corrupt export: the file is written, then disagrees with PyTorch.
    monkeypatch.setattr(ex, "_write_onnx", lambda model, path, shape, meta: path.write_bytes(b"not onnx"))
    monkeypatch.setattr(ex, "_run_onnx", lambda path, x: np.zeros((len(x), 3), np.float32))
    with pytest.raises(HeadstartError, match="disagrees with PyTorch.*nothing was written"):
        ex.export_model(model_dir, "onnx", out, log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def test_zero_tolerance_fails_cleanly_for_torchscript(trained_model, tmp_path, monkeypatch):
    model_dir, _ = trained_model
    monkeypatch.setattr(ex, "_write_torchscript", lambda model, path, example, meta: path.write_bytes(b"x"))
    monkeypatch.setattr(ex, "_run_torchscript", lambda path, x: np.full((len(x), 3), np.nan, np.float32))
    with pytest.raises(HeadstartError, match="disagrees"):
        ex.export_model(model_dir, "torchscript", tmp_path / "m.pt", log=lambda s: None)
    assert list(tmp_path.iterdir()) == []


def _copy_with_test_accuracy(trained_model, tmp_path, accuracy):
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(trained_model[0], model_dir, ignore=shutil.ignore_patterns("*.onnx", "*.pt"))
    config = json.loads((model_dir / "config.json").read_text())
    if accuracy is None:
        config["metrics"].pop("test")
    else:
        config["metrics"]["test"]["accuracy"] = accuracy
    (model_dir / "config.json").write_text(json.dumps(config))
    return model_dir


def test_min_accuracy_refuses_a_weak_model(trained_model, tmp_path, capsys):
    model_dir = _copy_with_test_accuracy(trained_model, tmp_path, 0.625)
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_dir), "--out", str(out), "--min-accuracy", "0.9"]) == 2
    assert "recorded test accuracy is 0.6250, below --min-accuracy 0.9" in capsys.readouterr().err
    assert not out.exists()


def test_min_accuracy_without_a_recorded_test_accuracy(trained_model, tmp_path):
    model_dir = _copy_with_test_accuracy(trained_model, tmp_path, None)
    with pytest.raises(HeadstartError, match="no recorded test accuracy"):
        ex.export_model(model_dir, "onnx", tmp_path / "m.onnx", min_accuracy=0.5)
    assert not (tmp_path / "m.onnx").exists()


def test_openvino_export_matches_pytorch_and_carries_metadata(trained_model, check_batch, tmp_path, capsys):
    ov = pytest.importorskip("openvino")
    model_dir, _ = trained_model
    out = tmp_path / "ir" / "m.xml"
    assert main(["export", str(model_dir), "--format", "openvino", "--out", str(out)]) == 0
    assert "PyTorch vs openvino" in capsys.readouterr().out
    assert out.with_suffix(".bin").is_file()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.bin", "m.xml"]  # no temporary left behind
    compiled = ov.Core().compile_model(str(out), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.asarray(compiled(check_batch)[0])
    ref, clf = _reference(model_dir, check_batch)
    assert got.shape == (len(check_batch), len(clf.classes_))
    assert np.abs(got - ref).max() <= 1e-4
    meta = ex.read_metadata(out)
    assert json.loads(meta["headstart.labels"]) == ["cat", "dog", "fish"]
    assert json.loads(meta["headstart.task"])["name"] == "multiclass"


def test_failing_openvino_parity_writes_nothing(trained_model, tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setattr(ex, "runner", lambda xml: lambda x: np.full((len(x), 3), 0.5, np.float32))
    with pytest.raises(HeadstartError, match="disagrees with PyTorch"):
        ex.export_model(trained_model[0], "openvino", tmp_path / "m.xml", log=lambda s: None)
    assert list(tmp_path.iterdir()) == []
