"""``label``: the embedded backbone's own ImageNet classes with their names, offline; from
Python, the command line and the server (``/v1/label``), with ``/v1/explain``'s heat map."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_image
from PIL import Image

from headstart import HeadstartError, label_images
from headstart.cli.main import main

PHOTOS = Path("/work/shared/datasets/clothing-small/test")


def test_names_ship_with_torchvision_in_imagenet_order():
    from headstart.backbones.imagenet import imagenet_classes

    names = imagenet_classes()
    assert len(names) == 1000 and names[0] == "tench" and names[817] == "sports car" and names[999] == "toilet tissue"


def test_top_k_is_the_backbones_own_output(backbone, tmp_path):
    import torch

    from headstart.backbones.imagenet import imagenet_classes
    from headstart.data.inputs import load_input

    img = write_image(tmp_path / "a.png", (64, 48), color=(200, 60, 60))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 cut")
    rows = label_images([img, bad], backbone=backbone, top_k=3)
    with torch.inference_mode():
        logits = backbone.imagenet_logits(torch.from_numpy(load_input(img, backbone.preprocess))[None])[0]
    order = torch.argsort(logits, descending=True)[:3].tolist()
    assert [t["index"] for t in rows[0]["top"]] == order
    assert [t["label"] for t in rows[0]["top"]] == [imagenet_classes()[i] for i in order]
    assert rows[0]["probability"] == pytest.approx(torch.softmax(logits, 0)[order[0]].item(), abs=1e-4)
    assert rows[1]["file"] == str(bad) and "error" in rows[1] and "label" not in rows[1]


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="the real photos of ../shared/datasets are not here")
def test_real_photos_get_fitting_names():
    rows = label_images([sorted((PHOTOS / c).glob("*.jpg"))[0] for c in ("shoes", "t-shirt")], top_k=5)
    shoes, shirt = ({t["label"] for t in r["top"]} for r in rows)
    assert shoes & {"sandal", "running shoe", "Loafer", "clog", "cowboy boot"}, shoes
    assert shirt & {"jersey", "sweatshirt", "poncho", "cardigan"}, shirt


def test_backbones_without_imagenet_classes_and_bad_top_k_are_refused(tmp_path):
    img = write_image(tmp_path / "a.png")
    with pytest.raises(HeadstartError, match="no ImageNet classifier to ask.*headstart predict"):
        label_images([img], backbone="scratch:conv8-relu-gap")
    with pytest.raises(HeadstartError, match="top_k must be a whole number from 1 to 1000, got 0"):
        label_images([img], top_k=0)


def test_cli_prints_names_and_json(tmp_path, capsys):
    img = write_image(tmp_path / "a.png", (40, 40), color=(40, 180, 60))
    assert main(["label", str(img), "--top-k", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{img}:" and len(out) == 3 and "(ImageNet class " in out[1]
    assert main(["label", str(tmp_path), "--format", "json", "--top-k", "4"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert len(row["top"]) == 4 and row["label"] == row["top"][0]["label"]
    assert main(["label", str(tmp_path / "none")]) == 2
    b = write_image(tmp_path / "b.png", (40, 40), color=(90, 20, 200))  # sorted, b would come second
    assert main(["label", str(b), str(img), "--format", "json", "--top-k", "1"]) == 0
    assert [r["file"] for r in json.loads(capsys.readouterr().out)] == [str(b), str(img)]  # the order given


@pytest.fixture(scope="module")
def server(trained_model, tmp_path_factory):
    pytest.importorskip("fastapi")
    from serve_server import Server

    with Server([trained_model[0]], log=tmp_path_factory.mktemp("serve") / "server.log") as srv:
        yield srv


def test_http_label_and_explain(server, trained_model):
    import httpx

    _, data = trained_model
    photo = sorted(Path(data).rglob("*.png"))[0]
    with httpx.Client(base_url=server.url, timeout=120) as c:
        r = c.post("/v1/label", files=[("images", (photo.name, photo.read_bytes(), "image/png"))],
                   params={"top_k": 3})
        assert r.status_code == 200, r.text
        assert r.json()["predictions"][0]["top"] == label_images([photo], top_k=3)[0]["top"]
        r = c.post("/v1/explain", files={"image": (photo.name, photo.read_bytes(), "image/png")},
                   params={"class": "dog"})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png", r.text
        maps = json.loads(r.headers["x-headstart-explain"])
        assert maps[0]["predicted"] and {m["target"] for m in maps} >= {"dog"}
        with Image.open(io.BytesIO(r.content)) as im:
            assert im.width > 2 * 224 and np.asarray(im).std() > 0
        r = c.post("/v1/explain", files={"image": ("x.png", b"not an image", "image/png")})
        assert r.status_code == 415 and "not an image" in r.json()["error"]
        r = c.post("/v1/explain", files={"image": (photo.name, photo.read_bytes(), "image/png")},
                   params={"class": "unicorn"})
        assert r.status_code == 404 and "no class 'unicorn'" in r.json()["error"]
        spec = c.get("/openapi.json").json()["paths"]
        assert {"413", "415", "422"} <= set(spec["/v1/label"]["post"]["responses"])  # 401 only with --token
        assert {"404", "409", "415"} <= set(spec["/v1/explain"]["post"]["responses"])
