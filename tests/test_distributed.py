"""``headstart train --distributed`` under torchrun (gloo, CPU): 2 processes reach the same
accuracy as 1 on a tiny data set, and only rank 0 writes the model folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_class_folder

SPEC = "scratch:conv8-bn-relu-maxpool,conv16-bn-relu-gap"


def _torchrun(n: int, data: Path, out: Path) -> dict:
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", f"--nproc-per-node={n}", "-m", "headstart.cli", "train", str(data),
           "--backbone", SPEC, "--input-size", "32", "--epochs", "8", "--distributed", "--no-report",
           "--quiet", "--val-fraction", "0.2", "--test-fraction", "0.2", "--out", str(out),
           "--json", str(out) + ".json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    assert r.stdout.count("model saved to") == 1  # rank 0 only
    return json.loads(Path(str(out) + ".json").read_text())


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    if shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("torchrun is not installed beside this Python")
    data = make_class_folder(tmp_path / "photos", n=16)
    one = _torchrun(1, data, tmp_path / "model1")
    two = _torchrun(2, data, tmp_path / "model2")
    a1, a2 = one["test"]["accuracy"], two["test"]["accuracy"]
    assert a1 >= 0.8 and a2 >= 0.8, (a1, a2)   # colour classes: both learn them
    assert abs(a1 - a2) <= 0.2, (a1, a2)       # within noise of ~10 test images
    assert (tmp_path / "model2" / "config.json").exists()


def test_distributed_outside_torchrun_says_how_to_launch(class_folder, tmp_path, capsys, monkeypatch):
    from headstart.cli import main

    monkeypatch.delenv("RANK", raising=False)
    assert main(["train", str(class_folder), "--backbone", SPEC, "--distributed", "--quiet",
                 "--out", str(tmp_path / "m")]) == 2
    assert "--distributed runs under torchrun" in capsys.readouterr().err


def test_distributed_refuses_a_pretrained_backbone(class_folder, tmp_path, capsys):
    from headstart.cli import main

    assert main(["train", str(class_folder), "--distributed", "--quiet", "--out", str(tmp_path / "m")]) == 2
    assert "--distributed trains a CNN built from scratch" in capsys.readouterr().err
