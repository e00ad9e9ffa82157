"""Each training run leaves a record in its model folder; `headstart runs` lists and compares them."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from headstart.cli.main import main


def test_a_model_folder_records_its_epochs_and_runs_compares_folders(trained_model, tmp_path, capsys):
    model, _ = trained_model
    config = json.loads((model / "config.json").read_text())
    rows = list(csv.DictReader((model / "history.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [h["epoch"] for h in config["history"]]
    assert {"loss", "val_score", "val_loss"} <= set(rows[0])
    assert float(rows[-1]["loss"]) == config["history"][-1]["loss"]

    runs = tmp_path / "runs"
    shutil.copytree(model, runs / "a")
    shutil.copytree(model, runs / "nested" / "b")
    other = json.loads((runs / "nested" / "b" / "config.json").read_text())
    other["params"]["head"], other["created"] = "linear", "2099-01-01T00:00:00"
    (runs / "nested" / "b" / "config.json").write_text(json.dumps(other))
    (runs / "junk").mkdir()
    (runs / "junk" / "config.json").write_text("[not a model")
    assert main(["runs", str(runs), "--json", str(tmp_path / "runs.json")]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "created", "task"] and lines[0].split()[-1] == "head"  # only what differs
    assert str(runs / "a") in lines[2] and str(runs / "nested" / "b") in lines[3]  # oldest first
    assert lines[2].split()[-1] == "mlp" and lines[3].split()[-1] == "linear"
    listed = json.loads((tmp_path / "runs.json").read_text())
    assert [r["validation"] for r in listed] == [format(config["metrics"]["validation"]["score"], ".4f")] * 2
    assert "seed" not in listed[0]  # settings that agree are not columns


def test_runs_says_what_to_give_when_it_finds_no_model(tmp_path, capsys):
    assert main(["runs", str(tmp_path)]) == 2
    assert "no model folders" in capsys.readouterr().err


def test_runs_are_logged_for_tensorboard_with_the_real_library(trained_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, _ = trained_model
    config = json.loads((model / "config.json").read_text())
    assert main(["runs", str(model), "--tensorboard", str(tmp_path / "tb")]) == 0
    events = EventAccumulator(str(tmp_path / "tb" / model.name)).Reload()
    loss = events.Scalars("epoch/loss")
    assert [e.step for e in loss] == [h["epoch"] for h in config["history"]]
    assert loss[-1].value == pytest.approx(config["history"][-1]["loss"])


def test_train_refuses_to_replace_a_model_unless_told(trained_model, tmp_path, capsys):
    from conftest import folder_state

    model, data = trained_model
    out = tmp_path / "model"
    shutil.copytree(model, out)
    before = folder_state(out)
    assert main(["train", str(data), "--out", str(out), "--quiet", "--no-report"]) == 2
    err = capsys.readouterr().err
    assert "already holds a model, trained" in err and "--overwrite" in err
    assert folder_state(out) == before
    assert main(["train", str(data), "--out", str(out), "--quiet", "--no-report", "--overwrite"]) == 0
    assert folder_state(out) != before  # replaced, as asked


def test_a_model_folder_and_its_files_follow_the_umask(tmp_path):
    import os
    import stat

    from headstart.paths import atomic_dir, atomic_write_text

    with atomic_dir(tmp_path / "m") as tmp:
        (tmp / "config.json").write_text("{}")
    atomic_write_text(tmp_path / "m" / "report.html", "<p>")
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "m").stat().st_mode) == 0o777 & ~mask
    assert stat.S_IMODE((tmp_path / "m" / "report.html").stat().st_mode) == 0o666 & ~mask
