"""Hostile model folders: every tampered folder is refused by one validation step with a
``HeadstartError`` that names the file, says what is wrong and what to do; none allocates the
sizes config.json claims, none loads, none runs code.

The folders are real: a scratch CNN and its head saved by ``save_folder``, then damaged the way
an attacker or a bad copy would.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headstart.backbones import create_backbone
from headstart.errors import HeadstartError
from headstart.heads import Head
from headstart.model.folder import ModelFolder, load_model, save_folder
from headstart.tasks import Multiclass

SPEC = "scratch:conv8-relu-gap"
LABELS = ["cat", "dog", "fish"]


def _good(path: Path) -> Path:
    torch.manual_seed(0)
    bb = create_backbone(SPEC, input_size=32)
    head = Head(bb.feature_dim, len(LABELS), "mlp", hidden=16)
    task = Multiclass(LABELS)
    config = {"backbone": bb.spec(), "backbone_weights_id": "", "preprocess": bb.preprocess.to_dict(),
              "task": task.to_dict(), "labels": list(LABELS), "head": head.config(), "params": {"weights": None}}
    return save_folder(ModelFolder(config, dict(head.state_dict()), dict(bb.state_dict())), path)


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return _good(tmp_path_factory.mktemp("hostile") / "good")


# ---- the ways to damage a folder: each takes the folder and changes it in place ------------
def _config(m: Path, change) -> None:
    c = json.loads((m / "config.json").read_text())
    c = change(c) or c
    (m / "config.json").write_text(json.dumps(c))


def _header(m: Path, name: str = "head.safetensors"):
    data = (m / name).read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write_header(m: Path, header: dict, body: bytes, name: str = "head.safetensors") -> None:
    h = json.dumps(header).encode()
    (m / name).write_bytes(struct.pack("<Q", len(h)) + h + body)


def _lie_offsets(m: Path, overlap: bool) -> None:
    header, body = _header(m)
    first = min((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])
    second = sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])[1]
    if overlap:  # a second tensor reuses the first one's bytes
        size = header[second]["data_offsets"][1] - header[second]["data_offsets"][0]
        header[second]["data_offsets"] = [0, size]
    else:  # a range past the end of the file
        header[first]["data_offsets"] = [0, 10 ** 12]
    _write_header(m, header, body)


def _state_as(m: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(str(m / "head.safetensors"))
    save_file(change(state), str(m / "head.safetensors"))


def _nan(state):
    state["net.1.weight"][0, 0] = float("nan")
    return state


def _symlink(m: Path, name: str, target: str) -> None:
    (m / name).unlink()
    (m / name).symlink_to(target)


def _set_head(key, value):
    def change(c):
        c["head"][key] = value
    return change


def _fifo(m: Path) -> None:
    (m / "head.safetensors").unlink()
    os.mkfifo(m / "head.safetensors")


TAMPERED = {  # name -> (damage, the file the message must name, words the message must hold)
    "header 2^62": (lambda m: (m / "head.safetensors").write_bytes(struct.pack("<Q", 2 ** 62) + b"{}"),
                    "head.safetensors", "header of"),
    "header 1 GB": (lambda m: (m / "head.safetensors").write_bytes(struct.pack("<Q", 2 ** 30) + b"{" * 4096),
                    "head.safetensors", "header of 1,073,741,824 bytes"),
    "offsets past the end": (lambda m: _lie_offsets(m, overlap=False), "head.safetensors", "bytes"),
    "overlapping offsets": (lambda m: _lie_offsets(m, overlap=True), "head.safetensors", "overlapping"),
    "empty weights": (lambda m: (m / "head.safetensors").write_bytes(b""), "head.safetensors", "empty"),
    "truncated weights": (lambda m: (m / "head.safetensors").write_bytes(
        (m / "head.safetensors").read_bytes()[:-100]), "head.safetensors", "truncated"),
    "pickle renamed": (lambda m: (m / "head.safetensors").write_bytes(pickle.dumps({"w": [1.0]}, protocol=2)),
                       "head.safetensors", "pickle"),
    "torch zip renamed": (lambda m: torch.save({"w": torch.ones(2)}, m / "head.safetensors"),
                          "head.safetensors", "zip"),
    "weights link to /etc/passwd": (lambda m: _symlink(m, "head.safetensors", "/etc/passwd"),
                                    "head.safetensors", "outside the model folder"),
    "backbone link to /etc/passwd": (lambda m: _symlink(m, "backbone.safetensors", "/etc/passwd"),
                                     "backbone.safetensors", "outside the model folder"),
    "config link to /etc/passwd": (lambda m: _symlink(m, "config.json", "/etc/passwd"),
                                   "config.json", "outside the model folder"),
    "weights a FIFO": (_fifo, "head.safetensors", "not a regular file"),
    "config a list": (lambda m: (m / "config.json").write_text("[1, 2]"), "config.json", "JSON list"),
    "config not JSON": (lambda m: (m / "config.json").write_bytes(b"{\xff"), "config.json", "not valid JSON"),
    "config of 65 MB": (lambda m: os.truncate(m / "config.json", 65 * 2 ** 20), "config.json", "far more than"),
    "config without head": (lambda m: _config(m, lambda c: c.pop("head") and None), "config.json", "'head'"),
    "config without task": (lambda m: _config(m, lambda c: c.pop("task") and None), "config.json", "'task'"),
    "backbone a string": (lambda m: _config(m, lambda c: c.update(backbone="x")), "config.json", "'backbone'"),
    "weights ../../etc/passwd": (lambda m: _config(m, lambda c: c.update(weights="../../etc/passwd")),
                                 "config.json", "never a path elsewhere"),
    "backbone weights /etc/passwd": (lambda m: _config(m, lambda c: c["backbone"].update(weights="/etc/passwd")),
                                     "config.json", "backbone weights"),
    "negative in_dim": (lambda m: _config(m, _set_head("in_dim", -8)), "config.json", "in_dim -8"),
    "in_dim a string": (lambda m: _config(m, _set_head("in_dim", "8")), "config.json", "in_dim '8'"),
    "wrong in_dim": (lambda m: _config(m, _set_head("in_dim", 9)), "head.safetensors", "disagree"),
    "in_dim 2,000,000": (lambda m: _config(m, _set_head("in_dim", 2_000_000)), "head.safetensors", "disagree"),
    "in_dim 10^7": (lambda m: _config(m, _set_head("in_dim", 10 ** 7)), "head.safetensors", "disagree"),
    "hidden 10^9": (lambda m: _config(m, _set_head("hidden", 10 ** 9)), "head.safetensors", "disagree"),
    "unknown head kind": (lambda m: _config(m, _set_head("kind", "transformer")), "config.json", "head kind"),
    "NaN in the head": (lambda m: _state_as(m, _nan), "head.safetensors", "NaN"),
    "head cast to int8": (lambda m: _state_as(m, lambda s: {k: v.to(torch.int8) for k, v in s.items()}),
                          "head.safetensors", "I8"),
    "scratch without backbone.safetensors": (lambda m: (m / "backbone.safetensors").unlink(), "backbone.safetensors",
                                             "is missing"),
    "backbone of another CNN": (lambda m: _config(m, lambda c: c["backbone"].update(name="scratch:conv9-relu-gap")),
                                "backbone.safetensors", "missing ['body.0.conv9.bias'"),
    "backbone spec that cannot be built": (lambda m: _config(m, lambda c: c["backbone"].update(channels=2)),
                                           "config.json", "cannot be built"),
    "format_version '1'": (lambda m: _config(m, lambda c: c.update(format_version="1")), "config.json",
                           "format_version '1' (str); it must be the integer 1"),
    "format_version 2": (lambda m: _config(m, lambda c: c.update(format_version=2)), "config.json", "version 2"),
    "labels disagree with the task": (lambda m: _config(m, lambda c: c.update(labels=["dog", "cat", "fish"])),
                                      "config.json", "task's labels"),
    "labels not names": (lambda m: _config(m, lambda c: c.update(labels=[[1], {"a": 2}, None])), "config.json",
                         "expected a list of labels"),
    "unknown task setting": (lambda m: _config(m, lambda c: c["task"].update(evil=1)), "config.json", "cannot rebuild"),
    "out_dim disagrees with the task": (lambda m: _config(m, lambda c: c["task"].update(labels=["a", "b", "c", "d"])
                                                          or c.update(labels=["a", "b", "c", "d"])),
                                        "config.json", "needs 4"),
}


@pytest.fixture
def tampered(good, tmp_path):
    def make(name: str) -> Path:
        m = tmp_path / "model"
        shutil.copytree(good, m)
        TAMPERED[name][0](m)
        return m
    return make


def test_the_untouched_folder_loads(good):
    saved = load_model(good)
    assert saved.labels == LABELS and saved.head.in_dim == saved.backbone.feature_dim


@pytest.mark.parametrize("name", list(TAMPERED))
def test_a_tampered_folder_is_refused_by_name(tampered, name):
    m = tampered(name)
    _, file, words = TAMPERED[name]
    with pytest.raises(HeadstartError) as e:
        load_model(m)
    msg = str(e.value)
    assert str(m / file) in msg, msg
    assert words in msg, msg
    assert any(fix in msg for fix in ("retrain", "Retrain", "Restore", "Copy", "Replace", "Convert", "Use the")), msg


def _vm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", ["in_dim 2,000,000", "in_dim 10^7", "hidden 10^9"])
def test_sizes_in_config_are_not_allocated_before_the_weights_confirm_them(tampered, name):
    m = tampered(name)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    # 512 MB more address space than now: 2,000,000 x 16 floats (128 MB) would fit, but the
    # 10^7 and 10^9 sizes (GBs to TBs) would fail with a MemoryError instead of the refusal.
    resource.setrlimit(resource.RLIMIT_AS, (_vm_bytes() + 512 * 2 ** 20, hard))
    try:
        with pytest.raises(HeadstartError, match="disagree"):
            load_model(m)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.mark.parametrize("name", list(TAMPERED))
def test_predict_refuses_each_tampered_folder_with_one_line(tampered, tmp_path, capsys, name):
    from conftest import write_image

    from headstart.cli.main import main

    m = tampered(name)
    rc = main(["predict", str(m), str(write_image(tmp_path / "a.png")), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 2 and out == "" and err.startswith("error: ") and str(m / TAMPERED[name][1]) in err, err


def test_the_command_exits_2_without_a_traceback(good, tmp_path):
    from conftest import write_image

    m = tmp_path / "m"
    shutil.copytree(good, m)
    TAMPERED["hidden 10^9"][0](m)
    r = subprocess.run([sys.executable, "-m", "headstart.cli", "predict", str(m), str(write_image(tmp_path / "a.png"))],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stdout == "", r.stderr
    assert str(m / "head.safetensors") in r.stderr and "disagree" in r.stderr, r.stderr


# ---- a fine-tuned named backbone: its weights checked against the architecture's shapes ----
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory) -> tuple[Path, dict]:
    bb = create_backbone("efficientnet_lite0")
    head = Head(bb.feature_dim, len(LABELS), "linear")
    task = Multiclass(LABELS)
    config = {"backbone": bb.spec(), "backbone_weights_id": "finetuned-test", "preprocess": bb.preprocess.to_dict(),
              "task": task.to_dict(), "labels": list(LABELS), "head": head.config(), "params": {"weights": None}}
    state = dict(bb.state_dict())
    return save_folder(ModelFolder(config, dict(head.state_dict()), state),
                       tmp_path_factory.mktemp("finetuned") / "good"), (config, head, state)


@pytest.mark.parametrize("damage, words", [
    ("shape", "of shape [8, 3, 3, 3], but the backbone 'efficientnet_lite0' that config.json names needs [32, 3, 3, 3]"),
    ("missing", "missing ['model.conv_head.weight']"),
    ("int", "needs floating-point values"),
])
def test_a_tampered_finetuned_backbone_is_refused_before_it_is_built(finetuned, tmp_path, damage, words):
    good, (config, head, state) = finetuned
    assert load_model(good).backbone.weights_id == "finetuned-test"
    bad = dict(state)
    if damage == "shape":
        bad["model.conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    elif damage == "missing":
        del bad["model.conv_head.weight"]
    else:
        bad["model.conv_head.weight"] = bad["model.conv_head.weight"].to(torch.int8)
    m = save_folder(ModelFolder(config, dict(head.state_dict()), bad), tmp_path / "m")
    with pytest.raises(HeadstartError) as e:
        load_model(m)
    msg = str(e.value)
    assert str(m / "backbone.safetensors") in msg and words in msg and "etrain" in msg, msg
