"""CNNs built from scratch, trained end to end: from a folder of real PNGs to a model folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from headstart import HeadstartError, ImageClassifier, load
from headstart.cli.main import main
from headstart.data.transforms import Preprocess
from headstart.training.end_to_end import (
    EndToEndConfig,
    augment,
    decode_to_uint8,
    predict_scores,
    train_end_to_end,
)

SPEC = "scratch:conv8-bn-relu-maxpool,conv16-bn-relu-gap"


def stripes(n: int, size: int = 20, seed: int = 0, colour: bool = False) -> tuple[np.ndarray, list[str]]:
    """n images of vertical or horizontal stripes (random period and phase, noise): an easy
    task that only a model looking at spatial structure can solve (both classes have the same
    mean brightness)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        period = int(rng.integers(4, 8))
        line = np.where((np.arange(size) + rng.integers(0, period)) % period < period // 2, 210, 40)
        img = np.tile(line, (size, 1)).astype(np.int16)  # vertical stripes
        label = "vertical"
        if i % 2:
            img, label = img.T, "horizontal"
        img = img + rng.integers(-25, 26, img.shape)
        if colour:  # stripes in a random colour
            img = img[..., None] * rng.uniform(0.3, 1.0, 3)
        images.append(np.clip(img, 0, 255).astype(np.uint8))
        labels.append(label)
    return np.stack(images), labels


def stripes_folder(root: Path, n: int = 60, colour: bool = False, size: int = 20) -> Path:
    x, y = stripes(n, size, colour=colour)
    for i, (img, label) in enumerate(zip(x, y)):
        path = root / label / f"{label}_{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
    return root


def test_scratch_cnn_learns_stripes_from_a_grey_folder_and_round_trips(tmp_path):
    data = stripes_folder(tmp_path / "data", n=100)
    clf = ImageClassifier(SPEC, epochs=8, input_size=20, val_fraction=0.15, test_fraction=0.15,
                          engine="torch")
    clf.fit(data)
    assert clf.backbone_.preprocess.channels == 1  # grey PNGs stay one channel
    assert clf.metrics_["test"]["accuracy"] >= 0.9, clf.history_
    assert clf.fit_info_["end_to_end"]["best_epoch"] >= 1
    assert not clf.backbone_.pretrained and clf.backbone_.weights_id.startswith("trained-")

    files = sorted(data.rglob("*.png"))[:12]
    before = clf.predict_proba(files)
    clf.save(tmp_path / "model")
    assert (tmp_path / "model" / "backbone.safetensors").is_file()
    again = load(tmp_path / "model", engine="torch")
    assert again.backbone_.preprocess.channels == 1
    np.testing.assert_allclose(again.predict_proba(files), before, atol=1e-4)
    assert again.predict(files) == clf.predict(files)


def test_colour_folder_keeps_three_channels_and_the_cli_trains_it(tmp_path, capsys):
    data = stripes_folder(tmp_path / "data", n=40, colour=True)
    rc = main(["train", str(data), "--backbone", SPEC, "--input-size", "16", "--resize", "stretch",
               "--epochs", "2", "--out", str(tmp_path / "model"), "--quiet", "--no-report"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "model saved to" in out
    clf = load(tmp_path / "model")
    assert clf.backbone_.preprocess.channels == 3
    assert clf.backbone_.preprocess.resize == "stretch" and clf.backbone_.input_size == 16


def test_bad_resize_value_names_it_and_the_choices(tmp_path, capsys):
    data = stripes_folder(tmp_path / "data", n=20)
    rc = main(["train", str(data), "--backbone", SPEC, "--resize", "squash", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'squash'" in err and "crop, pad, stretch" in err
    with pytest.raises(HeadstartError, match="apply to CNNs built from scratch"):
        ImageClassifier(resize="pad").fit(data)


def test_pad_letterboxes_with_the_mean_colour(tmp_path):
    wide = Image.fromarray(np.full((10, 40, 3), 250, np.uint8))  # 40 wide, 10 high
    p = Preprocess(input_size=20, resize_size=20, mean=(0.5,) * 3, std=(0.5,) * 3,
                   interpolation="bilinear", resize="pad")
    x, failures = decode_to_uint8([wide], p)
    assert not failures and x.shape == (1, 20, 20, 3)
    assert (x[0, :7] == 128).all() and (x[0, -7:] == 128).all()  # bars above and below
    assert (x[0, 8:12] == 250).all()                               # the image in the middle


def test_augment_shifts_by_whole_pixels_and_flips_only_when_asked():
    gen = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 16 * 16, dtype=torch.float32).reshape(2, 1, 16, 16) / 512
    same = augment(x, EndToEndConfig(flip=False, shift=0.0), gen)
    torch.testing.assert_close(same, x)  # no shift, no flip: untouched (not blurred)
    moved = augment(x, EndToEndConfig(flip=False, shift=0.2), gen)
    inside = np.append(x.numpy().ravel(), 0.0)
    gap = np.abs(moved.numpy().ravel()[:, None] - inside[None]).min(1)
    assert gap.max() < 1e-5  # whole pixels: every value is an input value (or the border)
    assert not torch.allclose(moved, x)


def test_early_stopping_keeps_the_best_epoch():
    """Validation labels are the opposite of the training labels: the better the model fits
    the training set, the worse validation gets, so training stops early and must return the
    weights of its best validation epoch, not the last."""
    from headstart.backbones import create_backbone
    from headstart.tasks import Multiclass

    x, y = stripes(64, 16)
    xv, yv = stripes(32, 16, seed=1)
    flipped = ["vertical" if v == "horizontal" else "horizontal" for v in yv]
    bb = create_backbone(SPEC, input_size=16, channels=1)
    task = Multiclass().fit_targets(y)  # softmax over 2 classes: no threshold tuned afterwards
    res = train_end_to_end(bb, task, x[..., None], y, xv[..., None], flipped,
                           EndToEndConfig(epochs=15, patience=3, lr=3e-3))
    scores = [r["val_score"] for r in res.history]
    assert res.best_epoch == int(np.argmax(scores)) + 1
    assert res.stopped_early and len(res.history) < 15
    assert scores[-1] < res.val_score  # the last epoch was worse than the one kept
    now = task.selection_score(predict_scores(res.model, task, xv[..., None]), flipped)
    assert now == pytest.approx(res.val_score)


class _Interrupted(Exception):
    pass


def _stop_after(epoch: int):
    """A ``log`` callback that interrupts training right after ``epoch`` (its checkpoint is written)."""
    def log(msg: str) -> None:
        if msg.startswith(f"epoch {epoch}/"):
            raise _Interrupted(msg)
    return log


@pytest.fixture
def one_thread(torch_threads):
    """Bit-identical CPU runs need a fixed thread count (float sums in another order differ)."""
    torch_threads(1)


def test_interrupted_then_resumed_run_ends_with_the_same_weights(tmp_path, one_thread):
    from headstart.backbones import create_backbone
    from headstart.tasks import Multiclass

    x, y = stripes(48, 16, colour=True)
    xv, yv = stripes(16, 16, seed=1, colour=True)
    cfg = EndToEndConfig(epochs=4, patience=10, threads=1, bf16="on", dropout=0.2, seed=3)

    def run(**kw):
        torch.manual_seed(0)  # the same initial weights for the runs that start from scratch
        bb = create_backbone(SPEC, input_size=16, channels=3)
        return train_end_to_end(bb, Multiclass().fit_targets(y), x, y, xv, yv, kw.pop("config", cfg), **kw)

    ref = run()
    ck = tmp_path / "ck"
    with pytest.raises(_Interrupted):
        run(checkpoint_dir=ck, log=_stop_after(2))
    assert (ck / "checkpoint.safetensors").is_file()
    torch.manual_seed(123)  # whatever the resumed run starts from, the checkpoint replaces it
    messages = []
    resumed = run(checkpoint_dir=ck, log=messages.append)
    assert messages[0].startswith("resumed from the checkpoint after epoch 2")
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in ref.history]
    assert resumed.best_epoch == ref.best_epoch
    want, got = ref.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)  # bit-identical, dropout and augmentation included

    # another setting: refused, naming it
    with pytest.raises(HeadstartError, match=r"setting 'end-to-end lr' differs"):
        run(checkpoint_dir=ck, config=EndToEndConfig(**{**cfg.to_dict(), "lr": 1e-3}))


def test_cli_resumes_a_scratch_cnn_by_rerunning_the_command(tmp_path, monkeypatch, one_thread):
    from safetensors.torch import load_file

    from headstart.cli.train import checkpoint_dir as end_to_end_checkpoint_dir
    from headstart.estimator.classifier import ImageClassifier

    data = stripes_folder(tmp_path / "data", n=40, size=16)
    args = ["train", str(data), "--backbone", SPEC, "--input-size", "16", "--epochs", "3", "--quiet",
            "--no-report", "--seed", "1"]

    def train(*more: str) -> int:
        # fit creates the CNN from torch's global generator before training seeds it: seeded
        # here so the runs in this one process start alike (separate processes do anyway)
        torch.manual_seed(0)
        return main([*args, *more])

    assert train("--out", str(tmp_path / "whole")) == 0
    assert not end_to_end_checkpoint_dir(tmp_path / "whole").exists()  # removed once the model is saved

    real_log = ImageClassifier._log

    def interrupt(self, msg):
        if msg.startswith("epoch 2/"):
            raise KeyboardInterrupt  # as Ctrl-C right after epoch 2
        real_log(self, msg)

    monkeypatch.setattr(ImageClassifier, "_log", interrupt)
    out = tmp_path / "resumed"
    assert train("--out", str(out)) == 130
    ck = end_to_end_checkpoint_dir(out)
    assert (ck / "checkpoint.safetensors").is_file() and not out.exists()
    monkeypatch.setattr(ImageClassifier, "_log", real_log)
    assert train("--out", str(out), "--resume") == 0
    assert not ck.exists()
    want, got = load_file(tmp_path / "whole" / "backbone.safetensors"), load_file(out / "backbone.safetensors")
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert train("--out", str(out), "--resume") == 2  # nothing left to resume
