"""The one learning-rate schedule of every loop: linear warm-up, then cosine decay to zero.

>>> opt = torch.optim.AdamW(model.parameters(), lr=3e-3)                     # doctest: +SKIP
>>> sched = warmup_cosine(opt, total_steps=1000, warmup=0.1)                  # doctest: +SKIP
>>> for step in range(1000): ...; opt.step(); sched.step()                    # doctest: +SKIP
"""

from __future__ import annotations

import math

import torch


def lr_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The share of the peak learning rate at ``step`` (counted from 0), like nanoGPT's ``get_lr``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int,
                  warmup: float) -> torch.optim.lr_scheduler.LambdaLR:
    """Each parameter group's learning rate times ``lr_factor``, stepped once per optimiser step.

    ``warmup`` is the share of the steps spent warming up. The factor is a plain function, so a
    checkpoint of the scheduler holds only its counters (``LambdaLR`` pickles nothing of it).
    """
    n_warmup = max(1, int(warmup * total_steps))

    def factor(step: int) -> float:
        return lr_factor(step, total_steps, n_warmup)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
