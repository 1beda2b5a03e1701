"""The broadcast join's own hash join: the small side indexed once per worker, probed by every task.

Arrow's hash join builds its table anew on every call, and cannot keep it: a broadcast join whose
big side has 31 tasks would hash the same small side 31 times (0.23 s a time for 1.6M rows). When
the join key is one integer-like column whose values are unique on the small side — a key and
its foreign key, the usual star join — :class:`Index` maps each key to its row once per worker
process (``TaskContext.shared``), and each task only looks its rows up:

- a **direct table** (``lut[key - min] = row``) when the keys are dense enough: 16 ms to look up
  1.1M keys among 1.6M;
- otherwise pandas' hash table (``Index.get_indexer``), 60 ms for the same.

The output is what :func:`riera.physical.joins.join_tables` gives for the same sides — names,
order, types (the target schema is taken from it on empty inputs). Everything else (several keys,
strings, duplicate keys on the small side, full outer joins) goes to Arrow's join.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from riera.physical.joins import join_tables
from riera.physical.ops import take

_DENSE_SLOTS = 1 << 25  # a direct table holds at most this many slots (128 MiB of int32)
_DENSE_RATIO = 32  # … and at most this many slots per key


def _ints(col: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The column's values as int64 and its validity (None: no nulls), or None for a type
    this join does not index (only integers, dates and times compare as their integers)."""
    t = col.type
    if pa.types.is_date32(t) or pa.types.is_time32(t):
        col = col.cast(pa.int32())
    elif pa.types.is_date64(t) or pa.types.is_time64(t) or pa.types.is_timestamp(t):
        col = col.cast(pa.int64())
    elif not (pa.types.is_integer(t) and t != pa.uint64()):
        return None
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    valid = None
    if col.null_count:
        valid = np.asarray(col.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        col = col.fill_null(0)
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64), valid


@dataclass
class Index:
    """Row numbers of the small side by key (keys unique among its non-null rows)."""

    table: pa.Table
    key_type: pa.DataType
    lut: np.ndarray | None  # direct table: row or -1, at key - low
    low: int
    hashed: Any  # pandas.Index of the keys (row = position), when not direct
    rows: np.ndarray  # the small side's rows behind ``hashed``'s positions

    @classmethod
    def build(cls, table: pa.Table, key: str) -> Index | None:
        """The index of ``table`` by ``key``, or None when this join does not apply."""
        got = _ints(table.column(key))
        if got is None:
            return None
        values, valid = got
        rows = np.arange(len(values), dtype=np.int64)
        if valid is not None:  # a null key matches nothing
            values, rows = values[valid], rows[valid]
        t = table.schema.field(key).type
        if len(values) == 0:
            return cls(table, t, np.empty(0, np.int32), 0, None, rows)
        low, high = int(values.min()), int(values.max())
        slots = high - low + 1
        if slots <= min(_DENSE_SLOTS, _DENSE_RATIO * len(values)):
            lut: np.ndarray = np.full(
                slots, -1, dtype=np.int64 if len(table) >= 2**31 else np.int32
            )
            lut[values - low] = rows
            if np.count_nonzero(lut >= 0) != len(values):
                return None  # a duplicate key: Arrow's join gives each match
            return cls(table, t, lut, low, None, rows)
        import pandas as pd

        hashed = pd.Index(values)
        if not hashed.is_unique:
            return None
        return cls(table, t, None, 0, hashed, rows)

    def lookup(self, col: pa.ChunkedArray | pa.Array) -> np.ndarray | None:
        """Per probe row, the small side's matching row or -1 (None: a key type this index
        cannot compare with)."""
        if col.type != self.key_type:
            return None
        got = _ints(col)
        if got is None:
            return None
        values, valid = got
        if self.lut is not None and len(self.lut) == 0:  # no non-null key: nothing matches
            found = np.full(len(values), -1, dtype=np.int64)
        elif self.lut is not None:
            pos = values - self.low
            inside = (pos >= 0) & (pos < len(self.lut))
            found = np.where(inside, self.lut[np.where(inside, pos, 0)], -1).astype(np.int64)
        else:
            at = self.hashed.get_indexer(values)
            found = np.where(at >= 0, self.rows[np.maximum(at, 0)], -1)
        if valid is not None:
            found[~valid] = -1
        return found


def broadcast_join(
    big: pa.Table,
    index: Index,
    big_keys: Sequence[str],
    small_keys: Sequence[str],
    how: str,
    broadcast: str,
    name: str,
    suffix: str,
) -> pa.Table | None:
    """The join of a big partition with the indexed small side, as ``join_tables`` would give
    it; None when this case is Arrow's (the caller joins with :func:`join_tables`)."""
    if len(big_keys) != 1 or big.num_columns == 0 or index.table.num_columns == 0:
        return None
    if how not in (("inner", "left", "semi", "anti") if broadcast == "right" else ("inner",)):
        return None
    small = index.table
    left, right = (small, big) if broadcast == "left" else (big, small)
    lkeys, rkeys = (small_keys, big_keys) if broadcast == "left" else (big_keys, small_keys)
    want = join_tables(left.slice(0, 0), right.slice(0, 0), lkeys, how, name,
                       right_on=rkeys, suffix=suffix).schema  # fmt: skip
    found = index.lookup(big.column(big_keys[0]))
    if found is None:
        return None
    matched = found >= 0
    if how in ("semi", "anti"):
        return take(big, np.flatnonzero(matched if how == "semi" else ~matched))
    if how == "inner":
        big_rows = np.flatnonzero(matched)
        small_rows: np.ndarray | None = found[big_rows]
    else:  # left outer, the small side on the right: every big row, nulls where unmatched
        big_rows = np.arange(big.num_rows, dtype=np.int64)
        small_rows = found
    lrows, rrows = (small_rows, big_rows) if broadcast == "left" else (big_rows, small_rows)
    columns: dict[str, Any] = {}
    for c in left.column_names:
        columns[c] = _gather(left.column(c), lrows)
    taken = set(left.column_names)
    for c in right.column_names:
        if c in rkeys:
            continue  # the keys are coalesced into the left ones (equal where they match)
        columns[f"{c}{suffix}" if c in taken else c] = _gather(right.column(c), rrows)
    if sorted(columns) != sorted(want.names):
        return None
    return pa.table([columns[c] for c in want.names], schema=want)


def _gather(col: pa.ChunkedArray, rows: np.ndarray | None) -> pa.ChunkedArray | pa.Array:
    assert rows is not None
    if (rows >= 0).all():
        return take(pa.table({"c": col}), rows).column(0)
    if (rows < 0).all():
        return pa.nulls(len(rows), col.type)
    # an unmatched row of a left join: a null row number gathers a null
    from riera.kernels.arrowtypes import take_rows

    return take_rows(col, pa.array(np.where(rows >= 0, rows, 0), mask=rows < 0))
