"""The lecture's operations: its worked examples digit for digit, and agreement with PyTorch."""

from __future__ import annotations

import doctest
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from headstart.lab import ops
from headstart.errors import HeadstartError
from headstart.lab.ops import (KERNELS, RunningStats, avg_pool, batch_norm, conv2d, max_pool,
                           parse_kernel)

PROPERTY = settings(max_examples=40, deadline=None)

# The lecture's slides.
CONV_IMAGE = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
CONV_KERNEL = [[1, 0, 1], [0, 1, 0], [1, 0, 1]]
POOL_2X2 = [[1, 3, 5, 3], [4, 2, 3, 1], [3, 1, 1, 3], [0, 1, 0, 4]]
POOL_3X3 = [[3, 3, 2, 1, 0], [0, 0, 1, 3, 1], [3, 1, 2, 2, 3], [2, 0, 0, 2, 2], [2, 0, 0, 0, 1]]


# --- worked examples -------------------------------------------------------------------------

def test_conv_worked_example():
    out = conv2d(CONV_IMAGE, CONV_KERNEL)  # "valid", stride 1
    assert out.tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert out[0, 0] == 4  # the value shown on the slide


def test_max_pool_2x2_stride_2_worked_example():
    assert max_pool(POOL_2X2, 2, stride=2).tolist() == [[4, 5], [3, 4]]
    assert max_pool(POOL_2X2, 2).tolist() == [[4, 5], [3, 4]]  # stride defaults to the size


def test_max_pool_3x3_stride_1_worked_example():
    assert max_pool(POOL_3X3, 3, stride=1).tolist() == [[3, 3, 3], [3, 3, 3], [3, 2, 3]]


def test_avg_pool_3x3_stride_1_matches_hand_computed_means():
    # Each window's nine values, row by row, summed by hand from the slide's matrix.
    sums = [
        [3 + 3 + 2 + 0 + 0 + 1 + 3 + 1 + 2, 3 + 2 + 1 + 0 + 1 + 3 + 1 + 2 + 2,
         2 + 1 + 0 + 1 + 3 + 1 + 2 + 2 + 3],
        [0 + 0 + 1 + 3 + 1 + 2 + 2 + 0 + 0, 0 + 1 + 3 + 1 + 2 + 2 + 0 + 0 + 2,
         1 + 3 + 1 + 2 + 2 + 3 + 0 + 2 + 2],
        [3 + 1 + 2 + 2 + 0 + 0 + 2 + 0 + 0, 1 + 2 + 2 + 0 + 0 + 2 + 0 + 0 + 0,
         2 + 2 + 3 + 0 + 2 + 2 + 0 + 0 + 1],
    ]
    expected = [[Fraction(s, 9) for s in row] for row in sums]
    assert expected[0][0] == Fraction(15, 9)
    assert expected == [[Fraction(15, 9)] * 3, [Fraction(9, 9), Fraction(11, 9), Fraction(16, 9)],
                        [Fraction(10, 9), Fraction(7, 9), Fraction(12, 9)]]
    np.testing.assert_allclose(avg_pool(POOL_3X3, 3, stride=1), np.array(expected, dtype=float),
                               rtol=0, atol=1e-12)


def test_lecture_laplacian_kernel():
    assert KERNELS["laplacian"].tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    flat = np.full((6, 7), 9.0)
    assert np.all(conv2d(flat, KERNELS["laplacian"]) == 0)  # no edges in a flat image
    step = np.zeros((5, 6))
    step[:, 3:] = 10
    edges = conv2d(step, KERNELS["laplacian"])
    assert edges.tolist() == [[0, 10, -10, 0]] * 3  # responds only at the edge


def test_conv_colour_image_sums_over_channels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 5, size=(6, 5, 3))
    kernel = rng.integers(-2, 3, size=(3, 3, 3))
    per_channel = sum(conv2d(image[:, :, c], kernel[:, :, c]) for c in range(3))
    np.testing.assert_array_equal(conv2d(image, kernel, bias=1.5), per_channel + 1.5)


def test_conv_filter_bank_and_bias():
    image = np.asarray(CONV_IMAGE)
    bank = np.stack([CONV_KERNEL, np.ones((3, 3))], axis=-1)[:, :, None, :]  # (3, 3, 1, 2)
    out = conv2d(image, bank, bias=[0.0, -1.0])
    assert out.shape == (3, 3, 2)
    assert out[:, :, 0].tolist() == [[4, 3, 4], [2, 4, 3], [2, 3, 4]]
    assert out[0, 0, 1] == 6 - 1


def test_conv_stride_and_padding_shapes():
    x = np.ones((7, 9))
    k = np.ones((3, 3))
    assert conv2d(x, k, padding="same").shape == (7, 9)
    assert conv2d(x, k, padding="valid").shape == (5, 7)
    assert conv2d(x, k, stride=2, padding=1).shape == (4, 5)
    assert conv2d(x, k, stride=(1, 2)).shape == (5, 4)


def test_conv_keeps_float32():
    assert conv2d(np.ones((4, 4), np.float32), np.ones((2, 2), np.float32)).dtype == np.float32
    assert conv2d(np.ones((4, 4), np.uint8), np.ones((2, 2), np.uint8)).dtype == np.float64


def test_parse_kernel_names_and_matrices():
    assert parse_kernel("laplacian").tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]
    assert parse_kernel(" Sobel-X ").tolist() == KERNELS["sobel-x"].tolist()
    assert parse_kernel("0, 1, 0; 1, -4, 1; 0, 1, 0").tolist() == KERNELS["laplacian"].tolist()
    assert parse_kernel("0.5").tolist() == [[0.5]]
    k = parse_kernel("box")
    k[0, 0] = 100  # a copy: the shared constant stays intact
    assert KERNELS["box"][0, 0] == pytest.approx(1 / 9)
    for name, kernel in KERNELS.items():
        assert kernel.shape == (3, 3), name


# --- batch normalization ------------------------------------------------------------------------

def test_batch_norm_by_hand():
    x = np.array([[1.0, 2.0], [3.0, 6.0]])  # batch of 2, 2 features
    # mean (2, 4); biased variance (1, 4) -> std (1, 2)
    y, stats = batch_norm(x, eps=0.0)
    assert y.tolist() == [[-1.0, -1.0], [1.0, 1.0]]
    y, _ = batch_norm(x, gamma=[2.0, 3.0], beta=[1.0, -1.0], eps=0.0)
    assert y.tolist() == [[-1.0, -4.0], [3.0, 2.0]]
    # running stats start at (0, 1) and move 10 % towards the batch (unbiased variance 2, 8)
    np.testing.assert_allclose(stats.mean, [0.2, 0.4])
    np.testing.assert_allclose(stats.var, [0.9 + 0.2, 0.9 + 0.8])
    assert stats.count == 1


def test_batch_norm_inference_uses_running_stats():
    running = RunningStats(mean=np.array([1.0, -2.0]), var=np.array([4.0, 0.25]), count=7)
    x = np.array([[3.0, -1.0], [5.0, 0.0], [1.0, -2.0]])
    y, after = batch_norm(x, running=running, training=False, eps=0.0, gamma=2.0, beta=0.5)
    np.testing.assert_allclose(y, [[2.5, 4.5], [4.5, 8.5], [0.5, 0.5]])
    assert after is running  # inference does not update the statistics
    single, _ = batch_norm(x[:1], running=running, training=False)  # a batch of one is fine
    assert single.shape == (1, 2)


def test_batch_norm_feature_maps_per_channel():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 2.0, size=(4, 5, 6, 3))  # (N, H, W, C)
    y, stats = batch_norm(x, eps=0.0)
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-12)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1, atol=1e-12)
    np.testing.assert_allclose(stats.mean, 0.1 * x.mean(axis=(0, 1, 2)))


def test_batch_norm_cumulative_average_like_torch():
    rng = np.random.default_rng(2)
    bn = torch.nn.BatchNorm1d(3, momentum=None).double()
    stats = None
    for _ in range(3):
        x = rng.normal(size=(5, 3))
        bn(torch.from_numpy(x))
        _, stats = batch_norm(x, running=stats, momentum=None)
    np.testing.assert_allclose(stats.mean, bn.running_mean.numpy())
    np.testing.assert_allclose(stats.var, bn.running_var.numpy())
    assert stats.count == bn.num_batches_tracked.item() == 3


# --- agreement with torch.nn.functional ------------------------------------------------------

def _nchw(a: np.ndarray) -> torch.Tensor:
    a = a[:, :, None] if a.ndim == 2 else a
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None]  # (1, C, H, W)


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).numpy()  # (H, W, C)


@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["grey", "colour", "bank"]))
    c = 1 if kind == "grey" else draw(st.sampled_from([3, 1, 2, 4]))
    k = draw(st.integers(1, 5))
    stride = draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["same", "valid", 0, 1, 2]) if stride == 1
                   else st.sampled_from(["valid", 0, 1, 2]))
    pad = 0 if padding in ("valid", "same") else padding
    lo = max(1, k - 2 * pad)
    h, w = draw(st.integers(lo, 12)), draw(st.integers(lo, 12))
    f = draw(st.integers(1, 3)) if kind == "bank" else 1
    seed = draw(st.integers(0, 2**32 - 1))
    return kind, (h, w, c), k, f, stride, padding, seed


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@PROPERTY
@given(conv_cases())
def test_conv2d_agrees_with_torch(case):
    kind, (h, w, c), k, f, stride, padding, seed = case
    rng = np.random.default_rng(seed)
    image = rng.normal(size=(h, w) if kind == "grey" else (h, w, c))
    if kind == "grey":
        kernel = rng.normal(size=(k, k))
    elif kind == "colour":
        kernel = rng.normal(size=(k, k, c))
    else:
        kernel = rng.normal(size=(k, k, c, f))
    bias = rng.normal(size=f)
    ours = conv2d(image, kernel, stride=stride, padding=padding,
                  bias=bias if kind == "bank" else bias[0])
    weight = torch.from_numpy(kernel.reshape(k, k, c, f).transpose(3, 2, 0, 1).copy())
    ref = F.conv2d(_nchw(image), weight, torch.from_numpy(bias), stride=stride, padding=padding)
    ref = _hwc(ref)
    np.testing.assert_allclose(ours, ref if kind == "bank" else ref[:, :, 0], atol=1e-10)


@PROPERTY
@given(h=st.integers(1, 12), w=st.integers(1, 12), c=st.sampled_from([None, 3, 1, 2]),
       size=st.integers(1, 4), stride=st.none() | st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_pooling_agrees_with_torch(h, w, c, size, stride, seed):
    size = min(size, h, w)
    x = np.random.default_rng(seed).normal(size=(h, w) if c is None else (h, w, c))
    for ours, theirs in ((max_pool, F.max_pool2d), (avg_pool, F.avg_pool2d)):
        got = ours(x, size, stride=stride)
        ref = _hwc(theirs(_nchw(x), size, stride=stride or size))
        np.testing.assert_allclose(got, ref[:, :, 0] if c is None else ref, atol=1e-12)


@PROPERTY
@given(shape=st.sampled_from([(2, 3), (7, 1), (3, 4, 5, 2), (2, 1, 1, 3), (1, 3, 3, 3)]),
       momentum=st.floats(0.0, 1.0), seed=st.integers(0, 2**32 - 1))
def test_batch_norm_agrees_with_torch(shape, momentum, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=shape)
    c = shape[-1]
    gamma, beta = rng.normal(size=c), rng.normal(size=c)
    prev = RunningStats(rng.normal(size=c), rng.uniform(0.5, 2, size=c), 4)
    xt = torch.from_numpy(x if x.ndim == 2 else np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    rm, rv = torch.from_numpy(prev.mean.copy()), torch.from_numpy(prev.var.copy())
    ref = F.batch_norm(xt, rm, rv, torch.from_numpy(gamma), torch.from_numpy(beta),
                       training=True, momentum=momentum, eps=1e-5)
    y, stats = batch_norm(x, gamma=gamma, beta=beta, running=prev, momentum=momentum)
    ref = ref.numpy() if x.ndim == 2 else ref.numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(y, ref, atol=1e-9)
    np.testing.assert_allclose(stats.mean, rm.numpy(), atol=1e-12)
    np.testing.assert_allclose(stats.var, rv.numpy(), atol=1e-12)
    assert stats.count == 5
    ref_eval = F.batch_norm(xt, rm, rv, torch.from_numpy(gamma), torch.from_numpy(beta),
                            training=False, eps=1e-5).numpy()
    ref_eval = ref_eval if x.ndim == 2 else ref_eval.transpose(0, 2, 3, 1)
    y_eval, _ = batch_norm(x, gamma=gamma, beta=beta, running=stats, training=False)
    np.testing.assert_allclose(y_eval, ref_eval, atol=1e-9)


# --- bad input: each error names the value received and what would work -----------------------

@pytest.mark.parametrize("call, words", [
    (lambda: conv2d(np.ones((5, 5)), [[1, 2, 3], [4, 5, 6]]),
     ["must be square", "got 2x3", "3x3 kernel"]),
    (lambda: conv2d(np.ones((5, 5)), [[1, 2], [3]]), ["ragged", "[[1, 2], [3]]", "same length"]),
    (lambda: conv2d(np.ones((5, 5)), [["a", "b"], ["c", "d"]]),
     ["must contain numbers", "'a'", "ints or floats"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((7, 7))),
     ["kernel 7x7 is larger than the padded image 5x5", "at most 5x5"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((9, 9)), padding=1),
     ["larger than the padded image 7x7", "padding 1"]),
    (lambda: conv2d(np.ones((2, 5, 5, 3)), np.ones((3, 3, 3))),
     ["(H, W) grey or (H, W, C) colour", "got shape (2, 5, 5, 3)", "once per image"]),
    (lambda: conv2d(np.ones(5), np.ones((1, 1))), ["got shape (5,)"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((1, 1, 1, 1, 1))), ["got shape (1, 1, 1, 1, 1)"]),
    (lambda: conv2d(np.ones((5, 5, 3)), np.ones((3, 3, 2))),
     ["channel mismatch", "expects 2 channels", "(5, 5, 3) has 3"]),
    (lambda: conv2d(np.ones((5, 5, 3)), np.ones((3, 3))),
     ["channel mismatch", "5x5x3 image with 3 channels", "3x3x3 kernel", "x[:, :, c]"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=2, padding="same"),
     ['padding="same" needs stride 1', "stride (2, 2)", "such as 1"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding="full"),
     ["got 'full'", '"valid" or "same"']),
    (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), padding=-1), ["got -1"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3)), stride=0),
     ["stride must be a positive integer", "got 0"]),
    (lambda: conv2d(np.ones((5, 5)), np.ones((3, 3, 1, 2)), bias=[1, 2, 3]),
     ["one value per filter (2)", "got shape (3,)"]),
    (lambda: max_pool(np.ones((4, 4)), 5),
     ["max_pool window 5x5 is larger than the 4x4 input", "at most 4x4"]),
    (lambda: avg_pool(np.ones((2, 6, 3)), 3),
     ["avg_pool window 3x3 is larger than the 2x6 input", "(2, 6, 3)"]),
    (lambda: max_pool(np.ones((2, 4, 4, 3)), 2), ["(H, W) or (H, W, C)", "(2, 4, 4, 3)"]),
    (lambda: max_pool(np.ones((4, 4)), 0), ["size must be a positive integer", "got 0"]),
    (lambda: max_pool([["x"]], 1), ["must contain numbers"]),
    (lambda: batch_norm(np.ones(3)), ["(N, C) features or (N, H, W, C)", "got shape (3,)"]),
    (lambda: batch_norm(np.ones((1, 3))),
     ["more than one value per feature", "got shape (1, 3)", "batch of 2"]),
    (lambda: batch_norm(np.ones((4, 3)), training=False),
     ["needs running statistics", "running=None"]),
    (lambda: batch_norm(np.ones((4, 3)), gamma=[1, 2]),
     ["gamma must be a scalar or one value per feature (3)", "got shape (2,)"]),
    (lambda: batch_norm(np.ones((4, 3)), running=RunningStats.initial(2)),
     ["for (2,) features", "has 3"]),
    (lambda: parse_kernel("laplace"),
     ["unknown kernel 'laplace'", "did you mean 'laplacian'", "sobel-x", "0,1,0;1,-4,1;0,1,0"]),
    (lambda: parse_kernel("0,1;1,-4,1;0,1,0"), ["ragged", "[2, 3, 3]"]),
    (lambda: parse_kernel("0,1,x;1,-4,1;0,1,0"), ["row 1", "non-numeric entry 'x'"]),
    (lambda: parse_kernel("1,2,3;4,5,6"), ["is 2x3, not square"]),
    (lambda: parse_kernel("1,nan;0,1"), ["non-finite"]),
])
def test_bad_input_is_explained(call, words):
    with pytest.raises(HeadstartError) as info:
        call()
    for word in words:
        assert word in str(info.value)


def test_doctests():
    assert doctest.testmod(ops).failed == 0


# --- sentences: 1-D convolution and max-over-time pooling (Kim 2014) -------------------------

def test_conv1d_worked_example_one_filter():
    # four tokens with 2-number embeddings; a width-2 filter sees each two-word group once
    sentence = [[1, 0], [0, 1], [1, 1], [0, 0]]
    assert ops.conv1d(sentence, [[1, 1], [1, -1]]).tolist() == [0.0, 1.0, 2.0]


def test_conv1d_bank_matches_torch_and_max_over_time_pools_each_filter():
    rng = np.random.default_rng(0)
    x, k, b = rng.normal(size=(7, 5)), rng.normal(size=(3, 5, 4)), rng.normal(size=4)
    ours = ops.conv1d(x, k, bias=b)                                     # (5, 4)
    theirs = F.conv1d(torch.tensor(x.T[None]), torch.tensor(k.transpose(2, 1, 0)), torch.tensor(b))[0].T
    np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-10)
    np.testing.assert_allclose(ops.max_over_time(ours), theirs.amax(0).numpy(), atol=1e-10)
    assert ops.max_over_time([[0.0, 1.0], [3.0, -1.0], [2.0, 0.5]]).tolist() == [3.0, 1.0]


def test_conv1d_refuses_a_filter_longer_than_the_sentence_and_mismatched_embeddings():
    with pytest.raises(HeadstartError, match="longer than the 2-token sequence; pad"):
        ops.conv1d([[1, 0], [0, 1]], np.ones((3, 2)))
    with pytest.raises(HeadstartError, match="same E"):
        ops.conv1d(np.ones((4, 3)), np.ones((2, 2)))
    with pytest.raises(HeadstartError, match="non-empty"):
        ops.max_over_time(np.zeros((0, 2)))
