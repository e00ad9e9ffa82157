"""``ImageClassifier``: the scikit-learn-style estimator over the whole pipeline, and ``load``."""

from .classifier import ImageClassifier, ImagePredictor, load

__all__ = ["ImageClassifier", "ImagePredictor", "load"]
