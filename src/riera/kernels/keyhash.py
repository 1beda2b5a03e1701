"""Per-row key hashes for hash partitioning (group_by, join, distinct, ``repartition(by=)``).

A key's hash depends only on its value, never on how a partition typed it: the same key in an
int64 and in a double partition, in a ``string``, ``large_string``, ``string_view`` or dictionary
column, goes to the same partition, which is what lets partitions typed differently by their
sources meet in one join or group.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riera.kernels import arrowtypes

_NULL_HASH = np.uint64(0x9E3779B97F4A7C15)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser over 64-bit words (vectorized, wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _column_hash(col: pa.ChunkedArray) -> np.ndarray:
    """A per-row hash that depends only on the value, never on how a partition typed it.

    Integers hash by value (all 64 bits), and floats holding an integral value hash like that
    integer, so ``1`` in an int64 partition and ``1.0`` in a double one agree; ``-0.0`` is ``0``,
    every NaN is one value. Times hash in one unit (ns), strings and binaries by content, nulls as
    one constant. Collisions only put distinct keys in the same partition, which stays correct.
    """
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = t.value_type
    col = arrowtypes.plain(col)  # views hash by content, like the strings they hold
    t = col.type
    valid = None if col.null_count == 0 else pc.is_valid(col).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t) or pa.types.is_boolean(t):
        values = pc.fill_null(col.cast(pa.int64(), safe=False), 0).to_numpy()
        h = _mix64(values.view(np.uint64))
    elif pa.types.is_floating(t) or pa.types.is_decimal(t):
        f = pc.fill_null(col.cast(pa.float64(), safe=False), 0.0).to_numpy()
        with np.errstate(invalid="ignore"):
            integral = (f == np.floor(f)) & (np.abs(f) < 2.0**63)
        bits = np.where(np.isnan(f), np.float64("nan"), f).view(np.uint64)
        as_int = np.where(integral, f, 0).astype(np.int64).view(np.uint64)
        h = _mix64(np.where(integral, as_int, bits))
    elif (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
    ):
        from pandas.util import hash_array

        # Hash each distinct value once (Python objects only for the dictionary), then gather.
        encoded = pc.dictionary_encode(col).combine_chunks()
        distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
        per_value = hash_array(np.asarray(distinct, dtype=object))
        h = (
            per_value[pc.fill_null(encoded.indices, 0).to_numpy()]
            if len(distinct)
            else np.zeros(len(col), dtype=np.uint64)
        )
    elif pa.types.is_timestamp(t) or pa.types.is_duration(t) or pa.types.is_time(t):
        unit = (
            pa.timestamp("ns")
            if pa.types.is_timestamp(t)
            else (pa.duration("ns") if pa.types.is_duration(t) else pa.time64("ns"))
        )
        ns = col.cast(unit, safe=False).cast(pa.int64())
        h = _mix64(pc.fill_null(ns, 0).to_numpy().view(np.uint64))
    elif pa.types.is_date(t):
        days = col.cast(pa.date32()).cast(pa.int32()).cast(pa.int64())
        h = _mix64(pc.fill_null(days, 0).to_numpy().view(np.uint64))
    else:
        from pandas.util import hash_array

        h = hash_array(np.asarray([repr(v) for v in col.to_pylist()], dtype=object))
    if valid is not None:
        h = np.where(valid, h, _NULL_HASH)
    return h


def hash_partition_ids(
    table: pa.Table, keys: Sequence[str], n: int, operator: str = "hash partitioning"
) -> np.ndarray:
    """Deterministic partition id per row (same key → same id in every process).

    >>> a = pa.table({"k": pa.array(["x", "y"], pa.string_view())})
    >>> b = pa.table({"k": pa.array(["x", "y"], pa.large_string())})
    >>> (hash_partition_ids(a, ["k"], 7) == hash_partition_ids(b, ["k"], 7)).all()
    np.True_
    """
    arrowtypes.check_keys(operator, table.schema, keys, "partitioning")
    h = np.zeros(table.num_rows, dtype=np.uint64)
    for k in keys:
        h = h * np.uint64(1000003) ^ _column_hash(table.column(k))
    return (h % np.uint64(n)).astype(np.int64)
