"""``ImageClassifier``: the scikit-learn-style estimator over the whole pipeline, and ``load``."""

from .classifier import ImageClassifier, ImagePredictor, load
from .text import TextClassifier, load_text

__all__ = ["ImageClassifier", "ImagePredictor", "TextClassifier", "load", "load_text"]
