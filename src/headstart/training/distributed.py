"""The end-to-end (scratch CNN) loop of ``end_to_end.py`` over DistributedDataParallel.

Launched by ``torchrun --nproc-per-node N headstart train DATA --backbone scratch:SPEC
--distributed``: every process decodes the same images, takes its 1/N share of each epoch's
shuffled order (what ``DistributedSampler`` does, with one seed so every rank agrees), and DDP
averages the gradients, so a step sees the same global batch as one process would. Every rank
scores the whole validation set with the same weights, so early stopping agrees without
messages; only rank 0 logs and writes files. gloo on CPUs, NCCL on GPUs.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist

from ..errors import HeadstartError
from ..heads import Head, Predictor
from .end_to_end import EndToEndConfig, EndToEndResult, augment, predict_scores, state_digest, to_input


def init_from_env() -> tuple[int, int]:
    """Join the process group torchrun describes in the environment; returns (rank, world size)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise HeadstartError("--distributed runs under torchrun, which sets RANK and WORLD_SIZE; they are not set. "
                             "Run e.g.: torchrun --nproc-per-node 2 -m headstart.cli train DATA "
                             "--backbone scratch:SPEC --distributed")
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main_process() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def train_end_to_end_ddp(backbone, task, x_train: np.ndarray, y_train: Sequence, x_val: np.ndarray,
                         y_val: Sequence, config: EndToEndConfig = EndToEndConfig(), progress: bool = False,
                         log: Callable[[str], None] | None = None) -> EndToEndResult:
    """``train_end_to_end`` with the gradients averaged over the process group."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP also broadcasts them)
    order_gen = torch.Generator().manual_seed(config.seed)            # the shared shuffle
    aug_gen = torch.Generator().manual_seed(config.seed * 1000 + rank)  # each rank its own augmentations
    p = backbone.preprocess
    cuda = torch.cuda.is_available() and dist.get_backend() == "nccl"
    device = torch.device(f"cuda:{torch.cuda.current_device()}") if cuda else torch.device("cpu")
    head = Head(backbone.feature_dim, task.out_dim, "linear", input_dropout=config.dropout)
    model = Predictor(backbone, head).to(device)
    ddp = DDP(model, device_ids=[device.index] if cuda else None)
    X = torch.from_numpy(np.ascontiguousarray(x_train))   # (N, H, W, C) uint8
    Y = task.encode(list(y_train)).to(device)
    batch = max(2, min(config.batch_size, len(X) // 8))  # the global batch, as on one process
    local = max(2, batch // world)
    steps_per_epoch = len(X) // (local * world)
    if steps_per_epoch < 1:
        raise HeadstartError(f"{len(X)} training images are too few for {world} processes x {local} images "
                             "per step; use fewer processes or more images.")
    total = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup * total))
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warmup if s < warmup else
                                              0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, total - warmup))))
    history: list[dict] = []
    best = (-math.inf, 0, None)
    t_start, t_train, stopped = time.perf_counter(), 0.0, False
    for epoch in range(1, config.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        mine = torch.randperm(len(X), generator=order_gen)[rank::world]  # DistributedSampler's share
        losses = []
        for i in range(steps_per_epoch):
            idx = mine[i * local:(i + 1) * local]
            x = augment(to_input(X[idx], p), config, aug_gen).to(device)   # (B, C, H, W)
            loss = task.loss(ddp(x).float(), Y[idx.to(device)], config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()  # DDP all-reduces (averages) the gradients here
            opt.step()
            sched.step()
            losses.append(loss.item())
        seconds = time.perf_counter() - t0
        t_train += seconds
        val = task.selection_score(predict_scores(model, task, x_val), list(y_val))
        history.append({"epoch": epoch, "loss": float(np.mean(losses)), "val_score": float(val),
                        "lr": float(sched.get_last_lr()[0]), "seconds": round(seconds, 2),
                        "images_per_s": round(steps_per_epoch * local * world / seconds, 1), "processes": world})
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
        if log is not None and rank == 0:
            log(f"epoch {epoch}/{config.epochs} ({world} processes): loss {history[-1]['loss']:.4f}, "
                f"validation {val:.4f}")
        if epoch - best[1] >= config.patience:
            stopped = True
            break
    model.load_state_dict(best[2])
    model.eval()
    task.tune(predict_scores(model, task, x_val), list(y_val))
    model.cpu()
    backbone.weights_id = state_digest(backbone.state_dict())
    n_seen = steps_per_epoch * local * world * len(history)
    return EndToEndResult(model, history, best[1], float(best[0]), time.perf_counter() - t_start,
                          n_seen / max(t_train, 1e-9), stopped, config)
