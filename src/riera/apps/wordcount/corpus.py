"""Deterministic synthetic English-like text, for demos and benchmarks (nothing is downloaded).

Words are drawn from a Zipf distribution (exponent ~1.1, like natural text) over a vocabulary of
pseudo-words built from syllables; some are capitalised or followed by punctuation, and lines are
80–120 characters. Generation is vectorized with numpy and writes about 1 GB in a few seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

_SYLLABLES = ["ka", "ri", "to", "na", "me", "lo", "su", "de", "vi", "ra", "po", "te", "ma", "ni", "ko", "la", "be", "si", "du", "fe", "ga", "ho", "ji", "mu", "pe", "qua", "ro", "sa", "ti", "vo", "ze", "bra", "cle", "dri", "fla", "glo", "pre", "sta", "tre"]
_PUNCT = np.frombuffer(b",.;:!?", dtype=np.uint8)


def vocabulary(size: int = 50_000, seed: int = 1) -> list[str]:
    """``size`` distinct pseudo-words, most frequent first."""
    rng = np.random.default_rng(seed)
    words: dict[str, None] = {w: None for w in ("the", "of", "and", "to", "in", "a", "is", "that",
                                                "for", "it", "as", "was", "with", "be", "by")}
    while len(words) < size:
        n = int(rng.integers(1, 5))
        w = "".join(_SYLLABLES[i] for i in rng.integers(0, len(_SYLLABLES), n))
        words[w] = None
    return list(words)[:size]


def write_text(path: str | os.PathLike[str], megabytes: float, *, files: int = 1, seed: int = 0,
               vocab_size: int = 50_000) -> list[Path]:
    """Write about ``megabytes`` MB of text into ``files`` files in directory ``path``.

    >>> import tempfile
    >>> [p.name for p in write_text(tempfile.mkdtemp(), 0.1)]
    ['text-0000.txt']
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary(vocab_size)
    width = max(len(w) for w in vocab)
    matrix = np.zeros((len(vocab), width), dtype=np.uint8)
    for i, w in enumerate(vocab):
        matrix[i, : len(w)] = np.frombuffer(w.encode(), dtype=np.uint8)
    lengths = np.array([len(w) for w in vocab], dtype=np.int64)
    p = np.arange(1, len(vocab) + 1, dtype=np.float64) ** -1.1
    p /= p.sum()
    rng = np.random.default_rng(seed)
    per_file = -(-int(megabytes * 1e6) // files)
    paths = []
    for f in range(files):
        p_out = out / f"text-{f:04d}.txt"
        written = 0
        with open(p_out, "wb") as fh:
            while written < per_file:
                chunk = _chunk(rng, p, matrix, lengths, min(per_file - written, 8_000_000))
                fh.write(chunk)
                written += len(chunk)
        paths.append(p_out)
    return paths


def _chunk(rng: np.random.Generator, p: np.ndarray, matrix: np.ndarray, lengths: np.ndarray,
           nbytes: int) -> bytes:
    """About ``nbytes`` of text ending with a newline (vectorized: one gather, one mask)."""
    n = max(1, nbytes // 7)
    idx = rng.choice(len(lengths), size=n, p=p)
    width = matrix.shape[1]
    m = np.zeros((n, width + 2), dtype=np.uint8)
    m[:, :width] = matrix[idx]
    caps = rng.random(n) < 0.05
    m[caps, 0] -= 32  # words are lower-case ASCII: capitalise the first letter
    end = lengths[idx].copy()
    rows = np.arange(n)
    punct = rng.random(n) < 0.08
    m[rows[punct], end[punct]] = _PUNCT[rng.integers(0, len(_PUNCT), int(punct.sum()))]
    end += punct
    # a newline instead of a space once a line passes 80-120 characters
    ends = np.cumsum(end + 1)
    limits = np.cumsum(rng.integers(80, 121, size=int(ends[-1] // 80) + 2))
    breaks = np.searchsorted(ends, limits)
    sep = np.full(n, ord(" "), dtype=np.uint8)
    sep[breaks[breaks < n]] = ord("\n")
    sep[-1] = ord("\n")
    m[rows, end] = sep
    keep = np.arange(width + 2)[None, :] <= end[:, None]
    return m[keep].tobytes()
