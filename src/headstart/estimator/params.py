"""Every setting of ``ImageClassifier`` checked at the start of ``fit``, before any image is read.

Each refusal names the setting, echoes the value and lists the choices (scikit-learn checks its
parameters in ``fit`` too, never in the constructor, so ``set_params`` and ``clone`` stay plain).
"""

from __future__ import annotations

import numbers
from pathlib import Path

from ..errors import HeadstartError

ENGINES = ("auto", "openvino", "onnxruntime", "torch")
RESIZE_MODES = ("crop", "pad", "stretch")  # = data.transforms.RESIZE_MODES (that module imports PIL)
DEFAULT_INPUT_SIZE = 64  # px, for scratch CNNs on folders (arrays: their own size up to this)


def check_params(est) -> None:
    """Raise ``HeadstartError`` for the first setting of ``est`` that cannot work."""
    from ..data.split import check_fractions
    from ..heads import HEADS
    from ..tasks import TASKS

    _choice("head", est.head, HEADS)
    _choice("task", est.task, ("auto", *TASKS))
    _loss(est.task, est.loss)
    _choice("engine", est.engine, ENGINES)
    if not isinstance(est.backbone, str) or not est.backbone:
        _refuse("backbone", est.backbone, "a backbone name such as 'efficientnet_lite0' (see `headstart backbones`)")
    if est.weights is not None and not isinstance(est.weights, (str, Path)):
        _refuse("weights", est.weights, "None or the path of a local weights file")
    check_fractions(est.val_fraction, est.test_fraction)
    for name in ("epochs", "finetune_epochs", "batch_size"):
        _whole(name, getattr(est, name), minimum=1, optional=name == "epochs")
    _whole("seed", est.seed, minimum=0)
    for name in ("flip", "use_cache", "refit", "verbose", "skip_bad_rows", "distributed"):
        if not isinstance(getattr(est, name), bool):
            _refuse(name, getattr(est, name), "True or False")
    if est.input_size is not None and (not _is_int(est.input_size) or est.input_size < 8):
        _refuse("input_size", est.input_size, "None or a whole number of pixels of at least 8, e.g. 28 for 28x28 "
                "images (--input-size 28)")
    if est.resize is not None:
        _choice("resize", est.resize, RESIZE_MODES, "'crop' keeps the centre square, 'pad' letterboxes the whole "
                "image, 'stretch' ignores the aspect ratio (--resize pad)")
    if est.finetune is not None and est.finetune != "all" and (not _is_int(est.finetune) or est.finetune < 1):
        _refuse("finetune", est.finetune, "None, a number of stages N >= 1 (--finetune N) or 'all' (--finetune --full)")
    if est.checkpoint_dir is not None and not isinstance(est.checkpoint_dir, (str, Path)):
        _refuse("checkpoint_dir", est.checkpoint_dir, "None or a folder path")
    _cluster(est)


def check_backbone(est, backbone) -> None:
    """The settings that depend on the (built) backbone."""
    scratch = backbone.trained_from_scratch
    if not scratch and (est.input_size is not None or est.resize is not None):
        raise HeadstartError(f"input_size / resize (--input-size / --resize) apply to CNNs built from scratch; "
                             f"{est.backbone!r} is pretrained and brings its own preprocessing. Drop them, or use "
                             "--backbone scratch:SPEC")
    if est.finetune is not None:
        if scratch:
            raise HeadstartError(f"finetune (--finetune) continues training a pretrained backbone, but "
                                 f"{est.backbone!r} is built from scratch: every layer is already trained, end to "
                                 "end. Drop finetune.")
        from ..training.finetune import check_finetunable

        check_finetunable(backbone, 1 if est.finetune == "all" else est.finetune)
    if est.ray is not None and est.finetune is not None:
        from .cluster import require_ray_train

        require_ray_train()  # before the main job, not after it
    if est.ray is not None and scratch:
        raise HeadstartError(f"ray (--ray) computes cached features of a pretrained backbone; {est.backbone!r} is "
                             "built from scratch and trained end to end (nothing to cache). Drop ray.")
    if est.distributed and not scratch and est.finetune is None:
        raise HeadstartError(f"distributed=True (--distributed) trains a CNN built from scratch (--backbone scratch:SPEC), "
                             f"or fine-tunes a pretrained one (--finetune [N]), with DistributedDataParallel; got "
                             f"--backbone {est.backbone} without finetune. A frozen backbone's head trains in "
                             "seconds on one machine (use ray for the features).")


def scratch_options(est, channels: int = 3, default_size: int = DEFAULT_INPUT_SIZE) -> dict:
    """``create_backbone`` options of a scratch CNN: input size, channels and resize mode."""
    return {"input_size": est.input_size or default_size, "channels": channels, "resize": est.resize or "pad"}


def _cluster(est) -> None:
    if est.ray is not None:
        from ..features.ray import RayConfig

        if not isinstance(est.ray, RayConfig):
            _refuse("ray", est.ray, "None or a headstart.features.ray.RayConfig, e.g. RayConfig(address='auto', "
                    "num_workers=4)")
        for name in ("num_workers", "cpus_per_worker", "train_workers"):
            if getattr(est.ray, name) <= 0:
                raise HeadstartError(f"ray.{name} (--{name.replace('_', '-').replace('train-', 'finetune-')}) must "
                                     f"be positive, got {getattr(est.ray, name)}.")
        if est.ray.gpus_per_worker < 0:
            raise HeadstartError(f"ray.gpus_per_worker (--gpus-per-worker) must be 0 or more, got "
                                 f"{est.ray.gpus_per_worker}.")
    if est.distributed and est.ray is not None:
        raise HeadstartError("distributed (--distributed, under torchrun) and ray (--ray, Ray Train) each run the "
                             "training over several processes; give one of them.")


def _loss(task: str, loss: str) -> None:
    from ..tasks import TASKS

    if loss == "auto":
        return
    if task == "auto":
        losses = sorted({x for cls in TASKS.values() for x in getattr(cls, "LOSSES", ())})
        _choice("loss", loss, ("auto", *losses))
    else:
        from ..tasks import make_task

        make_task(task, loss)  # says which losses the task takes


def _choice(name: str, value, choices, hint: str = "") -> None:
    if not isinstance(value, str) or value not in choices:
        raise HeadstartError(f"{name} must be one of {', '.join(choices)}; got {value!r}"
                             + (f": {hint}" if hint else "."))


def _whole(name: str, value, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < minimum:
        _refuse(name, value, ("None or " if optional else "") + f"a whole number >= {minimum}")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _refuse(name: str, value, expected: str) -> None:
    raise HeadstartError(f"{name} must be {expected}; got {value!r} ({type(value).__name__}).")
