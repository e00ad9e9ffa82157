"""Train a CNN built from scratch end to end: a plain PyTorch loop, read top to bottom.

Nothing is frozen, so nothing is cached: the images are decoded once, resized to the
backbone's input size and kept in memory as uint8 arrays (Fashion-MNIST's 60,000 28x28 images
take 47 MB), and every batch is augmented on the fly from there.

The recipe (``EndToEndConfig``): AdamW (no weight decay on batch-norm and bias parameters),
one-cycle learning rate (warm-up then cosine decay, ``schedule.py``), label smoothing 0.1, and
early stopping on the validation split that keeps the best epoch's weights. Augmentation,
chosen for the images rather than by a flag per command:

- a random shift of up to ``shift`` of the side (the empty border is the padding colour);
- a random zoom (random resized crop, 75-100 % of the side) for inputs of 64 px or more,
  where a photo's framing varies; none for small images such as digits or clothing icons;
- a horizontal flip, on by default (objects, animals, clothes look the same mirrored);
  turn it off (``flip=False``, ``--no-flip``) when left and right differ: digits, letters;
- brightness, contrast and saturation jitter of +-20 % for colour images only.

With ``checkpoint_dir``, every epoch ends with an atomic checkpoint (``checkpoint.py``: weights,
optimizer, schedule, random generators, history and the best epoch's weights); a later call
with the same data and settings continues after the last finished epoch and ends with the
same weights as an uninterrupted run (on a CPU with a fixed thread count; see ``_settings``).

Under torchrun (``headstart train DATA --backbone scratch:SPEC --distributed``) the same loop
runs over DistributedDataParallel: every process decodes the same images, takes its 1/N share
of each epoch's shuffled order (what ``DistributedSampler`` does, with one seed so every rank
agrees), and DDP averages the gradients, so a step sees the same global batch as one process
would. Every rank scores the whole validation split, so all stop at the same epoch; only rank 0
logs. No checkpoints there: each rank draws its own augmentations.
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.transforms import Preprocess, resize_image
from ..errors import HeadstartError
from ..heads import BankDropout, Head, Predictor
from ..tasks import Task
from .checkpoint import Checkpoint
from .distributed import ProcessGroup, is_distributed
from .precision import use_bf16
from .schedule import warmup_cosine

ZOOM_MIN_SIZE = 64  # px: from this input size on, images are treated as photos (random zoom)


@dataclass(frozen=True)
class EndToEndConfig:
    epochs: int = 30
    batch_size: int = 128
    lr: float = 3e-3              # peak of the one-cycle schedule
    weight_decay: float = 5e-2
    label_smoothing: float = 0.1
    dropout: float = 0.0          # before the linear head
    patience: int = 8             # epochs without a better validation score before stopping
    warmup: float = 0.15          # share of the steps spent warming up
    flip: bool = True             # horizontal flips; off for digits and text
    shift: float = 0.08           # largest random shift, as a share of the side
    bf16: str = "auto"            # bfloat16 autocast: "auto" (on CUDA, and on CPUs with AMX /
                                  # AVX512-BF16, which run it much faster), "on", "off"
    threads: int = 0              # CPU threads; 0: one when the machine is busier than its cores
                                  # (OpenMP threads would wait on each other)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EndToEndResult:
    model: Predictor              # backbone + head, best epoch's weights, in eval mode
    history: list[dict]           # per epoch: epoch, loss, val_score, lr, seconds, images_per_s
    best_epoch: int
    val_score: float
    seconds: float
    images_per_s: float           # training throughput (augmentation included)
    stopped_early: bool = False
    config: EndToEndConfig = field(default_factory=EndToEndConfig)


# ---- data in memory ----------------------------------------------------------------------
def decode_to_uint8(sources: Sequence, p: Preprocess, threads: int = 2, progress: bool = False,
                    ) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """Images (paths or PIL images) -> (N, H, W, C) uint8 at ``p.input_size``, resized with
    ``p.resize`` (crop, pad or stretch), plus ``(index, reason, detail)`` for each failure
    (its row is left black)."""
    from PIL import Image

    from ..data.images import ImageDecodeError, open_image

    s, mode = p.input_size, ("RGB" if p.channels == 3 else "L")
    out = np.zeros((len(sources), s, s, p.channels), np.uint8)
    failures: list[tuple[int, str, str]] = []

    def work(i: int) -> None:
        src = sources[i]
        try:
            img = src.convert(mode) if isinstance(src, Image.Image) else \
                open_image(src, mode=mode, draft_size=p.draft_size)
        except ImageDecodeError as e:
            failures.append((i, e.reason, e.detail))
            return
        except OSError as e:
            failures.append((i, "unreadable", str(e)))
            return
        out[i] = np.asarray(resize_image(img, p), np.uint8).reshape(s, s, p.channels)

    bar = _bar(len(sources), "decoding", "img", progress)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for _ in pool.map(work, range(len(sources))):
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return out, sorted(failures)


def to_input(batch: torch.Tensor, p: Preprocess) -> torch.Tensor:
    """uint8 (B, H, W, C) -> normalised float (B, C, H, W), channels-last in memory."""
    x = batch.permute(0, 3, 1, 2).float().div_(255)  # (B, C, H, W), a channels-last view
    mean = torch.tensor(p.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(p.std, dtype=x.dtype).view(1, -1, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def augment(x: torch.Tensor, config: EndToEndConfig, gen: torch.Generator) -> torch.Tensor:
    """Random shift / zoom / flip (one affine resampling) and, for colour, colour jitter.

    ``x`` is normalised (B, C, H, W): the border that a shift uncovers is 0, the mean colour,
    the same colour ``pad`` letterboxes with. Shifts are whole pixels, so an unzoomed image is
    moved, never blurred.
    """
    b, c, h = x.shape[:3]
    if c == 3:  # brightness, contrast, saturation: +-20 % each, per image
        def factor() -> torch.Tensor:
            return (1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * 0.2).to(x.dtype)

        x = x * factor()
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * factor() + mean
        grey = x.mean(1, keepdim=True)
        x = (x - grey) * factor() + grey
    zoom = torch.ones(b)
    if h >= ZOOM_MIN_SIZE:
        zoom = torch.empty(b).uniform_(0.75, 1.0, generator=gen)  # share of the side kept
    px = max(1, round(config.shift * h)) if config.shift > 0 else 0
    shift = torch.randint(-px, px + 1, (b, 2), generator=gen).float() * 2 / h  # whole pixels
    sign = torch.ones(b)
    if config.flip:
        sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = zoom * sign
    theta[:, 1, 1] = zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False).contiguous(memory_format=torch.channels_last)


# ---- the loop ----------------------------------------------------------------------------
@dataclass
class _Run:
    """What the epochs share: the model and its optimiser, the data, and where training stands."""
    model: Predictor
    forward: nn.Module            # the model, or under a process group the model in DDP
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    X: torch.Tensor               # (N, H, W, C) uint8, on the CPU
    Y: torch.Tensor               # encoded targets, on the device
    device: torch.device
    bf16: bool
    batch: int                    # images per step on this process
    steps: int                    # steps per epoch
    rank: int
    world: int
    order_gen: torch.Generator    # the shuffle: the same on every process
    aug_gen: torch.Generator      # augmentations (on one process the same generator as the shuffle)
    history: list[dict] = field(default_factory=list)
    best: tuple = (-math.inf, 0, None)  # (score, epoch, state dict)
    epoch: int = 0                # epochs finished
    n_seen: int = 0               # training images seen, over all processes
    t_train: float = 0.0          # seconds in training steps
    stopped: bool = False


def train_end_to_end(backbone, task: Task, x_train: np.ndarray, y_train: Sequence,
                     x_val: np.ndarray, y_val: Sequence, config: EndToEndConfig = EndToEndConfig(),
                     progress: bool = False, log: Callable[[str], None] | None = None,
                     checkpoint_dir: str | Path | None = None,
                     dist: ProcessGroup | None = None) -> EndToEndResult:
    """Train ``backbone`` and a new linear head for ``task`` on uint8 images (N, H, W, C).

    With ``checkpoint_dir``: a checkpoint after every epoch, and a resumed run when one is
    there (refused, naming the setting, when the data or settings differ). The caller removes
    the folder once the model is saved. ``dist`` (found by itself under torchrun): the same
    loop over DistributedDataParallel, without checkpoints; only rank 0 logs.

    >>> bb = create_backbone("scratch:conv16-bn-relu-maxpool,conv32-bn-relu-gap",
    ...                      input_size=28, channels=1)               # doctest: +SKIP
    >>> res = train_end_to_end(bb, task, x, y, x_val, y_val)         # doctest: +SKIP
    """
    if len(x_train) < 2 or len(x_val) < 1:
        raise HeadstartError(f"end-to-end training needs at least 2 training and 1 validation "
                             f"image, got {len(x_train)} and {len(x_val)}; add images.")
    if dist is None and is_distributed():  # under torchrun with --distributed
        dist = ProcessGroup()
    if dist is not None and not dist.is_main:
        progress, log = False, None
    threads_before = torch.get_num_threads()
    try:
        run = _set_up(backbone, task, x_train, y_train, config, dist)
        t_start = time.perf_counter()
        ck = None
        if checkpoint_dir is not None and dist is None:  # each rank's augmentations differ: one process only
            ck = Checkpoint(checkpoint_dir, _settings(backbone, task, config, run.bf16, x_train, y_train, x_val, y_val))
            if ck.exists():
                _restore(run, ck, log)
        for epoch in range(run.epoch + 1, config.epochs + 1):
            if run.stopped:  # a resumed run that had already stopped early
                break
            bar = _bar(run.steps * run.batch * run.world, f"epoch {epoch}/{config.epochs}", "img", progress)
            t0 = time.perf_counter()
            losses = _train_epoch(run, task, config, bar)
            row = _end_epoch(run, epoch, losses, time.perf_counter() - t0, task, x_val, y_val, config, ck)
            _report(run, row, config, bar, log)
            if run.stopped:
                break
        return _finish(run, backbone, task, x_val, y_val, config, t_start)
    finally:
        torch.set_num_threads(threads_before)


def _set_up(backbone, task: Task, x_train: np.ndarray, y_train: Sequence, config: EndToEndConfig,
            dist: ProcessGroup | None) -> _Run:
    """The model, its optimiser and schedule, the training data as tensors, the generators."""
    torch.manual_seed(config.seed)  # the same initial weights on every process (DDP copies rank 0's too)
    gen = torch.Generator().manual_seed(config.seed)
    rank, world = (0, 1) if dist is None else (dist.rank, dist.world)
    # one process: one generator for shuffle and augmentation; under DDP each rank its own augmentations
    aug_gen = gen if dist is None else torch.Generator().manual_seed(config.seed * 1000 + rank)
    device = dist.device() if dist is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = use_bf16(config.bf16, device)
    torch.set_num_threads(_threads(config.threads))
    head = Head(backbone.feature_dim, task.out_dim, "linear", input_dropout=config.dropout)
    model = Predictor(backbone, head).to(device, memory_format=torch.channels_last)
    X = torch.from_numpy(np.ascontiguousarray(x_train))   # (N, H, W, C) uint8
    Y = task.encode(list(y_train)).to(device)
    batch = max(2, min(config.batch_size, len(X) // 8))  # the global batch: small sets still get several steps
    local = max(2, batch // world)                       # this process's part of it
    steps = len(X) // (local * world)  # drop the ragged last batch (batch norm needs > 1)
    if steps < 1:
        raise HeadstartError(f"{len(X)} training images are too few for {world} processes x {local} images "
                             "per step; use fewer processes or more images.")
    opt = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr)
    sched = warmup_cosine(opt, steps * config.epochs, config.warmup)
    forward = model if dist is None else dist.ddp(model)
    return _Run(model, forward, opt, sched, X, Y, device, bf16, local, steps, rank, world, gen, aug_gen)


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """AdamW's groups: no weight decay on biases and norms (the parameters of one dimension)."""
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _restore(run: _Run, ck: Checkpoint, log: Callable[[str], None] | None) -> None:
    """Continue after the checkpoint's epoch: weights, optimiser, schedule, generator, history."""
    r = ck.restore(run.model, run.opt, run.sched, {"gen": run.order_gen})
    run.epoch, run.history, run.stopped = r.epoch, r.state["history"], r.state["stopped"]
    run.n_seen, run.t_train = r.state["n_seen"], r.state["t_train"]
    run.best = (r.state["best_score"], r.state["best_epoch"],
                {k[5:]: v for k, v in r.tensors.items() if k.startswith("best.")})
    _set_dropout_banks(run.model, r.tensors)
    if log is not None:
        log(f"resumed from the checkpoint after epoch {run.epoch} ({ck.path})")


def _train_epoch(run: _Run, task: Task, config: EndToEndConfig, bar) -> list[float]:
    """One pass over this process's share of a new shuffle; the loss of each step."""
    run.model.train()
    p = run.model.backbone.preprocess
    mine = torch.randperm(len(run.X), generator=run.order_gen)[run.rank::run.world]  # DistributedSampler's share
    losses = []
    for i in range(run.steps):
        idx = mine[i * run.batch:(i + 1) * run.batch]
        x = augment(to_input(run.X[idx], p), config, run.aug_gen).to(run.device)   # (B, C, H, W)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
            out = run.forward(x)  # (B, out_dim)
        loss = task.loss(out.float(), run.Y[idx.to(run.device)], config.label_smoothing)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients are averaged over the processes here
        run.opt.step()
        run.sched.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(len(idx) * run.world)
            if i % 10 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", refresh=False)
    return losses


def _end_epoch(run: _Run, epoch: int, losses: list[float], seconds: float, task: Task, x_val: np.ndarray,
               y_val: Sequence, config: EndToEndConfig, ck: Checkpoint | None) -> dict:
    """Score the validation split, keep the best epoch's weights, decide on stopping, checkpoint."""
    images = run.steps * run.batch * run.world
    run.epoch, run.t_train, run.n_seen = epoch, run.t_train + seconds, run.n_seen + images
    val = task.selection_score(predict_scores(run.model, task, x_val, run.bf16), list(y_val))
    row = {"epoch": epoch, "loss": float(np.mean(losses)), "val_score": float(val),
           "lr": float(run.sched.get_last_lr()[0]), "seconds": round(seconds, 2),
           "images_per_s": round(images / seconds, 1), **({"processes": run.world} if run.world > 1 else {})}
    run.history.append(row)
    if run.best[2] is None or val > run.best[0]:  # (a NaN score keeps the first epoch)
        run.best = (val, epoch, copy.deepcopy(run.model.state_dict()))
    run.stopped = epoch - run.best[1] >= config.patience
    if ck is not None:  # before anything that may be interrupted: logging, the next epoch
        ck.save(epoch, run.model, run.opt, run.sched, {"gen": run.order_gen},
                tensors={**{f"best.{k}": v for k, v in run.best[2].items()}, **_dropout_banks(run.model)},
                state={"history": run.history, "best_score": run.best[0], "best_epoch": run.best[1],
                       "stopped": run.stopped, "n_seen": run.n_seen, "t_train": run.t_train})
    return row


def _report(run: _Run, row: dict, config: EndToEndConfig, bar, log: Callable[[str], None] | None) -> None:
    best, best_epoch = run.best[0], run.best[1]
    if bar is not None:
        bar.set_postfix(loss=f"{row['loss']:.3f}", val=f"{row['val_score']:.4f}",
                        best=f"{best:.4f}@{best_epoch}", img_s=f"{row['images_per_s']:.0f}")
        bar.close()
    elif log is not None:
        processes = f" ({run.world} processes)" if run.world > 1 else ""
        log(f"epoch {row['epoch']}/{config.epochs}{processes}: loss {row['loss']:.4f}, "
            f"validation {row['val_score']:.4f}, {row['images_per_s']:.0f} img/s")
    if run.stopped and log is not None:
        log(f"stopping early: no better validation score for {config.patience} epochs; "
            f"keeping epoch {best_epoch} ({best:.4f})")


def _finish(run: _Run, backbone, task: Task, x_val: np.ndarray, y_val: Sequence, config: EndToEndConfig,
            t_start: float) -> EndToEndResult:
    """The best epoch's weights, thresholds tuned on the validation split, the model on the CPU."""
    run.model.load_state_dict(run.best[2])
    run.model.eval()
    task.tune(predict_scores(run.model, task, x_val, run.bf16), list(y_val))
    run.model.cpu()
    backbone.weights_id = state_digest(backbone.state_dict())  # new weights: new cache key
    return EndToEndResult(run.model, run.history, run.best[1], float(run.best[0]), time.perf_counter() - t_start,
                          run.n_seen / max(run.t_train, 1e-9), run.stopped, config)


def _settings(backbone, task: Task, config: EndToEndConfig, bf16: bool, x_train, y_train, x_val, y_val) -> dict:
    """What a checkpoint must match to be resumed: the data (a digest of the very arrays and
    targets), the network, the task and every setting that changes the numbers. Not ``threads``:
    another thread count only reorders float sums (results differ in the last bits; with the
    same count on the same machine a resumed run is bit-identical)."""
    h = hashlib.sha256()
    for a in (x_train, x_val):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).data)
    h.update(repr([list(map(str, y_train)), list(map(str, y_val))]).encode())
    return {"data": h.hexdigest()[:16], "backbone": backbone.name, "input": backbone.preprocess.to_dict(),
            "task": task.name, "labels": list(getattr(task, "labels", []) or []), "bf16": bf16,
            **{f"end-to-end {k}": v for k, v in config.to_dict().items() if k not in ("threads", "bf16")}}


def _dropout_banks(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The masks of each ``BankDropout`` (drawn at its first training step; not in the state dict)."""
    return {f"bank.{name}": m._bank for name, m in model.named_modules()
            if isinstance(m, BankDropout) and m._bank is not None}


def _set_dropout_banks(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    for name, m in model.named_modules():
        if f"bank.{name}" in tensors and isinstance(m, BankDropout):
            m._bank = tensors[f"bank.{name}"]


def predict_scores(model: Predictor, task: Task, x: np.ndarray, bf16: bool = False,
                   batch_size: int = 512) -> np.ndarray:
    """Task scores (e.g. probabilities) for uint8 images ``x`` (N, H, W, C)."""
    model.eval()
    p = model.backbone.preprocess
    device = next(model.parameters()).device
    outs = []
    with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(x), batch_size):
            xb = to_input(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size])), p).to(device)
            outs.append(model(xb).float().cpu().numpy())
    raw = np.concatenate(outs) if outs else np.zeros((0, task.out_dim), np.float32)
    return task.activate(raw)


def _threads(setting: int) -> int:
    if setting > 0:
        return setting
    cores = os.cpu_count() or 1
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return 1 if busy > cores else torch.get_num_threads()


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """A short digest of a state dict's names and values: changes whenever a weight does."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return "trained-" + h.hexdigest()[:16]


def _bar(total: int, desc: str, unit: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                smoothing=0.1, leave=True)
