"""Feature extraction on a local Ray (2 CPUs): same features, same failures, same cache as one
machine; a worker that dies mid-job is retried; an unreachable cluster fails fast.

Ray is an optional extra (``pip install 'headstart[cluster]'``): without it these tests are
skipped, except the ones that check the install hint. Starting Ray and its actors takes
10-40 s on the shared 2-core machine, so the tests that run a job are marked slow.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_class_folder, truncate_file
from headstart.errors import HeadstartError


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = make_class_folder(tmp_path / "photos", n=6)
    truncate_file(root / "dog" / "dog_002.png", 0.3)
    return root


def _samples(root: Path):
    from headstart.data.scan import scan

    r = scan(root)
    return r, [s.path for s in r.samples], [s.digest for s in r.samples]


@pytest.mark.slow
def test_ray_features_and_failures_match_one_machine(local_ray, photos, backbone, tmp_path):
    from headstart.features import FeatureCache, extract_features
    from headstart.features.ray import RayConfig, ray_extract
    from headstart.features.shards import import_shards

    r, paths, digests = _samples(photos)
    cache = FeatureCache(tmp_path / "cluster.sqlite")
    ex = ray_extract(backbone, paths, config=RayConfig(num_workers=1, batch_size=8), cache=cache,
                     out=tmp_path / "shards")
    assert ex.digests == digests  # hashed on the workers, the same sha256 as the scan's
    ref = extract_features(backbone, paths)
    assert [(f.index, f.reason, f.detail) for f in ex.failures] == \
           [(f.index, f.reason, f.detail) for f in ref.failures]
    assert [r.samples[f.index].rel for f in ex.failures] == ["dog/dog_002.png"]
    np.testing.assert_allclose(ex.features[ex.ok], ref.features[ref.ok], atol=1e-5)
    assert ex.n_computed == len(paths) - 1 and ex.n_cached == 0

    # a second run sends nothing to the cluster: every good image comes from the cache
    again = ray_extract(backbone, paths, config=RayConfig(num_workers=1), cache=cache)
    assert again.n_cached == len(paths) - 1 and again.n_computed == 0
    assert [f.index for f in again.failures] == [f.index for f in ex.failures]
    np.testing.assert_array_equal(again.features[again.ok], ex.features[ex.ok])

    # the shards, imported into another machine's cache, give the same rows under the same keys
    fresh = FeatureCache(tmp_path / "laptop.sqlite")
    assert import_shards(tmp_path / "shards", fresh) == len(paths) - 1
    local = extract_features(backbone, paths, digests, cache=fresh)
    assert local.n_cached == len(paths) - 1  # only the broken file is tried again
    np.testing.assert_array_equal(local.features[local.ok], ex.features[ex.ok])


@pytest.mark.slow
def test_a_worker_that_dies_mid_job_is_retried(local_ray, photos, backbone, tmp_path, monkeypatch):
    from headstart.features.ray import DIE_ONCE_ENV, RayConfig, ray_extract

    marker = tmp_path / "died-once"
    monkeypatch.setenv(DIE_ONCE_ENV, str(marker))
    _, paths, _ = _samples(photos)
    ex = ray_extract(backbone, paths, config=RayConfig(num_workers=1, batch_size=4))
    assert marker.exists()  # the actor really did exit on its first batch
    assert ex.n_computed + len(ex.failures) == len(paths)  # every image accounted for
    assert np.isfinite(ex.features[ex.ok]).all() and ex.ok.sum() == len(paths) - 1


@pytest.mark.slow
def test_cli_embed_then_train_reuses_the_cluster_features(local_ray, photos, tmp_path, capsys):
    from headstart.cli.main import main

    assert main(["embed", str(photos), "--ray", "--out", str(tmp_path / "shards")]) == 0
    captured = capsys.readouterr()
    out, err = captured.out, captured.err
    assert "17 images have features" in out and "dog/dog_002.png: truncated" in out
    # one progress bar for every worker, counting every file (hashed on the workers)
    assert err.count("features (ray):   0%") == 1 and "| 18/18 [" in err, err
    assert list((tmp_path / "shards").glob("*.parquet"))
    assert main(["embed", str(photos), "--ray", "--quiet"]) == 0
    assert "17 were cached already" in capsys.readouterr().out
    # single-machine train afterwards: no feature computed (train logs the cache figures)
    assert main(["train", str(photos), "--out", str(tmp_path / "model"), "--no-report", "--epochs", "3",
                 "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    assert "features: 17 from cache, 0 computed" in capsys.readouterr().err


def test_unreachable_address_fails_fast_with_a_clear_error(class_folder, tmp_path, capsys):
    pytest.importorskip("ray", reason="Ray is optional: pip install 'headstart[cluster]'")
    from headstart.cli.main import main
    from headstart.features.ray import RayConfig, connect

    t0 = time.perf_counter()
    with pytest.raises(HeadstartError, match=r"no Ray cluster answers at '127.0.0.1:9'.*ray start --head"):
        connect(RayConfig(address="127.0.0.1:9"))
    assert time.perf_counter() - t0 < 10
    with pytest.raises(HeadstartError, match=r"Ray address 'headnode' is not HOST:PORT"):
        connect(RayConfig(address="headnode"))
    # predict says so before loading the model or reading any image
    assert main(["predict", str(tmp_path / "no-model-needed"), str(class_folder), "--ray", "127.0.0.1:9"]) == 2
    assert "no Ray cluster answers at '127.0.0.1:9'" in capsys.readouterr().err


def test_without_ray_the_commands_say_how_to_install(monkeypatch, class_folder, capsys):
    from headstart.cli.main import main

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert main(["embed", str(class_folder), "--ray", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--ray needs Ray Data, which is not installed here" in err
    assert "pip install 'headstart[cluster]'" in err


def test_bad_worker_counts_are_refused(class_folder, capsys):
    from headstart.cli.main import main

    assert main(["embed", str(class_folder), "--num-workers", "0", "--quiet"]) == 2
    assert "--num-workers must be positive, got 0" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_predict_with_ray_gives_the_same_predictions(local_ray, trained_model, capsys):
    from headstart.cli.main import main

    model, data = trained_model
    assert main(["predict", str(model), str(data), "--format", "csv", "--quiet"]) == 0
    plain = capsys.readouterr().out
    from headstart.features import FeatureCache

    FeatureCache().close()
    import sqlite3

    from headstart.paths import cache_dir

    with sqlite3.connect(cache_dir() / "features.sqlite") as db:  # forget them: the cluster recomputes
        db.execute("DELETE FROM features")
    assert main(["predict", str(model), str(data), "--format", "csv", "--quiet", "--ray"]) == 0
    assert capsys.readouterr().out == plain
    assert len(plain.splitlines()) == 31  # header + 30 images


@pytest.mark.slow
def test_predict_with_ray_writes_parquet_like_one_machine(local_ray, trained_model, tmp_path, capsys):
    import json

    import pyarrow.parquet as pq

    from headstart.cli.main import main
    from headstart.features import FeatureCache

    model, _ = trained_model
    new = make_class_folder(tmp_path / "new", n=3, size=(40, 40))
    truncate_file(new / "fish" / "fish_001.png", 0.3)
    assert main(["predict", str(model), str(new), "--format", "json", "--quiet", "--top-k", "2"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert [r["reason"] for r in plain if "error" in r] == ["truncated"]

    before = FeatureCache().count()
    out = tmp_path / "preds.parquet"
    assert main(["predict", str(model), str(new), "--ray", "--out", str(out), "--quiet", "--top-k", "2"]) == 0
    assert f"wrote 9 predictions to {out}; 1 files could not be read" in capsys.readouterr().err
    table = pq.read_table(out)
    assert table.column_names == ["file", "label", "probability", "top", "reason", "error"]
    rows = table.to_pylist()
    assert [r["file"] for r in rows] == [r["file"] for r in plain]  # one row per file, in order
    for got, want in zip(rows, plain):
        if "error" in want:  # the same per-file failure as on one machine
            assert (got["reason"], got["error"], got["label"]) == (want["reason"], want["error"], None)
            continue
        assert got["label"] == want["label"] and got["reason"] is None
        assert got["probability"] == pytest.approx(want["probability"], abs=1e-5)
        assert [t["label"] for t in got["top"]] == [t["label"] for t in want["top"]]
    assert FeatureCache().count() == before  # every readable file was cached by the plain run

    # a second --ray run over the same files reuses the cache (same rows), and the CLI's other
    # formats print the same rows as one machine
    assert main(["predict", str(model), str(new), "--ray", "--format", "json", "--quiet", "--top-k", "2"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert [(r["file"], r.get("label"), r.get("reason")) for r in again] == \
           [(r["file"], r.get("label"), r.get("reason")) for r in plain]


def test_parquet_of_every_task_reads_back(tmp_path):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from headstart.estimator.outputs import write_parquet
    from headstart.tasks import TASKS

    for name, targets in [("multiclass", ["a", "b", "c"]), ("binary", ["no", "yes"]),
                          ("multilabel", ["a|b", "b", "c"]), ("continuous", ["1.5", "2.0", "3.5"]),
                          ("count", ["0", "2", "5"])]:
        task = TASKS[name]().fit_targets(targets)
        scores = np.full((2, task.out_width), 0.6, np.float32)
        rows = [{"file": "a.png", **task.decode(scores, 2)[0]},
                {"file": "b.png", "error": "image file is truncated", "reason": "truncated"}]
        path = tmp_path / f"{name}.parquet"
        assert write_parquet(iter(rows), task, path) == (2, 1)
        back = pq.read_table(path).to_pylist()
        assert back[0]["file"] == "a.png" and back[0]["error"] is None
        assert back[1]["reason"] == "truncated" and all(back[1][k] is None for k in task.decode(scores, 2)[0])


def test_predict_out_writes_the_json_rows_as_parquet_on_one_machine(trained_model, tmp_path, capsys):
    import json

    pq = pytest.importorskip("pyarrow.parquet")
    from headstart.cli.main import main

    model, data = trained_model
    assert main(["predict", str(model), str(data), "--format", "json", "--quiet"]) == 0
    want = json.loads(capsys.readouterr().out)
    out = tmp_path / "p.parquet"
    assert main(["predict", str(model), str(data), "--out", str(out), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and f"wrote 30 predictions to {out}" in captured.err
    got = pq.read_table(out).to_pylist()
    assert [{k: v for k, v in r.items() if v is not None} for r in got] == want


@pytest.mark.slow
def test_cli_train_on_ray_reads_no_file_on_the_driver_to_hash_it(local_ray, photos, tmp_path, monkeypatch, capsys):
    import importlib

    from headstart.cli.main import main

    scan_module = importlib.import_module("headstart.data.scan")
    real, reads = scan_module.file_sha256, []
    monkeypatch.setattr(scan_module, "file_sha256", lambda p: reads.append(p) or real(p))
    assert main(["train", str(photos), "--ray", "--out", str(tmp_path / "model"), "--no-report", "--epochs", "3",
                 "--val-fraction", "0.2", "--test-fraction", "0.2"]) == 0
    assert reads == []  # the workers' digests were used
    assert "features: 17 from cache, 0 computed" in capsys.readouterr().err
