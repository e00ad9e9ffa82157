"""The main job end to end through the CLI: train, evaluate, predict, and the errors."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import folder_state, make_class_folder, write_image
from headstart import ImageClassifier, NotFittedError, load
from headstart.cli.main import main


def run_cli(*args: str) -> int:
    return main([str(a) for a in args])


def test_train_writes_a_self_describing_folder_and_reports(trained_model, capsys):
    model, data = trained_model
    assert sorted(p.name for p in model.iterdir()) >= ["config.json", "head.safetensors"]
    assert not list(model.glob("*.pt")) and not list(model.glob("*.pkl"))
    cfg = json.loads((model / "config.json").read_text())
    assert cfg["format"] == "headstart-model" and cfg["format_version"] == 1
    assert cfg["labels"] == ["cat", "dog", "fish"]
    assert cfg["backbone"]["name"] == "efficientnet_lite0"
    assert cfg["preprocess"]["input_size"] == 224 and cfg["task"]["name"] == "multiclass"
    assert {"torch", "timm", "headstart"} <= set(cfg["versions"])
    assert cfg["metrics"]["test"]["accuracy"] >= 0.9  # three clearly coloured classes


def test_cli_train_evaluate_predict(tmp_path, capsys):
    data = make_class_folder(tmp_path / "photos", n=10, size=(48, 48))
    before = folder_state(data)
    assert run_cli("train", data, "--out", tmp_path / "m", "--quiet") == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "confusion matrix" in out and "majority-class baseline" in out
    assert folder_state(data) == before  # the user's folder is untouched

    assert run_cli("evaluate", tmp_path / "m", data, "--json", tmp_path / "r.json", "--quiet") == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert {"task", "n_images", "accuracy", "labels", "per_class", "confusion_matrix"} <= set(report)
    assert report["n_images"] == 30 and report["accuracy"] >= 0.9
    assert set(report["per_class"]["cat"]) == {"precision", "recall", "f1", "support"}

    capsys.readouterr()
    assert run_cli("predict", tmp_path / "m", data / "dog", "--format", "json", "--quiet") == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 10 and sum(r["label"] == "dog" for r in rows) >= 9
    assert abs(sum(t["probability"] for t in rows[0]["top"]) - 1) < 1e-4


def test_predict_csv_and_sort_into_copies_never_moves(trained_model, tmp_path, capsys):
    model, data = trained_model
    files = sorted((data / "fish").glob("*.png"))[:3]
    before = folder_state(data)
    assert run_cli("predict", model, *files, "--format", "csv", "--sort-into", tmp_path / "sorted", "--quiet") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("file,label,probability") and len(lines) == 4
    assert sorted(p.name for p in (tmp_path / "sorted" / "fish").iterdir()) == [f.name for f in files]
    assert folder_state(data) == before
    run_cli("predict", model, *files, "--sort-into", tmp_path / "sorted", "--quiet")  # again: same bytes, skipped
    assert len(list((tmp_path / "sorted" / "fish").iterdir())) == 3


def test_a_file_that_fails_at_predict_time_is_reported_alone(trained_model, tmp_path, capsys):
    model, data = trained_model
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = sorted((data / "cat").glob("*.png"))[0]
    assert run_cli("predict", model, good, broken, "--format", "json", "--quiet") == 0
    rows = {Path(r["file"]).name: r for r in json.loads(capsys.readouterr().out)}
    assert rows[good.name]["label"] == "cat"
    assert rows["broken.jpg"]["reason"] in ("not_an_image", "corrupt", "truncated")
    assert "error" in rows["broken.jpg"] and "label" not in rows["broken.jpg"]


@pytest.mark.parametrize("use_cache", [True, False])
def test_predict_files_reports_bad_files_with_and_without_the_cache(trained_model, tmp_path, use_cache):
    # without the cache the files are not hashed first: decoding alone must name every problem
    model, data = trained_model
    clf = load(model)
    clf.use_cache = use_cache
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a jpeg")
    good = sorted((data / "dog").glob("*.png"))[0]
    rows = clf.predict_files([good, tmp_path / "missing.jpg", broken])
    assert rows[0]["label"] == "dog"
    assert rows[1]["reason"] == "unreadable" and "label" not in rows[1]
    assert rows[2]["reason"] in ("not_an_image", "corrupt", "truncated") and "label" not in rows[2]


def test_python_api_is_scikit_learn_shaped(trained_model, tmp_path):
    model, data = trained_model
    clf = ImageClassifier(head="linear", seed=3)
    assert clf.head == "linear" and not hasattr(clf, "classes_")  # the constructor only stores
    with pytest.raises(NotFittedError, match="not fitted"):
        clf.predict([data / "cat" / "cat_000.png"])
    loaded = load(model)
    files = sorted((data / "cat").glob("*.png"))[:2]
    assert loaded.predict(files) == ["cat", "cat"]
    proba = loaded.predict_proba(files)
    assert proba.shape == (2, 3) and abs(proba.sum(1) - 1).max() < 1e-5
    assert loaded.score(data) >= 0.9
    assert clf.fit(data) is clf and clf.classes_ == ["cat", "dog", "fish"]
    clf.save(tmp_path / "again")
    assert load(tmp_path / "again").predict(files) == clf.predict(files)


@pytest.mark.parametrize("make, message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "No images found"),
    (lambda p: make_class_folder(p / "one", classes=("only",), n=3), "only"),
])
def test_bad_data_folders_are_explained(tmp_path, capsys, make, message):
    assert run_cli("train", make(tmp_path), "--out", tmp_path / "m", "--quiet") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_incomplete_or_foreign_model_folders_are_explained(trained_model, tmp_path, capsys):
    model, data = trained_model
    half = tmp_path / "half"
    half.mkdir()
    (half / "head.safetensors").write_bytes((model / "head.safetensors").read_bytes())
    assert run_cli("predict", half, data / "cat", "--quiet") == 2
    assert "missing config.json" in capsys.readouterr().err
    future = tmp_path / "future"
    future.mkdir()
    for f in model.iterdir():
        (future / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((future / "config.json").read_text())
    cfg["format_version"] = 99
    (future / "config.json").write_text(json.dumps(cfg))
    assert run_cli("predict", future, data / "cat", "--quiet") == 2
    assert "format version 99" in capsys.readouterr().err


def test_awkward_images_are_used_as_a_user_expects(tmp_path):
    data = make_class_folder(tmp_path / "d", n=8, size=(48, 48))
    write_image(data / "cat" / "cmyk.jpg", (48, 48), color=(220, 40, 40), mode="CMYK")
    write_image(data / "dog" / "grey.png", (48, 48), color=(40, 180, 60), mode="L")
    write_image(data / "fish" / "palette.gif", (48, 48), color=(50, 70, 220), mode="P")
    (data / "fish" / "empty.jpg").write_bytes(b"")
    clf = ImageClassifier(val_fraction=0.2, test_fraction=0.2).fit(data)
    n_used = sum(sum(v.values()) for v in clf.fit_info_["counts"].values())
    assert n_used == 24 + 3 and clf.fit_info_["n_skipped"] == 1


@pytest.mark.slow
def test_kill_9_during_train_leaves_no_loadable_half_model_and_resumes(tmp_path):
    data = make_class_folder(tmp_path / "d", n=120, size=(96, 96), ext=".jpg")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "headstart.cli", "train", str(data), "--out", str(tmp_path / "m")]
    cache = Path(os.environ["HEADSTART_CACHE_DIR"]) / "features.sqlite"

    def cached_rows() -> int:
        if not cache.exists():
            return 0
        with sqlite3.connect(cache) as db:
            return db.execute("SELECT COUNT(*) FROM features").fetchone()[0]

    before = cached_rows()  # other tests share this run's cache
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and cached_rows() < before + 64:  # some, not all, cached
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "m").exists()
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    n_cached = int(done.stderr.split(" from cache")[0].rsplit("features: ", 1)[1])
    assert 64 <= n_cached < 360
    assert load(tmp_path / "m").predict([data / "cat" / "cat_000.jpg"]) == ["cat"]
