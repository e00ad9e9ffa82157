"""Train a text CNN end to end: a plain, short PyTorch loop.

Kim's recipe with Adam: mini-batches of 50 padded texts, the task's loss and the max-norm
constraint on the output layer, Adam with warm-up then cosine decay (ahead of Kim's Adadelta on
validation in every run, at a third to a half of its CPU: docs/text.md); ``optimizer="adadelta"``
(rho 0.95, lr 1) is Kim's own. After each epoch the validation split is scored; the
best epoch's weights are kept and training stops when ``patience`` epochs bring nothing better.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..backbones.text_cnn import TextCNN
from ..errors import HeadstartError
from ..tasks import Task
from .schedule import warmup_cosine


@dataclass(frozen=True)
class TextTrainConfig:
    epochs: int = 25
    batch_size: int = 50
    lr: float = 2e-3              # Adam's; Adadelta wants 1.0
    optimizer: str = "adam"       # or "adadelta"
    weight_decay: float = 0.0
    max_norm: float = 3.0         # Kim's l2 constraint on each output unit's weights
    label_smoothing: float = 0.0
    patience: int = 4
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TextFit:
    model: TextCNN
    history: list[dict]           # per epoch: {"epoch", "loss", "val_score", "seconds"}
    best_epoch: int
    val_score: float | None
    seconds: float


def train_text_cnn(model: TextCNN, task: Task, x: np.ndarray, y: Sequence, x_val: np.ndarray | None = None,
                   y_val: Sequence | None = None, config: TextTrainConfig = TextTrainConfig(),
                   log: Callable[[str], None] | None = None) -> TextFit:
    """Fit ``model`` on token ids ``x`` (N, L) for targets ``y``; keep the best validation epoch."""
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    X, Y = torch.from_numpy(x), task.encode(list(y))
    params = [p for p in model.parameters() if p.requires_grad]
    opt, sched = _optimizer(params, config, -(-len(X) // config.batch_size) * config.epochs)
    best, best_state, best_epoch, history, start = -np.inf, None, 0, [], time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        model.train()
        order, losses, t0 = torch.randperm(len(X), generator=gen), [], time.perf_counter()
        for i in range(0, len(X), config.batch_size):
            b = order[i:i + config.batch_size]
            loss = task.loss(model(X[b]), Y[b], config.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            _max_norm(model.out.weight, config.max_norm)
            losses.append(loss.item())
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "seconds": round(time.perf_counter() - t0, 2)}
        if x_val is not None and len(x_val):
            row["val_score"] = float(task.selection_score(predict_text_scores(model, task, x_val), list(y_val)))
        history.append(row)
        if log:
            log(f"epoch {epoch}: loss {row['loss']:.4f}" + (f", validation {row['val_score']:.4f}"
                                                             if "val_score" in row else ""))
        score = row.get("val_score", -row["loss"])
        if score > best:
            best, best_epoch, best_state = score, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    val = history[best_epoch - 1].get("val_score")
    return TextFit(model, history, best_epoch, val, time.perf_counter() - start)


def _optimizer(params, config: TextTrainConfig, total_steps: int):
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=config.lr, rho=0.95, eps=1e-6, weight_decay=config.weight_decay), None
    if config.optimizer == "adam":
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        return opt, warmup_cosine(opt, total_steps, warmup=0.05)
    raise HeadstartError(f"optimizer {config.optimizer!r} is not known; expected 'adadelta' or 'adam'.")


def _max_norm(weight: torch.Tensor, limit: float) -> None:
    if limit > 0:
        with torch.no_grad():
            weight.copy_(torch.renorm(weight, p=2, dim=0, maxnorm=limit))


def predict_text_scores(model: TextCNN, task: Task, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Task scores (e.g. probabilities) for token ids ``x`` (N, L)."""
    model.eval()
    with torch.inference_mode():
        outs = [model(torch.from_numpy(x[i:i + batch_size])).numpy() for i in range(0, len(x), batch_size)]
    raw = np.concatenate(outs) if outs else np.zeros((0, task.out_dim), np.float32)
    return task.activate(raw)
