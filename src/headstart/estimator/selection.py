"""Step 1 of the lecture's recipe, "select the source model": which embedded backbone, input size
and feature stages suit these images, chosen on the validation split within a time budget.

    candidates (cheapest first) --features of train + val (cache first)--> a head per stage set
        --validation score--> the best; the test split is read only once the choice is made

The default budget is about what a retrain.py-style linear probe spends on the same images:
extracting every image once with EfficientNet-Lite0 at 224 px, plus its cross-validated logistic
regression (``PROBE_FACTOR`` times the extraction; docs/source-selection.md).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ..errors import HeadstartError

VARIANTS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
NATIVE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
# Per-image extraction time (decoding included) at the native size, relative to Lite0 at 224 px,
# measured by `benchmarks/source_selection.py --speeds` (docs/source-selection.md); a larger
# input costs in proportion to its pixels.
RELATIVE_COST = {"efficientnet_lite0": 1.0, "efficientnet_lite1": 1.25, "efficientnet_lite2": 1.55}
HIGH_RES = 1.3     # the larger input tried: +30 % (Lite0: 288 px), where the photos hold that detail
PROBE_FACTOR = 2.0  # a linear probe's time / its extraction time (C by 5-fold CV): docs/source-selection.md
POOLED = ()        # the final pooled vector alone (the four-stage default adds three stage averages)
MEDIAN_SAMPLE = 200  # training images whose headers give the median size
MIN_TIMED = 256    # fewer computed images time the session's start more than the images


@dataclass(frozen=True)
class Candidate:
    backbone: str
    input_size: int

    @property
    def cost(self) -> float:
        """Per-image extraction time relative to Lite0 at 224 px."""
        return RELATIVE_COST[self.backbone] * (self.input_size / NATIVE[self.backbone]) ** 2

    def create(self, stages=None):
        from ..backbones import create_backbone

        extra = {} if self.input_size == NATIVE[self.backbone] else {"input_size": self.input_size}
        return create_backbone(self.backbone, **extra, **({} if stages is None else {"stages": stages}))


def candidates(median_side: float | None) -> list[Candidate]:
    """Every backbone at its native size, and at +30 % where the median photo's short side holds
    that many pixels (on 128-px photos the larger input lost: docs/source-selection.md); cheapest first."""
    out = []
    for name in VARIANTS:
        out.append(Candidate(name, NATIVE[name]))
        big = 8 * round(NATIVE[name] * HIGH_RES / 8)
        if median_side is not None and median_side >= big * 256 / 224:  # the crop's resize side
            out.append(Candidate(name, big))
    return sorted(out, key=lambda c: c.cost)


def median_short_side(paths, limit: int = MEDIAN_SAMPLE) -> float | None:
    """The median short side in px of up to ``limit`` images (headers only)."""
    from PIL import Image

    sides = []
    step = max(1, len(paths) // limit)
    for p in list(paths)[::step][:limit]:
        try:
            with Image.open(p) as im:
                sides.append(min(im.size))
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
    return float(np.median(sides)) if sides else None


@dataclass
class Choice:
    backbone: object          # the chosen backbone, with the chosen stages
    fit: object               # its head (training.head.FitResult)
    feats: np.ndarray         # its features of the train + val samples
    trials: list[dict]        # what was tried (or skipped), in order, with validation scores and seconds
    budget: float


class Selection:
    """Tries candidates cheapest first within ``budget`` seconds (None: the probe's time). ``extract``:
    ``extract(backbone, samples)`` gives features (NaN rows for files that fail), ``uncached(backbone,
    samples)`` how many it would compute, ``measure_speed(backbone)`` images per second; ``score(feats)``
    fits a head (``training.head.FitResult``). ``test``: the test samples, counted, never read."""

    def __init__(self, cands: list[Candidate], extract, score, log, budget: float | None, n_images: int,
                 test: list = ()):
        self.cands, self.extract, self.score, self.log = cands, extract, score, log
        self.budget, self.n_images, self.test = budget, n_images, list(test)
        self.n_val = 0  # validation images, for the noise of a score
        self.head_seconds = 0.0  # the longest head fit so far
        self.speed = None  # Lite0-224-equivalent images per second, measured on the first extraction
        self.trials: list[dict] = []

    def run(self, samples) -> Choice:
        t0 = time.perf_counter()
        self.n_val = sum(s.split == "val" for s in samples)
        best = None
        for i, cand in enumerate(self.cands):
            backbone = cand.create()
            todo = self.extract.uncached(backbone, samples)
            guess = self._guess(cand, todo, backbone)
            spent = time.perf_counter() - t0
            if i and self.budget is not None and spent + guess > self.budget:
                self.trials.append(self._row(cand, None, "skipped", 0.0, f"would take ~{guess:.0f} s more; "
                                             f"{spent:.0f} of {self.budget:.0f} s spent"))
                continue
            t = time.perf_counter()
            feats = self.extract(backbone, samples)
            seconds = time.perf_counter() - t
            if todo >= MIN_TIMED and seconds > 0:  # enough images to time: the budget's yardstick
                self.speed = todo * cand.cost / seconds
            best = self._try_stages(cand, backbone, feats, seconds, best)
            if self.speed is None and len(self.cands) > 1:  # all cached: time the engine alone
                self.speed = self.extract.measure_speed(backbone) * cand.cost
            if self.budget is None:
                self.budget = self._default_budget()
        row = best[1]
        row["chosen"] = True
        self.log(f"source model: {row['name']} (validation {row['val_score']:.4f}; "
                 f"{sum(r['status'] == 'tried' for r in self.trials)} tried in {time.perf_counter() - t0:.0f} s "
                 f"of a {self.budget:.0f} s budget)")
        return Choice(best[2], best[3], best[4], self.trials, round(self.budget, 1))

    def _try_stages(self, cand, backbone, feats, seconds, best):
        """A head on the four-stage features and one on the pooled vector alone (the last columns:
        no extraction of its own)."""
        pooled = backbone.model.num_features
        for stages, cols in ((None, slice(None)), (POOLED, slice(feats.shape[1] - pooled, None))):
            t = time.perf_counter()
            fit = self.score(feats[:, cols])
            self.head_seconds = max(self.head_seconds, time.perf_counter() - t)
            row = self._row(cand, stages, "tried", seconds + time.perf_counter() - t, "", fit.val_score)
            self.trials.append(row)
            self.log(f"  tried {row['name']}: validation {fit.val_score:.4f} ({row['seconds']:.1f} s)")
            if best is None or _better(fit.val_score, best[0], self.n_val):
                chosen = backbone if stages is None else cand.create(stages)
                best = (fit.val_score, row, chosen, fit, np.ascontiguousarray(feats[:, cols]))
            seconds = 0.0  # the extraction counts once
        return best

    def _guess(self, cand: Candidate, todo: int, backbone) -> float:
        """Seconds a candidate would take: its uncached images, the test split's among them."""
        todo += self.extract.uncached(backbone, self.test)
        heads = 2 * self.head_seconds  # its two heads, timed on the candidates before
        if not todo:
            return heads
        return math.inf if self.speed is None else heads + todo * cand.cost / self.speed

    def _default_budget(self) -> float:
        """The probe's time: every image through Lite0 at 224 px, times PROBE_FACTOR."""
        if self.speed is None:
            return 0.0
        budget = PROBE_FACTOR * self.n_images / self.speed
        self.log(f"selection budget {budget:.0f} s: about a linear probe's time on {self.n_images} images "
                 f"(Lite0 224 px extracts {self.speed:.0f} images/s here; set budget= / --budget)")
        return budget

    @staticmethod
    def _row(cand: Candidate, stages, status: str, seconds: float, note: str, score: float | None = None) -> dict:
        which = "pooled" if stages == POOLED else "four-stage"
        name = f"{cand.backbone} {cand.input_size}px {which}"
        row = {"name": name, "backbone": cand.backbone, "input_size": cand.input_size, "features": which,
               "status": status, "val_score": score, "seconds": round(seconds, 2)}
        if note:
            row["note"] = note
        return row


def _better(score: float, best: float, n_val: int) -> bool:
    """Higher on validation by more than its noise (one standard error of a proportion plus half
    an image, the rule that keeps a head's epoch): a larger source model costs at every prediction,
    so within the noise the cheaper, earlier candidate stays."""
    if not math.isfinite(score):
        return False
    if not math.isfinite(best):
        return True
    p = min(max(best, 0.0), 1.0)
    return score > best + math.sqrt(p * (1 - p) / max(n_val, 1)) + 0.5 / max(n_val, 1)


def check_budget(budget) -> None:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget < 0):
        raise HeadstartError(f"budget must be None (about a linear probe's time) or seconds >= 0, got {budget!r}; "
                             "e.g. --budget 300 (0: only the cheapest candidate)")
