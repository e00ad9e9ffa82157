"""``train --finetune`` over several processes: torchrun (``--distributed``) or Ray Train (``--ray``).

The loop is ``finetune.finetune`` itself, given a ``ProcessGroup`` (``distributed.py``):

* the frozen part's activations (where the time goes) are split: process r computes images
  ``[r N / W, (r + 1) N / W)``, then every process gathers the whole array, so each holds
  what one process would have computed; rank 0 caches it under the one-process key (a later
  run on one machine, or a resume, reuses it);
* every process draws the same shuffled global batch, takes its slice of it, and weights its
  loss by its share, so DDP's averaged gradient is the gradient of the global batch: the same
  steps as one process (up to float summation order and the head's dropout draws);
* the validation score is broadcast from rank 0, so every process stops at the same epoch;
  rank 0 alone writes the checkpoint (and, in the CLI, the model folder).

``ray_loop`` runs the same function on Ray Train's ``TorchTrainer`` workers (which set up the
process group) and brings the trained weights back to the driver through a Ray Train checkpoint.
"""

from __future__ import annotations

import copy
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..errors import HeadstartError
from .distributed import ProcessGroup as _Group
from .finetune import FinetuneResult, activations, finetune


class ProcessGroup(_Group):
    """``distributed.ProcessGroup`` that also answers ``activations``, for callers that ask the group."""

    def activations(self, backbone, first_trained: int, paths: Sequence[Path], digests: Sequence[str],
                    n_views: int, seed: int, engine: str = "auto",
                    log: Callable[[str], None] | None = None) -> np.ndarray:
        """``finetune.activations`` with the images split over the processes, then gathered."""
        return activations(backbone, first_trained, paths, digests, n_views, seed, engine, log, dist=self)


# ---- torchrun: the main job's features, split too --------------------------------------------
def fill_feature_cache(backbone, paths: Sequence[Path], digests: Sequence[str], engine: str = "auto") -> None:
    """Each rank computes the frozen features of its share of the images into the shared cache,
    so the main job that follows on every rank finds them all (SQLite in WAL mode takes the
    concurrent writes). Ranks must share the cache folder (one machine, or a shared disk)."""
    from ..features import FeatureCache, extract_features

    rank, world = dist.get_rank(), dist.get_world_size()
    cache = FeatureCache()
    try:
        extract_features(backbone, list(paths)[rank::world], list(digests)[rank::world], cache=cache,
                         engine=engine, progress=False)
    finally:
        cache.close()
    dist.barrier()


# ---- Ray Train ---------------------------------------------------------------------------
def ray_loop(address: str | None = None, workers: int = 2, cpus_per_worker: float = 1.0,
             gpus_per_worker: float = 0.0, storage: str | Path | None = None) -> Callable[..., FinetuneResult]:
    """A replacement for ``finetune.finetune`` that runs it on ``workers`` Ray Train workers.

    ``address`` None starts a local Ray (or reuses the one running); the trained weights come
    back through a Ray Train checkpoint under ``storage`` (default: a temporary folder; on a
    multi-node cluster it must be storage every node reaches, e.g. s3://bucket/runs or NFS).

    >>> loop = ray_loop(workers=2)                                               # doctest: +SKIP
    >>> finetune_classifier(clf, FinetuneConfig(stages=1), loop=loop)            # doctest: +SKIP
    """
    if workers < 1:
        raise HeadstartError(f"--finetune-workers must be positive, got {workers}.")

    def run(backbone, head, task, train, val, config, checkpoint_dir=None, engine: str = "auto",
            log: Callable[[str], None] | None = None, data_key: str = "") -> FinetuneResult:
        from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
        from ray.train.torch import TorchTrainer

        from ..features.ray import RayConfig, connect

        connect(RayConfig(address=address, num_workers=1, cpus_per_worker=0.0))  # joins or starts Ray
        _check_cpus(workers * cpus_per_worker)
        t0 = time.perf_counter()
        tmp = None if storage is not None else tempfile.TemporaryDirectory(prefix="headstart-ray-train-")
        res = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker > 0 else {})}
        trainer = TorchTrainer(
            _ray_worker,
            train_loop_config={"args": (backbone, head, task, train, val, config),
                               "checkpoint_dir": str(Path(checkpoint_dir).absolute()) if checkpoint_dir else None,
                               "engine": engine, "data_key": data_key},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                         resources_per_worker=res),
            # a lost worker restarts the group, which resumes from the fine-tune's own checkpoint
            run_config=RunConfig(name="headstart-finetune", storage_path=str(storage or tmp.name),
                                 failure_config=FailureConfig(max_failures=2)))
        if log is not None:
            log(f"fine-tuning on Ray Train: {workers} workers x {cpus_per_worker:g} CPUs"
                + (f" + {gpus_per_worker:g} GPUs" if gpus_per_worker else ""))
        try:
            try:
                result = trainer.fit()
            except TrainingFailedError as e:  # Ray wraps the worker's error; show what it said
                raise HeadstartError(f"the fine-tune failed on Ray Train: {_root_message(e)}") from None
            with result.checkpoint.as_directory() as d:
                out = _load_result(Path(d), backbone, head)
        finally:
            if tmp is not None:
                tmp.cleanup()
        if log is not None:
            for row in out.history:
                log(f"  epoch {row['epoch']}/{config.epochs}: loss {row['loss']:.4f}, validation "
                    f"{row['val_score']:.4f} ({row['seconds']:.1f} s)")
        out.seconds = time.perf_counter() - t0
        return out

    return run


def _check_cpus(need: float) -> None:
    import ray

    have = ray.cluster_resources().get("CPU", 0)
    if have < need:
        raise HeadstartError(f"the Ray cluster has {have:g} CPUs, but the fine-tune's workers need {need:g}. "
                             "Lower --finetune-workers or --cpus-per-worker, or add nodes.")


def _root_message(e: BaseException) -> str:
    while e.__cause__ is not None:
        e = e.__cause__
    text = str(e).strip().splitlines()
    return text[-1] if text else type(e).__name__


def _ray_worker(cfg: dict) -> None:
    """One Ray Train worker: the same loop as torchrun's, then rank 0 reports the weights."""
    import ray.train

    if torch.cuda.is_available() and dist.get_backend() == "nccl":
        from ray.train.torch import get_device

        torch.cuda.set_device(get_device())
    pg = ProcessGroup()
    r = finetune(*cfg["args"], checkpoint_dir=cfg["checkpoint_dir"], engine=cfg["engine"], data_key=cfg["data_key"],
                 dist=pg)
    metrics = {"best_epoch": r.best_epoch, "val_score": r.val_score}
    if not pg.is_main:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        _save_result(Path(d), r)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def _save_result(folder: Path, r: FinetuneResult) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().cpu().contiguous().clone() for k, v in r.backbone.state_dict().items()},
              str(folder / "backbone.safetensors"))
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in r.head.state_dict().items()},
              str(folder / "head.safetensors"))
    meta = {"history": r.history, "best_epoch": r.best_epoch, "val_score": r.val_score,
            "val_score_start": r.val_score_start, "seconds": r.seconds, "seconds_cache": r.seconds_cache,
            "resumed_from": r.resumed_from, "weights_id": r.backbone.weights_id}
    (folder / "result.json").write_text(json.dumps(meta))


def _load_result(folder: Path, backbone, head) -> FinetuneResult:
    from safetensors.torch import load_file

    meta = json.loads((folder / "result.json").read_text())
    bb, hd = copy.deepcopy(backbone).eval(), copy.deepcopy(head).eval()
    bb.load_state_dict(load_file(str(folder / "backbone.safetensors")))
    hd.load_state_dict(load_file(str(folder / "head.safetensors")))
    bb.weights_id = meta["weights_id"]
    return FinetuneResult(bb, hd, meta["history"], meta["best_epoch"], meta["val_score"], meta["val_score_start"],
                          meta["seconds"], meta["seconds_cache"], meta["resumed_from"])
