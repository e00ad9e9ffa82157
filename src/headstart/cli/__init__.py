"""The ``headstart`` command: thin commands over the Python API (``main``)."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
