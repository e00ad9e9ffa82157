"""A model as the server runs it: images become input arrays in the upload threads, and the
batch workers only stack them and run the backbone and head.

The server shares its cores with decoding, HTTP and often its own clients, so its ONNX Runtime
sessions differ from the library's in two settings (the figures: ``docs/serve.md``):

- each batch worker gets ``threads`` intra-op threads (the cores shared out between the
  workers) instead of all the cores: one batch computes while the next one fills, with no
  barrier between threads that the other work keeps waiting;
- threads do not spin-wait between operators: spinning burns the CPU time that decoding and
  the other batch need;
- ONNX Runtime's memory arena is off: otherwise it keeps the buffers of the largest batch for
  the life of the server (about 1.2 GB more at rest after batches of 32); off cost less server
  CPU per image than shrinking the arena after each call (docs/benchmarks.md).

All three are options of ``backbone.engine()`` (``backbones.engines.OnnxEngine``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

import numpy as np


def default_workers() -> int:
    """Batches in flight: one per core, up to 4 (then each worker gets several threads)."""
    return max(1, min(4, os.cpu_count() or 1))


class Predictor:
    """``predict(arrays, top_k) -> rows`` in the workers, for arrays made in any thread by
    ``data.inputs.load_input(upload, predictor.preprocess)``.

    >>> p = Predictor(load("model/"), threads=1)                      # doctest: +SKIP
    >>> p.predict([load_input(jpeg_bytes, p.preprocess)], top_k=3)    # doctest: +SKIP
    [{'label': 'cat', 'probability': 0.93, 'top': [...]}]
    """

    def __init__(self, clf: Any, threads: int = 1):
        self.clf = clf
        self.preprocess = clf.backbone_.preprocess
        self.engine = _serving_engine(clf, threads)

    def predict(self, inputs: Sequence[np.ndarray], top_k: int) -> list[dict]:
        return self.clf.predict_inputs(np.stack(inputs), top_k, engine=self.engine)


def serving_engine(prefer: str) -> str:
    """The engine the server runs for ``prefer``: "auto" means ONNX Runtime rather than OpenVINO,
    which keeps ~0.65 GB after a batch of 32 for good, where a server left running must come
    back to its starting memory (``--engine openvino`` for speed)."""
    from ..backbones.engines import resolve

    if prefer == "auto" and resolve("auto") == "openvino" and importlib.util.find_spec("onnxruntime"):
        return "onnxruntime"
    return prefer


def _serving_engine(clf: Any, threads: int):
    # ONNX Runtime: ``threads`` per worker, no spin-waiting, no memory arena; PyTorch (a GPU,
    # or no ONNX Runtime) ignores them and keeps its own threading.
    return clf.backbone_.engine(prefer=serving_engine(getattr(clf, "engine", "auto")), threads=max(1, threads),
                                spin=False, arena=False)
