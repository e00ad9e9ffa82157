"""PyTorch's CPU threads, set per calling thread.

Extraction lanes, decoding threads and the server's threads each already keep one core busy.
PyTorch's small operations in them (resampling a photo, normalising it) would each wake a team
of OpenMP threads, one per core, and those threads spin after every operation on the cores the
backbone engine needs: about a second core's worth of CPU beside the work itself
(docs/benchmarks.md, "Prediction from JPEG files with OpenVINO f32").
"""

from __future__ import annotations

import ctypes
import functools


def one_torch_thread() -> None:
    """Run PyTorch's CPU operations on the calling thread alone, from now on; the other threads,
    and threads started later, keep the process's setting (``torch.set_num_threads`` would change
    that too). A no-op where PyTorch's OpenMP runtime cannot be reached."""
    import torch

    set_threads = _omp_set_num_threads()
    if set_threads is None or torch.get_num_threads() == 1:  # also PyTorch's own first-use set-up of this thread,
        return                                              # which would otherwise overwrite the setting below
    set_threads(1)  # OpenMP keeps this per thread; PyTorch asks OpenMP how many threads it may use


@functools.cache
def _omp_set_num_threads():
    """``omp_set_num_threads`` of the OpenMP runtime PyTorch loaded, or None."""
    try:
        return ctypes.CDLL(None).omp_set_num_threads
    except (OSError, AttributeError):
        return None
