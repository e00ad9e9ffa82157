"""Run a frozen backbone for inference: OpenVINO when installed, else ONNX Runtime (both
several times faster than eager PyTorch on a CPU; docs/benchmarks.md), PyTorch otherwise, CUDA
when present.

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

    @classmethod
    def close_arena_sessions(cls) -> None:
        """Forget the sessions that keep a memory arena (the largest batch's buffers, for good):
        a server after a teach job's extraction."""
        for key in [k for k in cls._sessions if k[3]]:
            cls._sessions.pop(key, None)

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


ENGINE_NAMES = ("auto", "openvino", "onnxruntime", "torch")
PRECISION_ENV = "HEADSTART_PRECISION"  # "f32" (default) or "bf16": OpenVINO's inference precision


def openvino_precision() -> str:
    """The precision OpenVINO runs at: f32 unless ``$HEADSTART_PRECISION`` says bf16."""
    from .openvino_engine import PRECISIONS

    value = os.environ.get(PRECISION_ENV, "f32").strip().lower() or "f32"
    if value not in PRECISIONS:
        raise ValueError(f"{PRECISION_ENV}={value!r} is not a precision; use one of {', '.join(PRECISIONS)} "
                         f"(or unset it for f32)")
    return value


def resolve(prefer: str = "auto") -> str:
    """The engine ``prefer`` means on this machine, without opening it: "auto" is torch on a GPU,
    else OpenVINO when installed, else ONNX Runtime when installed, else torch."""
    if prefer not in ENGINE_NAMES:
        raise ValueError(f"engine must be one of {', '.join(ENGINE_NAMES)}, got {prefer!r}")
    if prefer != "auto":
        return prefer
    if torch.cuda.is_available():
        return "torch"
    from .openvino_engine import available

    if available():
        return "openvino"
    import importlib.util

    return "onnxruntime" if importlib.util.find_spec("onnxruntime") is not None else "torch"


def features_key(cache_key: str, prefer: str = "auto") -> str:
    """The feature-cache key of a backbone's features from engine ``prefer``: ``cache_key``
    itself for f32 (OpenVINO, ONNX Runtime and PyTorch agree to ~1e-5, below what a head can
    tell), with the precision added where it differs (bf16 features are not f32 features)."""
    if resolve(prefer) == "openvino" and openvino_precision() != "f32":
        return f"{cache_key}|{openvino_precision()}"
    return cache_key


def make_engine(model: nn.Module, key: str, input_shape: tuple[int, int, int], prefer: str = "auto",
                threads: int | None = None, spin: bool = True, arena: bool | str = True):
    """``prefer``: "auto" (see ``resolve``), "openvino", "onnxruntime" or "torch". ``threads``
    sets up ONNX Runtime and OpenVINO (threads per call; fewer than the cores lets several
    callers run at once), ``spin`` and ``arena`` ONNX Runtime alone (``OnnxEngine``). OpenVINO
    refusing the model (or missing, under "auto") falls back to ONNX Runtime with a one-line warning."""
    engine = resolve(prefer)
    if engine == "torch":
        return TorchEngine(model)
    if engine == "openvino":
        try:
            from .openvino_engine import OpenVinoEngine

            return OpenVinoEngine(_export_once(model, key, input_shape), threads, openvino_precision())
        except ImportError:
            if prefer == "openvino":
                raise ImportError("engine 'openvino' needs the openvino package: pip install openvino") from None
        except RuntimeError as e:  # OpenVINO could not read or compile this model
            warnings.warn(f"OpenVINO refused the model ({str(e).splitlines()[0][:200]}); "
                          "running it with ONNX Runtime instead", RuntimeWarning, stacklevel=2)
    try:
        return OnnxEngine(model, key, input_shape, threads, spin, arena)
    except ImportError:
        if prefer == "onnxruntime":
            raise
        return TorchEngine(model)
