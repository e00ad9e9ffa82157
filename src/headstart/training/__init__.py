"""Fitting heads on cached features; fine-tuning; checkpoints."""

from .head import HeadConfig, fit_head, select_and_fit

__all__ = ["HeadConfig", "fit_head", "select_and_fit"]
