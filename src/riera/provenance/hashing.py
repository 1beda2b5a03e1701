"""Content hashes of data elements, computed in the workers that produced them.

A data element's hash identifies its content: two runs that produced the same partition give the
same hash, whatever backend or segment held it. It is xxHash3 (64-bit) over the table's schema and
then every Arrow buffer of every column chunk, read in place — no copy, no serialization — so it
runs at memory speed (several GB/s per worker) and adds little to a task.

Only tables a backend can hand back without a copy are hashed (``shm`` and ``disk`` map their
segments); re-downloading a partition from S3 or Redis to hash it would double its traffic, so
those elements have no hash (``NULL`` in the store).
"""

from __future__ import annotations

from collections.abc import Sequence

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
            _update_array(h, chunk)
    return f"xxh3-{h.hexdigest()}"


def _update_array(h: xxhash.xxh3_64, array: pa.Array) -> None:
    if array.offset:  # a slice: its buffers start before it; hash the exact values instead
        array = pa.concat_arrays([array])
    for buf in array.buffers():
        if buf is None:
            h.update(b"\x00")
        else:
            h.update(memoryview(buf))
    if isinstance(array, pa.DictionaryArray):
        _update_array(h, array.dictionary)


def ref_hashes(refs: Sequence[Ref], exchanges: Exchanges) -> list[str | None]:
    """Content hash of each ref's table, or ``None`` where reading it back would copy it."""
    out: list[str | None] = []
    for ref in refs:
        if ref.backend in HASHED_BACKENDS:
            out.append(table_hash(exchanges.backend(ref.backend).get(ref)))
        else:
            out.append(None)
    return out
