"""The backbone on OpenVINO's CPU runtime: the same cached ONNX file ONNX Runtime reads,
compiled once per process and setting (docs/benchmarks.md, "OpenVINO").

``precision``: "f32" (the default: features match ONNX Runtime's to ~1e-5, so cached features
are shared) or "bf16" (OpenVINO's own default where the CPU has it; faster, features differ,
cached under their own key). ``threads``: threads per call; with fewer than the machine's
cores the model gets one stream per share, so that many callers run at once (lanes, server
workers) instead of queueing behind one another.
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path

import numpy as np

PRECISIONS = ("f32", "bf16")


def available() -> bool:
    """Whether the ``openvino`` package can be imported (it is not imported here)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


class OpenVinoEngine:
    """A compiled OpenVINO model; thread-safe (each call borrows its own infer request)."""

    name = "openvino"
    _compiled: dict[tuple[str, int, int, str], object] = {}
    _lock = threading.Lock()

    def __init__(self, onnx_path: Path, threads: int | None = None, precision: str = "f32"):
        if precision not in PRECISIONS:
            raise ValueError(f"OpenVINO precision must be one of {PRECISIONS}, got {precision!r}")
        cores = os.cpu_count() or 1
        self.threads = max(1, min(threads or cores, cores))
        self.streams = max(1, cores // self.threads)
        self.precision = precision
        self.path = Path(onnx_path)
        self.compiled = self._compile(self.path, self.threads, self.streams, precision)
        self._requests: queue.SimpleQueue = queue.SimpleQueue()

    @classmethod
    def _compile(cls, path: Path, threads: int, streams: int, precision: str):
        key = (str(path), threads, streams, precision)
        with cls._lock:
            found = cls._compiled.get(key)
            if found is not None:
                return found

            config = {
                "INFERENCE_PRECISION_HINT": precision,
                # one stream: all threads on each call (latency); several: one call per stream at once
                "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
                "NUM_STREAMS": str(streams),
                "INFERENCE_NUM_THREADS": threads * streams,
            }
            compiled = _core().compile_model(_core().read_model(str(path)), "CPU", config)
            if len(cls._compiled) >= 8:  # a few backbones and settings per process; drop the oldest
                cls._compiled.pop(next(iter(cls._compiled)))
            cls._compiled[key] = compiled
            return compiled

    def __call__(self, x: np.ndarray) -> np.ndarray:  # (B, C, H, W) -> (B, D)
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer({0: np.ascontiguousarray(x, dtype=np.float32)})
            return np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the request's buffer is reused
        finally:
            self._requests.put(request)


_CORE = None


def _core():
    """The process's ``openvino.Core`` (callers hold ``OpenVinoEngine._lock``)."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        # The bindings set up their NumPy interface on first use, and two threads getting there at
        # once deadlock (pybind11's once-guard vs the GIL; seen with two extraction lanes): do it here.
        ov.Tensor(np.zeros(1, np.float32)).data.sum()
        _CORE = ov.Core()
    return _CORE
