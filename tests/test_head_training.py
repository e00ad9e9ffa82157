"""The head's loop on cached features: epochs as asked, the best validation epoch kept, progress heard."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from headstart.tasks import Binary, Multiclass, task_from_dict
from headstart.training.head import (
    MIN_STEPS,
    HeadConfig,
    _Validation,
    fit_head,
    predict_scores,
    select_and_fit,
)


def _noisy(n: int, seed: int, dim: int = 300, signal: float = 0.6):
    """Two classes told apart by a weak signal in a few of many noise dimensions: an MLP
    memorises the training set, so validation peaks and then falls."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[:, :5] += signal * (2 * y[:, None] - 1)
    return x, ["ant" if v else "bee" for v in y]


def test_explicit_epochs_are_honoured_and_automatic_ones_take_enough_steps():
    task = Multiclass(["ant", "bee"])
    x, y = _noisy(40, 0)
    seen = []
    fit = fit_head(task, x, y, HeadConfig(epochs=7), x, y, on_epoch=lambda row, total: seen.append((row["epoch"], total)))
    assert [r["epoch"] for r in fit.history] == list(range(1, 8))
    assert seen == [(e, 7) for e in range(1, 8)]
    epochs, per_epoch = HeadConfig().plan(40)
    assert epochs * per_epoch >= MIN_STEPS
    assert HeadConfig().plan(1_000_000)[0] == 1  # the step cap: large sets stay quick


def test_large_sets_take_larger_batches_for_the_same_epochs():
    config = HeadConfig()
    plans = {n: (config.batch_and_lr(n), config.plan(n)) for n in (3_000, 6_000, 10_000)}
    (b_small, lr_small), (epochs_small, _) = plans[3_000]
    assert b_small == config.batch_size and lr_small == config.lr  # small sets: the recipe as written
    for n in (6_000, 10_000):
        (batch, lr), (epochs, per_epoch) = plans[n]
        assert batch > b_small and lr == pytest.approx(config.lr * (batch / b_small) ** 0.5)
        assert per_epoch == -(-n // batch)
        # the same epochs as at batch_size (to the step cap's rounding), in fewer steps
        old_epochs = min(max(25, -(-MIN_STEPS // -(-n // b_small))), config.max_steps // -(-n // b_small))
        assert abs(epochs - old_epochs) <= 1
    assert plans[10_000][0][0] > plans[6_000][0][0]


def test_an_epoch_clearly_better_on_validation_is_kept_not_the_last():
    task = Multiclass(["ant", "bee"])
    x, y = _noisy(200, 1, signal=2.0)
    flipped = ["bee" if v == "ant" else "ant" for v in y]  # validation that learning only makes worse
    fit = select_and_fit(task, x, y, x, flipped, HeadConfig(epochs=30))
    scores = [r["val_score"] for r in fit.history]
    assert max(scores) > scores[-1] + 0.2
    assert fit.best_epoch < 30 and scores[fit.best_epoch - 1] == pytest.approx(max(scores))
    assert fit.val_score == pytest.approx(max(scores))
    now = task.selection_score(predict_scores(task, fit.head, x), flipped)
    assert now == pytest.approx(max(scores))  # the head returned is the one of the kept epoch


@pytest.mark.parametrize("best, last, n, kept", [(1.0, 26 / 27, 27, "last"), (0.8886, 0.8827, 341, "last"),
                                                 (0.95, 0.80, 400, "best"), (0.60, 0.50, 2000, "best")])
def test_an_earlier_epoch_replaces_the_last_only_when_it_is_better_by_more_than_noise(best, last, n, kept):
    task = Multiclass(["ant", "bee"])
    v = _Validation(task, np.zeros((n, 3), np.float32), ["ant"] * n, 0.0)
    v.best, v.best_epoch = (best, 0.0), 3
    assert v.beats_last(last) == (kept == "best")


def test_refit_trains_as_many_epochs_as_were_kept():
    task = Multiclass(["ant", "bee"])
    x, y = _noisy(60, 3)
    xv, yv = _noisy(60, 4)
    fit = select_and_fit(task, x, y, xv, yv, HeadConfig(epochs=12), refit=True)
    assert 1 <= fit.best_epoch <= 12 and fit.config.epochs == fit.best_epoch


def test_a_binary_threshold_moves_only_where_validation_supports_it():
    rng = np.random.default_rng(0)
    task = Binary(["ants", "bees"])
    # 14 + 13 images: the best threshold looks better, but one image is 7 points
    y = np.array([0] * 14 + [1] * 13)
    p = np.clip(0.4 + 0.2 * y + rng.normal(0, 0.15, len(y)), 0, 1)  # centred on 0.5
    task.tune(np.stack([1 - p, p], 1), [task.labels[i] for i in y])
    assert task.threshold == 0.5 and "within the noise of 27 images" in task.threshold_reason
    task.tune(np.stack([1 - p, p], 1)[:18], [task.labels[i] for i in y[:18]])  # 14 and 4
    assert task.threshold == 0.5 and "too few validation images to tune it (14 and 4" in task.threshold_reason
    # 600 + 600 images whose scores all sit low: 0.5 calls everything "ants", a threshold near 0.45 is right
    y = np.array([0] * 600 + [1] * 600)
    p = np.clip(0.40 + 0.1 * y + rng.normal(0, 0.02, len(y)), 0, 1)
    task.tune(np.stack([1 - p, p], 1), [task.labels[i] for i in y])
    assert 0.42 < task.threshold < 0.48 and "tuned on 1200 validation images" in task.threshold_reason
    decoded = task.decode(np.array([[0.55, 0.45]]))[0]
    assert decoded["label"] == "bees" and decoded["threshold"] == task.threshold
    line = task.text(decoded)
    assert line.startswith("bees (p(bees) 0.45 >= threshold 0.4") and "top: ants 0.55, bees 0.45" in line
    assert task_from_dict(task.to_dict()).threshold_reason == task.threshold_reason


def test_the_worst_predicted_are_errors_even_when_correct_images_score_lower():
    task = Multiclass(["a", "b", "c"])
    # ten correct but unsure images score below the three errors
    scores = np.array([[0.34, 0.33, 0.33]] * 10 + [[0.40, 0.60, 0.0], [0.45, 0.55, 0.0], [0.42, 0.0, 0.58]])
    worst = task.worst(scores, ["a"] * 13, [f"f{i}" for i in range(13)], n=10)
    assert [w["file"] for w in worst] == ["f10", "f12", "f11"]  # every error, the least likely truth first


def test_the_log_says_which_epoch_was_kept_and_why():
    from headstart.estimator.frozen import kept_epoch
    from headstart.training.head import FitResult

    rows = [{"val_score": s} for s in (0.80, 0.90, 0.85)]
    assert kept_epoch(FitResult(None, HeadConfig(), rows, 0.90, 2), 3, 400) == \
        "epoch 2 of 3 kept: better on validation than the last (0.8500)"
    assert kept_epoch(FitResult(None, HeadConfig(), rows, 0.85, 3), 3, 27) == \
        "last epoch kept: epoch 2 scored 0.9000, within the noise of 27 validation images"
    rows[-1]["val_score"] = 0.95
    assert kept_epoch(FitResult(None, HeadConfig(), rows, 0.95, 3), 3, 27) == "last epoch (3) kept, the best on validation"


def test_a_head_trained_in_bfloat16_keeps_float32_weights_and_learns():
    task = Multiclass(["ant", "bee"])
    x, y = _noisy(200, 5, signal=2.0)
    fit = fit_head(task, x, y, HeadConfig(epochs=5, bf16="on"))
    assert {v.dtype for v in fit.head.state_dict().values()} == {torch.float32}  # saved and served in float32
    assert task.selection_score(predict_scores(task, fit.head, x), y) > 0.9


@pytest.mark.parametrize("fused_kernel", [True, False])
def test_the_heads_optimiser_gives_torch_adamw_with_the_warmup_cosine_schedule(fused_kernel, monkeypatch):
    from headstart.training.head import ScheduledAdamW
    from headstart.training.schedule import warmup_cosine

    torch.manual_seed(0)
    ours = [torch.randn(40, 24, requires_grad=True), torch.randn(24, requires_grad=True)]
    theirs = [p.detach().clone().requires_grad_(True) for p in ours]
    ref = torch.optim.AdamW(theirs, lr=3e-3, weight_decay=0.5, fused=True)
    sched = warmup_cosine(ref, 30, warmup=0.1)
    if not fused_kernel:  # an older torch without the kernel: torch.optim does the work
        monkeypatch.setattr("headstart.training.head._FUSED_ADAMW", None)
    opt = ScheduledAdamW(ours, 3e-3, 0.5, 30)
    for _ in range(30):
        grads = [torch.randn_like(p) for p in ours]
        opt.zero_grad()
        for p, q, g in zip(ours, theirs, grads):
            p.grad, q.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        sched.step()
    for p, q in zip(ours, theirs):
        torch.testing.assert_close(p, q, rtol=0, atol=0) if fused_kernel else torch.testing.assert_close(p, q)
    assert not torch.equal(ours[0], torch.randn(40, 24))  # the weights moved
