"""headstart: a folder of images becomes a working CNN predictor.

>>> import headstart
>>> clf = headstart.ImageClassifier().fit("photos/")   # doctest: +SKIP
>>> clf.save("model/")                                  # doctest: +SKIP
>>> headstart.load("model/").predict(["new.jpg"])       # doctest: +SKIP
"""

from __future__ import annotations

from ._version import __version__
from .errors import HeadstartError, NotFittedError
from .estimator.classifier import ImageClassifier, ImagePredictor, load

__all__ = ["HeadstartError", "ImageClassifier", "ImagePredictor", "NotFittedError", "__version__", "load",
           "create_backbone", "list_backbones", "scan"]


def __getattr__(name: str):
    # Heavy modules (torch, timm) load on first use, so `import headstart` and `--help` stay fast.
    if name in ("create_backbone", "list_backbones"):
        from . import backbones

        return getattr(backbones, name)
    if name == "scan":
        from .data.scan import scan

        return scan
    raise AttributeError(f"module 'headstart' has no attribute {name!r}")
