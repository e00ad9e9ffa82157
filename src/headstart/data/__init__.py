"""Data in: decoding images, reading a folder or a CSV into a ``Dataset``, the stable split and preprocessing."""

from __future__ import annotations

from .dataset import BadFile, Dataset, DuplicateGroup, RowProblem, Sample
from .images import (
    BAD_REASONS,
    IMAGE_EXTENSIONS,
    MAX_PIXELS,
    MIN_SIDE,
    ImageDecodeError,
    image_problem,
    is_image_path,
    open_image,
)
from .read import read_dataset
from .scan import file_sha256, find_images, scan
from .split import SPLITS, assign_split, check_fractions
from .transforms import Preprocess, preprocess

__all__ = [
    "BAD_REASONS", "IMAGE_EXTENSIONS", "MAX_PIXELS", "MIN_SIDE", "SPLITS",
    "BadFile", "Dataset", "DuplicateGroup", "ImageDecodeError", "Preprocess", "RowProblem", "Sample",
    "assign_split", "check_fractions", "file_sha256", "find_images", "image_problem",
    "is_image_path", "open_image", "preprocess", "read_dataset", "scan",
]
