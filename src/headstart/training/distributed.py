"""The process group of a run over several processes (torchrun, or Ray Train's workers).

Both loops take it as ``dist``: ``end_to_end.train_end_to_end`` (a CNN built from scratch,
``headstart train DATA --backbone scratch:SPEC --distributed`` under torchrun) and
``finetune.finetune``. gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..errors import HeadstartError


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; returns (rank, world size)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise HeadstartError("--distributed runs under torchrun, which sets RANK and WORLD_SIZE; they are not set. "
                             "Run e.g.: torchrun --nproc-per-node 2 -m headstart.cli train DATA "
                             "--backbone scratch:SPEC --distributed")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class ProcessGroup:
    """The initialised ``torch.distributed`` group, seen from one process of a training run."""

    def __init__(self) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise HeadstartError("a distributed run needs an initialised process group (torchrun with "
                                 "--distributed, or a Ray Train worker).")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_main = self.rank == 0
        self.cuda = dist.get_backend() == "nccl"

    def device(self) -> torch.device:
        """This process's device: its GPU under NCCL, else the CPU."""
        return torch.device("cuda", torch.cuda.current_device()) if self.cuda else torch.device("cpu")

    def ddp(self, module: nn.Module) -> nn.Module:
        """``module`` in DDP, which averages gradients in ``backward`` (and copies rank 0's weights now)."""
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[torch.cuda.current_device()] if self.cuda else None)

    def all(self, flag: bool) -> bool:
        """True when ``flag`` is true on every rank."""
        t = torch.tensor([int(flag)], device=self.device())
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return bool(t.item())

    def agree_flag(self, flag: bool, what: str) -> bool:
        """``flag``, checked to be the same on every rank (else an error naming ``what``)."""
        if self.all(flag) != (not self.all(not flag)):
            raise HeadstartError(f"{what} differs between the processes: some see it, some do not. Put it on a "
                                 "disk every node sees (the same path), or start over with --restart.")
        return flag

    def agree(self, value: float) -> float:
        """Rank 0's value on every rank (float64: exact for a Python float)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device())
        dist.broadcast(t, 0)
        return float(t.item())

    def mean(self, value: float) -> float:
        """The mean over the ranks (of the weighted batch losses: the global batches' mean loss)."""
        t = torch.tensor([value], dtype=torch.float64, device=self.device())
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def share(self, a: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        """This rank's slice of the global batch, and the weight that makes DDP's mean the batch mean."""
        b = len(a)
        if b < self.world:
            raise HeadstartError(f"a batch of {b} images cannot be split over {self.world} processes; use fewer "
                                 "processes or more training images.")
        lo, hi = b * self.rank // self.world, b * (self.rank + 1) // self.world
        return a[lo:hi], y[lo:hi], (hi - lo) * self.world / b

    def split(self, n: int, compute: Callable[[int, int], np.ndarray]) -> np.ndarray:
        """Rows ``[r n / W, (r + 1) n / W)`` computed on rank r (``compute(lo, hi)``: (K, hi - lo, D)),
        then gathered on every rank: (K, n, D)."""
        bounds = [n * r // self.world for r in range(self.world + 1)]
        mine = compute(bounds[self.rank], bounds[self.rank + 1])
        sizes = [bounds[r + 1] - bounds[r] for r in range(self.world)]
        k, m, d = mine.shape[0], max(sizes), mine.shape[2]
        t = torch.zeros(k, m, d, dtype=torch.float32, device=self.device())  # padded: all_gather wants equal shapes
        t[:, :mine.shape[1]] = torch.from_numpy(mine)
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return np.concatenate([p[:, :s].cpu().numpy() for p, s in zip(parts, sizes)], axis=1)
