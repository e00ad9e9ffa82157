"""Reading a model folder's ``*.safetensors`` files without trusting them.

The header is read here, not by the ``safetensors`` package: its length is bounded and every
tensor's dtype, shape and byte range are checked before a single tensor is allocated, so a
tampered file fails with a message that names it instead of a ``SafetensorError`` traceback or
a huge allocation (see ``read_header``).
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import HeadstartError

MAX_HEADER_BYTES = 16 * 1024 * 1024  # thousands of tensors need well under 1 MiB of header
ITEMSIZE = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "I16": 2, "F16": 2,
            "BF16": 2, "U32": 4, "I32": 4, "F32": 4, "U64": 8, "I64": 8, "F64": 8}
FLOATS = ("F16", "BF16", "F32", "F64")
RETRAIN = "Copy the model folder again from where it was trained, or retrain it with `headstart train`."


@dataclass(frozen=True)
class TensorInfo:
    dtype: str               # safetensors dtype name, e.g. "F32"
    shape: tuple[int, ...]
    start: int               # byte range in the data section
    end: int


def _refuse(path: Path, problem: str, fix: str = RETRAIN) -> HeadstartError:
    return HeadstartError(f"model file {str(path)!r} {problem}. {fix}")


def check_inside(path: Path, folder: Path) -> None:
    """``path`` is a regular file of ``folder`` (a link may point only inside the folder)."""
    if path.is_symlink():
        target = path.resolve()
        if not target.is_relative_to(folder.resolve()):
            raise _refuse(path, f"is a symbolic link to {str(target)!r}, outside the model folder; a model "
                                "folder holds its own weights", "Replace the link with the real file, or retrain.")
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        raise _refuse(path, f"cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _refuse(path, "is not a regular file (a folder, device or pipe)")


def _kind_of_foreign(head: bytes) -> str | None:
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle (what older torch.save wrote)"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (what torch.save writes)"
    return None


def read_header(path: Path, data: bytes) -> dict[str, TensorInfo]:
    """The tensors a safetensors file's bytes describe, each checked against the bytes that hold it."""
    if len(data) < 8:
        raise _refuse(path, f"is {'empty' if not data else f'only {len(data)} bytes long'}, not a safetensors file")
    foreign = _kind_of_foreign(data[:8])
    if foreign:
        raise _refuse(path, f"is {foreign} renamed to .safetensors; headstart never loads pickled files, which "
                            "can run code", "Convert it with safetensors.torch.save_file, or retrain.")
    n = int.from_bytes(data[:8], "little")
    if n > MAX_HEADER_BYTES or n > len(data) - 8:
        raise _refuse(path, f"declares a header of {n:,} bytes in a file of {len(data):,} bytes (at most "
                            f"{MAX_HEADER_BYTES:,} allowed): it is damaged or not a safetensors file")
    try:
        header = json.loads(data[8:8 + n])
    except (ValueError, RecursionError) as e:
        raise _refuse(path, f"has a header that is not valid JSON ({type(e).__name__}): it is damaged") from None
    if not isinstance(header, dict):
        raise _refuse(path, f"has a header that is a JSON {type(header).__name__}, expected an object of tensors")
    header.pop("__metadata__", None)
    tensors = {name: _tensor(path, name, entry) for name, entry in header.items()}
    _check_layout(path, tensors, len(data) - 8 - n)
    return tensors


def _tensor(path: Path, name: str, entry) -> TensorInfo:
    if not isinstance(entry, dict):
        raise _refuse(path, f"describes tensor {name!r} as {type(entry).__name__}, expected an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if dtype not in ITEMSIZE:
        raise _refuse(path, f"gives tensor {name!r} the unknown dtype {dtype!r}")
    if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
        raise _refuse(path, f"gives tensor {name!r} the shape {shape!r}, expected a list of sizes >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
            and 0 <= offsets[0] <= offsets[1]):
        raise _refuse(path, f"gives tensor {name!r} the byte range {offsets!r}, expected [start, end]")
    start, end = offsets
    if end - start != math.prod(shape) * ITEMSIZE[dtype]:
        raise _refuse(path, f"says tensor {name!r} ({dtype} {shape}) fills bytes {start}..{end}, which is "
                            f"{end - start:,} bytes, not the {math.prod(shape) * ITEMSIZE[dtype]:,} its shape needs")
    return TensorInfo(dtype, tuple(shape), start, end)


def _check_layout(path: Path, tensors: dict[str, TensorInfo], size: int) -> None:
    """The byte ranges tile the data section exactly: no gap, no overlap, nothing past the end."""
    at = 0
    for name, t in sorted(tensors.items(), key=lambda kv: (kv[1].start, kv[1].end)):
        if t.start != at:
            raise _refuse(path, f"places tensor {name!r} at byte {t.start:,} where byte {at:,} was expected "
                                "(overlapping or missing data)")
        at = t.end
    if at != size:
        raise _refuse(path, f"has {size:,} bytes of tensor data but its header accounts for {at:,}: it was "
                            "truncated or altered")


def read_file(path: Path, folder: Path) -> tuple[bytes, dict[str, TensorInfo]]:
    """The file's bytes and its checked header; tensors are built from these same bytes later."""
    check_inside(path, folder)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise _refuse(path, f"cannot be read ({e.strerror})") from None
    return data, read_header(path, data)


def check_against(path: Path, tensors: dict[str, TensorInfo], expected: dict[str, tuple[tuple[int, ...], str]],
                  what: str) -> None:
    """The file holds exactly the tensors ``expected`` names (shape, dtype kind), as config.json implies."""
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise _refuse(path, f"does not hold the tensors {what} needs: missing {missing[:3]}, unexpected {extra[:3]}"
                            f" ({len(missing)} missing, {len(extra)} unexpected)")
    for name, (shape, kind) in expected.items():
        t = tensors[name]
        if t.shape != tuple(shape):
            raise _refuse(path, f"holds {name!r} of shape {list(t.shape)}, but {what} needs {list(shape)}: the "
                                "weights and config.json disagree")
        if (kind == "float") != (t.dtype in FLOATS):
            raise _refuse(path, f"holds {name!r} as {t.dtype}; {what} needs "
                                f"{'floating-point' if kind == 'float' else 'integer'} values there")


def tensors_from(path: Path, data: bytes) -> dict:
    """Tensors from bytes ``read_header`` accepted; floating ones must be finite."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        state = load(data)
    except SafetensorError as e:
        raise _refuse(path, f"cannot be decoded ({e})") from None
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise _refuse(path, f"holds {bad:,} NaN or infinite values in {name!r}; a model with them predicts nothing "
                                "useful")
    return state
