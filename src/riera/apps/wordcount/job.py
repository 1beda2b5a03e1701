"""Word count with Arrow kernels, on Riera's public API.

A *word* is a maximal run of characters between ASCII whitespace/control characters (bytes ≤ 32),
lower-cased, with leading and trailing punctuation stripped; tokens that are only punctuation are
dropped. (The same normalisation as document 000's stream word count: lower-case, punctuation
stripped, no stop-word removal.)

Per partition, token boundaries are found with numpy over the text's data buffer. Tokens of at
most 8 bytes (most English words) are packed into a ``uint64`` each and counted with numpy's SIMD
sort (``np.unique``) — no string hashing; longer tokens are counted with Arrow's ``value_counts``.
Only the distinct tokens (tens of thousands, not hundreds of millions) are then lower-cased and
trimmed and their counts re-aggregated. The map side therefore ships a few hundred KB per partition through
the exchange; the reduce side sums counts per word.
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import riera
from riera import memory

PUNCTUATION = string.punctuation + "“”‘’«»—–…¡¿"
SCHEMA = pa.schema([("word", pa.string()), ("count", pa.int64())])


_SEPARATORS = "".join(chr(i) for i in range(33))
_MASKS = np.array([(1 << (8 * i)) - 1 for i in range(8)] + [2**64 - 1], dtype=np.uint64)


def _string_parts(arr: pa.Array) -> tuple[np.ndarray, np.ndarray, pa.Buffer, int]:
    """Offsets (relative to the first value), the bytes, the data buffer and its base offset."""
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=off_type)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    lo, hi = int(offsets[0]), int(offsets[-1])
    body = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[lo:hi]
    return (offsets - lo).astype(np.int64), body, arr.buffers()[2], lo


def _tokens(body: np.ndarray, line_starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end offsets of every token in ``body`` (lines concatenated, no newlines)."""
    n = body.size
    word = np.greater(body, 32, out=memory.empty(n, dtype=bool))
    before = memory.empty(n, dtype=bool)  # a boundary just before position p
    before[0] = True
    np.less_equal(body[:-1], 32, out=before[1:])
    before[line_starts] = True
    after = memory.empty(n, dtype=bool)  # a boundary just after position p
    after[-1] = True
    np.less_equal(body[1:], 32, out=after[:-1])
    after[line_starts[line_starts > 0] - 1] = True
    starts = np.flatnonzero(np.logical_and(word, before, out=before))
    ends = np.flatnonzero(np.logical_and(word, after, out=after)) + 1
    return starts, ends


def _count_short(body: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> pa.Table:
    """Count tokens of at most 8 bytes as integers: the bytes packed into a uint64."""
    padded = memory.empty(body.size + 8, dtype=np.uint8)
    padded[body.size :] = 0
    padded[: body.size] = body
    words = np.ndarray(shape=(body.size,), dtype="<u8", buffer=padded, strides=(1,))
    packed = words[starts] & _MASKS[lengths]
    values, counts = np.unique(packed, return_counts=True)
    fixed = pa.Array.from_buffers(pa.binary(8), len(values), [None, pa.py_buffer(values)])
    text = pc.utf8_rtrim(fixed.cast(pa.binary()).cast(pa.string()), characters="\x00")
    return pa.table({"word": text, "count": pa.array(counts.astype(np.int64))})


def _count_long(
    buffer: pa.Buffer, base: int, starts: np.ndarray, long_: np.ndarray, nbytes: int
) -> pa.Table:
    """Count the tokens selected by ``long_`` with Arrow's hash.

    Every token spans from its start to the next token's start (the array tiles the buffer with
    no copy); the selected spans are taken out and their trailing separators trimmed.
    """
    if not long_.any():
        return SCHEMA.empty_table()
    offsets = np.empty(starts.size + 1, dtype=np.int64)
    offsets[:-1] = starts + base
    offsets[-1] = base + nbytes
    spans = pa.Array.from_buffers(
        pa.large_string(), starts.size, [None, pa.py_buffer(offsets), buffer]
    )
    tokens = pc.utf8_rtrim(spans.take(pa.array(np.flatnonzero(long_))), characters=_SEPARATORS)
    vc = pc.value_counts(tokens)
    return pa.table(
        {
            "word": pc.cast(vc.field("values"), pa.string()),
            "count": pc.cast(vc.field("counts"), pa.int64()),
        }
    )


def normalize_counts(words: pa.Array, counts: pa.Array) -> pa.Table:
    """Lower-case and trim raw tokens, drop empty ones, and sum counts per resulting word."""
    clean = pc.utf8_trim(pc.utf8_lower(pc.utf8_trim_whitespace(words)), PUNCTUATION)
    table = pa.table({"word": pc.cast(clean, pa.string()), "count": counts})
    table = table.filter(pc.not_equal(table.column("word"), ""))
    out = table.group_by("word", use_threads=False).aggregate([("count", "sum")])
    return pa.table({"word": out.column("word"), "count": out.column("count_sum")})


def count_words_batch(table: pa.Table, column: str = "text") -> pa.Table:
    """Map side: ``(word, count)`` for one partition of text lines."""
    if table.num_rows == 0:
        return SCHEMA.empty_table()
    col = table.column(column)
    arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    offsets, body, buffer, base = _string_parts(arr)
    if body.size == 0:
        return SCHEMA.empty_table()
    line_starts = offsets[:-1][offsets[:-1] < body.size]
    starts, ends = _tokens(body, line_starts)
    lengths = ends - starts
    short = lengths <= 8
    parts = [_count_short(body, starts[short], lengths[short])]
    parts.append(_count_long(buffer, base, starts, ~short, body.size))
    merged = pa.concat_tables([p.cast(SCHEMA) for p in parts])
    return normalize_counts(merged.column("word"), merged.column("count"))


def word_counts(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    partition_bytes: int | None = None,
) -> riera.Dataset:
    """``(word, count)`` over the text files at ``paths``, most frequent first (ties by word)."""
    return (
        riera.read_text(paths, partition_bytes=partition_bytes)
        .map_batches(count_words_batch, batch_format="pyarrow")
        .group_by("word")
        .agg(count=("count", "sum"))
        .sort(["count", "word"], descending=[True, False])
    )


def top_words(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    k: int | None = None,
    *,
    partition_bytes: int | None = None,
) -> list[tuple[str, int]]:
    ds = word_counts(paths, partition_bytes=partition_bytes)
    rows = ds.take(k) if k else ds.collect()
    return [(r["word"], r["count"]) for r in rows]
