"""CNNs built from a spec: the grammar, its errors, shapes and the layer table."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

from headstart.backbones import scratch
from headstart.backbones.base import Backbone
from headstart.backbones.scratch import ScratchBackbone, parse_spec
from headstart.errors import HeadstartError
from headstart.lab.summary import conv_cost, format_summary, summarize_module

ISSUE_SPEC = "conv32-bn-relu-maxpool,conv64-bn-relu-maxpool,conv128-bn-relu-avgpool,fc"


def test_parse_spec_tokens():
    blocks = parse_spec("conv32k5s2p1-bn-relu-maxpool3s1,conv64-gelu-avgpool,gap,"
                        "fc128-dropout0.25-dropout,fc")
    assert [[t.kind for t in b] for b in blocks] == [
        ["conv", "bn", "relu", "maxpool"], ["conv", "gelu", "avgpool"], ["gap"],
        ["fc", "dropout", "dropout"], ["fc"]]
    conv, pool = blocks[0][0], blocks[0][3]
    assert (conv.value, conv.kernel, conv.stride, conv.padding) == (32, 5, 2, 1)
    assert (pool.kernel, pool.stride) == (3, 1)
    assert blocks[1][2].kernel is None  # defaults are applied when building
    assert [t.value for t in blocks[3]] == [128, 0.25, None]
    assert blocks[4][0].value is None
    spec = "scratch: conv8 - relu,fc"
    tokens = [t for b in parse_spec(spec) for t in b]
    assert [spec[t.pos:t.pos + len(t.text)] for t in tokens] == ["conv8", "relu", "fc"]


def test_issue_spec_builds_and_forwards():
    bb = ScratchBackbone(ISSUE_SPEC, input_size=32)
    assert isinstance(bb, Backbone)
    assert bb.name == f"scratch:{ISSUE_SPEC}"
    assert bb.pretrained is False
    assert bb.feature_dim == 128 * 4 * 4  # 32 -> 16 -> 8 -> 4, flattened
    assert len(bb.stages()) == 3
    assert all(isinstance(s[0], nn.Conv2d) for s in bb.stages())
    assert bb.spec() == {"name": bb.name, "input_size": 32, "channels": 3, "resize": "pad"}
    p = bb.preprocess
    assert (p.input_size, p.resize_size, p.mean, p.std, p.interpolation, p.resize, p.channels) \
        == (32, 32, (0.5,) * 3, (0.5,) * 3, "bilinear", "pad", 3)
    out = bb(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, bb.feature_dim) and torch.isfinite(out).all()
    assert ScratchBackbone("scratch:" + ISSUE_SPEC).name == bb.name  # prefix accepted


@pytest.mark.parametrize("channels", [1, 3])
def test_grey_and_colour_forward_and_backward(channels):
    bb = ScratchBackbone("conv8-bn-relu-maxpool,conv16-bn-gelu-gap,fc10-bn-relu-dropout0.1",
                         input_size=28, channels=channels, resize="stretch")
    assert bb.preprocess.channels == channels and bb.preprocess.mean == (0.5,) * channels
    x = torch.randn(4, channels, 28, 28)
    out = bb(x)
    assert out.shape == (4, 10) and bb.feature_dim == 10
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in bb.parameters())
    bb.eval()
    assert torch.isfinite(bb(x[:1])).all()  # one image at inference


def test_gap_network_takes_any_size_but_flatten_checks_it():
    gap = ScratchBackbone("conv4-relu,gap", input_size=16)
    assert gap(torch.randn(1, 3, 24, 24)).shape == (1, 4)
    flat = ScratchBackbone("conv4-relu-maxpool", input_size=16)
    assert flat.feature_dim == 4 * 8 * 8  # no fc: the maps are flattened
    with pytest.raises(HeadstartError, match=r"expects images of shape \(B, 3, 16, 16\), "
                                             r"got \(1, 3, 24, 24\)"):
        flat(torch.randn(1, 3, 24, 24))
    with pytest.raises(HeadstartError, match=r"got \(1, 1, 16, 16\)"):
        gap(torch.randn(1, 1, 16, 16))


def test_kaiming_init_and_bias_only_without_bn():
    bb = ScratchBackbone("conv64-bn-relu,conv64-relu,fc", input_size=8)
    first, second = bb.stages()[0][0], bb.stages()[1][0]
    assert first.bias is None and second.bias is not None
    assert torch.all(second.bias == 0)
    std = second.weight.std().item()  # kaiming fan_out: sqrt(2 / (64 * 3 * 3))
    assert std == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.1)


def test_summary_table_of_a_spec():
    bb = ScratchBackbone(ISSUE_SPEC, input_size=64)
    rows = summarize_module(bb, (64, 64, 3))
    assert rows[0].name == "body.0.conv32 (Conv2d)"
    assert rows[0].output_shape == (32, 64, 64)
    assert rows[0].params == conv_cost(3, 3, 3, 32) - 32  # no bias: bn follows
    assert rows[-1].output_shape == (128 * 8 * 8,)
    assert sum(r.params for r in rows) == sum(p.numel() for p in bb.parameters())
    text = format_summary(rows, (64, 64, 3))
    assert "body.2.avgpool (AvgPool2d)" in text and "128x8x8" in text
    total_line = next(line for line in text.splitlines() if line.startswith("total"))
    assert total_line.split() == ["total", f"{sum(r.params for r in rows):,}"]


@pytest.mark.parametrize("spec, bad, words", [
    ("conv32-bn-rleu,fc", "rleu", ["unknown layer 'rleu'", "did you mean 'relu'"]),
    ("conv32-bn-relu-maxpool,conv64-batchnorm", "batchnorm", ["unknown layer 'batchnorm'"]),
    ("conv32,,fc", "", ["an empty layer"]),
    ("conv32-", "", ["an empty layer"]),
    ("conv-relu", "conv", ["unknown layer 'conv'"]),
    ("conv0-relu", "conv0", ["has a size of zero"]),
    ("conv8-maxpool0", "maxpool0", ["has a size of zero"]),
    ("conv8-dropout1.5", "dropout1.5", ["dropout probability 1.5 is not in [0, 1)"]),
    ("conv8-gap,conv16", "conv16", ["'conv16' needs a feature map", "flattened to 8"]),
    ("conv8-fc,maxpool", "maxpool", ["'maxpool' needs a feature map"]),
])
def test_bad_spec_points_at_the_token(spec, bad, words):
    with pytest.raises(HeadstartError) as info:
        ScratchBackbone(spec, input_size=16)
    msg = str(info.value)
    for word in words:
        assert word in msg
    lines = msg.splitlines()
    spec_line, caret_line = lines[1], lines[2]
    assert spec_line == f"  {spec}"
    start = caret_line.index("^")
    assert caret_line.strip() == "^" * max(1, len(bad))
    assert spec_line[start:start + len(bad)] == bad
    if "unknown" in msg or "empty" in msg:
        assert "valid tokens: conv<F>[k<K>][s<S>][p<P>]" in msg and "fc<N>" in msg


def test_caret_points_into_the_spec_as_written():
    spec = "scratch:conv8-relu,conv16-bad"
    with pytest.raises(HeadstartError) as info:
        parse_spec(spec)
    spec_line, caret_line = str(info.value).splitlines()[1:3]
    assert spec_line[caret_line.index("^"):].startswith("bad")


def test_shape_collapse_names_the_layer_and_shape():
    spec = "conv8-maxpool,conv16-maxpool,conv32-maxpool,conv64-maxpool"
    with pytest.raises(HeadstartError) as info:
        ScratchBackbone(spec, input_size=12)  # 12 -> 6 -> 3 -> 1 -> nothing
    msg = str(info.value)
    assert "layer 'maxpool' (block 4) gets a 1x1x64 feature map" in msg
    assert "larger input size than 12" in msg
    spec_line, caret_line = msg.splitlines()[1:3]
    assert spec_line == f"  {spec}"
    assert caret_line.index("^") == spec.rindex("maxpool") + 2
    with pytest.raises(HeadstartError, match=r"'conv8k5p0' \(block 1\) gets a 3x3x3 feature map"):
        ScratchBackbone("conv8k5p0", input_size=3)  # a 5x5 kernel without padding


@pytest.mark.parametrize("kwargs, words", [
    ({"channels": 2}, ["channels must be 1 (grey) or 3 (colour), got 2"]),
    ({"resize": "fit"}, ["resize must be one of crop, pad, stretch, got 'fit'"]),
    ({"input_size": 0}, ["input_size must be a positive integer, got 0"]),
])
def test_bad_settings(kwargs, words):
    with pytest.raises(HeadstartError) as info:
        ScratchBackbone("conv8", **kwargs)
    for word in words:
        assert word in str(info.value)


def test_spec_without_feature_layers():
    with pytest.raises(HeadstartError, match="has no conv or pooling layer before 'gap' / 'fc'"):
        ScratchBackbone("gap,fc10")


def test_doctests():
    assert doctest.testmod(scratch).failed == 0
