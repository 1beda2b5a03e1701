"""Windowed joins of two streams.

Each row is assigned to its windows (tumbling or sliding) by its side's event time — the column
of that side's watermark, or ``window.on`` on both — or by processing time when neither side has
a watermark. State per ``(window, key)``: the rows of each side seen so far. A row arriving on one
side is joined at once with the other side's rows of the same window and key, so a pair is
emitted as soon as both rows exist (no waiting for the window to close); a ``left`` join emits,
when the watermark passes the window's end, the left rows that met no right row, with nulls.
A window's rows are dropped when the watermark passes ``end + allowed lateness``; rows for a
dropped window are late (counted, sent to the late output).

Output: the left columns, the right columns (the right keys dropped — they equal the left ones;
clashing names get the suffix), then ``window_start`` and ``window_end``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from riera.plan.stream import WindowJoin
from riera.stream.operators import event_time_ms
from riera.stream.state import Change, decode_key, encode_key, key_group

_TS = pa.timestamp("ms", tz="UTC")


def assign(ts: np.ndarray, size: int, slide: int) -> tuple[np.ndarray, np.ndarray]:
    """(row, window start) pairs: each time falls into ``ceil(size/slide)`` windows."""
    last = ts - np.mod(ts, slide)
    copies = math.ceil(size / slide)
    rows = np.repeat(np.arange(len(ts)), copies)
    starts = np.repeat(last, copies) - np.tile(np.arange(copies) * slide, len(ts))
    keep = starts + size > np.repeat(ts, copies)
    return rows[keep], starts[keep]


class WindowJoinOp:
    """The stateful operator of :class:`~riera.plan.stream.WindowJoin` (engine contract of
    :class:`riera.stream.operators.StatefulOp`, with ``process_input``)."""

    def __init__(self, node: WindowJoin, key_groups: int, times: tuple[str | None, str | None],
                 schemas: tuple[pa.Schema | None, pa.Schema | None]) -> None:  # fmt: skip
        self.name, self.node, self.key_groups = node.name, node, key_groups
        self.times = times  # event-time column per side (None: processing time)
        self.schemas = list(schemas)
        # (window start, *key) -> [left rows, right rows, left matched flags]
        self.state: dict[tuple[Any, ...], list[Any]] = {}
        self._dirty: set[tuple[Any, ...]] = set()
        self.window = node.window

    # -- the engine's contract -------------------------------------------------------------------
    def restore(self, pairs: Iterable[tuple[bytes, Any]]) -> None:
        self.state = {}
        for raw, value in pairs:
            if raw == b"__schemas__":
                self.schemas = list(value)
            else:
                self.state[decode_key(raw)] = value
        self._dirty.clear()

    def changes(self) -> Iterator[Change]:
        if self._dirty:
            yield (self.name, 0, b"__schemas__", self.schemas)
        for key in self._dirty:
            raw = encode_key(key)
            yield (self.name, key_group(raw, self.key_groups), raw, self.state.get(key))
        self._dirty.clear()

    def size(self) -> int:
        return len(self.state)

    def process(self, table: pa.Table, watermark: int, proc_ms: int
                ) -> tuple[list[pa.Table], pa.Table | None]:  # fmt: skip
        return self.process_input(0, table, watermark, proc_ms)

    def process_input(self, side: int, table: pa.Table, watermark: int, proc_ms: int
                      ) -> tuple[list[pa.Table], pa.Table | None]:  # fmt: skip
        if table.num_rows == 0:
            return [], None
        if self.schemas[side] is None:
            self.schemas[side] = table.schema
        column = self.times[side]
        ts = (np.full(table.num_rows, proc_ms, np.int64) if column is None
              else event_time_ms(table, column, self.name))  # fmt: skip
        size, slide = self.window.size_ms, self.window.slide_ms
        rows, starts = assign(ts, size, slide)
        live = starts + size + self.window.lateness_ms > watermark
        late_rows = np.setdiff1d(np.arange(table.num_rows), rows[live])
        late = table.take(pa.array(late_rows)) if len(late_rows) else None
        keys = self.node.on if side == 0 else self.node.right_on
        records = table.to_pylist()
        out: list[dict[str, Any]] = []
        for r, start in zip(rows[live].tolist(), starts[live].tolist(), strict=True):
            row = records[r]
            kv = tuple(row[k] for k in keys)
            if any(v is None for v in kv):  # SQL: null keys never match
                if side == 0 and self.node.how == "left":
                    entry = self.state.setdefault((start, *kv), [[], [], []])
                    entry[0].append(row)
                    entry[2].append(False)
                    self._dirty.add((start, *kv))
                continue
            key = (start, *kv)
            entry = self.state.setdefault(key, [[], [], []])
            if side == 0:
                for other in entry[1]:
                    out.append(self._pair(row, other, start))
                entry[0].append(row)
                entry[2].append(bool(entry[1]))
            else:
                for i, other in enumerate(entry[0]):
                    out.append(self._pair(other, row, start))
                    entry[2][i] = True
                entry[1].append(row)
            self._dirty.add(key)
        return ([self._table(out)] if out else []), late

    def advance(self, watermark: int) -> list[pa.Table]:
        size, lateness = self.window.size_ms, self.window.lateness_ms
        out: list[dict[str, Any]] = []
        for key in [k for k in self.state if k[0] + size <= watermark]:
            entry = self.state[key]
            if self.node.how == "left" and len(entry) == 3:
                for row, matched in zip(entry[0], entry[2], strict=True):
                    if not matched:
                        out.append(self._pair(row, None, key[0]))
                entry.append("closed")  # emitted once
                self._dirty.add(key)
            if key[0] + size + lateness <= watermark:
                del self.state[key]
                self._dirty.add(key)
        return [self._table(out)] if out else []

    # -- rows ----------------------------------------------------------------------------------
    def _right_names(self) -> list[tuple[str, str]]:
        """(right column, output name) for the right columns kept."""
        left = self.schemas[0].names if self.schemas[0] is not None else []
        right = self.schemas[1].names if self.schemas[1] is not None else []
        drop = set(self.node.right_on)
        return [(c, c + self.node.suffix if c in left else c) for c in right if c not in drop]

    def _pair(
        self, left: dict[str, Any], right: dict[str, Any] | None, start: int
    ) -> dict[str, Any]:
        row = dict(left)
        for c, name in self._right_names():
            row[name] = None if right is None else right.get(c)
        row["window_start"] = start
        row["window_end"] = start + self.window.size_ms
        return row

    def _table(self, rows: list[dict[str, Any]]) -> pa.Table:
        fields: list[pa.Field] = []
        if self.schemas[0] is not None:
            fields += list(self.schemas[0])
        if self.schemas[1] is not None:
            by_name = {f.name: f for f in self.schemas[1]}
            fields += [pa.field(name, by_name[c].type) for c, name in self._right_names()]
        fields += [pa.field("window_start", pa.int64()), pa.field("window_end", pa.int64())]
        table = pa.Table.from_pylist(rows, schema=pa.schema(fields))
        starts = table.column("window_start").cast(_TS)
        ends = table.column("window_end").cast(_TS)
        table = table.set_column(
            table.schema.get_field_index("window_start"), "window_start", starts
        )
        return table.set_column(table.schema.get_field_index("window_end"), "window_end", ends)
