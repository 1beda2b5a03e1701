"""The worker process: receives stages and tasks over a pipe, runs them, replies with small results.

A stage (reader, fused ops, writer) is sent to a worker once, cloudpickled, and cached by key; each
task then carries only its input (a split, a few refs). The worker ignores SIGINT — the driver owns
cancellation — and exits when the driver's end of the pipe closes, so a dead driver never leaves
workers behind.
"""

from __future__ import annotations

import functools
import os
import pickle
import select
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle
import pyarrow as pa

from riera import taskctx
from riera.config import Settings
from riera.errors import RieraError, Terminated
from riera.exchange.base import Exchange, Ref, SegmentKey
from riera.exchange.policy import Exchanges
from riera.exec.instrument import PLAIN, Instrument
from riera.physical.stage import Stage, WithSides


@dataclass
class TaskResult:
    index: int
    attempt: int
    pid: int
    started: float
    ended: float
    rows_in: int
    rows_out: int
    bytes_in: int
    bytes_out: int
    refs: list[Ref] = field(default_factory=list)
    sample: list[Any] = field(default_factory=list)
    part: dict[str, Any] | None = None
    phases: dict[str, float] = field(default_factory=dict)  # read / ops / write seconds
    hashes: list[str | None] = field(default_factory=list)  # content hash per ref (provenance)
    records: list[Any] = field(default_factory=list)  # operators' provenance records (taskctx)
    spans: list[Any] | None = None  # key span per ref of a sort's map side (WriteResult.spans)


@dataclass
class TaskFailure:
    index: int
    attempt: int
    operator: str
    error_type: str
    message: str
    traceback: str
    exception: bytes | None  # pickled original exception, when picklable
    records: list[Any] = field(default_factory=list)  # provenance records made before the failure
    # The exception itself, traceback included, for an executor in the same process (pdb);
    # a worker process clears it before sending the failure.
    original: BaseException | None = None


def _side_table(refs: tuple[Ref, ...], exchange: Exchange) -> pa.Table:
    tables = [t for t in (exchange.get(r) for r in refs) if t.num_columns]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")


def _concat(outputs: list[pa.Table]) -> pa.Table:
    nonempty = [t for t in outputs if t.num_rows] or outputs[:1]
    if len(nonempty) == 1:
        return nonempty[0]
    try:
        return pa.concat_tables(nonempty)
    except pa.ArrowInvalid:  # batches whose outputs typed a column differently
        return pa.concat_tables(nonempty, promote_options="permissive")


def run_task(
    stage: Stage,
    index: int,
    attempt: int,
    task_input: Any,
    key: SegmentKey,
    exchange: Exchange,
    exchanges: Exchanges | None = None,
) -> TaskResult | TaskFailure:
    """Read, apply the stage's operators, write; a failure is returned, not raised (but Ctrl-C
    and SIGTERM in the driver's own process propagate). The stage's instrument, if any, sees
    each step (:mod:`riera.exec.instrument`)."""
    started = time.time()
    current = stage.nodes[0] if stage.nodes else stage.id
    inst: Instrument = stage.instrument or PLAIN
    ctx = taskctx.begin(stage.id, index, stage.capture, f"{key.run}/{stage.id}")
    if isinstance(task_input, WithSides):
        for sid, refs in task_input.sides:
            ctx.side_loaders[sid] = functools.partial(_side_table, refs, exchange)
        task_input = task_input.input
    observed = inst.observe(exchange)
    try:
        # The leading batchwise operators run a row group at a time; the rest on the whole.
        prefix = 0
        while prefix < len(stage.ops) and stage.ops[prefix].batchwise:
            prefix += 1
        batches = None
        if inst.batchwise and prefix:
            batches = stage.reader.batches(task_input, observed)
        if batches is not None:  # a row group at a time: memory stays small and warm
            outputs, rows_in, bytes_in, reading = [], 0, 0, 0.0
            while True:
                t0 = time.time()
                current = stage.nodes[0] if stage.nodes else stage.id
                batch = next(batches, None)
                reading += time.time() - t0
                if batch is None:
                    break
                rows_in += batch.num_rows
                bytes_in += batch.nbytes
                for op in stage.ops[:prefix]:
                    current = op.name
                    batch, _ = inst.apply(op, batch, None)
                outputs.append(batch)
            table, state, t_read = _concat(outputs), None, started + reading
            for op in stage.ops[prefix:]:
                current = op.name
                table, state = inst.apply(op, table, state)
        else:
            table, state = inst.read(stage.reader, task_input, observed)
            t_read = time.time()
            rows_in, bytes_in = table.num_rows, table.nbytes
            for op in stage.ops:
                current = op.name
                table, state = inst.apply(op, table, state)
        t_ops = time.time()
        current = stage.nodes[-1] if stage.nodes else stage.id
        out = stage.writer.write(table, observed, key, index)
        inst.finish(state, stage.writer, table, out, index)
        ended = time.time()
        phases = {"read": t_read - started, "ops": t_ops - t_read, "write": ended - t_ops}
        hashes = _hashes(inst, observed, out.refs, exchanges) if exchanges is not None else []
        return TaskResult(
            index,
            attempt,
            os.getpid(),
            started,
            ended,
            rows_in,
            table.num_rows,
            bytes_in,
            table.nbytes,
            out.refs,
            out.sample,
            out.part,
            phases,
            hashes,
            records=taskctx.end(),
            spans=out.spans,
        )
    except (KeyboardInterrupt, Terminated):  # the driver's own stop (in-process executor)
        exchange.release_task(key)
        taskctx.end()
        raise
    except BaseException as exc:  # even sys.exit() in user code: report it, keep the worker
        exchange.release_task(key)
        try:
            payload: bytes | None = cloudpickle.dumps(exc)
            pickle.loads(payload)  # type: ignore[arg-type]
        except Exception:
            payload = None
        tb = "".join(traceback.format_exception(exc))
        return TaskFailure(
            index, attempt, current, type(exc).__qualname__, str(exc), tb, payload, taskctx.end(),
            original=exc,
        )  # fmt: skip


def _run(
    stage: Stage,
    index: int,
    attempt: int,
    task_input: Any,
    key: SegmentKey,
    exchange: Exchange,
    exchanges: Exchanges,
) -> TaskResult | TaskFailure:
    """One task attempt, as every executor runs it."""
    return run_task(stage, index, attempt, task_input, key, exchange, exchanges)


def _hashes(
    inst: Instrument, observed: Exchange, refs: list[Ref], exchanges: Exchanges
) -> list[str | None]:
    """Content hashes of a task's outputs for provenance; never fails the task."""
    try:
        return list(inst.hashes(observed, refs, exchanges))
    except Exception:  # a hash is a nicety; the result is what matters
        return [None] * len(refs)


def _watch_driver(driver_pid: int) -> None:
    """Exit at once when the driver process exits, whatever this worker is doing.

    A ``kill -9``'d driver must not leave workers that finish their task and then write segments
    nobody will sweep. The forkserver (our parent) outlives the driver, so a parent-death signal is
    not enough: a daemon thread waits on a pidfd of the driver (readable when it exits) and falls
    back to polling where pidfds are unavailable.
    """

    def wait_and_exit() -> None:
        try:
            fd = os.pidfd_open(driver_pid)
        except ProcessLookupError:
            os._exit(1)
        except (AttributeError, OSError):
            while True:
                time.sleep(0.5)
                try:
                    os.kill(driver_pid, 0)
                except ProcessLookupError:
                    os._exit(1)
                except PermissionError:
                    pass
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        while True:
            if poller.poll():
                os._exit(1)

    threading.Thread(target=wait_and_exit, name="riera-driver-watch", daemon=True).start()


def main(conn: Connection, settings_fields: dict[str, Any], driver_pid: int) -> None:
    """Entry point of a worker process."""
    _watch_driver(driver_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = Settings.model_validate(settings_fields)
    exchanges = Exchanges(settings)
    taskctx.configure(settings.versions_repo)
    stages: dict[str, Stage] = {}
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            break  # the driver is gone
        kind = msg[0]
        if kind == "task":
            _, stage_key, stage_blob, index, attempt, task_input, key = msg
            result: TaskResult | TaskFailure
            try:
                if stage_blob is not None:
                    stages[stage_key] = cloudpickle.loads(stage_blob)
            except BaseException as exc:
                result = TaskFailure(
                    index,
                    attempt,
                    stage_key,
                    type(exc).__qualname__,
                    f"the worker cannot load this stage's functions: {exc}. Functions defined "
                    f"in a module must be importable in the workers (same sys.path / installed).",
                    "".join(traceback.format_exception(exc)),
                    None,
                )
            else:
                stage = stages[stage_key]
                try:
                    exchange = exchanges.writer(stage.exchange)
                except RieraError as exc:
                    result = TaskFailure(
                        index, attempt, stage_key, type(exc).__qualname__, str(exc), "", None
                    )
                else:
                    result = _run(stage, index, attempt, task_input, key, exchange, exchanges)
            if isinstance(result, TaskFailure):
                result.original = None  # travels pickled in ``exception``, when it can
            try:
                conn.send(("result", result))
            except (BrokenPipeError, OSError):
                break
        elif kind == "forget":
            stages.pop(msg[1], None)
            taskctx.forget(msg[1])
        elif kind == "stop":
            break
    sys.exit(0)
