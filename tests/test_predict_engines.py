"""A model folder predicts the same through ONNX Runtime and through eager PyTorch."""

from __future__ import annotations

import numpy as np

from conftest import write_image
from headstart import load
from headstart.data.scan import find_images


def test_both_engines_predict_the_same_labels(trained_model, tmp_path):
    model_dir, data = trained_model
    # Real files through the whole path (decode, draft mode, preprocessing), plus a larger
    # JPEG so draft-mode decoding is exercised too.
    files = find_images([data])[::3] + [write_image(tmp_path / "big.jpg", (640, 480), color=(40, 180, 60))]
    out = {}
    for engine in ("torch", "onnxruntime"):
        clf = load(model_dir, engine=engine)
        clf.use_cache = False  # otherwise the second engine would read the first one's features
        out[engine] = (clf.predict(files), clf.predict_proba(files))
    assert out["torch"][0] == out["onnxruntime"][0]
    np.testing.assert_allclose(out["torch"][1], out["onnxruntime"][1], atol=1e-4)


def test_engines_differ_in_kind(backbone):
    from headstart.backbones.engines import OnnxEngine, TorchEngine, make_engine

    p = backbone.preprocess
    shape = (p.channels, p.input_size, p.input_size)
    assert isinstance(make_engine(backbone, backbone.cache_key, shape, prefer="torch"), TorchEngine)
    assert isinstance(make_engine(backbone, backbone.cache_key, shape, prefer="onnxruntime"), OnnxEngine)


def test_onnx_sessions_are_opened_once_per_process(backbone):
    """Opening a session costs as much as running 20-40 images: repeated predict calls reuse it."""
    from headstart.backbones.engines import make_engine

    p = backbone.preprocess
    shape = (p.channels, p.input_size, p.input_size)
    a = make_engine(backbone, backbone.cache_key, shape, prefer="onnxruntime")
    b = make_engine(backbone, backbone.cache_key, shape, prefer="onnxruntime")
    assert a.session is b.session
    x = np.random.default_rng(0).standard_normal((2, *shape)).astype(np.float32)
    np.testing.assert_array_equal(a(x), b(x))


def test_decoded_images_and_preprocessed_inputs_predict_what_the_files_do(trained_model):
    """predict_images (uploads) and predict_inputs (the server's workers, with their own
    engine) give predict_files' rows, less the file name."""
    from headstart.data.images import open_image
    from headstart.data.transforms import preprocess
    from headstart.backbones.engines import make_engine

    model_dir, data = trained_model
    files = find_images([data])[::4]
    clf = load(model_dir)
    clf.use_cache = False
    want = [{k: v for k, v in r.items() if k != "file"} for r in clf.predict_files(files, top_k=2)]
    images = [open_image(f) for f in files]
    from_images = clf.predict_images(images, top_k=2)
    p = clf.backbone_.preprocess
    own = make_engine(clf.backbone_, clf.backbone_.cache_key, (p.channels, p.input_size, p.input_size),
                      prefer="torch")
    from_inputs = clf.predict_inputs(np.stack([preprocess(im, p) for im in images]), top_k=2, engine=own)
    for rows in (from_images, from_inputs):
        assert [r["label"] for r in rows] == [r["label"] for r in want]
        np.testing.assert_allclose([r["probability"] for r in rows], [r["probability"] for r in want], atol=1e-4)
    assert clf.predict_images([], top_k=2) == []


def test_the_server_runs_onnx_runtime_without_its_arena_unless_told_openvino(trained_model):
    # A server left running must give memory back; OpenVINO keeps its buffers (docs/serve.md).
    import pytest

    from headstart.serve.predictor import Predictor

    pytest.importorskip("openvino")
    model_dir, _ = trained_model
    served = Predictor(load(model_dir, engine="auto")).engine
    assert served.name == "onnxruntime" and served.session.get_session_options().enable_cpu_mem_arena is False
    assert Predictor(load(model_dir, engine="openvino")).engine.name == "openvino"


def test_a_fitted_classifier_keeps_no_dropout_bank(class_folder):
    # The bank (8,192 masks x features) is training state: a served or taught model kept ~60 MB of it.
    from headstart import ImageClassifier
    from headstart.heads import BankDropout

    clf = ImageClassifier(backbone="efficientnet_lite0", val_fraction=0.2, test_fraction=0.0, epochs=2).fit(class_folder)
    banks = [m for m in clf.head_.modules() if isinstance(m, BankDropout)]
    assert banks and all(m._bank is None for m in banks)
    assert len(clf.predict(class_folder)) > 0
