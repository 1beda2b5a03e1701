"""The local executor: a pool of warm worker processes running the tasks of one stage at a time.

This is the reference executor; it defines the semantics other executors adapt to:

- one task per (stage, partition); a task's outputs are refs into the exchange;
- a task whose worker dies (killed, out of memory, segfault) is retried on a fresh worker, up to
  ``max_task_retries`` times; what the dead attempt wrote is released by its name prefix first;
- a task whose user code raises fails the run at once: the other running tasks are stopped and the
  error reaches the caller naming the operator and partition, with the worker's traceback;
- Ctrl-C stops the workers running tasks and propagates; the run's data is released by the caller.

Workers start once per session and are reused by later stages and runs; each stage is shipped to a
worker the first time that worker runs one of its tasks. The driver multiplexes worker pipes and
process sentinels with ``multiprocessing.connection.wait``, so a death is seen as soon as it happens.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any

from riera.config import Settings
from riera.errors import RieraError, WorkerLostError
from riera.exchange.base import Exchange, SegmentKey
from riera.exec import worker as worker_mod
from riera.exec.base import fill, prefix_rows, to_exception
from riera.exec.hooks import Hooks, StageInfo, TaskInfo
from riera.exec.worker import TaskFailure, TaskResult
from riera.physical.stage import Stage

log = logging.getLogger(__name__)


# Workers allocate and free hundreds of MB per task. Arrow's allocator (mimalloc) returns freed
# pages to the OS after 10 ms by default, so the next task faults them in and the kernel zeroes
# them again; keeping them for a few seconds halved the workers' system CPU in a TeraSort run
# (30 s -> 17.5 s over 6 sorts). Only the worker processes get this; a value the user set wins.
WORKER_ENV = {"MIMALLOC_PURGE_DELAY": "5000"}


@contextlib.contextmanager
def _worker_env() -> Iterator[None]:
    added = [k for k in WORKER_ENV if k not in os.environ]
    os.environ.update({k: WORKER_ENV[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _main_hidden() -> Iterator[None]:
    """Start processes without re-running the user's ``__main__`` script in them.

    ``spawn`` and ``forkserver`` re-import ``__main__`` from its file in every new process, which
    runs an unguarded script (no ``if __name__ == "__main__"``) again inside the workers. Workers
    never need it: cloudpickle ships functions defined in ``__main__`` by value.
    """
    main = sys.modules.get("__main__")
    saved = {a: getattr(main, a) for a in ("__file__", "__spec__") if hasattr(main, a)}
    try:
        if main is not None:
            main.__spec__ = None
            if hasattr(main, "__file__"):
                del main.__file__
        yield
    finally:
        if main is not None:
            for a, v in saved.items():
                setattr(main, a, v)


class _Worker:
    def __init__(self, ctx: Any, settings: dict[str, Any], wid: int) -> None:
        parent, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(
            target=worker_mod.main,
            args=(child, settings, os.getpid()),
            name=f"riera-worker-{wid}",
            daemon=True,
        )
        with _main_hidden(), _worker_env():
            self.process.start()
        child.close()
        self.conn: Connection = parent
        self.pid = self.process.pid or 0
        self.ready = False
        self.stages: set[str] = set()
        self.task: TaskInfo | None = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        if self.ready:
            return
        if not self.conn.poll(timeout):
            raise WorkerLostError(f"worker pid {self.pid} did not start within {timeout:.0f} s")
        try:
            msg = self.conn.recv()
        except EOFError as err:
            raise WorkerLostError(
                f"worker pid {self.pid} exited while starting (exit code {self.process.exitcode})"
            ) from err
        if msg[0] == "fatal":
            raise RieraError(f"worker could not start: {msg[1]}")
        self.ready = True

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(("stop",))
        except (BrokenPipeError, OSError):
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.conn.close()


class WorkerPool:
    """Warm worker processes, started on first use and kept across stages and runs."""

    name = "local"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.size = settings.workers
        self._ctx = mp.get_context(settings.start_method)
        if settings.start_method == "forkserver":
            # Imported once in the forkserver and shared by every forked worker. pandas is in
            # the list because pyarrow imports it on first use; the driver never needs it.
            self._ctx.set_forkserver_preload(["riera.exec.worker", "pandas"])
        # Pickled, not JSON: JSON would mask the secret settings (credentials) the workers need.
        self._settings = settings.model_dump()
        self._next_id = 0
        self.workers: list[_Worker] = []

    def _spawn(self) -> _Worker:
        self._next_id += 1
        return _Worker(self._ctx, self._settings, self._next_id)

    def start(self) -> None:
        missing = self.size - len(self.workers)
        if missing <= 0:
            return
        # Workers must not inherit the driver's SIGINT handler mid-start; they ignore SIGINT anyway.
        new = [self._spawn() for _ in range(missing)]
        for w in new:
            w.wait_ready()
        self.workers.extend(new)

    def replace(self, w: _Worker) -> _Worker:
        w.kill()
        fresh = self._spawn()
        self.workers[self.workers.index(w)] = fresh
        return fresh

    def kill_busy(self) -> None:
        for w in list(self.workers):
            if w.task is not None:
                w.kill()
                self.workers.remove(w)

    def forget(self, stage_key: str) -> None:
        for w in self.workers:
            if stage_key in w.stages:
                w.stages.discard(stage_key)
                try:
                    w.conn.send(("forget", stage_key))
                except (BrokenPipeError, OSError):
                    pass

    def shutdown(self) -> None:
        for w in self.workers:
            w.stop()
        self.workers.clear()

    # -- running a stage -------------------------------------------------------------------------
    def run_stage(
        self,
        stage: Stage,
        stage_key: str,
        inputs: Sequence[Any],
        make_key: Callable[[int, int], SegmentKey],
        info: StageInfo,
        run_id: str,
        hooks: Hooks,
        exchange: Exchange,
        rows_needed: int | None = None,
    ) -> list[TaskResult]:
        """Run every task of ``stage``; returns results in partition order.

        ``rows_needed`` (a preview): once the tasks from partition 0 on that have finished hold
        that many rows, no further task starts; the running ones finish, and only the results
        of the tasks that ran are returned."""
        self.start()
        blob = _dumps(stage)
        pending: deque[tuple[int, int]] = deque((i, 0) for i in range(len(inputs)))
        results: list[TaskResult | None] = [None] * len(inputs)
        running: dict[int, _Worker] = {}
        # A preview starts one wave, then four times as many tasks per round while the rows
        # from partition 0 on still fall short (as Spark's take does): never the whole stage.
        budget = len(self.workers) if rows_needed is not None else len(inputs)
        started = 0
        try:
            while pending or running:
                if not running and started >= budget:
                    budget = started * 4
                for w in self.workers:
                    if not pending or started >= budget:
                        break
                    if w.task is not None:
                        continue
                    index, attempt = pending.popleft()
                    w.wait_ready()
                    self._start_task(
                        w,
                        stage,
                        stage_key,
                        blob,
                        index,
                        attempt,
                        inputs[index],
                        make_key(index, attempt),
                        run_id,
                        hooks,
                    )
                    running[id(w)] = w
                    started += 1
                handles: dict[Any, _Worker] = {}
                for w in running.values():
                    handles[w.conn] = w
                    handles[w.process.sentinel] = w
                for h in wait(list(handles), timeout=1.0):
                    w = handles[h]
                    if w.task is None:
                        continue
                    outcome = self._collect(w)
                    if outcome is _NOT_YET:
                        continue
                    task = w.task
                    if isinstance(outcome, TaskResult):
                        w.task = None
                        del running[id(w)]
                        results[outcome.index] = outcome
                        fill(task, outcome)
                        task.input = inputs[outcome.index]
                        info.rows_out += outcome.rows_out
                        info.bytes_out += outcome.bytes_out
                        hooks.on_task_end(task)
                        if rows_needed is not None and prefix_rows(results) >= rows_needed:
                            pending.clear()
                    elif isinstance(outcome, TaskFailure):
                        w.task = None
                        del running[id(w)]
                        task.status, task.ended = "failed", time.time()
                        task.error = f"{outcome.error_type}: {outcome.message}"
                        task.records = outcome.records
                        hooks.on_task_end(task)
                        raise to_exception(outcome, stage)
                    else:  # the worker died
                        del running[id(w)]
                        code = w.process.exitcode
                        exchange.release_task(make_key(task.index, task.attempt))
                        task.status, task.ended = "lost", time.time()
                        task.error = f"worker pid {w.pid} died ({_exit_reason(code)})"
                        hooks.on_task_end(task)
                        w.task = None
                        self.replace(w)
                        if task.attempt >= self.settings.max_task_retries:
                            raise WorkerLostError(
                                f"stage {stage.id} ({stage.label}), partition {task.index}: the "
                                f"worker died {task.attempt + 1} time(s), last {_exit_reason(code)}"
                                f"; giving up after max_task_retries="
                                f"{self.settings.max_task_retries}. If it was killed for memory, "
                                f"use more partitions (repartition) or fewer workers."
                            )
                        log.warning(
                            "stage %s partition %d: worker pid %d died (%s); retrying (attempt %d)",
                            stage.id,
                            task.index,
                            w.pid,
                            _exit_reason(code),
                            task.attempt + 1,
                        )
                        info.retries += 1
                        pending.appendleft((task.index, task.attempt + 1))
        except BaseException:
            self.kill_busy()
            raise
        return [r for r in results if r is not None]

    def _start_task(
        self,
        w: _Worker,
        stage: Stage,
        stage_key: str,
        blob: bytes,
        index: int,
        attempt: int,
        task_input: Any,
        key: SegmentKey,
        run_id: str,
        hooks: Hooks,
    ) -> None:
        send_blob = None if stage_key in w.stages else blob
        w.task = TaskInfo(run_id, stage.id, index, attempt, w.pid, time.time())
        hooks.on_task_start(w.task)
        try:
            w.conn.send(("task", stage_key, send_blob, index, attempt, task_input, key))
        except (BrokenPipeError, OSError):
            return  # seen as a death by the wait loop
        w.stages.add(stage_key)

    @staticmethod
    def _collect(w: _Worker) -> TaskResult | TaskFailure | None:
        try:
            if w.conn.poll():
                msg = w.conn.recv()
                if msg[0] == "result":
                    result: TaskResult | TaskFailure = msg[1]
                    return result
            elif w.process.is_alive():
                return _NOT_YET  # type: ignore[return-value]
        except (EOFError, OSError):
            pass
        w.process.join(5)
        return None


_NOT_YET = object()


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _dumps(stage: Stage) -> bytes:
    import cloudpickle

    try:
        return bytes(cloudpickle.dumps(stage))
    except Exception as err:
        raise RieraError(
            f"stage {stage.id} ({stage.label}) cannot be sent to worker processes: {err}. "
            f"Functions must be picklable by cloudpickle: avoid capturing open files, locks, "
            f"sockets or database connections; create them inside the function instead."
        ) from err
