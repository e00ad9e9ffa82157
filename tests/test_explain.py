"""Heat maps (gradient x activation, or Grad-CAM) mean something: on clutter where a small
object decides the class, the hottest place is the object; and they work for every backbone
kind and task type."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from objects import hits, write_set
from PIL import Image

from headstart import HeadstartError, explain
from headstart.cli.main import main


def test_the_heat_map_peak_lands_on_the_object(objects_model, tmp_path):
    boxes = write_set(tmp_path / "test", 30, size=48, seed=1)
    rows = explain(objects_model, list(boxes))
    right = sum(r.maps[0].target == Path(r.file).parent.name for r in rows)
    rate = hits(rows, boxes, margin=0) / len(rows)
    assert right >= 0.9 * len(rows), right
    assert rate >= 0.8, f"peak on the object in {rate:.0%} of {len(rows)} images"
    assert all(r.maps[0].predicted and r.maps[0].cam.shape == (12, 12) for r in rows)


@pytest.mark.slow
def test_the_embedded_backbone_s_heat_map_peak_lands_on_the_object(tmp_path):
    """The frozen EfficientNet-Lite0 with a head: the default method's rate is the one measured
    by benchmarks/localisation.py (docs/see.md), and above Grad-CAM's on the same images."""
    import headstart

    write_set(tmp_path / "train", 200, size=128, seed=0)
    clf = headstart.ImageClassifier(engine="torch", use_cache=False).fit(tmp_path / "train")
    boxes = write_set(tmp_path / "test", 50, size=128, seed=1)
    rates = {}
    for method in ("grad-x-activation", "grad-cam"):
        rows = explain(clf, list(boxes), method=method)
        rates[method] = hits(rows, boxes, margin=0, scale=256 / 128, shift=16) / len(rows)  # resize 256, crop 224
    assert rates["grad-x-activation"] >= 0.55 and rates["grad-x-activation"] > rates["grad-cam"], rates


def test_a_heat_map_for_a_class_asked_for_differs_from_the_predicted_one(objects_model, tmp_path):
    boxes = write_set(tmp_path / "one", 1, size=48, seed=3)
    cross = next(p for p in boxes if p.parent.name == "cross")
    (row,) = explain(objects_model, [cross], classes=["square"])
    assert [m.target for m in row.maps] == ["cross", "square"]
    assert [m.predicted for m in row.maps] == [True, False]
    assert row.maps[0].score + row.maps[1].score == pytest.approx(1.0, abs=1e-4)  # binary: p and 1 - p
    assert not np.allclose(row.maps[0].cam, row.maps[1].cam)


def test_cli_writes_a_picture_per_image_and_an_index(objects_model, tmp_path, capsys):
    model = objects_model.save(tmp_path / "model")
    boxes = write_set(tmp_path / "imgs", 2, size=48, seed=4)
    bad = tmp_path / "imgs" / "cross" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert main(["explain", str(model), str(tmp_path / "imgs"), "--out", str(tmp_path / "why"),
                 "--class", "square"]) == 0
    out = capsys.readouterr()
    index = json.loads((tmp_path / "why" / "explain.json").read_text())
    assert len(index) == 5 and sum("error" in r for r in index) == 1, index
    pngs = sorted((tmp_path / "why").glob("*.png"))
    assert len(pngs) == 4 and "1 files could not be read" in out.err
    widths = set()
    for png in pngs:
        with Image.open(png) as im:
            widths.add(im.width)
    assert len(widths) == 2 and max(widths) > 3 * 224  # input, prediction, and square when not predicted
    ok = [r for r in index if "error" not in r]
    assert all(0 <= v <= 1 for r in ok for m in r["maps"] for v in m["peak"])
    assert len(boxes) == 4


def test_unknown_class_and_non_image_inputs_are_refused(objects_model, tmp_path, capsys):
    img = write_image(tmp_path / "a.png", (48, 48))
    with pytest.raises(HeadstartError, match=r"cannot explain \['dog'\].*\['cross', 'square'\]"):
        explain(objects_model, [img], classes=["dog"])
    with pytest.raises(HeadstartError, match="save the array's images as files"):
        explain(objects_model, np.zeros((2, 48, 48, 3), np.uint8))
    model = objects_model.save(tmp_path / "model")
    assert main(["explain", str(model), str(img), "--out", str(tmp_path / "o"), "--class", "dog"]) == 2
    assert "cannot explain ['dog']" in capsys.readouterr().err


def test_embedded_backbone_multiclass(trained_model):
    import headstart

    folder, data = trained_model
    clf = headstart.load(folder)
    files = sorted(Path(data).rglob("*.png"))[:2]
    rows = explain(folder, files, classes=list(clf.classes_))
    assert all(len(r.maps) == len(clf.classes_) for r in rows)  # the predicted one is among them, once
    assert rows[0].maps[0].cam.shape == (14, 14) and rows[0].picture.shape == (224, 224, 3)  # stage 4's grid
    assert clf.backbone_.cam_layers() == [clf.backbone_.model.blocks[s] for s in (3, 4, 5, 6)]


@pytest.mark.slow
def test_timm_backbone_with_local_weights_and_numeric_task(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    import headstart

    weights = tmp_path / "resnet10t.safetensors"
    save_file(timm.create_model("resnet10t", pretrained=False).state_dict(), str(weights))
    rows = []
    for i in range(12):
        write_image(tmp_path / "data" / f"{i}.png", (40, 40), color=(20 * i, 90, 90))
        rows.append(f"{i}.png,{i % 4}")
    (tmp_path / "counts.csv").write_text("path,count\n" + "\n".join(rows) + "\n")
    clf = headstart.ImageClassifier(backbone="resnet10t", weights=str(weights), epochs=1, use_cache=False,
                                    engine="torch", val_fraction=0.25, test_fraction=0.0)
    clf.fit(tmp_path / "data", tmp_path / "counts.csv")
    (row,) = explain(clf, [tmp_path / "data" / "0.png"], classes=["value"])
    assert [m.target for m in row.maps] == ["value"] and row.maps[0].predicted
    assert row.maps[0].cam.shape == (6, 6) and 0 <= row.maps[0].cam.min() <= row.maps[0].cam.max() <= 1


def test_report_shows_heat_maps_beside_the_worst_images(objects_model, tmp_path):
    from headstart.evaluation.html import model_report

    write_set(tmp_path / "data", 1, size=48, seed=5)
    (tmp_path / "data" / "cross" / "gone.png").write_bytes(b"")
    worst = [{"file": f"{c}/0000.png", "true": c, "predicted": "square", "p_true": 0.1, "p_predicted": 0.9}
             for c in ("cross", "square")] + [{"file": "cross/gone.png", "true": "cross", "predicted": "square",
                                              "p_true": 0.2, "p_predicted": 0.8}]
    page = model_report(objects_model, {"accuracy": 0.5, "worst": worst}, title="t", data=tmp_path / "data")
    assert page.count("heat map: where <b>") == 2  # the unreadable file keeps its place, without a map
    assert page.count("data:image/jpeg;base64,") >= 4


@pytest.mark.parametrize("task_name", ["multilabel", "continuous", "binary"])
def test_every_task_type_gets_its_maps(task_name):
    """Untrained but real parts: a scratch CNN, a head, each task's own output and activation."""
    import torch

    from headstart.backbones.scratch import ScratchBackbone
    from headstart.heads import Head
    from headstart.lab.gradcam import grad_cam
    from headstart.tasks import Binary, Continuous, Multilabel

    torch.manual_seed(0)
    task = {"multilabel": Multilabel(["a", "b", "c"]), "continuous": Continuous(), "binary": Binary(["n", "y"])}[task_name]
    bb = ScratchBackbone("conv8-relu-maxpool,conv8-relu-gap", input_size=16)
    head = Head(bb.feature_dim, task.out_dim, "linear")
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    asked = {"multilabel": ["c", "a"], "continuous": ["value"], "binary": ["n", "y"]}[task_name]
    maps = grad_cam(bb, head, task, x, [None, *asked])
    for per_image in maps:
        assert sum(m.predicted for m in per_image) == 1 and {m.target for m in per_image} >= set(asked)
        assert all(m.cam.shape == (8, 8) and m.cam.min() >= 0 and m.cam.max() <= 1 for m in per_image)
    if task_name == "binary":  # one logit, negated for "n": where one map is positive the other is zero
        n, y = (next(m for m in maps[0] if m.target == t) for t in ("n", "y"))
        assert (n.cam * y.cam == 0).all() and max(n.cam.max(), y.cam.max()) == 1
