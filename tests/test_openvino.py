"""The OpenVINO engine: same features as ONNX Runtime (f32), picked by "auto", kept per process,
safe from several threads, keyed apart in the feature cache where its precision differs."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("openvino")

from conftest import write_image  # noqa: E402

from headstart import load  # noqa: E402
from headstart.backbones.engines import (  # noqa: E402
    PRECISION_ENV,
    OnnxEngine,
    features_key,
    make_engine,
    resolve,
)
from headstart.backbones.openvino_engine import OpenVinoEngine  # noqa: E402
from headstart.data.scan import find_images  # noqa: E402


def _shape(backbone):
    p = backbone.preprocess
    return (p.channels, p.input_size, p.input_size)


def test_openvino_matches_onnxruntime_in_f32(backbone, monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    shape = _shape(backbone)
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    ov = make_engine(backbone, backbone.cache_key, shape, prefer="openvino")
    ort = make_engine(backbone, backbone.cache_key, shape, prefer="onnxruntime")
    assert isinstance(ov, OpenVinoEngine) and ov.precision == "f32"
    assert isinstance(ort, OnnxEngine)
    np.testing.assert_allclose(ov(x), ort(x), atol=1e-4)
    np.testing.assert_allclose(ov(x[:1]), ort(x[:1]), atol=1e-4)  # another batch size, same compiled model


def test_auto_picks_openvino_on_a_cpu(backbone, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve("auto") == "openvino"
    assert isinstance(make_engine(backbone, backbone.cache_key, _shape(backbone)), OpenVinoEngine)


def test_compiled_once_per_process_and_safe_from_threads(backbone):
    shape = _shape(backbone)
    a = make_engine(backbone, backbone.cache_key, shape, prefer="openvino", threads=1)
    b = make_engine(backbone, backbone.cache_key, shape, prefer="openvino", threads=1)
    assert a.compiled is b.compiled
    xs = [np.random.default_rng(i).standard_normal((2, *shape)).astype(np.float32) for i in range(6)]
    want = [a(x) for x in xs]
    with ThreadPoolExecutor(3) as pool:  # each call borrows its own request: no mixed-up outputs
        got = list(pool.map(b, xs))
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_bf16_features_are_cached_under_their_own_key(backbone, monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "bf16")
    key = backbone.cache_key
    assert features_key(key, "openvino") != key
    assert features_key(key, "onnxruntime") == key
    monkeypatch.setenv(PRECISION_ENV, "f32")
    assert features_key(key, "openvino") == key  # f32 OpenVINO and ONNX Runtime share (1e-5 apart)
    monkeypatch.setenv(PRECISION_ENV, "f8")
    with pytest.raises(ValueError, match="HEADSTART_PRECISION"):
        features_key(key, "openvino")


def test_a_model_openvino_refuses_runs_on_onnxruntime(backbone, monkeypatch):
    def refuse(*a, **k):
        raise RuntimeError("Exception from src/inference: unsupported operation\nmore lines")

    monkeypatch.setattr(OpenVinoEngine, "_compile", classmethod(refuse))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = make_engine(backbone, backbone.cache_key, _shape(backbone), prefer="openvino")
    assert isinstance(engine, OnnxEngine)
    assert any("OpenVINO refused the model (Exception from src/inference: unsupported operation)" in str(w.message)
               for w in caught)


def test_a_model_folder_predicts_the_same_with_openvino(trained_model, tmp_path):
    model_dir, data = trained_model
    files = find_images([data])[::3] + [write_image(tmp_path / "big.jpg", (640, 480), color=(40, 180, 60))]
    out = {}
    for engine in ("openvino", "onnxruntime"):
        clf = load(model_dir, engine=engine)
        clf.use_cache = False
        out[engine] = (clf.predict(files), clf.predict_proba(files))
    assert out["openvino"][0] == out["onnxruntime"][0]
    np.testing.assert_allclose(out["openvino"][1], out["onnxruntime"][1], atol=1e-4)
