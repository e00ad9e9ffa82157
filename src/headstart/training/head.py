"""Fit a head on cached features: a plain, short PyTorch loop.

The default recipe: a small MLP on standardised four-stage features, AdamW with weight decay
0.5, label smoothing 0.1, warm-up then cosine decay (``schedule.py``); as accurate as a wider
head trained longer, in a quarter of the time (docs/benchmarks.md). The head is trained on the
training split and scored on the validation split (the honest figure, and where thresholds are
tuned). Refitting on train + validation (``refit=True``) is off: it did not raise test accuracy.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from ..heads import Head
from ..tasks import Task
from .precision import use_bf16
from .schedule import lr_factor, warmup_cosine

MIN_STEPS = 200
LARGE_SETS = ((8_000, 4), (5_000, 2))  # (training vectors, batch multiple) past which the batch grows


@dataclass(frozen=True)
class HeadConfig:
    kind: str = "mlp"             # "mlp" or "linear"
    hidden: int = 256
    input_dropout: float = 0.2
    dropout: float = 0.25
    lr: float = 2e-3
    weight_decay: float = 0.5
    label_smoothing: float = 0.1
    batch_size: int = 128         # 2x or 4x past LARGE_SETS vectors (``batch_and_lr``)
    epochs: int | None = None     # None: as many as MIN_STEPS / max_steps allow; a number is honoured exactly
    max_steps: int = 1000         # at batch_size: a batch k times larger takes k times fewer
    bf16: str = "auto"            # the first layer's matmuls in bfloat16: "auto" (where the CPU runs them fast), "on", "off"
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    def batch_and_lr(self, n: int) -> tuple[int, float]:
        """(batch, peak learning rate) for ``n`` training vectors: large sets take k times
        ``batch_size`` at sqrt(k) ``lr``, the same epochs in k times fewer optimiser steps (as
        accurate on validation, docs/benchmarks.md)."""
        k = next((k for size, k in LARGE_SETS if n > size), 1)
        return self.batch_size * k, self.lr * math.sqrt(k)

    def plan(self, n: int) -> tuple[int, int]:
        """(epochs, steps per epoch) for ``n`` training vectors."""
        batch = self.batch_and_lr(n)[0]
        steps_per_epoch = math.ceil(n / batch)
        if self.epochs is not None:
            return self.epochs, steps_per_epoch
        # Small data sets still get enough optimiser steps to converge; large ones stop at
        # max_steps so re-training on tens of thousands of images stays fast.
        epochs = max(25, math.ceil(MIN_STEPS / steps_per_epoch))
        max_steps = self.max_steps * self.batch_size // batch
        return max(1, min(epochs, max_steps // steps_per_epoch)), steps_per_epoch


@dataclass
class FitResult:
    head: Head
    config: HeadConfig
    history: list[dict]           # per epoch: {"epoch", "loss", "val_score"?, "val_loss"?}
    val_score: float | None = None
    best_epoch: int | None = None  # the epoch whose weights were kept


def fit_head(task: Task, x: np.ndarray, targets, config: HeadConfig = HeadConfig(),
             x_val: np.ndarray | None = None, targets_val=None,
             on_epoch: Callable[[dict, int], None] | None = None) -> FitResult:
    """Train a fresh head on features ``x`` (N, D) for ``targets``. With validation data, score
    every epoch and go back to the best one (the score, then the validation loss on ties) when
    it beats the last by more than noise. ``on_epoch(row, epochs)`` hears each epoch's figures."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    X = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    Y = task.encode(targets)
    head = Head(X.shape[1], task.out_dim, config.kind, config.hidden, config.input_dropout, config.dropout)
    head.set_input_stats(X)
    bf16 = use_bf16(config.bf16)
    # standardised once, not at every step; stored in bfloat16 when the matmuls run in it
    Xs = ((X - head.mean) / head.std).to(torch.bfloat16 if bf16 else torch.float32)  # (N, D)
    batch, lr = config.batch_and_lr(len(X))
    epochs, steps_per_epoch = config.plan(len(X))
    opt = ScheduledAdamW(list(head.parameters()), lr, config.weight_decay, steps_per_epoch * epochs)
    val = _Validation(task, x_val, targets_val, config.label_smoothing) if x_val is not None else None
    history = []
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(X), generator=gen)
        total = 0.0
        for i in range(0, len(X), batch):
            b = order[i:i + batch]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):  # weights stay float32
                raw = head.net(Xs.index_select(0, b))  # several times faster than Xs[b]
            loss = task.loss(raw.float(), Y.index_select(0, b), config.label_smoothing)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
        row = {"epoch": epoch + 1, "loss": total / len(X)}
        if val is not None:
            row.update(val.score(head, epoch + 1))
        history.append(row)
        if on_epoch is not None:
            on_epoch(row, epochs)
    head.eval()
    if val is None:
        return FitResult(head, config, history)
    if val.beats_last(history[-1]["val_score"]):
        head.load_state_dict(val.best_state)
        return FitResult(head, config, history, val.best[0], val.best_epoch)
    return FitResult(head, config, history, history[-1]["val_score"], len(history))


_FUSED_ADAMW = getattr(torch, "_fused_adamw_", None)  # what torch.optim.AdamW(fused=True) calls


class ScheduledAdamW:
    """AdamW (torch's defaults) with ``warmup_cosine``'s schedule, the same numbers as
    ``torch.optim.AdamW(fused=True)`` + ``LambdaLR`` (tested), calling the fused kernel directly:
    torch.optim's wrapper costs about 0.5 ms a step, a tenth of a head's step, and its first call
    imports torch._dynamo (about 2 s). Falls back to torch.optim where the kernel is missing."""

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float, total_steps: int,
                 warmup: float = 0.1):
        self.params, self.lr, self.weight_decay, self.step_count = params, lr, weight_decay, 0
        self.total_steps, self.warmup_steps = total_steps, max(1, int(warmup * total_steps))
        self.kernel = _FUSED_ADAMW
        if self.kernel is None:
            self.fallback = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
            self.sched = warmup_cosine(self.fallback, total_steps, warmup)
            return
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32) for _ in params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        if self.kernel is None:
            self.fallback.step()
            self.sched.step()
            return
        lr = self.lr * lr_factor(self.step_count, self.total_steps, self.warmup_steps)
        self.step_count += 1
        torch._foreach_add_(self.steps, 1)
        self.kernel(self.params, [p.grad for p in self.params], self.exp_avgs, self.exp_avg_sqs, [], self.steps,
                    amsgrad=False, lr=lr, beta1=0.9, beta2=0.999, weight_decay=self.weight_decay, eps=1e-8,
                    maximize=False)


class _Validation:
    """Scores a head on the validation split after each epoch and keeps the best weights."""

    def __init__(self, task: Task, x_val: np.ndarray, targets_val, label_smoothing: float):
        self.task, self.targets, self.smoothing = task, targets_val, label_smoothing
        self.X = torch.from_numpy(np.ascontiguousarray(x_val, dtype=np.float32))
        self.Xs: torch.Tensor | None = None  # standardised at the first score: the head's statistics stay
        self.Y = task.encode(targets_val)
        self.best: tuple[float, float] | None = None   # (score, -loss): higher is better
        self.best_epoch: int | None = None
        self.best_state: dict | None = None

    def score(self, head: Head, epoch: int) -> dict:
        head.eval()
        with torch.inference_mode():
            if self.Xs is None:
                self.Xs = (self.X - head.mean) / head.std
            raw = head.net(self.Xs)
            loss = float(self.task.loss(raw, self.Y, self.smoothing))
        score = self.task.selection_score(self.task.activate(raw.numpy()), self.targets)
        key = (score if math.isfinite(score) else -math.inf, -loss)
        if self.best is None or key >= self.best:  # ties go to the later epoch: lower learning rate
            self.best, self.best_epoch = key, epoch
            self.best_state = {k: v.clone() for k, v in head.state_dict().items()}
        return {"val_score": score, "val_loss": loss}

    def beats_last(self, last: float) -> bool:
        """Whether the best epoch beats the last by more than the validation split's noise (one
        standard error of a proportion, plus half an image): keeping the best epoch outright lost
        to keeping the last on validation data (docs/benchmarks.md), the cosine schedule's end."""
        if self.best_epoch is None or not math.isfinite(last):
            return self.best_epoch is not None
        n = len(self.targets)
        p = min(max(last, 0.0), 1.0)
        return self.best[0] > last + math.sqrt(p * (1 - p) / n) + 0.5 / n


def predict_scores(task: Task, head: Head, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Task scores (e.g. probabilities) for features ``x`` (N, D)."""
    head.eval()
    outs = []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            outs.append(head(torch.from_numpy(np.ascontiguousarray(x[i:i + batch_size], dtype=np.float32))).numpy())
    raw = np.concatenate(outs) if outs else np.zeros((0, task.out_dim), np.float32)
    return task.activate(raw)


def select_and_fit(task: Task, x_train, y_train, x_val, y_val, config: HeadConfig = HeadConfig(),
                   refit: bool = False, on_epoch: Callable[[dict, int], None] | None = None) -> FitResult:
    """Fit on train, keeping the best epoch on validation, and tune thresholds there; then, with
    ``refit``, train as many epochs on train + validation. ``val_score`` is the validation
    figure of the kept epoch (chosen on it, so a little optimistic: the test split is the honest one)."""
    fit = fit_head(task, x_train, y_train, config, x_val, y_val, on_epoch)
    task.tune(predict_scores(task, fit.head, x_val), y_val)
    if not refit:
        return fit
    final = fit_head(task, np.concatenate([x_train, x_val]), list(y_train) + list(y_val),
                     replace(config, epochs=fit.best_epoch))
    final.val_score, final.history, final.best_epoch = fit.val_score, fit.history, fit.best_epoch
    return final
