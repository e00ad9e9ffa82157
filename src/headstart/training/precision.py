"""One answer to "train in bfloat16 here?", for every loop (the head's, end-to-end)."""

from __future__ import annotations

import torch

from ..errors import HeadstartError


def use_bf16(setting: str, device: torch.device = torch.device("cpu")) -> bool:
    """``setting`` "on" / "off", or "auto": on CUDA that supports it, and on CPUs with AMX /
    AVX512-BF16 (which run bfloat16 matmuls much faster; elsewhere they are emulated, slower)."""
    if setting not in ("auto", "on", "off"):
        raise HeadstartError(f"bf16 must be 'auto', 'on' or 'off', got {setting!r}")
    if setting != "auto":
        return setting == "on"
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
