"""Data in: decoding images, scanning a folder, the stable split and preprocessing."""

from __future__ import annotations

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
from .scan import (
    BadFile,
    DuplicateGroup,
    Sample,
    ScanResult,
    file_sha256,
    find_images,
    scan,
)
from .split import SPLITS, assign_split, check_fractions
from .transforms import Preprocess, preprocess

__all__ = [
    "BAD_REASONS", "IMAGE_EXTENSIONS", "MAX_PIXELS", "MIN_SIDE", "SPLITS",
    "BadFile", "DuplicateGroup", "ImageDecodeError", "Preprocess", "Sample", "ScanResult",
    "assign_split", "check_fractions", "file_sha256", "find_images", "image_problem",
    "is_image_path", "open_image", "preprocess", "scan",
]
