"""Frozen-backbone features: the SQLite cache, extraction on this machine, and on a Ray cluster (``features.ray``)."""

from .cache import FeatureCache
from .extract import Extraction, Failure, extract_features, load_batches

__all__ = ["Extraction", "FeatureCache", "Failure", "extract_features", "load_batches"]
