"""Record-level lineage: which input rows each output row of a stage came from.

Opt-in (``Dataset.provenance(records=True)`` or the setting ``provenance = "records"``), because it
costs work on every row. Titian-style, it is kept per stage and chained through the exchange: a
stage's output rows point at rows of the elements it read (its input partitions, splits, file
groups), and those rows point further up through the stage that wrote them. A recursive SQL query
walks the chain (:func:`riera.provenance.lineage.record_lineage`) block by block.

How a task traces, without touching user data:

- the reader says which *source* each row it produced comes from: an integer ``slot << 40 | row``,
  where ``slot`` is the position of the input element in the task's input (the same order the
  driver walks, so it can turn slots into element numbers) and ``row`` the row inside it;
- every operator gives a *relation* ``(out_rows, in_rows)`` between its output and input rows: a
  filter keeps some, ``flat_map`` repeats, a sort permutes, an aggregation maps each group to all
  the rows with its key, a join to a row of each side. ``map_batches`` says only what its function
  declared (``lineage="one_to_one"`` or, for pandas, ``"index"``: the returned frame's index holds
  input positions). Operators that cannot say (an undeclared ``map_batches``, a ``count``) make the
  stage *opaque*: its derivations are not recorded,
  and element-level lineage still holds;
- relations compose with numpy (sorted lookups, no Python loop per row); the writer finally
  places each output row into its partition (or output file).

The task groups its derivations — output partition, output row, input slot, input row — into
blocks per (partition, slot) (:mod:`riera.provenance.blocks`); the driver turns partitions and
slots into element numbers and stores one ``derivation_blocks`` row per block.
``sample`` keeps the lineage of a deterministic fraction of the output rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from riera.exchange.base import Exchange
from riera.kernels import arrowtypes
from riera.physical import joins, ops
from riera.physical import stage as ph
from riera.provenance import blocks

SHIFT = 40
MASK = (1 << SHIFT) - 1


@dataclass
class Relation:
    """Pairs ``(out row, source)``; ``source`` is ``slot << 40 | row``. Sorted by out row."""

    rows: np.ndarray  # int64
    srcs: np.ndarray  # int64


def _arange(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int64)


def _slots(counts: list[int], first_slot: int = 0) -> np.ndarray:
    """Sources of rows concatenated from inputs with ``counts`` rows each, slots from ``first_slot``."""
    if not counts:
        return np.empty(0, np.int64)
    slot = np.repeat(np.arange(first_slot, first_slot + len(counts), dtype=np.int64), counts)
    starts = np.repeat(np.cumsum([0, *counts[:-1]]).astype(np.int64), counts)
    return (slot << SHIFT) | (_arange(int(sum(counts))) - starts)


# -- readers ------------------------------------------------------------------------------------


def read_traced(reader: ph.Reader, task_input: Any, exchange: Exchange) -> tuple[Any, Relation]:
    """The reader's table and the source of each of its rows."""
    if isinstance(reader, ph.RangeShuffleReader):
        return _range_shuffle(reader, task_input, exchange)
    table = reader.read(task_input, exchange)
    if isinstance(reader, ph.ShuffleReader):
        srcs = _slots([r.rows for r in task_input])
    elif isinstance(reader, ph.JoinReader):
        left, right = task_input
        srcs = np.concatenate([_slots([r.rows for r in left]),
                               _slots([r.rows for r in right], len(left))])  # fmt: skip
    elif isinstance(reader, ph.FileGroupReader):
        # Row g comes from every file of group g; the driver numbers one slot per file.
        rows, srcs_list, slot = [], [], 0
        for g, spec in enumerate(task_input):
            n = len(spec.files)
            rows.append(np.full(n, g, np.int64))
            srcs_list.append(np.arange(slot, slot + n, dtype=np.int64) << SHIFT)
            slot += n
        if not rows:
            return table, Relation(np.empty(0, np.int64), np.empty(0, np.int64))
        return table, Relation(np.concatenate(rows), np.concatenate(srcs_list))
    else:  # one input element: a split, a range, an in-memory slice, a union member
        srcs = _arange(table.num_rows)
    return table, Relation(_arange(len(srcs)), srcs)


def _range_shuffle(
    reader: ph.RangeShuffleReader, task_input: Any, exchange: Exchange
) -> tuple[pa.Table, Relation]:
    table = reader.read(task_input, exchange)
    parts = [
        (np.int64(slot) << SHIFT) | np.arange(start, end, dtype=np.int64)
        for slot, _, start, end in reader.slices(task_input, exchange)
        if end > start
    ]
    srcs = np.concatenate(parts) if parts else np.empty(0, np.int64)
    return table, Relation(_arange(len(srcs)), srcs)


# -- operators ----------------------------------------------------------------------------------


def _key_relation(
    before: pa.Table, after: pa.Table, keys: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Each output row to the input rows with its key (rows with a null key are not traced)."""

    def key(t: pa.Table, k: str) -> Any:  # the hash join takes no view types
        return arrowtypes.plain(ops.canonical_key(t.column(k)))

    left = pa.table({**{k: key(before, k) for k in keys}, "__in": _arange(before.num_rows)})
    right = pa.table({**{k: key(after, k) for k in keys}, "__out": _arange(after.num_rows)})
    joined = left.join(right, keys=keys, join_type="inner", use_threads=False)
    return (
        joined.column("__out").to_numpy().astype(np.int64),
        joined.column("__in").to_numpy().astype(np.int64),
    )


def apply_traced(op: ops.Op, table: Any) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
    """``op.apply(table)`` and the relation ``(out_rows, in_rows)``; None when untraceable."""
    from riera.blackbox.programs import RunProgramOp
    from riera.physical.domain import DomainOp

    if isinstance(op, ops.FilterOp):
        mask = np.asarray(op.mask(table), dtype=bool)
        kept = np.flatnonzero(mask).astype(np.int64)
        return ops.take(table, kept), (_arange(len(kept)), kept)
    if isinstance(op, ops.FlatMapOp):
        rows, counts = op.expand(table.to_pylist())
        src = np.repeat(_arange(len(counts)), counts)
        return ops.rows_to_table(rows), (_arange(len(src)), src)
    if isinstance(op, ops.SortOp):
        if table.num_rows <= 1:
            return table, (_arange(table.num_rows), _arange(table.num_rows))
        order = ops.sort_indices(table, op.keys, op.descending).astype(np.int64)
        return ops.take(table, order), (_arange(len(order)), order)
    if isinstance(op, ops.LimitOp):
        out = op.apply(table)
        return out, (_arange(out.num_rows), _arange(out.num_rows))
    if isinstance(op, ops.PartialAggOp | ops.FinalAggOp):
        out = op.apply(table)
        return out, _key_relation(table, out, list(op.keys)) if out.num_columns else None
    if isinstance(op, ops.ReduceByKeyOp):
        out = op.apply(table)
        return out, _key_relation(table, out, [op.key]) if out.num_columns else None
    if isinstance(op, ops.DistinctOp):
        out = op.apply(table)
        keys = list(out.column_names)
        return out, _key_relation(table, out, keys) if keys and out.num_rows else None
    if isinstance(op, ph.JoinOp):
        return _join_traced(op, table)
    if isinstance(op, ops.MapOp | ops.SelectOp | RunProgramOp | DomainOp):
        out = op.apply(table)
        if out.num_rows == getattr(table, "num_rows", -1):
            return out, (_arange(out.num_rows), _arange(out.num_rows))
        return out, None
    return op.traced(table)  # what the operator itself says (None: it cannot)


def _join_traced(op: ph.JoinOp, pair: Any) -> tuple[pa.Table, tuple[np.ndarray, np.ndarray] | None]:
    left, right = pair.left, pair.right
    if left.num_columns == 0 or right.num_columns == 0:
        return op.apply(pair), None
    lt = left.append_column("__riera_l", pa.array(_arange(left.num_rows)))
    rt = right.append_column("__riera_r", pa.array(_arange(right.num_rows)))
    out = joins.join_tables(
        lt, rt, op.on, op.how, op.name, right_on=op.right_on or None, suffix=op.suffix
    )
    outs, ins = [], []
    for column, offset in (("__riera_l", 0), ("__riera_r", left.num_rows)):
        if column in out.column_names:
            idx = out.column(column).to_numpy(zero_copy_only=False)
            present = ~np.isnan(idx) if idx.dtype.kind == "f" else np.ones(len(idx), bool)
            rows = np.flatnonzero(present).astype(np.int64)
            outs.append(rows)
            ins.append(idx[present].astype(np.int64) + offset)
            out = out.drop_columns([column])
    order_rows = np.concatenate(outs)
    order_ins = np.concatenate(ins)
    return out, (order_rows, order_ins)


def compose(current: Relation, step: tuple[np.ndarray, np.ndarray]) -> Relation:
    """Sources of the step's output rows: ``step`` (out → mid) after ``current`` (mid → src)."""
    out_rows, mid_rows = step
    rows, srcs = current.rows, current.srcs
    if len(rows) and rows[-1] == len(rows) - 1 and np.all(rows[1:] > rows[:-1]):  # one each
        return Relation(out_rows.copy(), srcs[mid_rows])
    lo = np.searchsorted(rows, mid_rows, "left")
    hi = np.searchsorted(rows, mid_rows, "right")
    counts = hi - lo
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    pos = np.repeat(lo, counts) + (_arange(total) - starts)
    new_rows = np.repeat(out_rows, counts)
    order = np.argsort(new_rows, kind="stable")
    return Relation(new_rows[order], srcs[pos][order])


# -- writers ------------------------------------------------------------------------------------


def placement(
    writer: ph.Writer, table: pa.Table, pieces: int = 1
) -> tuple[np.ndarray, np.ndarray] | None:
    """For each output row: (partition, row inside the partition); None if unknown.

    ``pieces``: how many refs the writer stored (a SampleWriter splits its sorted block into
    even pieces for backends that cannot slice in place)."""
    n = table.num_rows
    if isinstance(writer, ph.SampleWriter) and n > 1 and writer.key in table.column_names:
        order = ops.sort_by_first_key(table, writer.key, writer.descending)  # what it wrote
        at = np.empty(n, np.int64)
        at[order] = _arange(n)  # the row's place in the sorted block
        bounds = np.linspace(0, n, max(1, pieces) + 1).astype(np.int64)  # as ops.split_even
        part = np.searchsorted(bounds, at, "right") - 1
        return part.astype(np.int32), at - bounds[part]
    if isinstance(writer, ph.OneWriter | ph.SampleWriter | ph.FileWriter):
        return np.zeros(n, np.int32), _arange(n)
    if isinstance(writer, ph.HashWriter):
        if table.num_columns == 0 or n == 0:
            return np.zeros(n, np.int32), _arange(n)
        keys = writer.keys or tuple(table.column_names)
        ids = np.asarray(ops.hash_partition_ids(table, keys, writer.partitions))
        order = np.argsort(ids, kind="stable")
        counts = np.bincount(ids, minlength=writer.partitions)
        starts = np.cumsum(counts) - counts
        inside = np.empty(n, np.int64)
        inside[order] = _arange(n) - np.repeat(starts, counts)
        return ids.astype(np.int32), inside
    if isinstance(writer, ph.EvenWriter):
        bounds = np.linspace(0, n, writer.partitions + 1).astype(np.int64)
        part = np.searchsorted(bounds, _arange(n), "right") - 1
        part = np.minimum(part, writer.partitions - 1)
        return part.astype(np.int32), _arange(n) - bounds[part]
    return None


def finish(
    relation: Relation,
    writer: ph.Writer,
    table: pa.Table,
    sample: float | None,
    seed: int,
    pieces: int = 1,
) -> list[dict[str, Any]] | None:
    """The task's derivations in blocks (``blocks.encode``, keyed by output partition and input
    slot), ready to ship to the driver; None: nothing traced."""
    placed = placement(writer, table, pieces)
    if placed is None:
        return None
    parts, inside = placed
    rows, srcs = relation.rows, relation.srcs
    if sample is not None and sample < 1 and len(rows):
        chosen = np.random.default_rng(seed).random(table.num_rows) < sample
        keep = chosen[rows]
        rows, srcs = rows[keep], srcs[keep]
    # Blocks per (output partition, input slot); the driver turns both into element numbers.
    return blocks.encode(parts[rows], inside[rows], srcs >> SHIFT, srcs & MASK)
