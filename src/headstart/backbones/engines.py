"""Run a frozen backbone for inference: ONNX Runtime when available (several times faster than
eager PyTorch on a CPU; docs/benchmarks.md), PyTorch otherwise, CUDA when present.

The ONNX file is exported once per backbone and kept in the cache folder, written atomically.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..paths import atomic_path, cache_dir


class TorchEngine:
    """Eager PyTorch, under ``inference_mode``, on CUDA when present."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str | None = None):
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.eval().to(self.device)

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (B, C, H, W) -> (B, D)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x).to(self.device))
        return out.float().cpu().numpy()


class OnnxEngine:
    """ONNX Runtime on the CPU; the model is exported once and cached by ``key``.

    ``threads``: intra-op threads (default: every core). ``spin``: whether idle threads
    spin-wait between operators (ONNX Runtime's default). Spinning wins when the session has
    the cores to itself; when decoding or serving shares them, spinning threads burn the time
    the other work needs (docs/serve.md), so those
    callers ask for ``spin=False``. With ``threads=1`` the calling thread does the work, so
    several threads can run one session at once, one per core. ``arena``: ONNX Runtime's CPU
    memory arena, True (its default), False, or "shrink" (kept during a call, handed back after
    each one); the arena otherwise keeps the buffers of the largest batch it ever ran for the
    life of the session, which a long-running server cannot afford.

    Sessions are kept for the life of the process (opening one costs as much as running a few
    dozen images), so repeated ``predict`` or ``extract_features`` calls reuse them.
    ``InferenceSession.run`` is thread-safe.
    """

    name = "onnxruntime"
    _sessions: dict[tuple, object] = {}

    def __init__(self, model: nn.Module, key: str, input_shape: tuple[int, int, int],
                 threads: int | None = None, spin: bool = True, arena: bool | str = True):
        self.path = _export_once(model, key, input_shape)
        self.threads = threads or os.cpu_count() or 1
        self.session = self._session(self.path, self.threads, spin, bool(arena))
        self.input_name = self.session.get_inputs()[0].name
        self.run_options = None
        if arena == "shrink":
            import onnxruntime as ort

            self.run_options = ort.RunOptions()
            self.run_options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    @classmethod
    def _session(cls, path: Path, threads: int, spin: bool, arena: bool = True):
        import onnxruntime as ort

        found = cls._sessions.get((str(path), threads, spin, arena))
        if found is not None:
            return found
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        if not spin:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if not arena:
            opts.enable_cpu_mem_arena = False
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        if len(cls._sessions) >= 8:  # a few backbones and settings per process; drop the oldest
            cls._sessions.pop(next(iter(cls._sessions)))
        cls._sessions[(str(path), threads, spin, arena)] = session
        return session

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (B, C, H, W) -> (B, D)
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)},
                                self.run_options)[0]


def export_onnx(model: nn.Module, path: Path, input_shape: tuple[int, int, int]) -> None:
    """Export with a dynamic batch axis (legacy TorchScript exporter: no onnxscript needed)."""
    dummy = torch.zeros(1, *input_shape)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the legacy exporter is deliberate
        torch.onnx.export(model.eval().cpu(), (dummy,), str(tmp), opset_version=17, dynamo=False,
                          input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def _export_once(model: nn.Module, key: str, input_shape: tuple[int, int, int]) -> Path:
    digest = hashlib.sha256(f"{key}|{input_shape}|{torch.__version__}".encode()).hexdigest()[:20]
    path = cache_dir() / "onnx" / f"{digest}.onnx"
    if not path.exists():
        export_onnx(model, path, input_shape)
    return path


def make_engine(model: nn.Module, key: str, input_shape: tuple[int, int, int], prefer: str = "auto",
                threads: int | None = None, spin: bool = True, arena: bool | str = True):
    """``prefer``: "auto" (CUDA torch if a GPU is present, else ONNX Runtime, else torch),
    "onnxruntime" or "torch". ``threads``, ``spin`` and ``arena`` set up ONNX Runtime (``OnnxEngine``)."""
    if prefer not in ("auto", "onnxruntime", "torch"):
        raise ValueError(f"engine must be auto, onnxruntime or torch, got {prefer!r}")
    if prefer == "torch" or (prefer == "auto" and torch.cuda.is_available()):
        return TorchEngine(model)
    try:
        return OnnxEngine(model, key, input_shape, threads, spin, arena)
    except ImportError:
        if prefer == "onnxruntime":
            raise
        return TorchEngine(model)
