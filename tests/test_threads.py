"""PyTorch's threads per calling thread (``headstart.threads``), and the lanes that use it: one
PyTorch thread in each lane, two lanes per core for OpenVINO, the same inputs and features."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from conftest import write_image

from headstart.data.inputs import load_input
from headstart.threads import one_torch_thread


def _in_thread(fn):
    out = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    t.join()
    return out[0]


def _photos(tmp_path, n=4):
    """Photo-sized JPEGs (as large as clothing-small's), big enough for PyTorch to split its
    resampling over threads when it may."""
    sizes = [(400, 534), (400, 711), (534, 400), (300, 300)]
    return [write_image(tmp_path / f"p{i}.jpg", sizes[i % len(sizes)], color=(90 + 30 * i, 120, 60), noise=60,
                        quality=90) for i in range(n)]


def test_one_torch_thread_changes_the_calling_thread_only(torch_threads):
    torch_threads(2)  # an earlier test may have left PyTorch on one thread
    before = torch.get_num_threads()

    def inside():
        one_torch_thread()
        return torch.get_num_threads()

    assert _in_thread(inside) == 1
    assert torch.get_num_threads() == before  # the caller's thread
    assert _in_thread(torch.get_num_threads) == before  # a thread started afterwards


def test_one_pytorch_thread_gives_the_same_inputs(tmp_path, torch_threads):
    """Resampling and normalising on one thread: the very same numbers as on all of them."""
    from headstart.backbones import create_backbone

    torch_threads(2)  # "all of them": an earlier test may have left PyTorch on one thread
    p = create_backbone("efficientnet_lite0").preprocess
    files = _photos(tmp_path)
    want = [load_input(f, p) for f in files]

    def inside():
        one_torch_thread()
        return [load_input(f, p) for f in files]

    for got, w in zip(_in_thread(inside), want):
        np.testing.assert_array_equal(got, w)


def test_openvino_gets_two_lanes_per_core(monkeypatch):
    pytest.importorskip("openvino")
    from headstart.features import extract

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(extract.os, "cpu_count", lambda: 2)
    assert extract.lanes_for("openvino") == 4
    assert extract.lanes_for("onnxruntime") == 2
    assert extract.lanes_for("torch") == 0
    monkeypatch.setattr(extract.os, "cpu_count", lambda: 16)
    assert extract.lanes_for("openvino") == extract.lanes_for("onnxruntime") == extract.MAX_LANES


def test_openvino_lanes_predict_what_one_image_at_a_time_does(trained_model, tmp_path):
    """Four OpenVINO lanes on photo-sized JPEGs, at batch 1 and 32: the same features, rows and
    probabilities as decoding each image on the main thread and calling the engine on it alone."""
    pytest.importorskip("openvino")
    from headstart import load
    from headstart.features import extract_features
    from headstart.training.head import predict_scores

    model_dir, _ = trained_model
    clf = load(model_dir, engine="openvino")
    clf.use_cache = False
    bb = clf.backbone_
    files = _photos(tmp_path, n=9)
    engine = bb.engine(prefer="openvino", threads=1, spin=False)
    want = np.concatenate([engine(load_input(f, bb.preprocess)[None]) for f in files])
    for batch in (1, 32):
        ex = extract_features(bb, files, batch_size=batch, engine="openvino")
        np.testing.assert_allclose(ex.features, want, rtol=0, atol=1e-6)
        clf.batch_size = batch
        rows = clf.predict_files(files)
        probs = predict_scores(clf.task_, clf.head_, want)
        assert [r["label"] for r in rows] == [clf.classes_[i] for i in probs.argmax(1)]
        np.testing.assert_allclose([r["probability"] for r in rows], probs.max(1), atol=1e-6)


def test_lanes_keep_their_one_pytorch_thread(monkeypatch, backbone, tmp_path):
    from headstart.features import extract

    seen = []
    real = extract._decode_one

    def spy(*a):
        seen.append(torch.get_num_threads())
        return real(*a)

    monkeypatch.setattr(extract, "_decode_one", spy)
    files = _photos(tmp_path, n=3)
    list(extract.embed_in_lanes(files, backbone.preprocess, 1, lambda x: x.mean((2, 3)), 2))
    assert seen == [1, 1, 1]
    with ThreadPoolExecutor(1) as pool:  # other pools are left alone
        assert pool.submit(torch.get_num_threads).result() == torch.get_num_threads()
