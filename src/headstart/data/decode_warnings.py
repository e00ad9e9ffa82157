"""Warnings from the image decoders, counted instead of printed one by one.

A folder of odd TIFFs or JPEGs can make Pillow warn hundreds of times ("Possibly corrupt EXIF
data", "Tag data larger than file"...), which buries the lines a user needs. Within
``counted_decoder_warnings`` each such warning is counted (and shown only when ``verbose``);
``summary`` says how many there were. Warnings from anything else pass through unchanged.
libtiff writes its messages ("Using code not yet in table") straight to the process's stderr,
past Python: its warning and error handlers are pointed here (ctypes) to be counted the same way.
"""

from __future__ import annotations

import contextlib
import ctypes
import platform
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


_active: list[tuple[DecoderWarnings, bool]] = []  # the innermost block's counter and verbosity
_handler = None  # the C callback given to libtiff, kept alive for the process's life
_LIBC = ctypes.CDLL(None)


def _libtiff_message(module: bytes | None, fmt: bytes | None, args) -> None:
    text = (fmt or b"").decode(errors="replace")
    if platform.machine() in ("x86_64", "AMD64"):  # va_list arrives as a pointer there
        buf = ctypes.create_string_buffer(1024)
        _LIBC.vsnprintf(buf, ctypes.c_size_t(len(buf)), fmt, ctypes.c_void_p(args))
        text = buf.value.decode(errors="replace")
    line = f"{module.decode(errors='replace')}: {text}." if module else f"{text}."
    if not _active:
        sys.stderr.write(line + "\n")
        return
    seen, verbose = _active[-1]
    seen.add(f"libtiff: {text}")
    if verbose:
        sys.stderr.write(f"libtiff: {line}\n")


def _route_libtiff() -> None:
    """Point Pillow's libtiff's warning and error handlers at ``_libtiff_message`` (once)."""
    global _handler
    if _handler is not None:
        return
    import PIL.Image  # noqa: F401  (loads _imaging, which links libtiff)

    try:
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "/libtiff" in line}
    except OSError:  # not Linux: libtiff keeps printing for itself
        return
    _handler = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)(_libtiff_message)
    for path in paths:
        lib = ctypes.CDLL(path)
        for setter in (lib.TIFFSetWarningHandler, lib.TIFFSetErrorHandler):
            setter.restype = ctypes.c_void_p
            setter(_handler)


def _from_decoder(filename: str) -> bool:
    parts = filename.replace("\\", "/").split("/")
    return any(m in parts for m in DECODER_MODULES)


@contextlib.contextmanager
def counted_decoder_warnings(verbose: bool = False) -> Iterator[DecoderWarnings]:
    """Count (and, with ``verbose``, also show) every warning the image decoders raise inside the block."""
    seen = DecoderWarnings()
    _route_libtiff()
    _active.append((seen, verbose))
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
        try:
            yield seen
        finally:
            _active.remove((seen, verbose))
