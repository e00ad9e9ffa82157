"""headstart: a folder of images becomes a working CNN predictor.

>>> import headstart
>>> clf = headstart.ImageClassifier().fit("photos/")   # doctest: +SKIP
>>> clf.save("model/")                                  # doctest: +SKIP
>>> headstart.load("model/").predict("new/")            # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._version import __version__
from .errors import HeadstartError, NotFittedError

if TYPE_CHECKING:
    from .backbones import create_backbone, list_backbones
    from .backbones.imagenet import label_images
    from .data import Dataset, read_dataset, scan
    from .estimator import ImageClassifier, ImagePredictor, TextClassifier, load, load_text
    from .estimator.explain import explain
    from .estimator.video import predict_video

__all__ = ["Dataset", "HeadstartError", "ImageClassifier", "ImagePredictor", "NotFittedError", "TextClassifier",
           "__version__", "create_backbone", "explain", "label_images", "list_backbones", "load", "load_text",
           "predict_video", "read_dataset", "scan"]

# Heavy modules (torch, scikit-learn) load on first use, so `import headstart` and `--help` stay fast.
_LAZY = {"ImageClassifier": "estimator", "ImagePredictor": "estimator", "load": "estimator",
         "TextClassifier": "estimator", "load_text": "estimator",
         "create_backbone": "backbones", "list_backbones": "backbones",
         "Dataset": "data", "read_dataset": "data", "scan": "data",
         "label_images": "backbones.imagenet", "explain": "estimator.explain",
         "predict_video": "estimator.video"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
