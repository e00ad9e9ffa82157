"""The lecture's building blocks of a CNN, on NumPy arrays, exact and vectorised.

Images are channels-last, as on the lecture's slides: ``(H, W)`` grey or ``(H, W, C)``
colour ("an MxNx3 image"). Every function reproduces a worked example from the lecture and
agrees with ``torch.nn.functional`` (the tests check both).

>>> image = [[1, 1, 1, 0, 0], [0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [0, 0, 1, 1, 0], [0, 1, 1, 0, 0]]
>>> conv2d(image, [[1, 0, 1], [0, 1, 0], [1, 0, 1]]).astype(int).tolist()
[[4, 3, 4], [2, 4, 3], [2, 3, 4]]
>>> max_pool([[1, 3, 5, 3], [4, 2, 3, 1], [3, 1, 1, 3], [0, 1, 0, 4]], 2).tolist()
[[4, 5], [3, 4]]
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import HeadstartError

__all__ = [
    "KERNELS", "RunningStats", "avg_pool", "batch_norm", "conv1d", "conv2d", "max_over_time", "max_pool",
    "parse_kernel",
]

Padding = Union[int, str]


def _kernel(rows: list[list[float]]) -> np.ndarray:
    k = np.array(rows, dtype=np.float64)
    k.flags.writeable = False  # shared module-level constants
    return k


KERNELS: dict[str, np.ndarray] = {
    "laplacian": _kernel([[0, 1, 0], [1, -4, 1], [0, 1, 0]]),  # the lecture's filter
    "sobel-x": _kernel([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]),
    "sobel-y": _kernel([[-1, -2, -1], [0, 0, 0], [1, 2, 1]]),
    "sharpen": _kernel([[0, -1, 0], [-1, 5, -1], [0, -1, 0]]),
    "box": _kernel([[1 / 9] * 3] * 3),
    "identity": _kernel([[0, 0, 0], [0, 1, 0], [0, 0, 0]]),
}
_MATRIX_HINT = 'a name or a square matrix with rows separated by ";", e.g. "0,1,0;1,-4,1;0,1,0"'


def _shape(a: np.ndarray) -> str:
    return "x".join(str(n) for n in a.shape)


def _as_array(value, what: str) -> np.ndarray:
    """Any nested list or array of numbers -> ndarray; ragged or non-numeric -> HeadstartError."""
    try:
        a = np.asarray(value)
    except ValueError as e:  # ragged nested lists
        raise HeadstartError(
            f"{what} must be a rectangular array of numbers, got a ragged one: {value!r} "
            f"({e}); give every row the same length") from None
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise HeadstartError(
            f"{what} must contain numbers, got {a.dtype} values: {value!r}; "
            f"pass ints or floats, e.g. [[0, 1, 0], [1, -4, 1], [0, 1, 0]]")
    if a.dtype == bool:
        a = a.astype(np.float64)
    return a


def _float_dtype(*arrays: np.ndarray) -> np.dtype:
    dt = np.result_type(*arrays)
    return dt if np.issubdtype(dt, np.floating) else np.dtype(np.float64)


def _pair(value, what: str) -> tuple[int, int]:
    pair = (value, value) if np.isscalar(value) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in pair):
        raise HeadstartError(f"{what} must be a positive integer or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _resolve_padding(padding: Padding, kh: int, kw: int, stride: tuple[int, int]):
    """-> ((top, bottom), (left, right)), torch's convention for "same" with even kernels."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0), (0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise HeadstartError(
                    f'padding="same" needs stride 1, got stride {stride}; use an integer '
                    f"padding such as {kh // 2} with stride > 1")
            # Extra padding for an even kernel goes at the bottom/right, as in PyTorch.
            return (((kh - 1) // 2, kh - 1 - (kh - 1) // 2),
                    ((kw - 1) // 2, kw - 1 - (kw - 1) // 2))
        raise HeadstartError(f'padding must be an integer, "valid" or "same", got {padding!r}')
    if not isinstance(padding, (int, np.integer)) or isinstance(padding, bool) or padding < 0:
        raise HeadstartError(f'padding must be a non-negative integer, "valid" or "same", '
                             f"got {padding!r}")
    return (int(padding), int(padding)), (int(padding), int(padding))


def conv2d(image, kernel, *, stride: int | tuple[int, int] = 1, padding: Padding = 0,
           bias: float | np.ndarray = 0.0) -> np.ndarray:
    """Slide ``kernel`` over ``image`` and sum the products (the lecture's convolution).

    Like deep learning frameworks (and the lecture's slide), this is cross-correlation:
    the kernel is not flipped. Shapes:

    - ``(H, W)`` image, ``(k, k)`` kernel -> ``(H', W')``;
    - ``(H, W, C)`` colour image, ``(k, k, C)`` kernel -> ``(H', W')``, summed over channels
      (the lecture's "convolution operation on a MxNx3 image");
    - ``(H, W, C)`` (or ``(H, W)``, as C = 1) image, a bank of filters ``(k, k, C, F)``
      -> ``(H', W', F)``.

    ``padding`` is a number of zero rows/columns on every side, ``"valid"`` (0) or
    ``"same"`` (output as large as the input; stride 1). ``H' = (H + 2p - k) // stride + 1``.
    ``bias`` is a scalar or one value per filter. The kernel must be square.

    >>> conv2d([[1, 2], [3, 4]], [[1]], bias=1).tolist()
    [[2.0, 3.0], [4.0, 5.0]]
    """
    x = _as_array(image, "conv2d image")
    k = _as_array(kernel, "conv2d kernel")
    if x.ndim not in (2, 3):
        raise HeadstartError(
            f"conv2d takes an (H, W) grey or (H, W, C) colour image, got shape {x.shape}; "
            "for a batch, call it once per image")
    if k.ndim not in (2, 3, 4):
        raise HeadstartError(
            f"conv2d kernel must be (k, k), (k, k, C) or a bank (k, k, C, F), got shape {k.shape}")
    if k.shape[0] != k.shape[1]:
        raise HeadstartError(
            f"conv2d kernel must be square, got {k.shape[0]}x{k.shape[1]} (shape {k.shape}); "
            "use e.g. a 3x3 kernel such as [[0, 1, 0], [1, -4, 1], [0, 1, 0]]")
    squeeze_filters = k.ndim < 4
    x3 = x[:, :, None] if x.ndim == 2 else x  # (H, W, C)
    if k.ndim == 2:
        if x.ndim == 3 and x.shape[2] != 1:
            raise HeadstartError(
                f"channel mismatch: a {_shape(k)} kernel on a {_shape(x)} image with "
                f"{x.shape[2]} channels; pass a {k.shape[0]}x{k.shape[1]}x{x.shape[2]} kernel "
                "(summed over channels) or convolve each channel x[:, :, c] separately")
        k = k[:, :, None]
    k4 = k[..., None] if k.ndim == 3 else k  # (k, k, C, F)
    if k4.shape[2] != x3.shape[2]:
        raise HeadstartError(
            f"channel mismatch: the kernel of shape {k.shape} expects {k4.shape[2]} channels, "
            f"but the image of shape {x.shape} has {x3.shape[2]}; make the kernel's third "
            "dimension equal to the image's channels")
    sh, sw = _pair(stride, "conv2d stride")
    kh, kw = k4.shape[:2]
    (pt, pb), (pl, pr) = _resolve_padding(padding, kh, kw, (sh, sw))
    ph, pw = x3.shape[0] + pt + pb, x3.shape[1] + pl + pr
    if kh > ph or kw > pw:
        raise HeadstartError(
            f"conv2d kernel {kh}x{kw} is larger than the padded image {ph}x{pw} "
            f"(image {x3.shape[0]}x{x3.shape[1]}, padding {padding!r}); use a kernel of at most "
            f'{ph}x{pw}, more padding, or padding="same"')
    dtype = _float_dtype(x3, k4)
    xp = np.pad(x3.astype(dtype, copy=False), ((pt, pb), (pl, pr), (0, 0)))
    oh, ow = (ph - kh) // sh + 1, (pw - kw) // sw + 1
    k4 = k4.astype(dtype, copy=False)
    out = np.zeros((oh, ow, k4.shape[3]), dtype=dtype)
    # One vectorised step per kernel offset (k*k steps, never per pixel): the strided view of
    # the image that this kernel entry touches, times that entry's (C, F) weights. Memory
    # stays at one image-sized buffer, where a full im2col would need k*k of them.
    for i in range(kh):
        for j in range(kw):
            window = xp[i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]  # (oh, ow, C)
            out += window @ k4[i, j]  # (oh, ow, F)
    b = np.asarray(bias, dtype=dtype)
    if b.ndim > 1 or (b.ndim == 1 and b.shape[0] != out.shape[2]):
        raise HeadstartError(
            f"conv2d bias must be a scalar or one value per filter ({out.shape[2]}), "
            f"got shape {b.shape}")
    out += b
    return out[:, :, 0] if squeeze_filters else out


def conv1d(sequence, kernel, *, bias: float | np.ndarray = 0.0) -> np.ndarray:
    """Slide a width-``w`` filter along a sentence (Kim 2014): the 1-D convolution of text.

    ``sequence`` is ``(L, E)``: L tokens, each an E-number embedding (or ``(L,)``, E = 1).
    ``kernel`` is ``(w, E)`` (one filter -> ``(L - w + 1,)``) or a bank ``(w, E, F)``
    (-> ``(L - w + 1, F)``); no padding, stride 1, no flip, as ``torch.nn.functional.conv1d``.
    Each output is one w-word group's match with the filter.

    >>> conv1d([[1, 0], [0, 1], [1, 1], [0, 0]], [[1, 1], [1, -1]]).tolist()
    [0.0, 1.0, 2.0]
    """
    x = _as_array(sequence, "conv1d sequence")
    k = _as_array(kernel, "conv1d kernel")
    x = x[:, None] if x.ndim == 1 else x
    k = k[:, None] if k.ndim == 1 else k
    if x.ndim != 2 or k.ndim not in (2, 3) or k.shape[1] != x.shape[1]:
        raise HeadstartError(
            f"conv1d takes a sequence (L, E) and a kernel (w, E) or bank (w, E, F) with the same E; got "
            f"sequence {x.shape} and kernel {k.shape}. Make the kernel's second size the embedding size.")
    if k.shape[0] > x.shape[0]:
        raise HeadstartError(
            f"conv1d filter of width {k.shape[0]} is longer than the {x.shape[0]}-token sequence; "
            "pad the sequence to at least the filter width (the lecture's \"fixed size, can use padding\").")
    dtype = _float_dtype(x, k)
    windows = sliding_window_view(x.astype(dtype), k.shape[0], axis=0)  # (L', E, w)
    out = np.einsum("lew,we...->l...", windows, k.astype(dtype)) + np.asarray(bias, dtype)
    return out


def max_over_time(feature_map) -> np.ndarray:
    """The largest value of each feature map over the whole sentence (Collobert et al. 2011,
    Kim 2014): ``(L',)`` -> a number, ``(L', F)`` -> ``(F,)``. Any sentence length gives one
    value per filter, so sentences of different lengths become vectors of one size.

    >>> max_over_time([[0.0, 1.0], [3.0, -1.0], [2.0, 0.5]]).tolist()
    [3.0, 1.0]
    """
    a = _as_array(feature_map, "max_over_time input")
    if a.ndim not in (1, 2) or a.shape[0] == 0:
        raise HeadstartError(f"max_over_time takes a non-empty (L,) or (L, F) feature map, got shape {a.shape}.")
    return a.max(axis=0)


def _pool(x, size, stride, name: str) -> np.ndarray:
    """Windows of ``x`` as a view (H', W'[, C], kh, kw); no copy."""
    a = _as_array(x, f"{name} input")
    if a.ndim not in (2, 3):
        raise HeadstartError(
            f"{name} takes an (H, W) or (H, W, C) array, got shape {a.shape}")
    kh, kw = _pair(size, f"{name} size")
    sh, sw = _pair(size if stride is None else stride, f"{name} stride")
    if kh > a.shape[0] or kw > a.shape[1]:
        raise HeadstartError(
            f"{name} window {kh}x{kw} is larger than the {a.shape[0]}x{a.shape[1]} input "
            f"(shape {a.shape}); use a window of at most {a.shape[0]}x{a.shape[1]}")
    return sliding_window_view(a, (kh, kw), axis=(0, 1))[::sh, ::sw]


def max_pool(x, size: int | tuple[int, int], *, stride: int | tuple[int, int] | None = None
             ) -> np.ndarray:
    """The maximum of each ``size`` x ``size`` window, moved by ``stride`` (default: ``size``).

    ``(H, W)`` or ``(H, W, C)`` (each channel on its own) -> ``(H', W'[, C])`` with
    ``H' = (H - size) // stride + 1``, as ``torch.nn.functional.max_pool2d``.

    >>> max_pool([[1, 3, 5, 3], [4, 2, 3, 1], [3, 1, 1, 3], [0, 1, 0, 4]], 2).tolist()
    [[4, 5], [3, 4]]
    """
    return _pool(x, size, stride, "max_pool").max(axis=(-2, -1))


def avg_pool(x, size: int | tuple[int, int], *, stride: int | tuple[int, int] | None = None
             ) -> np.ndarray:
    """The mean of each ``size`` x ``size`` window; shapes as :func:`max_pool`.

    >>> avg_pool([[1, 3], [4, 2]], 2).tolist()
    [[2.5]]
    """
    w = _pool(x, size, stride, "avg_pool")
    return w.mean(axis=(-2, -1), dtype=_float_dtype(w))


@dataclass(frozen=True)
class RunningStats:
    """Per-feature running mean and variance kept for inference; ``count`` = batches seen."""

    mean: np.ndarray
    var: np.ndarray
    count: int = 0

    @classmethod
    def initial(cls, features: int) -> "RunningStats":
        """PyTorch's starting point: mean 0, variance 1."""
        return cls(np.zeros(features), np.ones(features), 0)


def _per_feature(value, c: int, what: str) -> np.ndarray:
    v = _as_array(value, f"batch_norm {what}").astype(np.float64)
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != c):
        raise HeadstartError(
            f"batch_norm {what} must be a scalar or one value per feature ({c}), "
            f"got shape {v.shape}")
    return v


def batch_norm(x, *, gamma=1.0, beta=0.0, eps: float = 1e-5, running: RunningStats | None = None,
               momentum: float | None = 0.1, training: bool = True
               ) -> tuple[np.ndarray, RunningStats]:
    """Normalise each feature over the batch, then scale by ``gamma`` and shift by ``beta``.

    ``x`` is ``(N, C)`` (features) or ``(N, H, W, C)`` (channels-last feature maps). The
    features are the last axis; the statistics of each one are taken over every other axis
    (the batch, and the positions for feature maps), as ``BatchNorm1d`` / ``BatchNorm2d``.

    Training: ``y = (x - batch mean) / sqrt(batch var + eps) * gamma + beta`` with the
    biased batch variance; the running statistics move by ``momentum`` towards the batch's
    (the running variance takes the unbiased batch variance, as PyTorch does;
    ``momentum=None`` keeps a plain average over all batches). Inference (``training=False``):
    the same formula with the running mean and variance, which are returned unchanged.

    Returns ``(y, running)``; ``running`` starts at mean 0, variance 1 when not given.

    >>> y, stats = batch_norm([[1.0], [3.0]])
    >>> y.round(3).ravel().tolist(), stats.mean.tolist(), stats.count
    ([-1.0, 1.0], [0.2], 1)
    """
    a = _as_array(x, "batch_norm input")
    if a.ndim not in (2, 4):
        raise HeadstartError(
            f"batch_norm takes (N, C) features or (N, H, W, C) feature maps, got shape "
            f"{a.shape}; add a batch axis, e.g. x[None] for a single image")
    c = a.shape[-1]
    dtype = _float_dtype(a)
    a = a.astype(dtype, copy=False)
    axes = tuple(range(a.ndim - 1))  # everything but the feature axis
    n = a.size // c  # values per feature
    g, b = _per_feature(gamma, c, "gamma"), _per_feature(beta, c, "beta")
    if running is not None and (np.shape(running.mean) != (c,) or np.shape(running.var) != (c,)):
        raise HeadstartError(
            f"running statistics are for {np.shape(running.mean)} features, but the input "
            f"of shape {a.shape} has {c}; pass the RunningStats returned for this layer")
    if training:
        if n < 2:
            raise HeadstartError(
                f"batch_norm in training needs more than one value per feature to take a "
                f"batch variance, got shape {a.shape}; use a batch of 2 or more, or "
                "training=False with running statistics")
        mean = a.mean(axis=axes)
        var = a.var(axis=axes)
        prev = running if running is not None else RunningStats.initial(c)
        count = prev.count + 1
        m = 1.0 / count if momentum is None else momentum
        running = RunningStats(
            mean=(1 - m) * prev.mean + m * mean,
            var=(1 - m) * prev.var + m * var * n / (n - 1),
            count=count,
        )
    else:
        if running is None:
            raise HeadstartError(
                "batch_norm with training=False needs running statistics, got running=None; "
                "pass the RunningStats returned by a training call")
        mean, var = running.mean, running.var
    y = (a - mean) / np.sqrt(var + eps) * g + b
    return y.astype(dtype, copy=False), running


def parse_kernel(text: str) -> np.ndarray:
    """A kernel by name (see :data:`KERNELS`) or as a matrix: ``"0,1,0;1,-4,1;0,1,0"``.

    Rows are separated by ``;``, entries by ``,`` (spaces allowed). The result is a new
    square float64 array.

    >>> parse_kernel("laplacian").tolist() == parse_kernel("0,1,0;1,-4,1;0,1,0").tolist()
    True
    """
    s = str(text).strip()
    if s.lower() in KERNELS:
        return KERNELS[s.lower()].copy()
    if not re.search(r"[\d,;]", s):
        close = difflib.get_close_matches(s.lower(), KERNELS, n=3)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
        raise HeadstartError(
            f"unknown kernel {text!r}; {hint}use one of {', '.join(KERNELS)}, or {_MATRIX_HINT}")
    rows = []
    for r, row in enumerate(s.strip(";").split(";"), 1):
        values = []
        for entry in row.split(","):
            try:
                values.append(float(entry))
            except ValueError:
                raise HeadstartError(
                    f"kernel {text!r}: row {r} has a non-numeric entry {entry.strip()!r}; "
                    f"give numbers only, as {_MATRIX_HINT}") from None
        rows.append(values)
    lengths = [len(r) for r in rows]
    if len(set(lengths)) != 1:
        raise HeadstartError(
            f"kernel {text!r} is ragged: its rows have {lengths} entries; give every row "
            f"the same number, as {_MATRIX_HINT}")
    if lengths[0] != len(rows):
        raise HeadstartError(
            f"kernel {text!r} is {len(rows)}x{lengths[0]}, not square; give as many rows as "
            f"columns, as {_MATRIX_HINT}")
    k = np.array(rows, dtype=np.float64)
    if not np.isfinite(k).all():
        raise HeadstartError(f"kernel {text!r} has non-finite entries; give finite numbers")
    return k
