"""Pretrained word vectors from disk (never a download): word2vec text or binary, GloVe text.

Only the rows of words in the vocabulary are kept, so a file of millions of words costs one
pass and a (V, D) matrix. Words the file lacks start from small random vectors.

Formats: text, one word and its numbers per line, with (word2vec) or without (GloVe) a first
line ``"<count> <dim>"``; binary (word2vec ``.bin``): the line ``"<count> <dim>"``, then per
word its UTF-8 bytes, a space and ``dim`` little-endian float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import HeadstartError


@dataclass
class Vectors:
    matrix: np.ndarray         # (V, D) float32, row i for vocabulary token i
    found: int                 # vocabulary words the file covered
    total: int                 # vocabulary words (padding and unknown excluded)
    dim: int

    def describe(self, path) -> str:
        share = self.found / self.total if self.total else 0.0
        return f"word vectors {path}: {self.found} of {self.total} vocabulary words covered ({share:.1%}), {self.dim} dims"


def read_vectors(path: str | Path, tokens: Sequence[str], seed: int = 0) -> Vectors:
    """A (V, D) matrix for ``tokens`` (row 0 is padding: zeros); the file's format is detected."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise HeadstartError(f"word vectors file {str(path)!r} does not exist. Expected a word2vec (.bin or text) "
                             "or GloVe (.txt) file on disk; headstart never downloads one.")
    with open(p, "rb") as f:
        head = f.readline()
        binary = _is_binary(f.read(4096), head)
    index = {t: i for i, t in enumerate(tokens)}
    found = _read_binary(p, index) if binary else _read_text(p, index)
    if not found:
        raise HeadstartError(f"{str(path)!r} covers none of the {len(tokens)} vocabulary words (or is not a "
                             "word2vec / GloVe file). Check the file and that its words are lower case.")
    dim = len(next(iter(found.values())))
    rng = np.random.default_rng(seed)
    known = np.stack(list(found.values()))
    scale = float(known.std()) or 0.25
    matrix = rng.uniform(-scale, scale, (len(tokens), dim)).astype(np.float32)  # Kim: U[-a, a] for unknown words
    for t, v in found.items():
        matrix[index[t]] = v
    matrix[0] = 0
    return Vectors(matrix, len(found), max(0, len(tokens) - 2), dim)


def _is_binary(sample: bytes, head: bytes) -> bool:
    parts = head.split()
    if len(parts) != 2 or not all(x.isdigit() for x in parts):
        return False
    try:
        sample.decode("utf-8")
        return False
    except UnicodeDecodeError:
        return True


def _read_text(p: Path, index: dict) -> dict[str, np.ndarray]:
    found, dim = {}, None
    with open(p, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f):
            parts = line.rstrip().split(" ")
            if n == 0 and len(parts) == 2 and all(x.isdigit() for x in parts):
                dim = int(parts[1])
                continue
            dim = dim or len(parts) - 1
            word = parts[0] if parts[0] in index else parts[0].lower()
            if word in index and word not in found and len(parts) - 1 == dim:
                found[word] = np.asarray(parts[1:], dtype=np.float32)
    return found


def _read_binary(p: Path, index: dict) -> dict[str, np.ndarray]:
    found = {}
    with open(p, "rb") as f:
        count, dim = map(int, f.readline().split())
        for _ in range(count):
            word = bytearray()
            while (ch := f.read(1)) not in (b" ", b""):
                if ch != b"\n":
                    word += ch
            vec = np.frombuffer(f.read(4 * dim), dtype="<f4")
            if len(vec) < dim:
                break
            w = word.decode("utf-8", errors="replace")
            w = w if w in index else w.lower()
            if w in index and w not in found:
                found[w] = vec.copy()
    return found
