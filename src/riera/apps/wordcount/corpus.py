"""Deterministic English-like text for demos and benchmarks — nothing is downloaded.

Words are drawn from a Zipf distribution over a vocabulary of syllable-built pseudo-words, each in
one of a few forms (plain, Capitalised, followed by punctuation, quoted, parenthesised), with a
few punctuation-only tokens, in lines of about 80–120 characters. A pool of lines is generated
with numpy and longer texts are made by drawing lines from it, so a gigabyte takes seconds; the
generator keeps the exact count of every word, so a word count over the text can be checked.
"""

from __future__ import annotations

import collections
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_ONSETS = (
    "",
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "j",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "w",
    "z",
    "ch",
    "sh",
    "th",
    "st",
    "br",
    "tr",
    "pl",
    "gr",
)
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "y", "é")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st")
# (prefix, suffix, capitalised, weight) of the forms a word takes in the text.
_FORMS = (
    ("", "", False, 0.82),
    ("", "", True, 0.06),
    ("", ",", False, 0.06),
    ("", ".", False, 0.035),
    ("", ";", False, 0.01),
    ('"', '"', False, 0.01),
    ("(", ")", True, 0.005),
)
_STANDALONE = ("—", "&", "...")  # punctuation-only tokens: the word count must drop them
_STANDALONE_RATE = 0.01
_WIDTH = 32  # bytes per padded piece (a form of a word plus its trailing space)
POOL_MAX_LINES = 1 << 19


# The most frequent English words, in frequency order: they take the top Zipf ranks.
COMMON = [
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "no",
]


def vocabulary(size: int = 50_000, seed: int = 0) -> list[str]:
    """``size`` distinct lower-case words: common English words first, then pseudo-words of
    1–4 syllables, shortest first."""
    rng = np.random.default_rng([seed, 0xA0CAB])
    syllables = [o + v + c for o in _ONSETS for v in _VOWELS for c in _CODAS]
    common = COMMON[: min(size, len(COMMON))]
    words: list[str] = []
    seen: set[str] = set(common)
    size -= len(common)
    while len(words) < size:
        counts = rng.choice(4, size=size, p=[0.2, 0.45, 0.25, 0.1]) + 1
        picks = rng.integers(0, len(syllables), size=(size, 4))
        for k, row in zip(counts.tolist(), picks.tolist(), strict=True):
            w = "".join(syllables[j] for j in row[:k])
            if w not in seen and len(w.encode()) <= 24:
                seen.add(w)
                words.append(w)
                if len(words) == size:
                    break
    words.sort(key=len)  # stable: the most frequent ranks get the short words, as in English
    return common + words


@dataclass
class TextStats:
    nbytes: int
    lines: int
    counts: dict[str, int]  # exact count of every word in the file, after normalisation
    pool_lines: int
    resampled: bool


class TextGenerator:
    """Deterministic English-like text: Zipf-distributed pseudo-words, punctuation, capitals.

    Words are drawn from a Zipf distribution (exponent ``zipf_s``) over :func:`vocabulary`, each in
    one of a few forms (plain, Capitalised, followed by , . ; or quoted, parenthesised), with a few
    punctuation-only tokens, in lines of about 80–120 characters. A pool of up to
    ``POOL_MAX_LINES`` lines is generated with numpy; a longer text is made of lines drawn at random
    from the pool, so a gigabyte takes seconds. The generator keeps the exact count of every word.
    """

    def __init__(self, vocab_size: int = 50_000, zipf_s: float = 1.05, seed: int = 0) -> None:
        self.seed = seed
        self.vocab = vocabulary(vocab_size, seed)
        ranks = np.arange(1, vocab_size + 1, dtype=np.float64)
        weights = ranks**-zipf_s
        self._word_cdf = np.cumsum(weights) / weights.sum()
        fw = np.array([f[3] for f in _FORMS])
        self._form_cdf = np.cumsum(fw) / fw.sum()
        pieces = [
            pre + (w.capitalize() if cap else w) + suf + " "
            for w in self.vocab
            for pre, suf, cap, _ in _FORMS
        ]
        pieces += [p + " " for p in _STANDALONE]
        encoded = [p.encode() for p in pieces]
        self._lengths = np.array([len(e) for e in encoded], np.int64)
        if self._lengths.max() > _WIDTH:
            raise ValueError("a word form is longer than the piece width")
        flat = np.zeros((len(encoded), _WIDTH), np.uint8)
        for i, e in enumerate(encoded):
            flat[i, : len(e)] = np.frombuffer(e, np.uint8)
        self._table = flat
        self._valid = np.arange(_WIDTH)[None, :] < self._lengths[:, None]
        self._word_pieces = len(self.vocab) * len(_FORMS)

    def _tokens(self, index: int, tokens: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A run of text: its bytes (line breaks placed), token end offsets, word id per token."""
        rng = np.random.default_rng([self.seed, 1, index])
        word = np.searchsorted(self._word_cdf, rng.random(tokens)).astype(np.int64)
        np.minimum(word, len(self.vocab) - 1, out=word)
        piece = word * len(_FORMS) + np.searchsorted(self._form_cdf, rng.random(tokens))
        standalone = rng.random(tokens) < _STANDALONE_RATE
        piece[standalone] = self._word_pieces + rng.integers(
            0, len(_STANDALONE), int(standalone.sum())
        )
        word[standalone] = -1
        ends = np.cumsum(self._lengths[piece])
        out = self._table[piece][self._valid[piece]]
        # Break lines at the first token ending past each target: lines of about 80–120 chars.
        targets = np.cumsum(rng.integers(80, 121, int(ends[-1] // 80) + 2))
        breaks = np.unique(np.searchsorted(ends, targets[targets < ends[-1]]))
        out[ends[breaks] - 1] = 10  # the token's trailing space becomes the newline
        return out, ends, word

    def pool(self, max_lines: int) -> tuple[list[bytes], np.ndarray, np.ndarray]:
        """Up to ``max_lines`` whole lines; and, per word token, its word id and line index."""
        lines: list[bytes] = []
        words, line_of = [], []
        index = 0
        while len(lines) < max_lines:
            out, ends, word = self._tokens(index, 1 << 20)
            index += 1
            nl = np.flatnonzero(out == 10)
            nl = nl[: max_lines - len(lines)]
            if nl.size == 0:
                continue
            data = out[: nl[-1] + 1].tobytes()
            starts = np.concatenate([[0], nl[:-1] + 1])
            # token t (ending at ends[t]) lies in the first line whose newline is at >= ends[t]-1
            tok_line = np.searchsorted(nl, ends - 1)
            keep = (tok_line < nl.size) & (word >= 0)
            words.append(word[keep])
            line_of.append(tok_line[keep] + len(lines))
            lines.extend(data[a : b + 1] for a, b in zip(starts.tolist(), nl.tolist(), strict=True))
        return lines, np.concatenate(words), np.concatenate(line_of)

    def write(
        self, path: str | os.PathLike[str], nbytes: int, lines_per_chunk: int = 1 << 17
    ) -> TextStats:
        """Write about ``nbytes`` (whole lines, at most ``nbytes``) of text to ``path``."""
        pool_lines = min(POOL_MAX_LINES, nbytes // 60 + 16)
        lines, word, line_of = self.pool(pool_lines)
        lengths = np.fromiter((len(x) for x in lines), np.int64, len(lines))
        uses = np.zeros(len(lines), np.int64)
        written = 0
        resampled = int(lengths.sum()) < nbytes
        with open(path, "wb") as fh:
            if not resampled:  # the pool is enough: write it in order
                keep = int(np.searchsorted(np.cumsum(lengths), nbytes, side="right"))
                fh.write(b"".join(lines[:keep]))
                uses[:keep] = 1
                written = int(lengths[:keep].sum())
            chunk = 0
            while resampled and written < nbytes:
                rng = np.random.default_rng([self.seed, 2, chunk])
                chunk += 1
                ids = rng.integers(0, len(lines), lines_per_chunk)
                cum = np.cumsum(lengths[ids])
                if written + int(cum[-1]) > nbytes:
                    ids = ids[: int(np.searchsorted(cum, nbytes - written, side="right"))]
                    if ids.size == 0:
                        break
                fh.write(b"".join([lines[i] for i in ids.tolist()]))
                written += int(lengths[ids].sum())
                uses += np.bincount(ids, minlength=len(lines))
        per_word = np.bincount(
            word, weights=uses[line_of].astype(np.float64), minlength=len(self.vocab)
        )
        counts = {
            self.vocab[i]: int(c) for i, c in enumerate(np.rint(per_word).astype(np.int64)) if c
        }
        return TextStats(written, int(uses.sum()), counts, len(lines), resampled)


def reference_counts(text: str) -> collections.Counter[str]:
    """Word counts by plain Python, following the word count app's definition of a word.

    Split on ASCII whitespace/control characters (code points ≤ 32), trim Unicode whitespace,
    lower-case, strip leading/trailing punctuation, drop what is left empty.
    """
    from riera.apps.wordcount.job import PUNCTUATION

    counts: collections.Counter[str] = collections.Counter()
    for tok in re.split(r"[\x00-\x20]+", text):
        w = tok.strip().lower().strip(PUNCTUATION)
        if w:
            counts[w] += 1
    return counts


def expected_order(counts: dict[str, int]) -> list[tuple[str, int]]:
    """``top_words``'s order: most frequent first, ties by word."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def write_text(
    path: str | os.PathLike[str], megabytes: float, *, files: int = 1, seed: int = 0
) -> list[Path]:
    """Write about ``megabytes`` MB of text as ``files`` files in directory ``path``.

    >>> import tempfile
    >>> [p.name for p in write_text(tempfile.mkdtemp(), 0.1)]
    ['text-0000.txt']
    """
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    per_file = int(megabytes * 1e6) // files
    paths = []
    for f in range(files):
        p = out / f"text-{f:04d}.txt"
        TextGenerator(seed=seed + f).write(p, per_file)
        paths.append(p)
    return paths
