"""``train --finetune``: bad options, checkpoints that resume after kill -9 to the same result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import make_class_folder
from headstart.cli.main import main
from headstart.errors import HeadstartError


def test_bare_finetune_flag_trains_the_default_number_of_stages():
    """``--finetune`` without N must mean the recipe ``FinetuneConfig`` documents (the CLI keeps
    its own copy of the number so that ``--help`` does not import torch)."""
    import argparse

    from headstart.cli import train as cli_train
    from headstart.training.finetune import DEFAULT_STAGES, FinetuneConfig

    p = argparse.ArgumentParser()
    cli_train.add_finetune_arguments(p)
    assert p.parse_args(["--finetune"]).finetune == DEFAULT_STAGES == FinetuneConfig().stages
    assert p.parse_args(["--finetune", "1"]).finetune == 1
    assert p.parse_args([]).finetune is None


def test_one_view_activations_are_cached_once_for_every_seed():
    """One view is the plain image, so another seed must reuse its cached activations; augmented
    views depend on the seed, so they must not."""
    from headstart.backbones import create_backbone
    from headstart.training.finetune import activations_path

    bb = create_backbone()
    assert activations_path(bb, 6, ["a", "b"], 1, 0) == activations_path(bb, 6, ["a", "b"], 1, 1)
    assert activations_path(bb, 6, ["a", "b"], 2, 0) != activations_path(bb, 6, ["a", "b"], 2, 1)
    assert activations_path(bb, 6, ["a", "b"], 1, 0) != activations_path(bb, 6, ["a", "b"], 2, 0)
    assert activations_path(bb, 6, ["a", "b"], 1, 0) != activations_path(bb, 5, ["a", "b"], 1, 0)


def test_finetune_more_stages_than_the_backbone_has(class_folder, tmp_path, capsys):
    assert main(["train", str(class_folder), "--out", str(tmp_path / "m"), "--finetune", "10", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--finetune 10: efficientnet_lite0 has 9 stages" in err and "between 1 and 9" in err
    assert not (tmp_path / "m").exists()


def test_finetune_with_a_scratch_backbone_explains_itself(class_folder, tmp_path, capsys):
    assert main(["train", str(class_folder), "--out", str(tmp_path / "m"), "--backbone",
                 "scratch:conv8-bn-relu-gap", "--finetune", "--quiet"]) == 2
    assert "built from scratch: every layer is already trained" in capsys.readouterr().err


def test_resume_needs_a_checkpoint(class_folder, tmp_path, capsys):
    assert main(["train", str(class_folder), "--out", str(tmp_path / "m"), "--finetune", "--resume"]) == 2
    assert "--resume: no fine-tuning checkpoint" in capsys.readouterr().err


def test_checkpoint_refuses_other_settings(tmp_path):
    from headstart.training.checkpoint import Checkpoint

    m = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    Checkpoint(tmp_path, {"data": "abc", "finetune epochs": 8}).save(1, m, opt)
    with pytest.raises(HeadstartError, match="setting 'finetune epochs' differs \\(checkpoint 8, this run 9\\)"):
        Checkpoint(tmp_path, {"data": "abc", "finetune epochs": 9}).restore(m, opt)


def test_checkpoint_round_trip_is_exact_and_pickle_free(tmp_path):
    from safetensors import safe_open

    from headstart.training.checkpoint import Checkpoint

    def run(stop: int | None, folder: Path):
        torch.manual_seed(0)
        gen = torch.Generator().manual_seed(1)
        m = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.3), torch.nn.Linear(8, 2))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 / (1 + s))
        ck = Checkpoint(folder, {"lr": 1e-2})
        start = ck.restore(m, opt, sched, {"gen": gen}).epoch if ck.exists() else 0
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(5))
        y = (x[:, 0] > 0).long()
        for epoch in range(start, 6):
            idx = torch.randperm(32, generator=gen)[:16]
            loss = torch.nn.functional.cross_entropy(m(x[idx]), y[idx])  # dropout: global RNG
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            ck.save(epoch + 1, m, opt, sched, {"gen": gen})
            if stop == epoch + 1:
                return None
        return torch.cat([p.detach().flatten() for p in m.parameters()])

    straight = run(None, tmp_path / "a")
    run(3, tmp_path / "b")
    resumed = run(None, tmp_path / "b")
    assert torch.equal(straight, resumed)
    with safe_open(str(tmp_path / "b" / "checkpoint.safetensors"), "pt") as f:  # tensors + JSON only
        assert json.loads(f.metadata()["headstart"])["epoch"] == 6
        assert "optim.0.exp_avg" in f.keys()


def test_patience_counts_from_the_end_of_warm_up(class_folder):
    """With nothing learned (learning rates 0) no epoch beats the start; patience 1 after 3
    warm-up epochs stops after epoch 4, where counting from epoch 0 would stop after 1."""
    from headstart.backbones import create_backbone
    from headstart.heads import Head
    from headstart.tasks import make_task
    from headstart.training.finetune import FinetuneConfig, finetune

    files = sorted(class_folder.rglob("*.png"))
    labels = [f.parent.name for f in files]
    task = make_task("multiclass")
    task.fit_targets(labels)
    backbone = create_backbone()
    head = Head(backbone.feature_dim, task.out_dim)
    part = (files, [f"digest-{f.name}" for f in files], labels)
    config = FinetuneConfig(stages=1, epochs=6, warmup=0.5, patience=1, lr_body=0.0, lr_head=0.0, views=1)
    r = finetune(backbone, head, task, part, part, config, engine="torch")
    assert [h["epoch"] for h in r.history] == [1, 2, 3, 4] and r.best_epoch == 0


def _train_cmd(data: Path, out: Path, epochs: int) -> list[str]:
    return [sys.executable, "-m", "headstart.cli", "train", str(data), "--out", str(out), "--finetune", "1",
            "--finetune-epochs", str(epochs), "--no-report", "--val-fraction", "0.25", "--test-fraction", "0.2"]


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    bb = model_dir / "backbone.safetensors"  # absent when the frozen head was kept
    return {**{f"head.{k}": v for k, v in load_file(str(model_dir / "head.safetensors")).items()},
            **({f"bb.{k}": v for k, v in load_file(str(bb)).items()} if bb.exists() else {})}


@pytest.mark.slow
def test_finetune_resumes_after_kill_9_to_the_same_result(tmp_path):
    from safetensors import safe_open

    data = make_class_folder(tmp_path / "data", n=8, size=(40, 40))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # same threads in every run: same floating-point sums
    epochs = 6
    straight = tmp_path / "straight"
    subprocess.run(_train_cmd(data, straight, epochs), check=True, env=env, capture_output=True)

    out = tmp_path / "resumed"
    ckpt = out.parent / f".{out.name}.checkpoint" / "checkpoint.safetensors"
    proc = subprocess.Popen(_train_cmd(data, out, epochs), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "the run ended before its first checkpoint"
    with safe_open(str(ckpt), "pt") as f:
        killed_at = json.loads(f.metadata()["headstart"])["epoch"]
    assert killed_at < epochs and not (out / "config.json").exists()

    # Other settings: refused, naming the setting.
    bad = subprocess.run(_train_cmd(data, out, epochs + 1), env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "setting 'finetune epochs' differs" in bad.stderr

    again = subprocess.run(_train_cmd(data, out, epochs), env=env, capture_output=True, text=True, check=True)
    assert f"resumed from the checkpoint after epoch {killed_at}" in again.stderr
    a, b = _weights(straight), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    ca = json.loads((straight / "config.json").read_text())["metrics"]["finetune"]
    cb = json.loads((out / "config.json").read_text())["metrics"]["finetune"]
    assert [r["val_score"] for r in ca["history"]] == [r["val_score"] for r in cb["history"]]
    assert not ckpt.exists()  # a finished run cleans up its checkpoint


@pytest.mark.slow
def test_finetuned_model_folder_loads_and_predicts(tmp_path):
    """Fine-tuned EfficientNet weights are saved in the folder and used on load."""
    from headstart import ImageClassifier, load
    from headstart.training.finetune import FinetuneConfig, finetune

    data = make_class_folder(tmp_path / "data", n=6, size=(40, 40))
    clf = ImageClassifier(val_fraction=0.25, test_fraction=0.2).fit(data)
    part = {k: [s for s in clf.dataset_.samples if s.split == k] for k in ("train", "val")}
    train, val = ([[s.path for s in part[k]], [s.digest for s in part[k]], [s.label for s in part[k]]]
                  for k in ("train", "val"))
    r = finetune(clf.backbone_, clf.head_, clf.task_, train, val, FinetuneConfig(stages=1, epochs=1, lr_body=1e-2))
    clf.backbone_, clf.head_ = r.backbone, r.head
    assert clf.backbone_.weights_id.startswith("finetuned-")
    clf.save(tmp_path / "m")
    assert (tmp_path / "m" / "backbone.safetensors").exists()
    again = load(tmp_path / "m")
    files = sorted((tmp_path / "data").rglob("*.png"))[:4]
    np.testing.assert_allclose(again.predict_proba(files), clf.predict_proba(files), atol=1e-4)
    saved, tuned = again.backbone_.state_dict(), clf.backbone_.state_dict()
    assert all(torch.equal(saved[k], tuned[k]) for k in tuned)
