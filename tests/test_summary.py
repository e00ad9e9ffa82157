"""Parameter arithmetic: the lecture's 230-billion example and the layer table."""

from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

from headstart.lab import summary
from headstart.errors import HeadstartError
from headstart.lab.summary import (LayerRow, conv_cost, dense_cost, format_summary,
                               parse_input_shape, summarize_module)

LECTURE_INPUT = (400, 400, 3)


def test_dense_cost_is_the_lectures_arithmetic():
    assert dense_cost(LECTURE_INPUT, 480000) == 480000 * 480000 + 480000 + 1 == 230400480001
    assert dense_cost(LECTURE_INPUT, 1000) == 480000 * 1000 + 1000 + 1 == 480001001


def test_conv_cost():
    assert conv_cost(3, 3, 3, 32) == (3 * 3 * 3 + 1) * 32 == 896
    assert conv_cost(3, 3, 3, 32) == sum(p.numel() for p in nn.Conv2d(3, 32, 3).parameters())
    assert conv_cost(1, 1, 3, 100) == 4 * 100  # the slide: 4 parameters per feature map


def test_format_summary_prints_the_lecture_lines():
    rows = [LayerRow("conv (Conv2d)", (32, 400, 400), 896), LayerRow("flatten", (5120000,), 0)]
    text = format_summary(rows, LECTURE_INPUT)
    assert ("a fully connected layer from 400x400x3 = 480000 inputs to 480000 units: "
            "480000 x 480000 + 480000 + 1 = 230,400,480,001 parameters (about 230 billion)") in text
    assert ("a fully connected layer from 400x400x3 = 480000 inputs to 1000 units: "
            "480000 x 1000 + 1000 + 1 = 480,001,001 parameters (about 480 million)") in text
    lines = text.splitlines()
    conv_line = next(line for line in lines if line.startswith("conv (Conv2d)"))
    assert conv_line.split()[-2:] == ["32x400x400", "896"]
    total_line = next(line for line in lines if line.startswith("total"))
    assert total_line.split() == ["total", "896"]


def test_format_summary_small_input_wording():
    text = format_summary([], (28, 28, 1))
    assert "784 x 784 + 784 + 1 = 615,441 parameters (about 615 thousand)" in text
    assert "784 x 1000 + 1000 + 1 = 785,001 parameters (about 785 thousand)" in text
    assert "(about 12.3 million)" in format_summary([], (64, 64, 3))


@pytest.mark.parametrize("text, shape", [
    ("400x400x3", (400, 400, 3)), ("28x28x1", (28, 28, 1)), ("28x28", (28, 28, 1)),
    (" 64 X 32 x 3 ", (64, 32, 3)), ("224×224×3", (224, 224, 3)),
])
def test_parse_input_shape(text, shape):
    assert parse_input_shape(text) == shape


@pytest.mark.parametrize("text, words", [
    ("400", ["'400' is not HxWxC", "e.g. 400x400x3"]),
    ("400x400x3x2", ["'400x400x3x2' is not HxWxC"]),
    ("axbxc", ["'axbxc' is not HxWxC"]),
    ("-1x4x3", ["'-1x4x3' is not HxWxC"]),
    ("0x64x3", ["'0x64x3' has a zero size", "at least 1"]),
])
def test_parse_input_shape_errors(text, words):
    with pytest.raises(HeadstartError) as info:
        parse_input_shape(text)
    for word in words:
        assert word in str(info.value)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.scale = nn.Parameter(torch.ones(1))  # held by a non-leaf module
        self.fc = nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1)) * self.scale


def test_summarize_module_shapes_and_params():
    model = _Tiny().train()
    rows = summarize_module(model, (8, 8, 3))
    assert [r.name for r in rows] == [
        "features.0 (Conv2d)", "features.1 (BatchNorm2d)", "features.2 (ReLU)",
        "features.3 (MaxPool2d)", "fc (Linear)", "(other parameters)"]
    assert [r.output_shape for r in rows] == [(4, 8, 8), (4, 8, 8), (4, 8, 8), (4, 4, 4), (2,), ()]
    assert [r.params for r in rows] == [conv_cost(3, 3, 3, 4), 8, 0, 0, 64 * 2 + 2, 1]
    assert sum(r.params for r in rows) == sum(p.numel() for p in model.parameters())
    assert model.training  # the mode is restored
    assert not model.features[0]._forward_hooks  # the hooks are removed


def test_summarize_module_counts_a_reused_layer_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4 * 2 * 2, 4), shared, shared)
    rows = summarize_module(model, (2, 2, 4))
    assert [r.params for r in rows] == [0, 68, 20, 0]


def test_summarize_module_wrong_input_is_explained():
    with pytest.raises(HeadstartError, match=r"cannot take an input of 8x8x1"):
        summarize_module(_Tiny(), (8, 8, 1))


def test_doctests():
    assert doctest.testmod(summary).failed == 0
