"""``headstart train --distributed`` under torchrun (gloo, CPU): 2 processes reach the same
accuracy as 1 on a tiny data set, and only rank 0 writes the model folder.

``--finetune --distributed`` and ``--finetune --ray`` (Ray Train, local Ray of 2 CPUs): the
same steps as one process (weights equal to ~1e-6 with the head's dropout off), the same kind
of model folder, and a resume after kill -9. Launching torchrun or Ray takes 20-60 s on the
shared 2-core machine, so these are marked slow (``make test-cluster`` runs them).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
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
    from headstart.cli.main import main

    monkeypatch.delenv("RANK", raising=False)
    assert main(["train", str(class_folder), "--backbone", SPEC, "--distributed", "--quiet",
                 "--out", str(tmp_path / "m")]) == 2
    assert "--distributed runs under torchrun" in capsys.readouterr().err


def test_distributed_refuses_a_pretrained_backbone(class_folder, tmp_path, capsys):
    from headstart.cli.main import main

    assert main(["train", str(class_folder), "--distributed", "--quiet", "--out", str(tmp_path / "m")]) == 2
    assert "distributed=True (--distributed) trains a CNN built from scratch" in capsys.readouterr().err


# ---- --finetune --distributed --------------------------------------------------------------
RUN = Path(__file__).with_name("ddp_finetune_run.py")


def _need_torchrun() -> Path:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed beside this Python")
    return torchrun


def _last_epoch_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(folder / "checkpoint.safetensors")).items() if k.startswith("model.")}


def assert_same_steps(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Weights of one process (``a``) and of a distributed run (``b``) after the same steps: equal up
    to the order of float sums, which AdamW amplifies on near-zero gradients to ~1e-5 (seen: 9e-6,
    and once just over 1e-5); processes that did not average would differ by about the learning
    rate (1e-3) per step."""
    assert a.keys() == b.keys()
    for k in a:
        diff = (b[k] - a[k]).abs().max().item()
        assert diff < 5e-5, f"{k}: weights differ by up to {diff:.2e}"


@pytest.mark.slow
def test_ddp_finetune_takes_the_same_steps_as_one_process(tmp_path):
    torchrun = _need_torchrun()
    data = make_class_folder(tmp_path / "data", n=8, size=(40, 40))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, str(RUN), str(data), str(tmp_path / "one")], check=True, env=env,
                   capture_output=True, timeout=600)
    two = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node=2", str(RUN), str(data),
                          str(tmp_path / "two")], check=False, env=env, capture_output=True,
                          text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-4000:]
    a, b = _last_epoch_weights(tmp_path / "one"), _last_epoch_weights(tmp_path / "two")
    assert_same_steps(a, b)  # half a batch on each process + DDP's average = the whole batch on one
    h1, h2 = (json.loads((tmp_path / d / "result.json").read_text())["history"] for d in ("one", "two"))
    assert [r["val_score"] for r in h1] == [r["val_score"] for r in h2]
    assert [r["loss"] for r in h2] == pytest.approx([r["loss"] for r in h1], rel=1e-5)


def _train_finetune(data: Path, out: Path, *, processes: int = 0, epochs: int = 4,
                    popen: bool = False) -> subprocess.CompletedProcess | subprocess.Popen:
    """``train --finetune 1`` on one process (processes=0) or under torchrun --distributed."""
    args = ["-m", "headstart.cli", "train", str(data), "--out", str(out), "--finetune", "1", "--finetune-epochs",
            str(epochs), "--no-report", "--val-fraction", "0.25", "--test-fraction", "0.2",
            "--json", str(out) + ".json"]
    if processes:
        cmd = [str(_need_torchrun()), "--standalone", f"--nproc-per-node={processes}", *args, "--distributed"]
    else:
        cmd = [sys.executable, *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HEADSTART_CACHE_DIR": str(out) + ".cache"}  # nothing shared
    if popen:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return subprocess.run(cmd, check=False, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_cli_finetune_distributed_matches_one_process(tmp_path):
    from headstart import load

    data = make_class_folder(tmp_path / "data", n=8, size=(40, 40))
    one = _train_finetune(data, tmp_path / "one")
    assert one.returncode == 0, one.stderr[-3000:]
    two = _train_finetune(data, tmp_path / "two", processes=2)
    assert two.returncode == 0, two.stderr[-4000:]
    assert two.stdout.count("model saved to") == 1 and two.stdout.count("fine-tuned the last 1 stages") == 1
    assert "on each of 2 processes" in two.stderr  # the frozen part's activations were split
    m1, m2 = (json.loads(Path(str(tmp_path / d) + ".json").read_text()) for d in ("one", "two"))
    a1, a2 = m1["test"]["accuracy"], m2["test"]["accuracy"]
    assert a1 >= 0.8 and a2 >= 0.8 and abs(a1 - a2) <= 0.2, (a1, a2)
    assert m1["finetune"]["best_epoch"] == m2["finetune"]["best_epoch"]
    # the same kind of model folder, and the same predictions on this easy data set
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(p.name for p in (tmp_path / "two").iterdir())
    files = sorted(data.rglob("*.png"))
    assert load(tmp_path / "two").predict(files) == load(tmp_path / "one").predict(files)
    assert not (tmp_path / ".two.checkpoint").exists()  # removed once the model folder is written


@pytest.mark.slow
def test_cli_finetune_distributed_resumes_after_kill_9(tmp_path):
    from safetensors import safe_open

    data = make_class_folder(tmp_path / "data", n=8, size=(40, 40))
    out, epochs = tmp_path / "model", 8
    ckpt = tmp_path / ".model.checkpoint" / "checkpoint.safetensors"
    proc = _train_finetune(data, out, processes=2, epochs=epochs, popen=True)
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    _kill_9_tree(proc.pid)  # torchrun and both ranks (torchrun starts them in their own sessions)
    proc.wait()
    assert ckpt.exists(), "the run ended before its first checkpoint"
    with safe_open(str(ckpt), "pt") as f:
        killed_at = json.loads(f.metadata()["headstart"])["epoch"]
    assert killed_at < epochs and not (out / "config.json").exists()
    again = _train_finetune(data, out, processes=2, epochs=epochs)
    assert again.returncode == 0, again.stderr[-4000:]
    assert f"resumed from the checkpoint after epoch {killed_at}" in again.stderr
    assert (out / "config.json").exists() and not ckpt.exists()


def _kill_9_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process below it (found through /proc), children first."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    for p in reversed(tree):
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_distributed_and_ray_together_are_refused(class_folder, tmp_path, capsys):
    from headstart.cli.main import main

    assert main(["train", str(class_folder), "--finetune", "1", "--distributed", "--ray", "--quiet",
                 "--out", str(tmp_path / "m")]) == 2
    assert "give one of them" in capsys.readouterr().err


def test_finetune_with_ray_but_without_ray_train_says_how_to_install(class_folder, tmp_path, capsys, monkeypatch):
    from headstart.cli.main import main

    monkeypatch.setitem(sys.modules, "ray.train.torch", None)  # import -> ImportError
    assert main(["train", str(class_folder), "--finetune", "1", "--ray", "--quiet", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "runs the fine-tune on Ray Train, which is not installed" in err and "headstart[cluster]" in err


# ---- --finetune --ray: Ray Train's TorchTrainer ----------------------------------------------
@pytest.fixture(scope="module")
def ray_train(local_ray):
    pytest.importorskip("ray.train.torch", reason="Ray Train comes with headstart[cluster]")
    return local_ray


@pytest.mark.slow
def test_ray_train_finetune_takes_the_same_steps_as_one_process(ray_train, tmp_path):
    from headstart import ImageClassifier
    from headstart.heads import Head
    from headstart.training.finetune import FinetuneConfig, finetune
    from headstart.training.finetune_distributed import ray_loop

    data = make_class_folder(tmp_path / "data", n=8, size=(40, 40))
    clf = ImageClassifier(val_fraction=0.25, test_fraction=0.0, head="linear", verbose=False).fit(data)
    head = Head(clf.head_.in_dim, clf.head_.out_dim, "linear", input_dropout=0.0)  # no dropout: deterministic
    head.load_state_dict(clf.head_.state_dict())
    part = {k: [s for s in clf.dataset_.samples if s.split == k] for k in ("train", "val")}
    train, val = ([[s.path for s in part[k]], [s.digest for s in part[k]], [s.label for s in part[k]]]
                  for k in ("train", "val"))
    config = FinetuneConfig(stages=1, epochs=3, patience=10, lr_body=1e-3, lr_head=1e-3)
    torch.set_num_threads(1)
    one = finetune(clf.backbone_, head, clf.task_, train, val, config, checkpoint_dir=tmp_path / "one")
    two = ray_loop(workers=2)(clf.backbone_, head, clf.task_, train, val, config, checkpoint_dir=tmp_path / "two")
    a, b = _last_epoch_weights(tmp_path / "one"), _last_epoch_weights(tmp_path / "two")
    assert_same_steps(a, b)
    assert [r["loss"] for r in two.history] == pytest.approx([r["loss"] for r in one.history], rel=1e-5)
    # the weights that came back through Ray Train's checkpoint are the loop's result
    assert_same_steps(one.head.state_dict(), two.head.state_dict())
    assert two.backbone.weights_id.startswith("finetuned-")


@pytest.mark.slow
def test_cli_train_finetune_on_ray_train(ray_train, tmp_path, capsys):
    from headstart import load
    from headstart.cli.main import main

    data = make_class_folder(tmp_path / "data", n=8, size=(40, 40))
    assert main(["train", str(data), "--out", str(tmp_path / "model"), "--finetune", "1", "--finetune-epochs", "3",
                 "--ray", "--finetune-workers", "2", "--no-report", "--val-fraction", "0.25",
                 "--test-fraction", "0.2"]) == 0
    captured = capsys.readouterr()
    assert "fine-tuning on Ray Train: 2 workers x 1 CPUs" in captured.err
    assert "fine-tuned the last 1 stages" in captured.out and "model saved to" in captured.out
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["metrics"]["test"]["accuracy"] >= 0.8 and "finetune" in config["metrics"]
    assert load(tmp_path / "model").predict(sorted(data.rglob("*.png"))[:3])
