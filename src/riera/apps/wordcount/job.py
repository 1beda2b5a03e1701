"""Word count with Arrow kernels, on Riera's public API.

A *word* is a maximal run of characters between ASCII whitespace/control characters (bytes ≤ 32),
lower-cased, with leading and trailing punctuation stripped; tokens that are only punctuation are
dropped. (The same normalisation as document 000's stream word count: lower-case, punctuation
stripped, no stop-word removal.)

Per partition, tokens are found with numpy over the text's data buffer — no copy: each token is a
slice of the buffer (with its trailing separators), so a string array over the *same* buffer with
token-start offsets represents every token. ``value_counts`` runs over those raw tokens, and only
the distinct tokens (tens of thousands, not hundreds of millions) are then lower-cased and trimmed
and their counts re-aggregated. The map side therefore ships a few hundred KB per partition through
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

PUNCTUATION = string.punctuation + "“”‘’«»—–…¡¿"
SCHEMA = pa.schema([("word", pa.string()), ("count", pa.int64())])


def _token_array(arr: pa.Array) -> pa.Array:
    """Every token of a string array, as views into its data buffer (trailing separators kept)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if len(arr) == 0 or arr.buffers()[2] is None:
        return pa.array([], pa.string())
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=off_type)[
        arr.offset : arr.offset + len(arr) + 1
    ]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    lo, hi = int(offsets[0]), int(offsets[-1])
    body = data[lo:hi]
    if body.size == 0:
        return pa.array([], pa.string())
    sep = body <= 32
    start = np.empty(body.size, dtype=bool)
    start[0] = True
    np.copyto(start[1:], sep[:-1])
    line_starts = (offsets[:-1] - lo).astype(np.int64)
    line_starts = line_starts[line_starts < body.size]
    start[line_starts] = True  # a line start is a token boundary (lines carry no newline)
    start &= ~sep
    starts = np.flatnonzero(start)
    if starts.size == 0:
        return pa.array([], pa.string())
    # Token i ends where token i+1 starts or its line ends, whichever is first.
    tok_offsets = np.empty(starts.size + 1, dtype=np.int64)
    tok_offsets[:-1] = starts + lo
    tok_offsets[-1] = hi
    typ = pa.large_string()
    tokens = pa.Array.from_buffers(
        typ, starts.size, [None, pa.py_buffer(tok_offsets), arr.buffers()[2]]
    )
    return tokens


def normalize_counts(words: pa.Array, counts: pa.Array) -> pa.Table:
    """Lower-case and trim raw tokens, drop empty ones, and sum counts per resulting word."""
    clean = pc.utf8_trim(pc.utf8_lower(pc.utf8_trim_whitespace(words)), PUNCTUATION)
    table = pa.table({"word": pc.cast(clean, pa.string()), "count": counts})
    table = table.filter(pc.not_equal(table.column("word"), ""))
    out = table.group_by("word", use_threads=False).aggregate([("count", "sum")])
    return pa.table({"word": out.column("word"), "count": out.column("count_sum")})


def count_words_batch(table: pa.Table, column: str = "text") -> pa.Table:
    """Map side: ``(word, count)`` for one partition of text lines."""
    col = table.column(column) if table.num_rows else pa.chunked_array([], pa.string())
    tokens = (
        _token_array(col.combine_chunks() if col.num_chunks != 1 else col.chunk(0))
        if len(col)
        else pa.array([], pa.string())
    )
    if len(tokens) == 0:
        return SCHEMA.empty_table()
    vc = pc.value_counts(tokens)
    return normalize_counts(vc.field("values"), pc.cast(vc.field("counts"), pa.int64()))


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
