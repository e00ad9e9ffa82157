"""Warnings from the image decoders, counted instead of printed one by one.

A folder of odd TIFFs or JPEGs can make Pillow warn hundreds of times ("Possibly corrupt EXIF
data", "Tag data larger than file"...), which buries the lines a user needs. Within
``counted_decoder_warnings`` each such warning is counted (and shown only when ``verbose``);
``summary`` says how many there were. Warnings from anything else pass through unchanged.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import warnings
from collections import Counter
from collections.abc import Iterator

DECODER_MODULES = ("PIL",)  # where image decoding warns from


class DecoderWarnings:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def add(self, message: str) -> None:
        with self._lock:  # scanning decodes in several threads
            self.counts[message] += 1

    def summary(self) -> str | None:
        if not self.total:
            return None
        top, n = self.counts.most_common(1)[0]
        return (f"{self.total} warning(s) from the image decoders ({len(self.counts)} different; the most "
                f"frequent, {n}x: {top!r}); run with --verbose to see each one.")


def _from_decoder(filename: str) -> bool:
    parts = filename.replace("\\", "/").split("/")
    return any(m in parts for m in DECODER_MODULES)


@contextlib.contextmanager
def counted_decoder_warnings(verbose: bool = False) -> Iterator[DecoderWarnings]:
    """Count (and, with ``verbose``, also show) every warning the image decoders raise inside the block."""
    seen = DecoderWarnings()
    with warnings.catch_warnings():
        original = warnings.showwarning
        for module in DECODER_MODULES:  # every occurrence, not the first per place
            warnings.filterwarnings("always", module=rf"{module}(\.|$)")

        def show(message, category, filename, lineno, file=None, line=None):
            if not _from_decoder(filename):
                return original(message, category, filename, lineno, file, line)
            seen.add(f"{category.__name__}: {message}")
            if verbose:
                sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

        warnings.showwarning = show
        yield seen
