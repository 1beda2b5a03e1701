"""The streaming engine: one loop that reads, processes, checkpoints and commits.

**Epochs.** Time is cut into epochs; epoch = checkpoint id = micro-batch id. Both triggers run the
same protocol and differ only in when records are processed:

- ``continuous``: each poll's records (whatever arrived, a few or thousands) go through the plan at
  once and their outputs leave within ``linger``; with ``at_least_once`` they are written to the
  sinks straight away (upserts whose versions never go backwards), with ``exactly_once`` they are
  held until the epoch commits. An epoch closes every ``checkpoint`` interval;
- ``micro_batch``: at each interval the records that arrived are one epoch, logged first, then
  processed as one batch.

**The checkpoint, step by step** (:meth:`Engine._checkpoint`; each step has a fault point):

1. ``log_positions`` — log the epoch's source positions, watermark and processing time;
2. ``state_durable`` — write the state changes of the epoch, tagged with it, in one transaction;
3. ``sink_commit:<i>`` — one atomic, idempotent, fenced write per sink with the epoch's rows
   (``seq = FINAL``); a sink that already holds the epoch skips it;
4. ``cleanup`` — tell the source what is committed (consumer-group position, trimming), compact
   old state versions, prune the log.

**Recovery** (:meth:`Engine._recover`) restores the state as of the oldest epoch some sink still
lacks, then *replays* each logged epoch after it with the same boundaries (the logged positions,
read with ``upto``), the same watermark and the same processing time, committing to the sinks that
lack it. Epoch numbers after a restart continue above everything any sink has seen, so the new
writes are always newer than a dead driver's. A crash anywhere therefore leaves every sink with
each epoch exactly once (exactly-once), or with upserts that converge (at-least-once).

Bad records do not stop the query: undecodable messages and rows on which a user function raised
go to the dead-letter sink, with the reason, in the same commit as the epoch's output.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from riera.errors import PlanError, StreamError
from riera.physical import ops
from riera.plan import nodes as n
from riera.plan.stream import Continuous, Guarantee, MicroBatch, Trigger, WindowAgg, WindowJoin
from riera.stream import checkpoint as cp
from riera.stream import small
from riera.stream.compile import StreamPlan
from riera.stream.connectors import base
from riera.stream.metrics import QueryMetrics
from riera.stream.operators import NO_TIME, SessionAgg, WindowedAgg
from riera.stream.sourceside import Piece, Sides, SourceWorker, WorkerLost, make_side
from riera.stream.state import (
    Change,
    SqliteStateStore,
    StateStore,
    encode_key,
    key_group,
    open_state_store,
)
from riera.stream.watermark import WatermarkTracker

log = logging.getLogger(__name__)

MAX_BATCH = 20_000


@dataclass
class SinkSlot:
    sink: base.Sink
    role: str  # output | dead_letter | late
    pending: list[pa.Table] = field(default_factory=list)
    seq: int = 0
    rows: int = 0  # rows written in the current epoch

    def add(self, table: pa.Table, key: tuple[str, ...]) -> None:
        """Hold a table for the next write. An upsert sink gets only the last row of each key, so
        held output is folded to that every 32 tables: the commit then has little left to do
        (folding a second of per-record updates at once took ~15 ms of the commit)."""
        self.pending.append(table)
        if len(self.pending) >= 32 and key and self.sink.mode == "upsert" and self.role == "output":
            self.pending = [_last_per_key(ops.concat(self.pending), key)]

    def take(self, key: tuple[str, ...] = ()) -> pa.Table | None:
        """What is pending, as one table; for an upsert sink, the last row of each key only
        (what Spark's update mode sends per micro-batch: one row per changed key)."""
        if not self.pending:
            return None
        out = ops.concat(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        if key and self.sink.mode == "upsert" and self.role == "output" and out.num_rows > 1:
            out = _last_per_key(out, key)
        return out


@dataclass
class Options:
    trigger: Trigger
    guarantee: Guarantee
    checkpoint: Path
    key_groups: int = 128
    state_store: str = "sqlite"
    stop_when_idle_s: float | None = None
    max_batch: int = MAX_BATCH
    late_buffer: int = 10_000
    quarantine_after: int = 3  # restarts without a commit before records go one at a time
    workers: int = 1  # processes reading the source (1: the driver itself)
    # a shard of a job run by several drivers (riera.stream.lease): its index, the job's shard
    # count, its key groups and the fencing token of this driver's lease on it
    shard: int | None = None
    shards: int = 1
    groups: range | None = None
    lease_token: int | None = None
    lineage: bool = False  # per-window lineage into provenance (window operators)


class Engine:
    def __init__(self, plan: StreamPlan, sinks: list[SinkSlot], options: Options,
                 metrics: QueryMetrics, on_epoch: Callable[[dict[str, Any]], None] | None = None
                 ) -> None:  # fmt: skip
        self.plan, self.slots, self.opt, self.metrics = plan, sinks, options, metrics
        self.on_epoch = on_epoch
        self.stop_event = threading.Event()
        self.late: list[dict[str, Any]] = []
        self.late_lock = threading.Lock()
        self.sources: list[base.Source] = []
        self.side: Any = None  # Sides
        self.store: StateStore | None = None
        self.log: cp.CheckpointLog | None = None
        self.stateful: Any = None  # a StatefulOp, or a WindowJoinOp
        self.watermark = NO_TIME
        self._epoch_wm = NO_TIME  # lateness is judged against this (exactly-once: epoch start)
        self.trackers: list[WatermarkTracker | None] = []
        self.epoch = 0
        self._in = 0
        self._out = 0
        self._ts: list[np.ndarray] = []  # producer timestamps of the epoch's records
        self._from: dict[int, Any] = {}
        self._epoch_started = time.time()
        self._late_n = 0
        self._dead_n = 0
        self.finished_idle = False
        self._closed: dict[str, Any] | None = None
        self._isolate = False
        self._restore_mark: str | None = None
        self._k = 0
        self._skip = -1
        self._shard_keys: list[tuple[str, ...]] | None = None
        self._lineage: list[tuple[tuple[Any, ...], int, int, list[list[int]]]] = []

    # -- set-up -----------------------------------------------------------------------------------
    def start(self, job_hint: str) -> None:
        exactly = self.opt.guarantee == "exactly_once"
        self.sources = [base.open_source(p.source.url) for p in self.plan.sources]
        for src in self.sources:
            if exactly and not src.replayable:
                raise PlanError(
                    f"write_stream: {src.url} cannot be read again after a crash, so "
                    f"exactly_once is impossible; use guarantee='at_least_once' or a replayable "
                    f"source (Redis, Kafka, files, memory://)"
                )
        token = self.opt.lease_token
        self.log = cp.CheckpointLog(self.opt.checkpoint, job_hint, self.plan.describe(),
                                    self.opt.key_groups, leased=token is not None)  # fmt: skip
        if token is None:
            self.fence = self.log.acquire_fence()
        else:
            self.log.take_fence(token)
            self.fence = token
        self.store = open_state_store(
            self.opt.state_store, self.opt.checkpoint, self.log.key_groups
        )
        if token is not None:
            if not isinstance(self.store, SqliteStateStore):
                raise PlanError(
                    f"write_stream(coordinator=): state_store={self.opt.state_store!r} cannot be "
                    f"taken over while a paused driver still has it open; use state_store='sqlite'"
                )
            self.store.take_fence(token)
        self.stateful = self.plan.make_stateful(self.log.key_groups)
        if self.opt.lineage:
            if not isinstance(self.stateful, WindowedAgg | SessionAgg):
                raise PlanError(
                    "write_stream(lineage=True): per-window lineage needs a windowed group_by "
                    "(group_by(..., window=tumbling/sliding/session(...))); this query has none"
                )
            self.stateful.lineage = {}
        self.trackers = self._trackers()
        for slot in self.slots:
            key = self.plan.output_key if slot.role == "output" else None
            if key is None and slot.sink.mode == "upsert":
                slot.sink.mode = "append"  # rows without a key: every one is kept
            slot.sink.open(self.log.job, key or ())
            _claim(slot.sink, self.fence)
        if self.opt.shard is not None:
            self._shard_setup()
        self._recover_retrying(first=True)
        self.metrics.sampler.start()

    def _shard_setup(self) -> None:
        """This engine runs one shard of a job: the rows of its key groups, or, for a query
        without keyed state, the source partitions of its index."""
        for src in self.sources:
            if getattr(src, "trim", False):
                raise PlanError(
                    f"{src.url}: trim=1 cannot be used by a job run in shards: every shard reads "
                    f"every partition, and one shard would trim what another has not read yet"
                )
        node = self.plan.stateful
        if node is None:
            self._shard_keys = None
        elif isinstance(node, WindowJoin):
            self._shard_keys = [node.on, node.right_on]
        elif isinstance(node, n.GroupByAgg | WindowAgg):
            if not node.keys:
                raise PlanError(
                    "write_stream(coordinator=): an aggregate without group_by keys has one key "
                    "for the whole stream, so it cannot be cut into shards; run it on one driver"
                )
            self._shard_keys = [node.keys]
        else:
            raise PlanError(f"write_stream: {node.label()} cannot run in shards")

    def _mine(self, index: int, table: pa.Table) -> pa.Table:
        """The rows of ``table`` (of input ``index``) whose key group is this shard's."""
        assert self._shard_keys is not None and self.opt.groups is not None and self.log
        names = self._shard_keys[index]
        if table.num_rows == 0 or not all(c in table.column_names for c in names):
            return table
        columns = [[_routed(v) for v in table.column(c).to_pylist()] for c in names]
        groups, total = self.opt.groups, self.log.key_groups
        keep = [key_group(encode_key(k), total) in groups for k in zip(*columns, strict=True)]
        return table.filter(pa.array(keep, pa.bool_()))

    def _partitions(self, src: base.Source) -> list[int]:
        """The partitions this engine reads: all, unless it is a shard without keyed state."""
        parts = list(range(src.partitions()))
        if self.opt.shard is None or self._shard_keys is not None:
            return parts
        return [p for p in parts if p % self.opt.shards == self.opt.shard]

    def _trackers(self) -> list[WatermarkTracker | None]:
        return [
            WatermarkTracker(p.watermark, src.partitions()) if p.watermark is not None else None
            for p, src in zip(self.plan.sources, self.sources, strict=True)
        ]

    @property
    def job(self) -> str:
        assert self.log is not None
        return self.log.job

    def _recover(self) -> None:
        assert self.log and self.store and self.sources
        self.log.check_fence()  # a driver that lost its shard does not touch it again
        durable = self.store.epoch()
        sink_epochs = [base.committed_epoch(s.sink) for s in self.slots]
        seen = [s.sink.committed()[0] for s in self.slots]
        restore = min([durable, *sink_epochs])
        self.store.rollback(restore)
        if self.stateful is not None:
            self.stateful.restore(self.store.load(self.stateful.name, restore))
            if self.opt.lineage:
                name = f"{self.stateful.name}#lineage"
                self.stateful.restore_lineage(self.store.load(name, restore))
        rec = self.log.get(restore) if restore >= 0 else None
        self._quarantine_check(restore)
        workers = 1 if self._isolate else self.opt.workers
        sides = []
        for i, (plan, src) in enumerate(zip(self.plan.sources, self.sources, strict=True)):
            logged = rec.positions.get(i, {}) if rec else {}
            start = {p: logged.get(p) for p in self._partitions(src)}
            src.reader(start).close()  # fails here, loudly, if the source was trimmed
            try:
                sides.append(make_side(plan, start, self.opt.max_batch, workers))
            except BaseException:
                Sides(sides).close()
                raise
        self.side = Sides(sides)
        if self.opt.shard is not None:  # its own consumer group: lag and release per shard
            self.side.rename_group(f"shard{self.opt.shard}")
        self._from = self.side.positions()
        if rec is not None and rec.watermark is not None:
            self.watermark = self._epoch_wm = int(rec.watermark)
            for tracker in self.trackers:
                if tracker is not None:
                    tracker.floor(self.watermark)
        replays = self.log.epochs_after(restore)
        if replays:
            log.info("stream %s: replaying epochs %s..%s", self.job, replays[0].epoch,
                     replays[-1].epoch)  # fmt: skip
        for r in replays:
            self._replay(r)
        self.epoch = max([self.log.last_epoch(), *seen, restore]) + 1
        self.metrics.committed_epoch = max(restore, replays[-1].epoch if replays else restore)

    def _quarantine_check(self, restore: int) -> None:
        """A record that kills the process (a crash in native code, an ``os._exit`` in a user
        function) would kill it again at every restart. After ``quarantine_after`` restarts
        without a commit, the query takes the records after the restore point one at a time,
        noting each one's number before touching it; the record it was on when it died the next
        time is the poison one: it goes to the dead letters, and the query goes on."""
        assert self.log is not None
        mark = str(restore)
        restarts = (
            int(self.log.meta("restarts") or 0) + 1 if self.log.meta("restart_at") == mark else 1
        )
        self.log.set_meta(restart_at=mark, restarts=str(restarts))
        self._isolate = restarts > self.opt.quarantine_after
        self._restore_mark = mark
        self._k = 0  # decoded records since the restore point
        self._skip = -1
        inflight = self.log.meta("inflight")
        if self._isolate and inflight is not None:
            at, _, k = inflight.partition(":")
            if at == mark:
                self._skip = int(k)
        if self._isolate:
            log.warning("stream %s: %d restarts without a commit; taking records one at a time "
                        "to find the one that kills the process", self.job, restarts - 1)  # fmt: skip

    def _poll_isolated(self, timeout: float, upto: dict[int, Any] | None) -> list[Piece]:
        """One record at a time, its number noted before it is touched (see above)."""
        assert self.log is not None and self.side.local
        self.log.set_meta(inflight=f"{self._restore_mark}:{self._k}")
        poison = self._k == self._skip
        pieces = self.side.poll(timeout, upto, max_records=1, raw_only=poison)
        for piece in pieces:
            self._k += piece.count
            if poison:
                for row in piece.table.to_pylist():
                    self._dead({"value": _json(row), "partition": None, "position": None,
                                "reason": f"quarantined: the process died "
                                f"{self.opt.quarantine_after} times in a row while processing "
                                f"this record"})  # fmt: skip
                piece.table = piece.table.slice(0, 0)
        return pieces

    def _poll(self, timeout: float, upto: dict[int, Any] | None = None) -> list[Piece]:
        """What the source side brought within ``timeout`` (or up to ``upto``)."""
        if self._isolate:
            return self._poll_isolated(timeout, upto)
        pieces: list[Piece] = self.side.poll(timeout, upto)
        return pieces

    def _drain(self, upto: dict[int, Any] | None, limit: int) -> list[Piece]:
        """Everything available now (or up to ``upto``), at most about ``limit`` records."""
        items: list[Piece] = []
        total = 0
        while total < limit:
            got = self._poll(0.0, upto)
            if not got:
                break
            items += got
            total += sum(p.count for p in got)
        return items

    def _replay(self, rec: cp.EpochRecord) -> None:
        pieces = self._drain(rec.positions, 2**62)
        self.epoch = rec.epoch
        self._epoch_wm = self.watermark
        for piece in pieces:
            self._process(piece, rec.proc_ms)
        self._advance(rec.watermark if rec.watermark is not None else self.watermark, rec.proc_ms)
        self._commit(rec.proc_ms, logged=True, status="replayed")

    # -- the loop ---------------------------------------------------------------------------------
    def run(self) -> None:
        while True:
            try:
                if isinstance(self.opt.trigger, MicroBatch):
                    self._run_micro_batch(self.opt.trigger)
                else:
                    self._run_continuous(self.opt.trigger)
                return
            except WorkerLost as err:  # recover from the last commit, without restarting
                log.warning("stream %s: %s; recovering from epoch %s", self.job, err,
                            self.metrics.committed_epoch)  # fmt: skip
                self._recover_retrying(first=False)

    def _recover_retrying(self, *, first: bool, attempts: int = 3) -> None:
        """Recover (at the start) or go back to the last commit (after a lost worker), again
        if a worker dies meanwhile — while its processes start or an epoch is replayed."""
        for attempt in range(attempts):
            try:
                if first and attempt == 0:
                    self._recover()
                else:
                    self._reset()
                return
            except WorkerLost as err:
                if attempt == attempts - 1:
                    raise
                log.warning("stream %s: %s while recovering; recovering again", self.job, err)

    def _reset(self) -> None:
        """Forget everything after the last commit and start the source side again."""
        with contextlib.suppress(Exception):
            self.side.close()
        for slot in self.slots:
            slot.pending, slot.seq, slot.rows = [], 0, 0
        self._ts = []
        self._lineage = []
        self._in = self._out = self._late_n = self._dead_n = 0
        self.watermark = self._epoch_wm = NO_TIME
        self.trackers = self._trackers()
        self._recover()

    def _idle_done(self, last_input: float) -> bool:
        """The source has been idle ``stop_when_idle`` seconds: every poll since came back
        empty (a worker still busy with a batch is not idleness), down to answers asked for
        that long after the last input. Wall time alone is not enough: a checkpoint or a batch
        that stalls the loop past the idle time must not end the query on an answer asked for
        before the stall (records that arrived meanwhile would never be read)."""
        idle = self.opt.stop_when_idle_s
        if idle is None or not self.side.quiet:
            return False
        return bool(self.side.asked_at - last_input >= idle)

    def _run_continuous(self, trig: Continuous) -> None:
        eager = self.opt.guarantee == "at_least_once"
        interval = trig.checkpoint_ms / 1000
        next_cp = time.monotonic() + interval
        last_input = time.monotonic()
        first_pending: float | None = None
        while not self.stop_event.is_set():
            now = time.monotonic()
            wait = next_cp - now
            if first_pending is not None:
                wait = min(wait, first_pending + trig.linger_ms / 1000 - now)
            pieces = self._poll(max(0.0, min(wait, 0.05)))
            proc_ms = int(time.time() * 1000)
            if pieces:
                for piece in pieces:
                    self._process(piece, proc_ms)
                last_input = time.monotonic()  # after the work: a long batch is not idleness
            if eager:
                self._advance(self._current_watermark(proc_ms), proc_ms)
            if eager and any(s.pending for s in self.slots):
                now = time.monotonic()
                first_pending = first_pending or now
                if now - first_pending >= trig.linger_ms / 1000:
                    self._flush()
                    first_pending = None
            if time.monotonic() >= next_cp:
                self._checkpoint(int(time.time() * 1000))
                first_pending = None
                # every interval however long the commit took; late, a whole interval from now
                next_cp += interval
                if next_cp <= time.monotonic():
                    next_cp = time.monotonic() + interval
            if self._idle_done(last_input):
                self._checkpoint(int(time.time() * 1000))
                self.finished_idle = True
                return
        self._checkpoint(int(time.time() * 1000))

    def _run_micro_batch(self, trig: MicroBatch) -> None:
        assert self.log is not None
        interval = trig.interval_ms / 1000
        next_tick = time.monotonic()  # the first epoch at once: a backlog does not wait
        last_input = time.monotonic()
        while not self.stop_event.is_set():
            self.stop_event.wait(max(0.0, next_tick - time.monotonic()))
            next_tick += interval
            if next_tick < time.monotonic():  # a slow batch: do not run several to catch up
                next_tick = time.monotonic() + interval
            pieces = self._drain(None, 50 * self.opt.max_batch)
            proc_ms = int(time.time() * 1000)
            wm = self._current_watermark(proc_ms, pieces)
            if pieces or wm > self.watermark:
                self._log(proc_ms, wm)  # step 1 first: the epoch is this offset range
                self._epoch_wm = self.watermark
                for piece in pieces:
                    self._process(piece, proc_ms)
                self._advance(wm, proc_ms)
                self._commit(proc_ms, logged=True)
            if pieces:
                last_input = time.monotonic()
            if self._idle_done(last_input):
                self.finished_idle = True
                return

    # -- processing -------------------------------------------------------------------------------
    def _current_watermark(self, proc_ms: int, pending: list[Piece] | None = None) -> int:
        window = getattr(self.plan.stateful, "window", None)
        if window is not None and window.on is None and not any(self.trackers):
            return proc_ms  # processing-time windows: the clock is the watermark
        if not any(self.trackers):
            return self.watermark
        for piece in pending or ():  # micro-batch: before the epoch is logged
            self._track(piece)
        now = time.monotonic()
        current = min(t.current(now) for t in self.trackers if t is not None)
        return max(self.watermark, current)

    def _track(self, piece: Piece) -> None:
        tracker = self.trackers[piece.input] if self.trackers else None
        if tracker is not None and piece.maxima:
            parts = np.array(list(piece.maxima), np.int64)
            times = np.array(list(piece.maxima.values()), np.int64)
            tracker.observe(parts, times, time.monotonic())

    def _process(self, piece: Piece, proc_ms: int) -> None:
        cp.fault_point("process", self.epoch)
        self._in += piece.count
        self.metrics.records_in.add(piece.count)
        self._ts.append(piece.ts)
        if self.opt.shard in (None, 0) or self._shard_keys is None:  # every shard reads them
            for row in piece.dead:
                self._dead(row)
        if not self._isolate:
            self._k += piece.count
        self._track(piece)
        if self._shard_keys is not None:
            piece.table = self._mine(piece.input, piece.table)
        if piece.table.num_rows == 0:
            return
        if self.stateful is None:
            self._emit(piece.table)  # the worker ran every operator
            return
        self.stateful.epoch = self.epoch
        if piece.kind == "partial":  # a running aggregate's map side, done by the worker
            outputs, late = self._fold(piece.table), None
        else:
            wm = self._epoch_wm if self._exactly else self.watermark
            if len(self.plan.sources) > 1:  # a join of streams: which side the rows came from
                outputs, late = self.stateful.process_input(piece.input, piece.table, wm, proc_ms)
            else:
                outputs, late = self.stateful.process(piece.table, wm, proc_ms)
        for out in outputs:
            self._emit(self._apply(self.plan.after, out))
        if late is not None and late.num_rows:
            self._late(late)
        if self.opt.lineage:
            self._lineage += self.stateful.take_lineage()

    def _fold(self, partial: pa.Table) -> list[pa.Table]:
        """Merge a worker's partial aggregate into the keyed state; the updated totals."""
        agg: Any = self.stateful
        if agg.schema is None:  # the first batch: may Python finish the small ones? (small.py)
            node = self.plan.stateful
            if isinstance(node, n.GroupByAgg):
                from riera.physical.schema import schema_of

                before = schema_of(node.inputs[0])
                agg._simple = before is not None and small.simple(before, node.keys, node.aggs)
        agg.schema = partial.schema
        touched = agg._merge(partial, len(agg.keys))
        return [agg._finish(touched)]

    @property
    def _exactly(self) -> bool:
        return self.opt.guarantee == "exactly_once"

    def _apply(self, chain: list[ops.Op], table: pa.Table) -> pa.Table:
        """Run the operators after the stateful one, as a worker runs those before it (rows
        on which one raises go to the dead letters)."""
        dead: list[dict[str, Any]] = []
        out = SourceWorker._apply(chain, table, dead)
        for row in dead:
            self._dead(row)
        return out

    def _emit(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._out += table.num_rows
        key = self.plan.output_key or ()
        for slot in self.slots:
            if slot.role == "output":
                slot.add(table, key)

    def _dead(self, row: dict[str, Any]) -> None:
        self._dead_n += 1
        self.metrics.dead_letters += 1
        row = {"epoch": self.epoch, **row, "at_ms": time.time() * 1000}
        for slot in self.slots:
            if slot.role == "dead_letter":
                slot.pending.append(pa.Table.from_pylist([row]))
        log.warning("stream %s: dead letter: %s", self.plan.source.url, row["reason"])

    def _late(self, table: pa.Table) -> None:
        self._late_n += table.num_rows
        self.metrics.late += table.num_rows
        with self.late_lock:
            self.late.extend(table.to_pylist())
            del self.late[: max(0, len(self.late) - self.opt.late_buffer)]
        for slot in self.slots:
            if slot.role == "late":
                slot.pending.append(table)

    def _advance(self, watermark: int, proc_ms: int) -> None:
        if watermark <= self.watermark:
            return
        self.watermark = watermark
        self.metrics.watermark = watermark
        if self.stateful is not None:
            self.stateful.epoch = self.epoch
            for out in self.stateful.advance(watermark):
                self._emit(self._apply(self.plan.after, out))
            if self.opt.lineage:
                self._lineage += self.stateful.take_lineage()

    def _flush(self) -> None:
        """At-least-once: write what is pending now, as write ``(epoch, seq)``."""
        now = time.time() * 1000
        for slot in self.slots:
            table = slot.take(self.plan.output_key or ())
            if table is None:
                continue
            slot.seq += 1
            slot.sink.write(table, self.epoch, slot.seq, self.fence)
            slot.rows += table.num_rows
        if self._ts:
            self.metrics.latency.add(np.concatenate(self._ts), now)
            self._ts = []

    # -- the checkpoint ---------------------------------------------------------------------------
    def _log(self, proc_ms: int, watermark: int | None) -> None:
        assert self.log is not None
        positions = self.side.positions()
        wm = None if watermark is None or watermark == NO_TIME else int(watermark)
        self.log.log_epoch(self.epoch, positions, wm, proc_ms, self._in)  # step 1
        cp.fault_point("log_positions", self.epoch)

    def _checkpoint(self, proc_ms: int) -> None:
        """Close the current epoch (continuous trigger) if anything happened in it."""
        wm = self._current_watermark(proc_ms)
        if not (self._in or wm > self.watermark or any(s.pending for s in self.slots)
                or any(s.seq for s in self.slots)):  # fmt: skip
            return
        self._log(proc_ms, max(wm, self.watermark))
        self._advance(wm, proc_ms)
        self._commit(proc_ms, logged=True)

    def _commit(self, proc_ms: int, *, logged: bool, status: str = "committed") -> None:
        """Steps 2 to 4 for the current epoch (step 1, the log, came first)."""
        assert self.log is not None and self.store is not None
        started = time.perf_counter()
        epoch = self.epoch
        changes: list[Change] = list(self.stateful.changes()) if self.stateful else []
        self.log.check_fence()  # a leased shard taken over: stop before its state
        self.store.put(epoch, changes)  # step 2
        cp.fault_point("state_durable", epoch)
        sinks = []
        now = time.time() * 1000
        for i, slot in enumerate(self.slots):  # step 3
            table = slot.take(self.plan.output_key or ())
            rows = table if table is not None else pa.table({})
            applied = slot.sink.write(rows, epoch, base.FINAL, self.fence)
            sinks.append({"url": slot.sink.url, "role": slot.role, "rows": slot.rows + rows.num_rows,
                          "applied": applied})  # fmt: skip
            slot.seq, slot.rows = 0, 0
            cp.fault_point(f"sink_commit:{i}", epoch)
        if self._ts:
            self.metrics.latency.add(np.concatenate(self._ts), now)
            self._ts = []
        self.log.mark_committed(epoch, self._out)
        if self._isolate or self._restore_mark is not None:  # progress: no poison hunt needed
            self.log.set_meta(inflight=None, restarts=None, restart_at=None)
            self._isolate, self._restore_mark = False, None
        positions = self.side.positions()
        self.side.release(positions)  # step 4
        if epoch % 16 == 0:
            self.store.compact(epoch)
            self.log.prune(epoch - 64)
        cp.fault_point("cleanup", epoch)
        seconds = time.perf_counter() - started
        self.metrics.checkpoint_ms.append(seconds * 1000)
        self.metrics.epoch = epoch
        self.metrics.committed_epoch = epoch
        self.metrics.rows_out.add(self._out)
        info = {
            "epoch": epoch, "status": status, "started": self._epoch_started,
            "committed": time.time(), "positions_from": self._from, "positions_to": positions,
            "watermark": None if self.watermark == NO_TIME else self.watermark,
            "records_in": self._in, "records_out": self._out, "late_records": self._late_n,
            "dead_letters": self._dead_n, "sinks": sinks, "checkpoint_seconds": seconds,
            "state_keys": self.stateful.size() if self.stateful is not None else 0,
            "state_hash": _hash(changes),
        }  # fmt: skip
        if self.opt.lineage:
            info["lineage"] = [
                {"operator": self.stateful.name, "key": list(k), "window_start": int(start),
                 "window_end": int(end), "from_epochs": epochs}
                for k, start, end, epochs in self._lineage
            ]  # fmt: skip
            self._lineage = []
        self._from = dict(positions)
        self._in = self._out = self._late_n = self._dead_n = 0
        self._epoch_started = time.time()
        self._epoch_wm = self.watermark
        self.epoch = epoch + 1
        if self.on_epoch is not None:
            self.on_epoch(info)

    def status(self) -> dict[str, Any]:
        if self._closed is not None:
            return self._closed
        snap = self.metrics.snapshot()
        if self.side is not None:
            try:
                snap["lag"] = self.side.lag()
                snap["workers"] = self.side.workers
            except Exception as err:
                snap["lag"] = {"error": str(err)}
        if self.store is not None:
            snap["state_store"] = {**self.store.stats(), "kind": self.opt.state_store}
        return snap

    def close(self) -> None:
        self._closed = self.status()  # what status() reports from now on
        self.metrics.sampler.stop()
        for closer in [s.sink.close for s in self.slots] + [
            getattr(self.side, "close", None), *(src.close for src in self.sources),
            getattr(self.store, "close", None), getattr(self.log, "close", None),
        ]:  # fmt: skip
            if closer is not None:
                try:
                    closer()
                except Exception as err:
                    log.debug("stream: closing failed: %s", err)


def _routed(value: Any) -> Any:
    """A key value as shards route it: equal keys (1, 1.0 and True are one dict key, as -0.0
    and 0.0 are) go to one shard, whatever their Python type."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _claim(sink: base.Sink, fence: int) -> None:
    """Hand the sink this start's fencing token before anything else: a write of nothing at
    the last identifier it applied, which it skips but whose token it keeps. From here on, a
    driver with an older token (one this start took over from) cannot commit to it."""
    epoch, seq = sink.committed()
    sink.write(pa.table({}), epoch, seq, fence)


def _last_per_key(table: pa.Table, key: tuple[str, ...]) -> pa.Table:
    """The last row of each key, in the order of those last rows."""
    if not all(k in table.column_names for k in key):
        return table
    if table.num_rows <= 256:  # Arrow's hash aggregation costs ~1 ms to set up
        cols = [table.column(k).to_pylist() for k in key]
        last = {tuple(c[i] for c in cols): i for i in range(table.num_rows)}
        if len(last) == table.num_rows:
            return table
        return table.take(pa.array(sorted(last.values()), pa.int64()))
    rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
    probe = pa.table({**{f"k{i}": table.column(k) for i, k in enumerate(key)}, "__row": rows})
    try:
        last = probe.group_by([f"k{i}" for i in range(len(key))], use_threads=False).aggregate(
            [("__row", "max")]
        )
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # a key type Acero cannot hash
        return table
    keep = np.sort(np.asarray(last.column("__row_max")))
    return table.take(pa.array(keep))


def _json(row: dict[str, Any]) -> str:
    from riera.stream.connectors.rows import dumps

    return dumps(row)


def _hash(changes: list[Any]) -> str:
    h = hashlib.sha256()
    for op, kg, key, value in sorted(changes, key=lambda c: (c[0], c[1], c[2])):
        h.update(f"{op}|{kg}|".encode())
        h.update(key)
        h.update(repr(value).encode())
    return h.hexdigest()[:16]


def ensure_checkpoint(path: str | Path | None) -> Path:
    if path is None:
        raise StreamError("internal: the query needs a checkpoint directory")
    return Path(path)
