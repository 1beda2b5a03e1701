"""The source side of a query: reading, decoding, narrow operators and partial aggregation —
in the driver, or in worker processes that share the source's partitions.

A :class:`SourceWorker` owns some partitions of the source. Each poll reads what arrived in them,
decodes it, runs the plan's narrow operators, and, for a running aggregate, the batch engine's
map-side partial aggregation; it returns a :class:`Piece`: the partial states (or the rows, for a
plan without aggregate or with windows), the producer timestamps, dead letters, the event-time
maximum per partition (for the watermark) and the positions reached. The driver keeps the keyed
state, merges the pieces, and alone commits to the sinks, so the epoch protocol of
:mod:`riera.stream.engine` is the same with one process or several.

:class:`LocalSide` runs one worker in the driver. :class:`ProcessSide` starts ``W`` long-lived
worker processes, partition ``p`` pinned to worker ``p % W``, each always with one poll in flight,
so reading and decoding — what costs most per record — run on every core. Rescaling is a restart
with another ``W``: positions are logged per partition and the state lives with the driver, so
2 → 4 → 1 workers keep exact counts. A worker that dies is detected at once
(:class:`WorkerLost`); the engine then recovers from the last commit without restarting.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

import numpy as np
import pyarrow as pa

from riera.errors import StreamError
from riera.plan import nodes as n
from riera.stream import small
from riera.stream.compile import StreamPlan, decode
from riera.stream.connectors import base
from riera.stream.operators import event_time_ms


class WorkerLost(StreamError):
    """A worker process of a streaming query died (killed, out of memory)."""


@dataclass
class Piece:
    """What one poll of one worker gives the driver."""

    kind: str  # "partial" (partial aggregate states) | "rows"
    table: pa.Table
    parts: np.ndarray  # partition per row ("rows" only)
    ts: np.ndarray  # producer times of the records read (ms, NaN: unknown)
    count: int  # records read
    positions: dict[int, Any]  # of the worker's partitions, after this piece
    maxima: dict[int, int] = field(default_factory=dict)  # event time per partition
    dead: list[dict[str, Any]] = field(default_factory=list)
    input: int = 0  # which input stream (a join of two streams has two)


class SourceWorker:
    """Reads some partitions and runs the plan's source side over them (see the module doc)."""

    def __init__(self, plan: StreamPlan, start: dict[int, Any], max_batch: int) -> None:
        self.plan = plan
        self.max_batch = max_batch
        self.source = base.open_source(plan.source.url)
        self.reader = self.source.reader(start)
        self.partial = isinstance(plan.stateful, n.GroupByAgg)
        self._agg: Any = None
        self._small: bool | None = None  # small batches aggregate in Python (small.py)
        self._partial_schema: pa.Schema | None = None
        if self.partial:
            from riera.physical import ops

            node = plan.stateful
            assert isinstance(node, n.GroupByAgg)
            self._agg = ops.PartialAggOp(f"{node.name} (partial)", node.keys, node.aggs)

    def poll(self, timeout: float, upto: dict[int, Any] | None, max_records: int | None = None,
             raw_only: bool = False) -> Piece | None:  # fmt: skip
        """``raw_only``: decode, run nothing (a record being quarantined)."""
        raw, table = self._read(timeout, upto, max_records or self.max_batch)
        if raw is None:
            return None
        table_in, parts, ts, count, dead = raw
        if raw_only:
            return Piece("rows", table_in, parts, ts, count, self.reader.positions(), {}, dead)
        table = self._apply(self.plan.pre, table_in, dead)
        maxima: dict[int, int] = {}
        wm = self.plan.watermark
        if wm is not None and table.num_rows:
            times = event_time_ms(table, wm.column, "with_watermark")
            if table.num_rows != len(parts):  # pre operators changed the rows: one partition
                parts = np.zeros(table.num_rows, np.int64)
            for p in np.unique(parts):
                maxima[int(p)] = int(times[parts == p].max())
        table = self._apply(self.plan.post, table, dead)
        kind = "rows"
        if self.partial and table.num_rows:
            table = self._map_side(table)
            kind = "partial"
        elif self.plan.stateful is None:
            table = self._apply(self.plan.after, table, dead)
        return Piece(kind, table, parts if kind == "rows" else np.zeros(0, np.int64), ts, count,
                     self.reader.positions(), maxima, dead)  # fmt: skip

    def _map_side(self, table: pa.Table) -> pa.Table:
        node = self.plan.stateful
        assert isinstance(node, n.GroupByAgg)
        if self._small is None:
            self._small = small.simple(table.schema, node.keys, node.aggs)
        if self._small and self._partial_schema is not None and table.num_rows <= small.SMALL:
            return small.partial(table, node.keys, node.aggs, self._partial_schema)
        out: pa.Table = self._agg.apply(table)
        self._partial_schema = out.schema
        return out

    def _read(self, timeout: float, upto: dict[int, Any] | None, limit: int) -> tuple[Any, Any]:
        fast = getattr(self.reader, "poll_table", None)
        if fast is not None:  # in-process sources hand over rows, not bytes
            got = fast(limit, timeout, upto)
            if got is None:
                return None, None
            table, parts, ts = got
            if self.plan.source.schema is not None:
                table = conform(table, self.plan.source.schema, self.plan.source.url)
            return (table, parts, ts, table.num_rows, []), None
        raw_poll = getattr(self.reader, "poll_raw", None)
        if raw_poll is not None:
            raw = raw_poll(limit, timeout, upto)
        else:
            messages = self.reader.poll(limit, timeout, upto)
            raw = base.RawBatch.of(messages) if messages else None
        if raw is None or not raw.values:
            return None, None
        table, bad = decode(self.plan.source, raw)
        parts = raw.parts
        dead = []
        if bad:
            dropped = np.zeros(len(raw.values), bool)
            for i, why in bad:
                dropped[i] = True
                dead.append({"value": raw.values[i].decode(errors="replace"), "reason": why,
                             "partition": int(raw.parts[i]), "position": None})  # fmt: skip
            parts = parts[~dropped]
        return (table, parts, raw.ts, len(raw.values), dead), None

    @staticmethod
    def _apply(chain: list[Any], table: pa.Table, dead: list[dict[str, Any]]) -> pa.Table:
        """Run narrow operators; rows on which one raises go to the dead letters, one by one."""
        if not chain or table.num_rows == 0:
            return table
        original = table  # the row-by-row retry starts again from the input, not half-way
        try:
            for op in chain:
                table = op.apply(table)
            return table
        except Exception:  # a user function failed on some row: find which, keep the rest
            table = original
        from riera.physical import ops
        from riera.stream.connectors.rows import dumps

        good = []
        for i in range(table.num_rows):
            row = table.slice(i, 1)
            try:
                for op in chain:
                    row = op.apply(row)
                good.append(row)
            except Exception as err:
                rows = table.slice(i, 1).to_pylist()
                dead.append({"value": dumps(rows[0] if rows else {}), "partition": None,
                             "position": None,
                             "reason": f"{getattr(op, 'name', '?')}: {type(err).__name__}: {err}"})  # fmt: skip
        good = [g for g in good if g.num_columns]
        return ops.concat(good) if good else table.slice(0, 0)

    def positions(self) -> dict[int, Any]:
        return dict(self.reader.positions())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.reader.close()
        with contextlib.suppress(Exception):
            self.source.close()


def conform(table: pa.Table, schema: pa.Schema, url: str) -> pa.Table:
    """Rows of an in-process source in the declared schema (missing columns null)."""
    cols = []
    for f in schema:
        if f.name in table.column_names:
            try:
                cols.append(table.column(f.name).cast(f.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as err:
                raise StreamError(f"{url}: column {f.name!r}: {err}") from err
        else:
            cols.append(pa.nulls(table.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


# -- the driver's view ------------------------------------------------------------------------------


class LocalSide:
    """One :class:`SourceWorker` in the driver's own thread."""

    workers = 1

    def __init__(self, plan: StreamPlan, start: dict[int, Any], max_batch: int) -> None:
        self.worker = SourceWorker(plan, start, max_batch)
        self._pos = self.worker.positions()
        self.quiet = False  # the last poll found nothing
        self.asked_at = 0.0  # when that poll was asked (monotonic)

    def poll(self, timeout: float, upto: dict[int, Any] | None = None,
             max_records: int | None = None, raw_only: bool = False) -> list[Piece]:  # fmt: skip
        asked = time.monotonic()
        piece = self.worker.poll(timeout, upto, max_records, raw_only)
        self.quiet = piece is None
        self.asked_at = asked  # the answer just given was asked for now
        if piece is None:
            return []
        self._pos.update(piece.positions)
        return [piece]

    def positions(self) -> dict[int, Any]:
        return dict(self._pos)

    def lag(self) -> dict[int, int | None]:
        return self.worker.source.lag(self.positions())

    def release(self, upto: dict[int, Any]) -> None:
        self.worker.source.release(upto)

    def close(self) -> None:
        self.worker.close()


def _worker_main(conn: Connection) -> None:
    """A worker process: set up from the driver's first message, then answer polls."""
    try:
        import cloudpickle

        payload = cloudpickle.loads(conn.recv_bytes())
        for url, obj in payload["objects"].items():
            base.register_object(url, obj)
        worker = SourceWorker(payload["plan"], payload["start"], payload["max_batch"])
        conn.send(("ready", None))
        while True:
            msg = conn.recv()
            if msg[0] == "stop":
                break
            _, timeout, upto = msg
            conn.send(("piece", worker.poll(timeout, upto)))
        worker.close()
    except (EOFError, KeyboardInterrupt):
        return
    except BaseException as err:  # report it to the driver, which fails the query with it
        with contextlib.suppress(Exception):
            conn.send(("error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"))


class ProcessSide:
    """``W`` worker processes, each pinned to the partitions ``p`` with ``p % W == w``, each
    with one poll in flight while the driver works on what the others sent."""

    def __init__(self, plan: StreamPlan, start: dict[int, Any], max_batch: int, workers: int
                 ) -> None:  # fmt: skip
        ctx = multiprocessing.get_context("spawn")
        self.workers = workers
        self._pos = dict(start)
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._busy: dict[int, bool] = {}
        self._empty: dict[int, bool] = {}  # each worker's last answer was empty
        self._sent_at: dict[int, float] = {}  # when each worker's latest request was sent
        self._answered_for: dict[int, float] = {}  # when the request of its last answer was
        self._source = base.open_source(plan.source.url)  # for lag and release, in the driver
        objects = (
            {plan.source.url: base._OBJECTS[plan.source.url]}
            if plan.source.url in base._OBJECTS
            else {}
        )
        try:
            self._start_workers(ctx, plan, start, max_batch, workers, objects)
        except BaseException:  # a worker died while starting: none is left behind
            self.close()
            raise

    def _start_workers(self, ctx: Any, plan: StreamPlan, start: dict[int, Any], max_batch: int,
                       workers: int, objects: dict[str, Any]) -> None:  # fmt: skip
        import cloudpickle

        for w in range(workers):
            mine = {p: pos for p, pos in start.items() if p % workers == w}
            if not mine:
                continue
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, args=(child,), name=f"riera-stream-worker-{w}",
                               daemon=True)  # fmt: skip
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)  # reaped by close() even if it dies before the next line
            parent.send_bytes(cloudpickle.dumps({"plan": plan, "start": mine,
                                                 "max_batch": max_batch, "objects": objects}))  # fmt: skip
        for i in range(len(self._conns)):
            self._recv(i)  # "ready"
            self._busy[i] = False

    @property
    def quiet(self) -> bool:
        """Every worker's last answer was empty (none is still busy with a batch)."""
        return len(self._empty) == len(self._conns) and all(self._empty.values())

    @property
    def asked_at(self) -> float:
        """When the oldest of the workers' last answers was asked for (monotonic): an empty
        answer says nothing about what arrived after its request was sent."""
        if len(self._answered_for) < len(self._conns):
            return 0.0
        return min(self._answered_for.values())

    def _recv(self, i: int) -> Any:
        try:
            kind, value = self._conns[i].recv()
        except (EOFError, OSError) as err:
            code = self._procs[i].exitcode
            raise WorkerLost(f"stream worker {i} (pid {self._procs[i].pid}) died "
                             f"(exit code {code})") from err  # fmt: skip
        if kind == "error":
            raise StreamError(f"stream worker {i} failed: {value}")
        if kind == "piece":
            self._empty[i] = value is None
            self._answered_for[i] = self._sent_at.get(i, 0.0)
        return value

    def poll(self, timeout: float, upto: dict[int, Any] | None = None,
             max_records: int | None = None) -> list[Piece]:  # fmt: skip
        """Pieces from the workers that answered within ``timeout``; with ``upto`` (replay and
        micro-batch drains), one answer from every worker."""
        if upto is not None or timeout == 0:
            return self._round(timeout, upto)
        for i in range(len(self._conns)):
            if not self._busy[i]:
                self._send(i, ("poll", 0.05, None))
        ready = wait([c for i, c in enumerate(self._conns) if self._busy[i]], timeout)
        pieces = []
        for ready_one in ready:
            i = next(j for j, c in enumerate(self._conns) if c is ready_one)
            self._busy[i] = False
            piece = self._recv(i)
            if piece is not None:
                self._pos.update(piece.positions)
                pieces.append(piece)
        return pieces

    def _send(self, i: int, msg: tuple[Any, ...]) -> None:
        self._sent_at[i] = time.monotonic()
        try:
            self._conns[i].send(msg)
        except (BrokenPipeError, OSError) as err:
            raise WorkerLost(f"stream worker {i} (pid {self._procs[i].pid}) is gone") from err
        self._busy[i] = True

    def _round(self, timeout: float, upto: dict[int, Any] | None) -> list[Piece]:
        """Let in-flight polls land (their data comes first), then one poll per worker."""
        pieces = self._settle()
        for i in range(len(self._conns)):
            self._send(i, ("poll", timeout, upto))
        for i in range(len(self._conns)):
            self._busy[i] = False
            piece = self._recv(i)
            if piece is not None:
                pieces.append(piece)
        for p in pieces:
            self._pos.update(p.positions)
        return pieces

    def _settle(self) -> list[Piece]:
        out = []
        for i in range(len(self._conns)):
            if self._busy[i]:
                self._busy[i] = False
                piece = self._recv(i)
                if piece is not None:
                    out.append(piece)
        return out

    def settle(self) -> list[Piece]:
        """The answers of polls still in flight (before a checkpoint logs the positions)."""
        pieces = self._settle()
        for p in pieces:
            self._pos.update(p.positions)
        return pieces

    def positions(self) -> dict[int, Any]:
        return dict(self._pos)

    def lag(self) -> dict[int, int | None]:
        return self._source.lag(self.positions())

    def release(self, upto: dict[int, Any]) -> None:
        self._source.release(upto)

    def close(self) -> None:
        for i, conn in enumerate(self._conns):
            with contextlib.suppress(Exception):
                if self._busy.get(i):
                    conn.recv()
                conn.send(("stop",))
        for proc in self._procs:
            proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self._conns:
            with contextlib.suppress(Exception):
                conn.close()
        with contextlib.suppress(Exception):
            self._source.close()

    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]


def make_side(plan: StreamPlan, start: dict[int, Any], max_batch: int, workers: int) -> Any:
    """The driver alone for one worker or one partition, else worker processes."""
    if workers <= 1 or len(start) <= 1:
        return LocalSide(plan, start, max_batch)
    return ProcessSide(plan, start, max_batch, min(workers, len(start)))


class Sides:
    """The source sides of all of a query's inputs (one, or two for a join of streams), seen
    as one: positions and ``upto`` are keyed by input index, then by partition — the layout of
    the checkpoint log."""

    def __init__(self, sides: list[Any]) -> None:
        self.sides = sides

    @property
    def workers(self) -> int:
        return sum(s.workers for s in self.sides)

    @property
    def quiet(self) -> bool:
        return all(s.quiet for s in self.sides)

    @property
    def asked_at(self) -> float:
        return min(s.asked_at for s in self.sides)

    @property
    def local(self) -> bool:
        return all(isinstance(s, LocalSide) for s in self.sides)

    def poll(self, timeout: float, upto: dict[int, dict[int, Any]] | None = None,
             max_records: int | None = None, raw_only: bool = False) -> list[Piece]:  # fmt: skip
        out: list[Piece] = []
        share = timeout / len(self.sides)
        for i, side in enumerate(self.sides):
            bound = None if upto is None else upto.get(i, {})
            if bound == {} and upto is not None:
                continue
            if max_records is not None or raw_only:
                got = side.poll(share, bound, max_records=max_records, raw_only=raw_only)
            else:
                got = side.poll(share, bound)
            for piece in got:
                piece.input = i
            out += got
            if out and (max_records is not None or raw_only):
                break  # one record at a time: the first side that had one
        return out

    def positions(self) -> dict[int, dict[int, Any]]:
        return {i: s.positions() for i, s in enumerate(self.sides)}

    def release(self, positions: dict[int, dict[int, Any]]) -> None:
        for i, side in enumerate(self.sides):
            side.release(positions.get(i, {}))

    def lag(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        for i, side in enumerate(self.sides):
            for p, v in side.lag().items():
                out[f"{i}:{p}" if len(self.sides) > 1 else str(p)] = v
        return out

    def rename_group(self, suffix: str) -> None:
        """Give the sources' consumer groups (where they have one) a suffix: one group each."""
        for side in self.sides:
            src = side.worker.source if isinstance(side, LocalSide) else side._source
            if hasattr(src, "group"):
                src.group = f"{src.group}-{suffix}"

    def close(self) -> None:
        for side in self.sides:
            with contextlib.suppress(Exception):
                side.close()
