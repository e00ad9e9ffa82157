"""Feature extraction: the SQLite cache, interrupted runs, bad files, both engines."""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from conftest import make_class_folder, truncate_file, write_image
from headstart.data.scan import file_sha256
from headstart.features import FeatureCache, extract_features


def _files(root, n=6):
    return sorted(make_class_folder(root, classes=("a", "b"), n=n // 2, size=(40, 40)).rglob("*.png"))


def test_second_run_is_served_from_the_cache(backbone, tmp_path):
    files = _files(tmp_path)
    digests = [file_sha256(f) for f in files]
    cache = FeatureCache(tmp_path / "c.sqlite")
    first = extract_features(backbone, files, digests, cache=cache)
    second = extract_features(backbone, files, digests, cache=cache)
    assert (first.n_computed, first.n_cached) == (len(files), 0)
    assert (second.n_computed, second.n_cached) == (0, len(files))
    np.testing.assert_array_equal(first.features, second.features)
    assert first.features.shape == (len(files), backbone.feature_dim) and np.isfinite(first.features).all()


def test_cache_is_keyed_by_content_not_name(backbone, tmp_path):
    files = _files(tmp_path, n=2)
    cache = FeatureCache(tmp_path / "c.sqlite")
    extract_features(backbone, files, [file_sha256(f) for f in files], cache=cache)
    moved = tmp_path / "renamed.png"
    shutil.copy(files[0], moved)
    edited = write_image(tmp_path / "edited.png", (40, 40), seed=123)
    ex = extract_features(backbone, [moved, edited], [file_sha256(moved), file_sha256(edited)], cache=cache)
    assert (ex.n_cached, ex.n_computed) == (1, 1)


def test_interrupted_extraction_keeps_finished_batches(backbone, tmp_path):
    files = _files(tmp_path, n=8)
    digests = [file_sha256(f) for f in files]
    cache = FeatureCache(tmp_path / "c.sqlite")

    def stop_after_first(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        extract_features(backbone, files, digests, cache=cache, batch_size=3, on_batch=stop_after_first)
    assert cache.count(backbone.cache_key) == 3
    again = extract_features(backbone, files, digests, cache=cache, batch_size=3)
    assert (again.n_cached, again.n_computed) == (3, 5)


def test_a_damaged_cache_row_is_recomputed_not_trusted(backbone, tmp_path):
    files = _files(tmp_path, n=2)
    digests = [file_sha256(f) for f in files]
    path = tmp_path / "c.sqlite"
    extract_features(backbone, files, digests, cache=FeatureCache(path))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE features SET vec = ? WHERE digest = ?", (b"\x00" * 12, digests[0]))
    ex = extract_features(backbone, files, digests, cache=FeatureCache(path))
    assert (ex.n_cached, ex.n_computed) == (1, 1)


def test_bad_files_are_reported_and_the_rest_extracted(backbone, tmp_path):
    good = write_image(tmp_path / "good.jpg", (64, 64))
    bad = truncate_file(write_image(tmp_path / "bad.jpg", (256, 256)), 0.3)
    text = tmp_path / "text.png"
    text.write_text("not an image")
    ex = extract_features(backbone, [good, bad, text])
    assert [f.index for f in ex.failures] == [1, 2]
    assert {f.reason for f in ex.failures} <= {"truncated", "corrupt", "not_an_image"}
    assert ex.failures[1].reason == "not_an_image"
    assert ex.ok.tolist() == [True, False, False]
    assert np.isfinite(ex.features[0]).all() and np.isnan(ex.features[1]).all()


def test_onnxruntime_and_torch_engines_agree(backbone, tmp_path):
    files = _files(tmp_path, n=4)
    ort = extract_features(backbone, files, engine="onnxruntime")
    eager = extract_features(backbone, files, engine="torch")
    np.testing.assert_allclose(ort.features, eager.features, atol=2e-3, rtol=1e-3)


def test_lanes_and_one_session_give_the_same_rows_in_order(backbone, tmp_path, monkeypatch):
    """One-thread lanes (the CPU default) and decoding threads feeding one session: same
    features, same order, same failures, whatever the batch size."""
    import headstart.features.extract as features

    files = _files(tmp_path, n=6)
    files.insert(3, truncate_file(write_image(tmp_path / "bad.jpg", (256, 256)), 0.3))
    monkeypatch.setattr(features, "lanes_for", lambda engine: 2)
    lanes = [extract_features(backbone, files, batch_size=b) for b in (1, 2, 32)]
    monkeypatch.setattr(features, "lanes_for", lambda engine: 0)
    single = extract_features(backbone, files, batch_size=2, engine="onnxruntime")
    for ex in lanes:
        assert [f.index for f in ex.failures] == [3]
        np.testing.assert_allclose(ex.features[ex.ok], single.features[single.ok], atol=1e-4)
    assert single.ok.tolist() == lanes[0].ok.tolist() == [True, True, True, False, True, True, True]
