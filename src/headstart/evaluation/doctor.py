"""Data checks on cached embeddings: likely wrong labels, duplicates and leaks, classes that
are too small or too alike, and outlier images.

``diagnose`` is a pure function of features, labels and splits; ``check_data`` scans a folder,
reuses (or computes) the cached features and calls it. Nothing here moves, relabels or deletes
a file: the doctor only suggests.

>>> from headstart.evaluation.doctor import check_data
>>> report = check_data("photos/")                       # doctest: +SKIP
>>> [(s.rel, s.label, s.suggested) for s in report.suspects[:3]]   # doctest: +SKIP
[('train/cat/017.jpg', 'cat', 'dog'), ...]

How each check works:

- **suspect labels**: out-of-fold class probabilities from k-fold cross-validation of a fast
  linear head (logistic regression on the embeddings reduced by PCA). An image is flagged when
  another class is more probable and its given label gets less than half the chance level
  (0.5 / number of classes: 0.05 with 10 classes); flagged images are ranked by how far the
  suggested class beats the given one. This rule, not confident learning's per-class
  thresholds (Northcutt et al. 2021): it did better on benchmarks/doctor_flipped_labels.py.
- **duplicates**: the same bytes (sha256), or embeddings whose cosine similarity (after
  removing the data set's mean) is at least ``near_threshold``; groups are flagged when they
  span classes (one picture, two labels) or span splits (a leak: train, val and test should
  never share a picture).
- **small classes**, **most confused pairs** (from the cross-validated predictions), and
  **outliers**: images whose embedding is far from every other image's (nearest neighbours).
"""

from __future__ import annotations

import shlex
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..backbones import DEFAULT_BACKBONE

NEAR_THRESHOLD = 0.95      # cosine similarity of centred embeddings; see docs/report-and-doctor.md
MIN_CLASS_IMAGES = 20      # fewer labelled images than this and a class is "too small"
PCA_DIM = 128
SUSPECT_FACTOR = 0.5       # flag when the given label gets < this x chance (1/K) out of fold
OUTLIER_MADS = 4.0         # an outlier's neighbour similarity is this many MADs below the median


@dataclass
class Suspect:
    """An image whose given label the cross-validated model confidently contradicts."""

    rel: str
    split: str
    label: str
    suggested: str
    p_label: float        # out-of-fold probability of the given label
    p_suggested: float


@dataclass
class SimilarGroup:
    """Images with the same bytes ("exact") or nearly the same embedding ("near")."""

    kind: str             # "exact" or "near"
    rels: list[str]
    labels: list[str]
    splits: list[str]
    similarity: float     # lowest cosine similarity of the links that joined the group (1.0 exact)
    spans_classes: bool
    leak: bool            # one group in two splits (val counts as training: it picks the head's settings)

    @property
    def flagged(self) -> bool:
        return self.spans_classes or self.leak


@dataclass
class Outlier:
    """An image unlike every other one (off-topic, blank, a screenshot ...)."""

    rel: str
    split: str
    label: str
    nearest_class: str    # the label of its most similar image
    similarity: float     # mean cosine similarity to its 5 nearest images


@dataclass
class DoctorReport:
    """What ``diagnose`` found. ``to_dict()`` is the ``--json`` output."""

    n_images: int
    labels: list[str]
    counts: dict[str, int]
    cv_accuracy: float
    suspects: list[Suspect]
    groups: list[SimilarGroup]
    small_classes: list[dict]          # {"label", "n", "median"}
    confused_pairs: list[dict]         # {"a", "b", "a_as_b", "b_as_a", "rate"}
    outliers: list[Outlier]
    settings: dict = field(default_factory=dict)
    root: str | None = None            # the scanned folder (thumbnails are read from it)
    skipped: list[dict] = field(default_factory=list)

    @property
    def leaks(self) -> list[SimilarGroup]:
        return [g for g in self.groups if g.leak]

    @property
    def conflicts(self) -> list[SimilarGroup]:
        return [g for g in self.groups if g.spans_classes]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["summary"] = {"suspect_labels": len(self.suspects), "duplicate_groups": len(self.groups),
                        "leaks": len(self.leaks), "label_conflicts": len(self.conflicts),
                        "small_classes": len(self.small_classes), "outliers": len(self.outliers)}
        return d


# ---- the analysis (pure) -----------------------------------------------------------------

def diagnose(features: np.ndarray, labels: Sequence[str], splits: Sequence[str], rels: Sequence[str],
             digests: Sequence[str] | None = None, *, folds: int = 5, near_threshold: float = NEAR_THRESHOLD,
             min_class_images: int = MIN_CLASS_IMAGES, seed: int = 0) -> DoctorReport:
    """All checks on features (N, D) of labelled images; ``digests`` (sha256) find exact copies."""
    x = np.asarray(features, np.float32)
    names = sorted(set(labels))
    index = {c: i for i, c in enumerate(names)}
    y = np.array([index[c] for c in labels], dtype=np.int64)
    splits, rels = list(splits), list(rels)
    digests = list(digests) if digests is not None else [f"row{i}" for i in range(len(x))]
    counts = {c: int((y == i).sum()) for i, c in enumerate(names)}

    proba = cross_val_proba(x, y, len(names), folds=folds, seed=seed) if len(names) > 1 else np.ones((len(x), 1))
    suspects = find_suspects(proba, y, names, rels, splits)
    groups = similar_groups(x, labels, splits, rels, digests, near_threshold)
    median = float(np.median(list(counts.values())))
    small = [{"label": c, "n": n, "median": median} for c, n in counts.items()
             if n < max(min_class_images, 0.25 * median)]
    return DoctorReport(
        n_images=len(x), labels=names, counts=counts,
        cv_accuracy=float((proba.argmax(1) == y).mean()) if len(x) else 0.0,
        suspects=suspects, groups=groups, small_classes=small,
        confused_pairs=confused_pairs(proba.argmax(1), y, names),
        outliers=find_outliers(x, y, names, rels, splits),
        settings={"folds": folds, "near_threshold": near_threshold, "min_class_images": min_class_images,
                  "head": f"softmax regression on PCA-{PCA_DIM} embeddings"})


def cross_val_proba(x: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int = 5, seed: int = 0,
                    l2: float = 1e-2) -> np.ndarray:
    """Out-of-fold class probabilities (N, K): each image is predicted by a head that never saw it.

    Folds are stratified (every class spread over all folds). The head is L2-regularised softmax
    regression on the top principal components (one common scale): mean cross-entropy +
    ``l2`` * sum(W^2), bias not penalised. PCA-128 and l2 = 0.01 were the best of the settings
    tried on benchmarks/doctor_flipped_labels.py (docs/benchmarks.md).
    """
    from threadpoolctl import threadpool_limits

    out = np.full((len(y), n_classes), 1.0 / max(1, n_classes), np.float32)  # no folds: no opinion
    with threadpool_limits(1):  # small fits: on a busy machine, more BLAS threads wait on each other
        z = _pca(x, PCA_DIM, seed)
        for train, test in _folds(y, folds, seed):
            out[test] = _fit_predict(z[train], y[train], z[test], n_classes, l2)
    return out


def _folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled (train, test) index pairs; fewer folds when even the largest class
    has fewer images than ``folds``."""
    from sklearn.model_selection import StratifiedKFold

    n_splits = min(folds, int(np.bincount(y).max(initial=0)))
    if n_splits < 2:
        return []
    with warnings.catch_warnings():  # a class smaller than the fold count is expected, and fine
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return list(StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(np.zeros((len(y), 1)), y))


def _fit_predict(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, n_classes: int,
                 l2: float) -> np.ndarray:
    """Class probabilities (M, K) of ``z_test`` from softmax regression fitted on the training fold."""
    from sklearn.linear_model import LogisticRegression

    # One scale for all components: whitening them gave noise directions the same weight as the
    # main ones and broke small data sets.
    mu, sd = z_train.mean(0), z_train.std() + 1e-6
    present = np.unique(y_train)
    out = np.zeros((len(z_test), n_classes), np.float32)
    if len(present) < 2 or not z_train.shape[1]:  # nothing to fit: the training fold's class shares
        out[:] = np.bincount(y_train, minlength=n_classes) / len(y_train)
        return out
    # scikit-learn minimises mean loss + |W|^2 / (2 C n); two classes share one weight vector,
    # which carries half the penalty of the softmax pair it replaces.
    c = (1.0 if len(present) > 2 else 2.0) / (2 * l2 * len(y_train))
    head = LogisticRegression(C=c, max_iter=200, tol=1e-6)
    head.fit((z_train - mu) / sd, y_train)
    out[:, head.classes_] = head.predict_proba((z_test - mu) / sd)
    return out


def find_suspects(proba: np.ndarray, y: np.ndarray, names: Sequence[str], rels: Sequence[str],
                  splits: Sequence[str], factor: float = SUSPECT_FACTOR) -> list[Suspect]:
    """Image i (label a) is suspect when another class b is more probable out of fold and
    p[i, a] < ``factor`` / K. Ranked by p_b - p_a, most confident contradiction first."""
    if proba.shape[1] < 2:
        return []
    masked = proba.copy()
    masked[np.arange(len(y)), y] = -1
    best = masked.argmax(1)
    p_best, p_label = proba[np.arange(len(y)), best], proba[np.arange(len(y)), y]
    flag = (p_best > p_label) & (p_label < factor / proba.shape[1])
    order = sorted(np.flatnonzero(flag), key=lambda i: -(p_best[i] - p_label[i]))
    return [Suspect(rels[i], splits[i], names[y[i]], names[best[i]], round(float(p_label[i]), 4),
                    round(float(p_best[i]), 4)) for i in order]


def similar_groups(x: np.ndarray, labels: Sequence[str], splits: Sequence[str], rels: Sequence[str],
                   digests: Sequence[str], threshold: float = NEAR_THRESHOLD) -> list[SimilarGroup]:
    """Exact (same digest) and near-duplicate (cosine >= ``threshold``) groups, flagged ones first."""
    # union-find, not scipy's connected_components: a group keeps the weakest link that joined it
    parent = list(range(len(rels)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, d in enumerate(digests):
        parent[root(i)] = root(first.setdefault(d, i))
    unique = np.array(sorted(set(first.values())), dtype=np.int64)
    weakest: dict[int, float] = defaultdict(lambda: 1.0)
    for i, j, s in near_pairs(x[unique], threshold):
        a, b = root(int(unique[i])), root(int(unique[j]))
        if a != b:
            parent[a] = b
            weakest[b] = min(weakest[a], weakest[b], s)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rels)):
        members[root(i)].append(i)
    groups = []
    for r, idx in members.items():
        if len(idx) < 2:
            continue
        g_splits = [splits[i] for i in idx]
        exact = len({digests[i] for i in idx}) == 1
        groups.append(SimilarGroup(
            kind="exact" if exact else "near", rels=[rels[i] for i in idx], labels=[labels[i] for i in idx],
            splits=g_splits, similarity=1.0 if exact else round(float(weakest[r]), 4),
            spans_classes=len({labels[i] for i in idx}) > 1,
            leak=len(set(g_splits)) > 1))
    groups.sort(key=lambda g: (not g.flagged, g.kind != "exact", -g.similarity, g.rels[0]))
    return groups


def near_pairs(x: np.ndarray, threshold: float, other: np.ndarray | None = None,
               block: int = 512) -> list[tuple[int, int, float]]:
    """Pairs (i, j, cosine) with cosine >= ``threshold`` after centring on the data set's mean:
    i < j within ``x``, or i in ``x`` and j in ``other`` when ``other`` is given.

    Blockwise matrix products, not scikit-learn's ``radius_neighbors``: that was slower at the
    same memory bound (``block`` x M similarities at a time)."""
    both = x if other is None else np.concatenate([x, other])
    mean = both.mean(0, keepdims=True) if len(both) else 0.0
    a = _unit(x - mean)
    b = a if other is None else _unit(other - mean)
    pairs = []
    for s in range(0, len(a), block):
        sim = a[s:s + block] @ b.T                        # (block, M)
        if other is None:  # keep j > i only
            sim[np.arange(sim.shape[1])[None, :] <= np.arange(s, s + len(sim))[:, None]] = -1
        i, j = np.nonzero(sim >= threshold)
        pairs += [(int(s + ii), int(jj), float(sim[ii, jj])) for ii, jj in zip(i, j)]
    return pairs


def confused_pairs(pred: np.ndarray, y: np.ndarray, names: Sequence[str], top: int = 10) -> list[dict]:
    """Class pairs most often mistaken for each other (both directions), by rate."""
    from sklearn.metrics import confusion_matrix

    k = len(names)
    if k < 2 or not len(y):
        return []
    cm = confusion_matrix(y, pred, labels=np.arange(k))
    n = cm.sum(1)
    out = []
    for a in range(k):
        for b in range(a + 1, k):
            both = cm[a, b] + cm[b, a]
            if both:
                out.append({"a": names[a], "b": names[b], "a_as_b": int(cm[a, b]), "b_as_a": int(cm[b, a]),
                            "rate": round(float(both / max(1, n[a] + n[b])), 4)})
    out.sort(key=lambda d: -d["rate"])
    return out[:top]


def find_outliers(x: np.ndarray, y: np.ndarray, names: Sequence[str], rels: Sequence[str],
                  splits: Sequence[str], mads: float = OUTLIER_MADS, k: int = 5,
                  block: int = 2048) -> list[Outlier]:
    """Images far from every other image: the mean cosine similarity to their ``k`` nearest
    neighbours is more than ``mads`` robust deviations below the median. Farthest first.

    Raw (uncentred) embeddings and the nearest images, not class centres: the distance to class
    centres missed planted off-topic photos (docs/benchmarks.md). Distances are computed
    ``block`` images at a time (block x N of them in memory).
    """
    import sklearn
    from sklearn.neighbors import NearestNeighbors

    if len(x) <= k + 5:
        return []
    nn = NearestNeighbors(n_neighbors=k, metric="cosine", algorithm="brute").fit(np.asarray(x, np.float32))
    with sklearn.config_context(working_memory=block * len(x) * 8 / 2**20):  # MiB
        dist, idx = nn.kneighbors()                       # (N, k): an image is not its own neighbour
    score = 1.0 - dist.mean(1)
    med = np.median(score)
    mad = 1.4826 * np.median(np.abs(score - med)) + 1e-6
    far = np.flatnonzero(score < med - mads * mad)
    far = far[np.argsort(score[far])]
    return [Outlier(rels[i], splits[i], names[y[i]], names[y[idx[i, 0]]], round(float(score[i]), 4))
            for i in far]


def quick_check(features: np.ndarray, labels: Sequence[str], splits: Sequence[str], digests: Sequence[str],
                threshold: float = NEAR_THRESHOLD) -> dict:
    """The cheap part of the doctor that ``train`` runs on features already in memory: val/test
    images with an exact or near copy in another split (leaks), and exact copies filed under two
    classes."""
    x = np.asarray(features, np.float32)
    sp = np.asarray(splits)
    leaked: set[int] = set()
    for split, others in (("test", ("train", "val")), ("val", ("train",))):
        a, b = np.flatnonzero(sp == split), np.flatnonzero(np.isin(sp, others))
        if len(a) and len(b):
            leaked |= {int(a[i]) for i, _, _ in near_pairs(x[a], threshold, other=x[b])}
            seen = {digests[j] for j in b}
            leaked |= {int(i) for i in a if digests[i] in seen}
    by_digest: dict[str, set] = defaultdict(set)
    for d, c in zip(digests, labels):
        by_digest[d].add(c)
    conflicts = sum(1 for c in by_digest.values() if len(c) > 1)
    return {"leaked": len(leaked), "n_eval": int((sp != "train").sum()), "label_conflicts": conflicts}


# train warns when more than this share of validation images look mislabelled: the doctor's
# rule, applied to the held-out validation predictions train already has (no extra fitting).
SUSPECT_WARN_SHARE = 0.04


def warning_line(quick: dict, data: str) -> str | None:
    """One line for the train output, or None when the quick checks found nothing."""
    parts = []
    if quick["leaked"]:
        parts.append(f"{quick['leaked']} of {quick['n_eval']} val/test images have a copy or near-copy in another "
                     "split (a leak: the scores flatter)")
    if quick["label_conflicts"]:
        parts.append(f"{quick['label_conflicts']} identical images are filed under different classes")
    if quick.get("suspect_val", 0) > SUSPECT_WARN_SHARE * quick.get("n_val", 0):
        parts.append(f"{quick['suspect_val']} of {quick['n_val']} validation images look mislabelled "
                     "(the model confidently prefers another class)")
    if not parts:
        return None
    return f"data check: {'; '.join(parts)}. See them: headstart doctor {shlex.quote(str(data))}"


# ---- from a folder -----------------------------------------------------------------------

def check_data(data: str | Path, *, backbone=DEFAULT_BACKBONE,
               val_fraction: float = 0.1, test_fraction: float = 0.1, folds: int = 5,
               near_threshold: float = NEAR_THRESHOLD, engine: str = "auto", use_cache: bool = True,
               verbose: bool = False, labels: str | Path | None = None, task: str = "auto",
               path_column: str | None = None, target_column: str | None = None) -> DoctorReport:
    """Scan ``data`` (or read the CSV ``labels``) and run every check on its embeddings from
    ``backbone`` (a name, or a backbone object, e.g. a loaded model's ``backbone_``).

    Splits are the ones ``train`` would use with the same fractions. Read-only on ``data``.
    With a CSV of a numeric or multilabel task the label checks (suspects, small and confused
    classes) do not apply; duplicates, leaks and outliers are checked, over one group.
    """
    import sys
    import time

    from ..backbones import create_backbone
    from ..data.read import read_dataset
    from ..features import FeatureCache, extract_features

    t0 = time.perf_counter()
    result = read_dataset(data, labels, task=task, path_column=path_column, target_column=target_column,
                          val_fraction=val_fraction, test_fraction=test_fraction, progress=verbose)
    classes = result.task is None or result.task.has_classes
    bb = create_backbone(backbone) if isinstance(backbone, str) else backbone
    # a scratch CNN's cache key is not its weights
    cache = FeatureCache() if use_cache and not bb.trained_from_scratch else None
    try:
        ex = extract_features(bb, [s.path for s in result.samples], [s.digest for s in result.samples],
                              cache=cache, engine=engine, progress=verbose)
    finally:
        if cache is not None:
            cache.close()
    keep = ex.ok
    samples = [s for s, k in zip(result.samples, keep) if k]
    t1 = time.perf_counter()
    groups = [s.label if classes else "(all images)" for s in samples]
    report = diagnose(ex.features[keep], groups, [s.split for s in samples],
                      [s.rel for s in samples], [s.digest for s in samples], folds=folds,
                      near_threshold=near_threshold)
    report.root = str(result.root)
    report.skipped = [{"file": result.samples[f.index].rel, "reason": f.reason} for f in ex.failures] + \
                     [{"file": b.rel, "reason": b.reason} for b in result.bad]
    report.settings.update({"backbone": bb.name, "features_seconds": round(t1 - t0, 2),
                            "analysis_seconds": round(time.perf_counter() - t1, 2),
                            "features_cached": ex.n_cached, "features_computed": ex.n_computed})
    if verbose:
        print(f"doctor: {len(samples)} images; features {t1 - t0:.1f} s ({ex.n_cached} cached), "
              f"checks {time.perf_counter() - t1:.1f} s", file=sys.stderr)
    return report


def _pca(x: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """Projected on the top ``dim`` principal directions, directions with (nearly) no variance
    dropped (there are at most N - 1 when N <= D)."""
    from sklearn.decomposition import PCA

    n, d = x.shape
    if min(n, d) < 2:
        return np.zeros((n, 0), np.float32)
    pca = PCA(min(dim, n, d), random_state=seed)
    z = pca.fit_transform(np.asarray(x, np.float32))
    keep = pca.explained_variance_ > 1e-6 * pca.explained_variance_[0]
    return np.ascontiguousarray(z[:, keep], np.float32)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-12)
