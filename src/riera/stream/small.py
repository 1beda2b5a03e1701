"""Aggregation of small batches in Python, for the per-record trigger.

At a few thousand events per second a poll brings a handful of records, and Arrow's hash
aggregation costs ~0.25 ms to set up twice per batch (map side and finish) — most of the time
between an event's arrival and its commit. For such batches, and only for what Python computes
exactly as Arrow does (``count``, ``sum``, ``min``, ``max``, ``mean`` over integers — floats
would add in another order — with keys of strings and integers), the same partial states and results are computed here, in the
schema Arrow gave the first batch. Anything else keeps the batch kernels.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from riera.physical import ops
from riera.plan.nodes import AggSpec

SMALL = 64
_FUNCS = ("count", "sum", "min", "max", "mean")


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _key_ok(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def simple(schema: pa.Schema, keys: tuple[str, ...], aggs: tuple[AggSpec, ...]) -> bool:
    """Whether Python gives exactly Arrow's answer for these keys and aggregations."""
    if not all(k in schema.names and _key_ok(schema.field(k).type) for k in keys):
        return False
    for a in aggs:
        if not isinstance(a.func, str) or a.func not in _FUNCS:
            return False
        if a.column == "*":
            if a.func != "count":
                return False
        elif a.column not in schema.names or not _numeric(schema.field(a.column).type):
            return False
    return True


def partial(table: pa.Table, keys: tuple[str, ...], aggs: tuple[AggSpec, ...],
            schema: pa.Schema) -> pa.Table:  # fmt: skip
    """What :class:`~riera.physical.ops.PartialAggOp` gives, for a small table."""
    key_cols = [table.column(k).to_pylist() for k in keys]
    groups: dict[tuple[Any, ...], list[Any]] = {}
    values = {a.column: table.column(a.column).to_pylist() for a in aggs if a.column != "*"}
    specs = [(state, a.column) for a in aggs for state, _ in ops._partial_specs(a)]
    for r in range(table.num_rows):
        key = tuple(c[r] for c in key_cols)
        acc = groups.get(key)
        if acc is None:
            acc = groups[key] = [0 if s == "count" else None for s, _ in specs]
        for j, (state, column) in enumerate(specs):
            if column == "*":
                acc[j] += 1
                continue
            v = values[column][r]
            if v is None:
                continue
            if state == "count":
                acc[j] += 1
            elif acc[j] is None:
                acc[j] = v
            elif state == "sum":
                acc[j] += v
            elif state == "min":
                acc[j] = v if v < acc[j] else acc[j]
            elif state == "max":
                acc[j] = v if v > acc[j] else acc[j]
    rows = list(groups.items())
    arrays = [pa.array([k[i] for k, _ in rows], schema.field(i).type) for i in range(len(keys))]
    arrays += [
        pa.array([acc[j] for _, acc in rows], schema.field(len(keys) + j).type)
        for j in range(len(specs))
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def finish(keys: list[tuple[Any, ...]], states: dict[tuple[Any, ...], list[Any]],
           aggs: tuple[AggSpec, ...], schema: pa.Schema) -> pa.Table:  # fmt: skip
    """What :class:`~riera.physical.ops.FinalAggOp` gives for merged states of a few keys."""
    nk = len(keys[0]) if keys else 0
    out_cols: list[list[Any]] = [[k[i] for k in keys] for i in range(nk)]
    out_cols += [[] for _ in aggs]
    for key in keys:
        acc = states[key]
        j = 0
        for i, a in enumerate(aggs):
            if a.func == "mean":
                s, c = acc[j], acc[j + 1]
                out_cols[nk + i].append(None if not c or s is None else float(s) / float(c))
                j += 2
            else:
                out_cols[nk + i].append(acc[j])
                j += 1
    return pa.Table.from_arrays(
        [pa.array(c, f.type) for c, f in zip(out_cols, schema, strict=True)], schema=schema
    )
