"""Joins of two partitions: Arrow's hash join, made to take every column type, with the build
side chosen by size; and the cross join."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from riera.kernels import arrowtypes
from riera.physical.ops import _check_columns, take
from riera.plan.nodes import JOIN_TYPES


def join_tables(
    left: pa.Table,
    right: pa.Table,
    on: Sequence[str],
    how: str,
    name: str,
    *,
    right_on: Sequence[str] | None = None,
    suffix: str = "_right",
) -> pa.Table:
    """One partition's join. ``right_on``: the right side's keys (default: ``on``); the output
    keeps the left keys (coalesced for outer joins, as Polars does); other columns on both sides
    get ``suffix`` on the right."""
    right_keys = list(right_on) if right_on is not None else list(on)
    # A side without columns is an empty partition whose producer emitted nothing.
    if left.num_columns == 0:
        return right if how in ("right", "outer") and right.num_columns else left
    if right.num_columns == 0:
        return left.slice(0, 0) if how in ("inner", "semi", "right", "cross") else left
    if how == "cross":
        return cross_join(left, right, suffix)
    _check_columns(name, left, on)
    _check_columns(name, right, right_keys)
    arrowtypes.check_keys(name, left.schema, on, "join")
    arrowtypes.check_keys(name, right.schema, right_keys, "join")
    left, right, carried = arrowtypes.JoinCarry.prepare(left, right, on, right_keys, suffix)
    for k, rk in zip(on, right_keys, strict=True):  # string vs large_string, int64 vs double…
        lt, rt = left.schema.field(k).type, right.schema.field(rk).type
        if lt != rt:
            common = (
                pa.unify_schemas(
                    [pa.schema([("k", lt)]), pa.schema([("k", rt)])], promote_options="permissive"
                )
                .field("k")
                .type
            )
            left = left.set_column(left.schema.get_field_index(k), k, left.column(k).cast(common))
            right = right.set_column(
                right.schema.get_field_index(rk), rk, right.column(rk).cast(common)
            )
    out = _swapped(left, right, list(on), right_keys, how, suffix)
    if out is None:
        out = _acero(left, right, list(on), right_keys, JOIN_TYPES[how], right_suffix=suffix)
    return carried.finish(out)


def _acero(
    left: pa.Table, right: pa.Table, keys: list[str], right_keys: list[str], join_type: str,
    *, left_suffix: str | None = None, right_suffix: str | None = None,
) -> pa.Table:  # fmt: skip
    """Arrow's hash join (built on ``right``), single-threaded, keys coalesced."""
    return left.join(
        right, keys=keys, right_keys=right_keys, join_type=join_type, left_suffix=left_suffix,
        right_suffix=right_suffix, use_threads=False, coalesce_keys=True,
    )  # fmt: skip


_MIRROR = {"inner": "inner", "left": "right outer", "right": "left outer", "outer": "full outer"}


def _swapped(
    left: pa.Table, right: pa.Table, on: list[str], right_keys: list[str], how: str, suffix: str
) -> pa.Table | None:
    """The join computed with the sides exchanged when the right side is the larger: Acero
    builds its hash table on the right, and building on 4M rows instead of 100k cost 3-10x
    (pyarrow 26, decimal payloads). The output has the names and order of the unswapped join;
    None when the join is not worth or not safe to swap."""
    if how not in _MIRROR or right.num_rows <= left.num_rows:
        return None
    if any(rk != k and rk in left.column_names for k, rk in zip(on, right_keys, strict=True)):
        return None  # a right key named like a left column: names would not map back
    want = _acero(left.slice(0, 0), right.slice(0, 0), on, right_keys, JOIN_TYPES[how],
                  right_suffix=suffix)  # fmt: skip
    out = _acero(right, left, right_keys, on, _MIRROR[how], left_suffix=suffix)
    out = out.rename_columns(
        [dict(zip(right_keys, on, strict=True)).get(c, c) for c in out.column_names]
    )
    if sorted(out.column_names) != sorted(want.column_names):
        return None
    return out.select(want.column_names).cast(want.schema)


def cross_join(left: pa.Table, right: pa.Table, suffix: str = "_right") -> pa.Table:
    """Every left row with every right row (left rows vary slowest)."""
    nl, nr = left.num_rows, right.num_rows
    lt = take(left, np.repeat(np.arange(nl, dtype=np.int64), nr))
    rt = take(right, np.tile(np.arange(nr, dtype=np.int64), nl))
    taken = set(left.column_names)
    names = [f"{c}{suffix}" if c in taken else c for c in right.column_names]
    return pa.Table.from_arrays([*lt.columns, *rt.columns], names=[*left.column_names, *names])
