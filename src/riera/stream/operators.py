"""Stateful streaming operators: running aggregates and windows, over the batch engine's kernels.

A running ``group_by().agg()`` is the batch engine's two-phase aggregation, with the state in
between kept across batches: each batch is reduced by :class:`~riera.physical.ops.PartialAggOp`
(vectorised, as a batch task's map side), the partial states are merged into the keyed state
(sums add, minima take the smaller, lists concatenate…), and the updated keys are finished by
:class:`~riera.physical.ops.FinalAggOp` (means divide, callables run) into output rows — the same
code, types and null rules as batch, so a finite stream ends in exactly the batch result.

Windows add ``window_start``/``window_end`` to the key. Tumbling and sliding windows are assigned
vectorised (a row falls into ``ceil(size/slide)`` sliding windows); sessions are merged per key as
records arrive. A window emits on every update (``emit="update"``) or once when the watermark
passes its end (``emit="close"``), then again for each late record within the allowed lateness;
it is purged when the watermark passes ``end + lateness``, and records for purged windows are
*late*: they are returned to the engine, which counts them and sends them to the late output.

State changes are collected per epoch (:meth:`StatefulOp.changes`) and made durable by the engine.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riera.errors import ColumnTypeError
from riera.physical import ops
from riera.plan.nodes import AggSpec
from riera.plan.stream import Window
from riera.stream import small
from riera.stream.state import Change, decode_key, encode_key, key_group

NO_TIME = -(2**62)

# The raw state key under which window operators keep the schema of their partial table: a closed
# window restored from a checkpoint must be emitted even when no record has been processed since
# the restart (a processing-time window, a clock-driven watermark), and its output types come from
# that schema. Never a stored operator key: those are pickles, which start with b"\x80".
SCHEMA_KEY = b"\x00schema"


def _combine(state: str, a: Any, b: Any) -> Any:
    # ``first`` is the group's first row, null or not (batch's FinalAggOp takes the first partial
    # by row number): the older state ``a`` wins even when it is null. Treating a null ``a`` as
    # "no value yet" (as for sums and minima below) made the result depend on the epoch cuts.
    if state == "first":
        return a
    if a is None:
        return b
    if b is None:
        return a
    if state in ("count", "sum"):
        return a + b
    if state == "min":
        return a if a <= b else b
    if state == "max":
        return a if a >= b else b
    if state == "first":
        return a
    return list(a) + list(b)  # list


def _partial_states(aggs: tuple[AggSpec, ...]) -> list[tuple[str, str]]:
    """``(column name, state kind)`` of each partial column PartialAggOp writes."""
    out = []
    for i, a in enumerate(aggs):
        for state, _ in ops._partial_specs(a):
            out.append((f"__p{i}_{state}", state))
    return out


def event_time_ms(table: pa.Table, column: str, where: str) -> np.ndarray:
    """The column as Unix milliseconds (timestamps of any unit, or numbers taken as ms)."""
    if column not in table.column_names:
        raise KeyError(
            f"{where}: no event-time column {column!r}; the data has {table.column_names}"
        )
    col = table.column(column)
    t = col.type
    if pa.types.is_timestamp(t):
        col = pc.cast(pc.cast(col, pa.timestamp("ms", t.tz)), pa.int64())
    elif pa.types.is_date(t):
        col = pc.multiply(pc.cast(pc.cast(col, pa.date32()), pa.int64()), 86_400_000)
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        col = pc.cast(pc.floor(pc.cast(col, pa.float64())), pa.int64())
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        col = pc.cast(pc.cast(pc.strptime(col, "%Y-%m-%dT%H:%M:%S", "ms"), pa.timestamp("ms")),
                      pa.int64())  # fmt: skip
    else:
        raise ColumnTypeError(
            f"{where}: event-time column {column!r} is {t}; expected a timestamp, a date or "
            f"Unix milliseconds as a number"
        )
    if col.null_count:
        raise ColumnTypeError(f"{where}: event-time column {column!r} holds nulls")
    return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.int64)


class StatefulOp:
    """The contract the engine drives (see the module docstring)."""

    name: str
    key_groups: int

    def __init__(self, name: str, key_groups: int) -> None:
        self.name, self.key_groups = name, key_groups
        self.state: dict[tuple[Any, ...], Any] = {}
        self._dirty: set[tuple[Any, ...]] = set()
        # Per-window lineage (opt-in, window operators): the epochs whose records reached each
        # window, as ranges [first, last] of consecutive epochs (a window fed every epoch keeps
        # one range); set by the engine, with the epoch being processed.
        self.lineage: dict[tuple[Any, ...], list[list[int]]] | None = None
        self.epoch = 0
        self._lineage_dirty: set[tuple[Any, ...]] = set()
        self._emitted: list[tuple[tuple[Any, ...], int, int, list[list[int]]]] = []

    def trace(self, keys: Iterable[tuple[Any, ...]]) -> None:
        """Note the current epoch as a contributor to these window keys (lineage only)."""
        if self.lineage is None:
            return
        for k in keys:
            ranges = self.lineage.setdefault(k, [])
            if ranges and ranges[-1][1] >= self.epoch:
                continue
            if ranges and ranges[-1][1] == self.epoch - 1:
                ranges[-1] = [ranges[-1][0], self.epoch]
            else:
                ranges.append([self.epoch, self.epoch])
            self._lineage_dirty.add(k)

    def take_lineage(self) -> list[tuple[tuple[Any, ...], int, int, list[list[int]]]]:
        """``(key, window start ms, window end ms, epoch ranges)`` of each window row emitted
        since the last call."""
        out, self._emitted = self._emitted, []
        return out

    def restore_lineage(self, pairs: Iterable[tuple[bytes, Any]]) -> None:
        self.lineage = {decode_key(k): [list(r) for r in v] for k, v in pairs}
        self._lineage_dirty.clear()

    def lineage_changes(self) -> Iterator[Change]:
        if self.lineage is None:
            return
        for key in self._lineage_dirty:
            raw = encode_key(key)
            yield (f"{self.name}#lineage", key_group(raw, self.key_groups), raw,
                   self.lineage.get(key))  # fmt: skip
        self._lineage_dirty.clear()

    def restore(self, pairs: Iterable[tuple[bytes, Any]]) -> None:
        self.state = {decode_key(k): v for k, v in pairs}
        self._dirty.clear()

    def process(self, table: pa.Table, watermark: int, proc_ms: int
                ) -> tuple[list[pa.Table], pa.Table | None]:  # fmt: skip
        """Fold a batch in; return the rows to emit now and the late rows (or None)."""
        raise NotImplementedError

    def advance(self, watermark: int) -> list[pa.Table]:
        """The watermark moved to ``watermark``: rows of windows that close now."""
        return []

    def changes(self) -> Iterator[Change]:
        for key in self._dirty:
            raw = encode_key(key)
            yield (self.name, key_group(raw, self.key_groups), raw, self.state.get(key))
        self._dirty.clear()

    def size(self) -> int:
        return len(self.state)


class RunningAgg(StatefulOp):
    """``group_by(keys).agg(...)`` on a stream: one running total per key, emitted on change."""

    def __init__(self, name: str, key_groups: int, keys: tuple[str, ...],
                 aggs: tuple[AggSpec, ...]) -> None:  # fmt: skip
        super().__init__(name, key_groups)
        self.keys, self.aggs = keys, aggs
        self.partial = ops.PartialAggOp(f"{name} (partial)", keys, aggs)
        self.final = ops.FinalAggOp(name, keys, aggs)
        self.states = _partial_states(aggs)
        self.schema: pa.Schema | None = None  # of the partial table (keys + states)
        self._out_schema: pa.Schema | None = None  # of the finished rows, once Arrow made some
        self._simple = False  # set by the engine: Python may finish small batches (small.py)
        self._saved_schema: pa.Schema | None = None  # the schema the state store holds

    def restore(self, pairs: Iterable[tuple[bytes, Any]]) -> None:
        rest = []
        for raw, value in pairs:
            if raw == SCHEMA_KEY:
                self.schema = self._saved_schema = value
            else:
                rest.append((raw, value))
        super().restore(rest)

    def _schema_changes(self) -> Iterator[Change]:
        """The partial schema, when it is new to the store (window operators; see SCHEMA_KEY)."""
        if self.schema is not None and self.schema != self._saved_schema:
            self._saved_schema = self.schema
            yield (self.name, key_group(SCHEMA_KEY, self.key_groups), SCHEMA_KEY, self.schema)

    def process(self, table: pa.Table, watermark: int, proc_ms: int
                ) -> tuple[list[pa.Table], pa.Table | None]:  # fmt: skip
        if table.num_rows == 0:
            return [], None
        part = self.partial.apply(table)
        self.schema = part.schema
        touched = self._merge(part, len(self.keys))
        return [self._finish(touched)], None

    def _merge(self, part: pa.Table, nkeys: int) -> list[tuple[Any, ...]]:
        cols = [part.column(i).to_pylist() for i in range(part.num_columns)]
        kinds = [s for _, s in self.states]
        touched = []
        for r in range(part.num_rows):
            key = tuple(cols[c][r] for c in range(nkeys))
            new = [cols[nkeys + j][r] for j in range(len(kinds))]
            old = self.state.get(key)
            if old is not None:
                new = [_combine(k, a, b) for k, a, b in zip(kinds, old, new, strict=True)]
            self.state[key] = new
            self._dirty.add(key)
            touched.append(key)
        return touched

    def _finish(self, keys: list[tuple[Any, ...]]) -> pa.Table:
        assert self.schema is not None
        if len(keys) <= small.SMALL and self._out_schema is not None and self._simple:
            return small.finish(keys, self.state, self.aggs, self._out_schema)
        out = self._finish_arrow(keys)
        self._out_schema = out.schema
        return out

    def _finish_arrow(self, keys: list[tuple[Any, ...]]) -> pa.Table:
        assert self.schema is not None
        nkeys = len(self.keys)
        columns = [[k[i] for k in keys] for i in range(nkeys)]
        columns += [[self.state[k][j] for k in keys] for j in range(len(self.states))]
        merged = pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(columns, self.schema, strict=True)],
            schema=self.schema,
        )
        return self.final.apply(merged)


_TS = pa.timestamp("ms", tz="UTC")


class WindowedAgg(RunningAgg):
    """Tumbling and sliding windows: the running aggregate keyed by ``(window, keys)``, with
    emission on update or on close, lateness, and purging."""

    def __init__(self, name: str, key_groups: int, keys: tuple[str, ...],
                 aggs: tuple[AggSpec, ...], window: Window) -> None:  # fmt: skip
        wkeys = ("window_start", "window_end", *keys)
        super().__init__(name, key_groups, wkeys, aggs)
        self.user_keys, self.window = keys, window
        self.fired: set[tuple[Any, ...]] = set()  # closed windows already emitted once

    def restore(self, pairs: Iterable[tuple[bytes, Any]]) -> None:
        super().restore(pairs)
        self.fired = {k for k, v in self.state.items() if v[-1]}
        self.state = {k: v[:-1] for k, v in self.state.items()}

    def changes(self) -> Iterator[Change]:
        yield from self._schema_changes()
        for key in self._dirty:
            raw = encode_key(key)
            value = self.state.get(key)
            if value is not None:
                value = [*value, key in self.fired]
            yield (self.name, key_group(raw, self.key_groups), raw, value)
        self._dirty.clear()
        yield from self.lineage_changes()

    def assign(self, table: pa.Table, ts: np.ndarray) -> tuple[pa.Table, np.ndarray]:
        """Rows repeated once per window they fall into, with window_start/_end (ms)."""
        size, slide = self.window.size_ms, self.window.slide_ms
        last = ts - np.mod(ts, slide)  # the latest window start at or before ts
        copies = math.ceil(size / slide)
        rows = np.repeat(np.arange(len(ts)), copies)
        starts = np.repeat(last, copies) - np.tile(np.arange(copies) * slide, len(ts))
        keep = starts + size > np.repeat(ts, copies)
        rows, starts = rows[keep], starts[keep]
        out = ops.take(table, rows)
        out = out.append_column("window_start", pa.array(starts, pa.int64()))
        out = out.append_column("window_end", pa.array(starts + size, pa.int64()))
        return out, rows

    def process(self, table: pa.Table, watermark: int, proc_ms: int
                ) -> tuple[list[pa.Table], pa.Table | None]:  # fmt: skip
        if table.num_rows == 0:
            return [], None
        on = self.window.on
        if on is None:
            ts = np.full(table.num_rows, proc_ms, dtype=np.int64)
        else:
            ts = event_time_ms(table, on, self.name)
        assigned, rows = self.assign(table, ts)
        ends = np.asarray(assigned.column("window_end").to_numpy(), dtype=np.int64)
        live = ends + self.window.lateness_ms > watermark
        late_rows = np.setdiff1d(np.arange(table.num_rows), rows[live])
        late = ops.take(table, late_rows) if len(late_rows) else None
        if not live.all():
            assigned = ops.filter_table(assigned, live)
        if assigned.num_rows == 0:
            return [], late
        part = self.partial.apply(assigned)
        self.schema = part.schema
        touched = self._merge(part, len(self.keys))
        self.trace(touched)
        if self.window.emit == "update":
            return [self._out(touched)], late
        # Late firings within the lateness: a window that fired already fires again, updated;
        # and a window the watermark has passed but that never fired (its first record is this
        # late one, e.g. a key new to it) fires now — advance() only closes windows when the
        # watermark moves, which may never happen again.
        again = [k for k in touched if k in self.fired or k[1] <= watermark]
        self.fired.update(again)
        return ([self._out(again)] if again else []), late

    def advance(self, watermark: int) -> list[pa.Table]:
        closing = [k for k in self.state if k[1] <= watermark and k not in self.fired]
        out = []
        if closing and self.window.emit == "close":
            out.append(self._out(sorted(closing, key=lambda k: (k[1], k[0]))))
        for k in closing:
            self.fired.add(k)
            self._dirty.add(k)
        for k in [k for k in self.state if k[1] + self.window.lateness_ms <= watermark]:
            del self.state[k]
            self.fired.discard(k)
            self._dirty.add(k)
            if self.lineage is not None and self.lineage.pop(k, None) is not None:
                self._lineage_dirty.add(k)
        return out

    def _out(self, keys: list[tuple[Any, ...]]) -> pa.Table:
        if self.lineage is not None:
            self._emitted += [(k[2:], k[0], k[1], [list(r) for r in self.lineage.get(k, ())])
                              for k in keys]  # fmt: skip
        t = self._finish(keys)
        starts = pc.cast(t.column("window_start"), _TS)
        ends = pc.cast(t.column("window_end"), _TS)
        nk = len(self.user_keys)
        names = [*self.user_keys, "window_start", "window_end", *t.column_names[2 + nk :]]
        cols = [*t.columns[2 : 2 + nk], starts, ends, *t.columns[2 + nk :]]
        return pa.Table.from_arrays(cols, names=names)


class SessionAgg(RunningAgg):
    """Session windows: per key, records closer than the gap form one session; sessions merge
    when a record bridges them. State per key: ``[[start, last, partials, fired], …]``."""

    def __init__(self, name: str, key_groups: int, keys: tuple[str, ...],
                 aggs: tuple[AggSpec, ...], window: Window) -> None:  # fmt: skip
        super().__init__(name, key_groups, (*keys, "__row"), aggs)
        self.user_keys, self.window = keys, window
        self.gap = window.size_ms
        self.out_final = ops.FinalAggOp(name, ("window_start", "window_end", *keys), aggs)
        self.out_schema: pa.Schema | None = None

    def process(self, table: pa.Table, watermark: int, proc_ms: int
                ) -> tuple[list[pa.Table], pa.Table | None]:  # fmt: skip
        if table.num_rows == 0:
            return [], None
        on = self.window.on
        ts = (np.full(table.num_rows, proc_ms, dtype=np.int64) if on is None
              else event_time_ms(table, on, self.name))  # fmt: skip
        t = table.append_column("__row", pa.array(np.arange(table.num_rows), pa.int64()))
        part = self.partial.apply(t)  # one partial state per row (grouped by keys + row)
        self.schema = part.schema
        nk = len(self.user_keys)
        cols = [part.column(i).to_pylist() for i in range(part.num_columns)]
        kinds = [s for _, s in self.states]
        order = sorted(range(part.num_rows), key=lambda r: ts[cols[nk][r]])
        touched: list[tuple[tuple[Any, ...], list[Any]]] = []  # (key, session) changed here
        late_rows = []
        for r in order:
            key = tuple(cols[c][r] for c in range(nk))
            at = int(ts[cols[nk][r]])
            partials = [cols[nk + 1 + j][r] for j in range(len(kinds))]
            sessions = self.state.setdefault(key, [])
            near = [s for s in sessions if s[0] - self.gap <= at <= s[1] + self.gap]
            if not near and at + self.gap + self.window.lateness_ms <= watermark:
                late_rows.append(cols[nk][r])
                if not sessions:
                    del self.state[key]
                continue
            merged = [min([at, *(s[0] for s in near)]), max([at, *(s[1] for s in near)]),
                      partials, any(s[3] for s in near)]  # fmt: skip
            if self.lineage is not None:  # the epochs of the merged sessions, and this one
                merged.append(merge_ranges([[self.epoch, self.epoch]],
                                           *(_epochs(s) for s in near)))  # fmt: skip
            for s in near:
                merged[2] = [
                    _combine(k, a, b) for k, a, b in zip(kinds, s[2], merged[2], strict=True)
                ]
                sessions.remove(s)
            sessions.append(merged)
            sessions.sort(key=lambda s: s[0])
            self._dirty.add(key)
            touched.append((key, merged))
        late = ops.take(table, np.array(sorted(late_rows), dtype=np.int64)) if late_rows else None
        # Emit the sessions this batch changed — not every session of a touched key, which
        # re-emitted unchanged, already fired sessions — each once: a session merged into a later
        # one in this batch is gone from the state.
        rows: list[tuple[tuple[Any, ...], list[Any]]] = []
        for key, s in touched:
            if any(s is x for x in self.state.get(key, [])) and not any(s is r for _, r in rows):
                rows.append((key, s))
        if self.window.emit == "close":
            # As in WindowedAgg.process: a session the watermark already closed fires now (if it
            # had fired before, again, updated); the others wait for advance().
            rows = [(k, s) for k, s in rows if s[3] or s[1] + self.gap <= watermark]
            for _, s in rows:
                s[3] = True
        return ([self._sessions_out(rows)] if rows else []), late

    def advance(self, watermark: int) -> list[pa.Table]:
        closing: list[tuple[tuple[Any, ...], list[Any]]] = []
        for key, sessions in list(self.state.items()):
            for s in sessions:
                if s[1] + self.gap <= watermark and not s[3]:
                    s[3] = True
                    closing.append((key, s))
                    self._dirty.add(key)
            kept = [s for s in sessions if s[1] + self.gap + self.window.lateness_ms > watermark]
            if len(kept) != len(sessions):
                self._dirty.add(key)
                if kept:
                    self.state[key] = kept
                else:
                    del self.state[key]
        if closing and self.window.emit == "close":
            return [self._sessions_out(closing)]
        return []

    def changes(self) -> Iterator[Change]:
        yield from self._schema_changes()
        yield from super().changes()

    def _sessions_out(self, rows: list[tuple[tuple[Any, ...], list[Any]]]) -> pa.Table:
        assert self.schema is not None
        if self.lineage is not None:
            self._emitted += [(k, s[0], s[1] + self.gap, _epochs(s)) for k, s in rows]
        nk = len(self.user_keys)
        key_fields = [self.schema.field(i) for i in range(nk)]
        state_fields = [self.schema.field(nk + 1 + j) for j in range(len(self.states))]
        arrays = [pa.array([s[0] for _, s in rows], pa.int64()),
                  pa.array([s[1] + self.gap for _, s in rows], pa.int64())]  # fmt: skip
        arrays += [pa.array([k[i] for k, _ in rows], f.type) for i, f in enumerate(key_fields)]
        arrays += [pa.array([s[2][j] for _, s in rows], f.type) for j, f in enumerate(state_fields)]
        names = ["window_start", "window_end", *self.user_keys, *(f.name for f in state_fields)]
        t = self.out_final.apply(pa.Table.from_arrays(arrays, names=names))
        cols = [*t.columns[2 : 2 + nk], pc.cast(t.column(0), _TS), pc.cast(t.column(1), _TS),
                *t.columns[2 + nk :]]  # fmt: skip
        return pa.Table.from_arrays(
            cols, names=[*self.user_keys, "window_start", "window_end", *t.column_names[2 + nk :]]
        )


def _epochs(session: list[Any]) -> list[list[int]]:
    """The epoch ranges noted in a session (lineage on; one from before it was on has none)."""
    return [list(r) for r in session[4]] if len(session) > 4 else []


def merge_ranges(*lists: list[list[int]]) -> list[list[int]]:
    """Ranges ``[first, last]`` of epochs, merged where they overlap or touch."""
    out: list[list[int]] = []
    for first, last in sorted(r for ranges in lists for r in ranges):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return out
