"""Content hashes of data elements, computed in the workers that produced them.

A data element's hash identifies its content: two runs that produced the same partition give the
same hash, whatever backend or segment held it. It is xxHash3 (64-bit) over the table's schema and
then every Arrow buffer of every column chunk, read in place — no copy, no serialization — so it
runs at memory speed (several GB/s per worker) and adds little to a task.

The worker hashes each table as it hands it to the exchange, while it is still in its memory
(:class:`HashingExchange`): re-opening a fresh segment to hash it costs page faults, 30 ms per
125 MB block. Only tables stored on backends that keep Arrow buffers as they are (``shm``,
``disk``) get a hash; S3 and Redis elements have none (``NULL`` in the store), as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import xxhash

from riera.exchange.base import Ref
from riera.exchange.policy import Exchanges

HASHED_BACKENDS = frozenset({"shm", "disk"})


def table_hash(table: pa.Table) -> str:
    """``xxh3-<16 hex digits>`` of ``table``'s schema and contents.

    >>> a = pa.table({"x": [1, 2, 3]})
    >>> table_hash(a) == table_hash(pa.table({"x": [1, 2, 3]}))
    True
    >>> table_hash(a) == table_hash(pa.table({"x": [1, 2, 4]}))
    False
    """
    h = xxhash.xxh3_64()
    h.update(table.schema.serialize())
    h.update(table.num_rows.to_bytes(8, "little"))
    for column in table.columns:
        for chunk in column.chunks:
            if len(chunk):  # an empty chunk is no content (a stored empty table may have none)
                _update_array(h, chunk)
    return f"xxh3-{h.hexdigest()}"


def _update_array(h: xxhash.xxh3_64, array: pa.Array) -> None:
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        # Views point into data buffers in any layout (inline or not, shared, sliced): hash
        # the values, as offsets and bytes, so equal contents hash alike whatever the layout.
        plain = pa.large_string() if pa.types.is_string_view(array.type) else pa.large_binary()
        array = array.cast(plain)
    if array.offset:  # a slice: its buffers start before it; hash the exact values instead
        array = pa.concat_arrays([array])
    sizes = _used_bytes(array)
    for i, buf in enumerate(array.buffers()):
        # No validity bitmap and an all-valid one are the same content (Arrow IPC drops the
        # latter), so a table hashes alike in the worker's memory and read back from a segment.
        if buf is None or (i == 0 and array.null_count == 0 and _has_validity(array.type)):
            h.update(b"\x00")
        else:  # only the bytes the values use: IPC pads buffers, builders over-allocate
            h.update(memoryview(buf)[: sizes[i]] if sizes else memoryview(buf))
    if isinstance(array, pa.DictionaryArray):
        _update_array(h, array.dictionary)


def _used_bytes(array: pa.Array) -> list[int] | None:
    """Bytes of each buffer the values use, for flat types (None: hash whole buffers)."""
    t, n = array.type, len(array)
    bits = (n + 7) // 8
    if pa.types.is_boolean(t):
        return [bits, bits]
    if (
        pa.types.is_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_string(t)
        or (pa.types.is_large_binary(t))
    ):
        width = 8 if pa.types.is_large_string(t) or pa.types.is_large_binary(t) else 4
        offsets = array.buffers()[1]
        if offsets is None or n == 0:
            return [bits, 0, 0]
        dtype = "<i8" if width == 8 else "<i4"
        end = int(np.frombuffer(offsets, dtype=dtype, count=n + 1)[n])
        return [bits, (n + 1) * width, end]
    try:
        width = t.bit_width
    except ValueError:  # nested, dictionary, variable-width views…
        return None
    return [bits, (n * width + 7) // 8]


def _has_validity(t: pa.DataType) -> bool:
    """Whether buffer 0 of an array of type ``t`` is its validity bitmap (not for null and
    union types)."""
    return not (pa.types.is_null(t) or pa.types.is_union(t))


class HashingExchange:
    """The task's exchange, hashing every table it stores (for ``HASHED_BACKENDS``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.hashes: list[str | None] = []

    def _hash(self, ref: Ref, table: pa.Table) -> str | None:
        if ref.backend not in HASHED_BACKENDS:
            return None
        try:
            return table_hash(table)
        except Exception:  # a hash is a nicety; the result is what matters
            return None

    def put(self, table: pa.Table, key: Any) -> Ref:
        ref: Ref = self.inner.put(table, key)
        self.hashes.append(self._hash(ref, table))
        return ref

    def put_partitioned(self, tables: Sequence[pa.Table], key: Any) -> list[Ref]:
        refs: list[Ref] = self.inner.put_partitioned(tables, key)
        self.hashes += [self._hash(r, t) for r, t in zip(refs, tables, strict=True)]
        return refs

    def __getattr__(self, name: str) -> Any:  # get, release, zero_copy, name…
        return getattr(self.inner, name)


def ref_hashes(refs: Sequence[Ref], exchanges: Exchanges) -> list[str | None]:
    """Content hash of each ref's table, or ``None`` where reading it back would copy it."""
    out: list[str | None] = []
    for ref in refs:
        if ref.backend in HASHED_BACKENDS:
            out.append(table_hash(exchanges.backend(ref.backend).get(ref)))
        else:
            out.append(None)
    return out
