"""`headstart featuremaps` and `headstart summary MODEL_DIR` on real model folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from headstart import ImageClassifier
from headstart.cli.main import main

from test_end_to_end import SPEC, stripes


@pytest.fixture(scope="module")
def scratch_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("scratch")
    x, y = stripes(40, 16)
    ImageClassifier(SPEC, epochs=1, engine="torch").fit(x, y).save(root / "model")
    photo = root / "cat.png"
    import skimage.data

    Image.fromarray(skimage.data.chelsea()).save(photo)
    return root / "model", photo


def test_featuremaps_of_a_scratch_model(scratch_model, tmp_path, capsys):
    model, photo = scratch_model
    out = tmp_path / "maps.png"
    assert main(["featuremaps", str(model), str(photo), "--out", str(out)]) == 0
    assert "8 first-layer filters" in capsys.readouterr().out
    img = np.asarray(Image.open(out).convert("L"))
    assert img.shape[0] > 200 and img.std() > 20  # a picture, not a blank page


def test_featuremaps_of_the_embedded_backbone_show_three_stages(trained_model, tmp_path, backbone):
    from headstart.lab.featuremaps import compute_feature_maps

    import skimage.data

    fm = compute_feature_maps(backbone, Image.fromarray(skimage.data.chelsea()))
    assert [t.split(":")[0] for t, _ in fm.stages] == ["early", "middle", "late"]
    sizes = [m.shape[-1] for _, m in fm.stages]
    assert sizes[0] > sizes[1] > sizes[2]  # edges at full detail, parts coarse
    assert fm.filters.shape[1:] == (3, 3, 3)
    model, data = trained_model
    photo = next(data.rglob("*.png"))
    assert main(["featuremaps", str(model), str(photo), "--out", str(tmp_path / "m.png")]) == 0


def test_featuremaps_without_conv_layers_is_a_clear_error(tmp_path, capsys):
    x, y = stripes(40, 16)
    ImageClassifier("scratch:avgpool2,fc", epochs=1, engine="torch").fit(x, y).save(tmp_path / "m")
    Image.fromarray(x[0]).save(tmp_path / "a.png")
    rc = main(["featuremaps", str(tmp_path / "m"), str(tmp_path / "a.png"), "--out", str(tmp_path / "o.png")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'scratch:avgpool2,fc' has no convolution layers" in err and "conv32" in err
    assert not (tmp_path / "o.png").exists()


def test_summary_of_a_model_folder(scratch_model, trained_model, capsys):
    model, _ = scratch_model
    assert main(["summary", str(model)]) == 0
    out = capsys.readouterr().out
    assert "body.0.conv8 (Conv2d)" in out and "input 16x16x1" in out and "head (linear)" in out
    assert main(["summary", str(trained_model[0])]) == 0
    out = capsys.readouterr().out
    assert "conv_stem (Conv2dSame)" in out and "input 224x224x3" in out
