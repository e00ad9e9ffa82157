"""Fine-tune the last stages of a pretrained backbone on cached activations.

A full fine-tune runs every image through the whole network every epoch. Here the frozen
lower part runs once per image and view (ONNX Runtime, like feature extraction), its output
(the input of the first unfrozen stage) and the late-stage averages it already holds are kept
in memory (and on disk under the cache folder), and only the unfrozen stages and the head are
trained, in PyTorch:

    images --(frozen stages, once, K views)--> activations --(last N stages + head, every epoch)--> loss

Recipe (``FinetuneConfig``; fastai's discriminative learning rates): the last 3 of the 9
stages (``blocks[5]``, ``blocks[6]`` and ``conv_head``: everything at 7 x 7), the head
started from a head trained on the frozen features of the training split (warm start, so the
first steps do not wreck the body), AdamW with separate learning rates for body and head
(body 5e-4, warm-started head 3e-4), warm-up then cosine decay, label smoothing, BatchNorm
statistics frozen (affine parameters trained), the plain view of each training image (more
cached augmented views did not help), 8 epochs, early stopping on the validation split keeping
the best epoch (patience counted after warm-up): the best on validation of the recipes
compared (docs/benchmarks.md). Every epoch writes a checkpoint (``checkpoint.py``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import HeadstartError
from ..heads import Head
from ..paths import atomic_path, cache_dir
from ..tasks import Task
from .checkpoint import Checkpoint
from .distributed import ProcessGroup
from .end_to_end import EndToEndConfig, augment, state_digest
from .schedule import warmup_cosine

DEFAULT_STAGES = 3  # the stages at 7 x 7: better on validation than the last 2
HEAD_WEIGHT_DECAY = 0.05  # of the warm-started head


@dataclass(frozen=True)
class FinetuneConfig:
    stages: int = DEFAULT_STAGES  # the last N stages of the backbone are trained
    epochs: int = 8               # validation peaked within 8 epochs
    batch_size: int = 64
    lr_body: float = 5e-4         # body and head rates: the best on a validation split
    lr_head: float = 3e-4
    weight_decay: float = 0.01    # body; the head's is HEAD_WEIGHT_DECAY
    label_smoothing: float = 0.1
    warmup: float = 0.1           # share of the steps spent warming up
    patience: int = 3             # epochs without a better validation score before stopping (after warm-up)
    views: int = 1                # cached views per training image: the plain one + (views - 1) augmented
    bn: str = "frozen"            # "frozen": BatchNorm uses its ImageNet statistics; "train": updates them
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class FinetuneResult:
    backbone: nn.Module           # a copy of the backbone with the fine-tuned stages
    head: Head
    history: list[dict]
    best_epoch: int
    val_score: float
    val_score_start: float        # the warm-started head on the frozen backbone
    seconds: float
    seconds_cache: float          # computing (or loading) the frozen part's activations
    resumed_from: int = 0


def check_finetunable(backbone, stages: int) -> int:
    """The number of stages the backbone has; errors that explain themselves otherwise."""
    if not getattr(backbone, "pretrained", True):
        raise HeadstartError(
            f"--finetune continues training a pretrained backbone, but {backbone.name!r} is built from "
            "scratch: every layer is already trained, end to end. Drop --finetune.")
    try:
        n = len(backbone.stages())
    except NotImplementedError:
        raise HeadstartError(f"--finetune needs a backbone split into stages; {backbone.name!r} is not. "
                             "Use efficientnet_lite0 (the default).") from None
    if not hasattr(backbone, "tapped"):
        raise HeadstartError(f"--finetune supports the embedded EfficientNet-Lite backbones, got {backbone.name!r}.")
    if not 1 <= stages <= n:
        raise HeadstartError(f"--finetune {stages}: {backbone.name} has {n} stages, so N must be between 1 "
                             f"and {n} (the maximum, {n}, trains the whole backbone).")
    return n


# ---- the backbone split in two ------------------------------------------------------------
def _tap_stages(backbone) -> list[int]:
    """Stage indices (of ``stages()``) whose global average is part of the features."""
    return [s + 1 for s in backbone.tapped] + [len(backbone.stages()) - 1]


class Lower(nn.Module):
    """The frozen stages: image -> [activation at the first unfrozen stage, flattened | taps]."""

    def __init__(self, backbone, first_trained: int):
        super().__init__()
        self.stages = nn.ModuleList(backbone.stages()[:first_trained])
        self.taps = [i for i in _tap_stages(backbone) if i < first_trained]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, act + taps)
        taps = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                taps.append(x.mean((2, 3)))
        return torch.cat([x.flatten(1), *taps], dim=1)


class Upper(nn.Module):
    """The trained stages: cached activation (+ frozen taps) -> the backbone's feature vector."""

    def __init__(self, backbone, first_trained: int, act_shape: tuple[int, ...]):
        super().__init__()
        self.stages = nn.ModuleList(backbone.stages()[first_trained:])
        self.taps = [i - first_trained for i in _tap_stages(backbone) if i >= first_trained]
        self.act_shape, self.act_dim = act_shape, int(np.prod(act_shape))

    def forward(self, a: torch.Tensor) -> torch.Tensor:  # (B, act + frozen taps) -> (B, feature_dim)
        x = a[:, :self.act_dim].reshape(-1, *self.act_shape)  # (B, C, h, w)
        taps = [a[:, self.act_dim:]]
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in self.taps:
                taps.append(x.mean((2, 3)))
        return torch.cat(taps, dim=1)


# ---- activations of the frozen part, K views per image --------------------------------------
def _views(path: Path, p, n_views: int, seed: int) -> list[np.ndarray]:
    """The plain preprocessed image, then ``n_views - 1`` augmented ones (zoom-crop + flip)."""
    from PIL import Image

    from ..data.images import open_image
    from ..data.transforms import _RESAMPLE, preprocess, to_array

    img = open_image(path, mode="RGB" if p.channels == 3 else "L", draft_size=p.draft_size)
    out = [preprocess(img, p)]
    rng = np.random.default_rng([seed, int(hashlib.sha256(str(path).encode()).hexdigest()[:8], 16)])
    s = p.input_size
    for _ in range(n_views - 1):
        short = p.resize_size * rng.uniform(1.0, 1.35)  # zoom in by up to 35 %
        w, h = img.size
        scale = short / min(w, h)
        nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
        v = img.resize((nw, nh), _RESAMPLE[p.interpolation])
        left, top = int(rng.integers(0, nw - s + 1)), int(rng.integers(0, nh - s + 1))
        v = v.crop((left, top, left + s, top + s))
        if rng.random() < 0.5:
            v = v.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out.append(to_array(v, p))
    return out


def activations(backbone, first_trained: int, paths: Sequence[Path], digests: Sequence[str], n_views: int,
                seed: int, engine: str = "auto", log: Callable[[str], None] | None = None,
                dist: ProcessGroup | None = None) -> np.ndarray:
    """(views, N, act + taps) float32 of the frozen lower part; cached on disk by content.

    With ``dist`` each process computes its share of the images and gathers the others', so
    every process holds the whole array; rank 0 caches it under the one-process key."""
    path = activations_path(backbone, first_trained, digests, n_views, seed)
    log = log if dist is None or dist.is_main else None
    n = len(paths)
    if dist is not None and not dist.all(path.is_file()) and n >= 2 * dist.world:  # else cached, or too few to split
        t0 = time.perf_counter()
        out = dist.split(n, lambda lo, hi: _frozen_part(backbone, first_trained, paths[lo:hi], n_views, seed,
                                                         engine, log))
        if log is not None:
            log(f"  frozen part: {n // dist.world} of {n} images on each of {dist.world} processes "
                f"({time.perf_counter() - t0:.1f} s on rank 0), gathered")
        if not dist.is_main:
            return out
    elif path.is_file():
        return np.load(path, mmap_mode=None)
    else:
        out = _frozen_part(backbone, first_trained, paths, n_views, seed, engine, log)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, out)
    return out


def _frozen_part(backbone, first_trained: int, paths: Sequence[Path], n_views: int, seed: int, engine: str,
                 log: Callable[[str], None] | None) -> np.ndarray:
    """(views, N, act + taps): the images through the frozen stages, 32 at a time."""
    from ..backbones.engines import make_engine

    p = backbone.preprocess
    lower = Lower(backbone, first_trained).eval()
    run = make_engine(lower, f"{backbone.cache_key}|lower{first_trained}", (p.channels, p.input_size, p.input_size),
                      prefer=engine)
    out = None
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2) as pool:
        for start in range(0, len(paths), 32):
            batch = list(pool.map(lambda q: _views(q, p, n_views, seed), paths[start:start + 32]))
            for v in range(n_views):
                a = run(np.stack([b[v] for b in batch]))
                if out is None:
                    out = np.empty((n_views, len(paths), a.shape[1]), np.float32)
                out[v, start:start + len(batch)] = a
            if log is not None and (start // 32) % 20 == 0:
                log(f"  frozen part: {start + len(batch)}/{len(paths)} images x {n_views} views "
                    f"({time.perf_counter() - t0:.0f} s)")
    return out


def activations_path(backbone, first_trained: int, digests: Sequence[str], n_views: int, seed: int) -> Path:
    """Where ``activations`` caches its result (the key: backbone, split point, views, images)."""
    seed_part = seed if n_views > 1 else "-"  # one view is the plain image: the seed changes nothing
    key = hashlib.sha256(f"{backbone.cache_key}|{first_trained}|{n_views}|{seed_part}|{','.join(digests)}"
                         .encode()).hexdigest()[:24]
    return cache_dir() / "finetune" / f"{key}.npy"


# ---- the loop ----------------------------------------------------------------------------
@dataclass
class _Run:
    """What the epochs share: the trained part and its optimiser, the activations, the standing."""
    upper: Upper
    head: Head
    forward: Callable[[torch.Tensor], torch.Tensor]  # head(upper(a)), in DDP under a process group
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    A: torch.Tensor               # (views, N, D) training activations
    Y: torch.Tensor               # encoded training targets
    A_val: torch.Tensor           # (N_val, D)
    y_val: list
    act_shape: tuple[int, ...]
    whole: bool                   # every stage trained: the "activations" are the images
    batch: int
    steps: int                    # steps per epoch
    dev: torch.device
    gen: torch.Generator          # shuffle, views and augmentation
    dist: ProcessGroup | None
    history: list[dict] = field(default_factory=list)
    best: tuple = (0.0, 0, None)  # (score, epoch, state)
    epoch: int = 0                # epochs finished


def finetune(backbone, head: Head, task: Task, train: tuple[list[Path], list[str], list], val: tuple[list[Path], list[str], list],
             config: FinetuneConfig = FinetuneConfig(), checkpoint_dir: str | Path | None = None,
             engine: str = "auto", log: Callable[[str], None] | None = None, data_key: str = "",
             dist: ProcessGroup | None = None) -> FinetuneResult:
    """Fine-tune the last ``config.stages`` stages of ``backbone`` and the warm-started ``head``.

    ``train`` and ``val`` are (paths, sha256 digests, targets). Neither ``backbone`` nor
    ``head`` is changed: the result holds trained copies. ``dist`` (under torchrun or Ray
    Train): each process computes the activations of its share of the images, takes its share
    of every batch, DDP averages the gradients, and only rank 0 writes the checkpoint.
    """
    t_start = time.perf_counter()
    n_stages = check_finetunable(backbone, config.stages)
    first = n_stages - config.stages
    backbone = copy.deepcopy(backbone).eval().requires_grad_(False)
    views = config.views if first > 0 else 1  # nothing frozen: a single view of the raw pixels
    a_train = activations(backbone, first, train[0], train[1], views, config.seed, engine, log, dist)  # (views, N, D)
    a_val = activations(backbone, first, val[0], val[1], 1, config.seed, engine, log, dist)[0]        # (N_val, D)
    seconds_cache = time.perf_counter() - t_start
    run = _set_up(backbone, copy.deepcopy(head), task, first, a_train, a_val, train[2], val[2], config, dist)
    start_score = _validate(run, task)
    run.best = (start_score, 0, _state(run.upper, run.head))
    if log is not None:
        log(f"fine-tuning the last {config.stages} of {n_stages} stages on {run.A.shape[1]} images x {views} "
            f"views; validation before: {start_score:.4f}")
    ck = None
    if checkpoint_dir is not None:
        ck = Checkpoint(checkpoint_dir, {"data": data_key, "backbone": backbone.cache_key, "training images":
                                         len(train[0]), **{f"finetune {k}": v for k, v in config.to_dict().items()}})
        if ck.exists():
            _restore(run, ck, log)
    start_epoch, stopped = run.epoch, False
    for epoch in range(start_epoch + 1, config.epochs + 1):
        if epoch - max(run.best[1], _warmup_epochs(config)) > config.patience:
            stopped = True
            break
        t0 = time.perf_counter()
        losses = _train_epoch(run, task, config)
        _end_epoch(run, epoch, losses, time.perf_counter() - t0, task, config, ck, log)
    if stopped and log is not None:
        log(f"stopped early: no better validation score for {config.patience} epochs after warm-up")
    _finish(run, backbone)
    return FinetuneResult(backbone, run.head, run.history, run.best[1], float(run.best[0]), float(start_score),
                          time.perf_counter() - t_start, seconds_cache, start_epoch)


def _set_up(backbone, head: Head, task: Task, first: int, a_train: np.ndarray, a_val: np.ndarray,
            y_train: Sequence, y_val: Sequence, config: FinetuneConfig, dist: ProcessGroup | None) -> _Run:
    """The trained stages and the head on the device, their optimiser and schedule, the data as tensors."""
    act_shape = _act_shape(backbone, first)
    upper = Upper(backbone, first, act_shape).requires_grad_(True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    upper.to(dev)
    head.to(dev)
    forward = (lambda a: head(upper(a))) if dist is None else dist.ddp(nn.Sequential(upper, head))
    A = torch.from_numpy(a_train)                     # (views, N, D)
    Y = task.encode(list(y_train))
    A_val = torch.from_numpy(np.ascontiguousarray(a_val))  # (N_val, D)
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    n = A.shape[1]
    batch = max(2, min(config.batch_size, n // 4))
    steps = n // batch                                # ragged last batch dropped (batch norm)
    opt = torch.optim.AdamW([
        {"params": list(upper.parameters()), "lr": config.lr_body, "weight_decay": config.weight_decay},
        {"params": list(head.parameters()), "lr": config.lr_head, "weight_decay": HEAD_WEIGHT_DECAY}])
    sched = warmup_cosine(opt, steps * config.epochs, config.warmup)
    return _Run(upper, head, forward, opt, sched, A, Y, A_val, list(y_val), act_shape, first == 0, batch, steps,
                dev, gen, dist)


def _restore(run: _Run, ck: Checkpoint, log: Callable[[str], None] | None) -> None:
    """Continue after the checkpoint's epoch: weights, optimiser, schedule, generator, history."""
    r = ck.restore(nn.ModuleDict({"upper": run.upper, "head": run.head}), run.opt, run.sched, {"gen": run.gen})
    run.epoch, run.history = r.epoch, r.state["history"]
    run.best = (r.state["best_score"], r.state["best_epoch"], r.tensors)
    if log is not None:
        log(f"resumed from the checkpoint after epoch {run.epoch} ({ck.path})")


def _train_epoch(run: _Run, task: Task, config: FinetuneConfig) -> list[float]:
    """One pass over a new shuffle, each image in one of its cached views; the loss of each step."""
    _train_mode(run.upper, config.bn)
    run.head.train()
    n = run.A.shape[1]
    order = torch.randperm(n, generator=run.gen)
    pick = torch.randint(0, run.A.shape[0], (n,), generator=run.gen)  # the view of each image
    losses = []
    for i in range(run.steps):
        idx = order[i * run.batch:(i + 1) * run.batch]
        a, y, weight = run.A[pick[idx], idx], run.Y[idx], 1.0  # (B, D)
        if run.whole:  # whole backbone trained: the "activation" is the image, augmented on the fly
            a = _augment_images(a, run.act_shape, run.gen)
        if run.dist is not None:  # this rank's part of the batch, weighted so DDP's average is the batch mean
            a, y, weight = run.dist.share(a, y)
        loss = task.loss(run.forward(a.to(run.dev)), y.to(run.dev), config.label_smoothing) * weight
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
        run.sched.step()
        losses.append(loss.item())
    return losses


def _end_epoch(run: _Run, epoch: int, losses: list[float], seconds: float, task: Task, config: FinetuneConfig,
               ck: Checkpoint | None, log: Callable[[str], None] | None) -> None:
    """Score the validation split, keep the best epoch's weights, log, checkpoint (rank 0 only)."""
    val_score = _validate(run, task)
    epoch_loss = float(np.mean(losses))
    row = {"epoch": epoch, "loss": epoch_loss if run.dist is None else run.dist.mean(epoch_loss),
           "val_score": val_score, "seconds": round(seconds, 2)}
    run.history.append(row)
    run.epoch = epoch
    if val_score > run.best[0]:
        run.best = (val_score, epoch, _state(run.upper, run.head))
    if log is not None:
        log(f"  epoch {epoch}/{config.epochs}: loss {row['loss']:.4f}, validation {val_score:.4f} "
            f"({row['seconds']:.1f} s)")
    if ck is not None and (run.dist is None or run.dist.is_main):
        ck.save(epoch, nn.ModuleDict({"upper": run.upper, "head": run.head}), run.opt, run.sched, {"gen": run.gen},
                state={"history": run.history, "best_score": run.best[0], "best_epoch": run.best[1]},
                tensors=run.best[2])


def _validate(run: _Run, task: Task) -> float:
    s = task.selection_score(_scores(run.upper, run.head, task, run.A_val), run.y_val)
    return s if run.dist is None else run.dist.agree(s)  # every rank stops at the same epoch


def _finish(run: _Run, backbone) -> None:
    """The best epoch's weights, in eval mode on the CPU; the backbone's new weights get a new id."""
    _load_state(run.upper, run.head, run.best[2])
    for module in (run.upper, run.head):
        module.cpu().eval()
    backbone.weights_id = "finetuned-" + state_digest(backbone.state_dict())[len("trained-"):]


def features_from_activations(backbone, first_trained: int, a: np.ndarray) -> np.ndarray:
    """Features (N, feature_dim) of cached activations through a (fine-tuned) backbone's upper part."""
    upper = Upper(backbone, first_trained, _act_shape(backbone, first_trained)).eval()
    with torch.inference_mode():
        return torch.cat([upper(torch.from_numpy(a[i:i + 256])) for i in range(0, len(a), 256)]).numpy()


def _act_shape(backbone, first: int) -> tuple[int, ...]:
    p = backbone.preprocess
    x = torch.zeros(1, p.channels, p.input_size, p.input_size)
    with torch.no_grad():
        for stage in backbone.stages()[:first]:
            x = stage(x)
    return tuple(x.shape[1:])


def _scores(upper: Upper, head: Head, task: Task, a: torch.Tensor) -> np.ndarray:
    upper.eval()
    head.eval()
    dev = next(head.parameters()).device
    with torch.inference_mode():
        raw = torch.cat([head(upper(a[i:i + 256].to(dev))).cpu() for i in range(0, len(a), 256)]).numpy()
    return task.activate(raw)


def _augment_images(a: torch.Tensor, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Flattened normalised images -> randomly zoomed, shifted, flipped, colour-jittered ones."""
    x = augment(a.reshape(-1, *shape), EndToEndConfig(flip=True, shift=0.08), gen)  # (B, C, H, W)
    return x.reshape(len(a), -1)


def _warmup_epochs(config: FinetuneConfig) -> int:
    """Patience counts from the end of warm-up: a long schedule's first epochs (learning rate
    still rising, body features moving) often score below the warm-started head."""
    return math.ceil(config.warmup * config.epochs)


def _train_mode(upper: nn.Module, bn: str) -> None:
    upper.train()
    if bn == "frozen":
        for m in upper.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _state(upper: nn.Module, head: nn.Module) -> dict[str, torch.Tensor]:
    return {**{f"upper.{k}": v.clone() for k, v in upper.state_dict().items()},
            **{f"head.{k}": v.clone() for k, v in head.state_dict().items()}}


def _load_state(upper: nn.Module, head: nn.Module, state: dict[str, torch.Tensor]) -> None:
    upper.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("upper.")})
    head.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
