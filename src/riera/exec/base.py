"""The executor contract: what runs the tasks of a stage, and the one place that chooses it.

The runtime owns the plan, the exchange, hooks and provenance; an executor only runs tasks. Given a
stage (reader, fused operators, writer) and one input per task, :meth:`Executor.run_stage` runs
``riera.exec.worker._run`` for each — in worker processes, in the driver, on a cluster — and returns
the results in partition order, calling ``on_task_start``/``on_task_end`` around each attempt. The
semantics every executor keeps (the conformance suite in ``tests/`` runs the same tests under each):

- one task per (stage, partition); its outputs are refs into the exchange it was given;
- a user exception fails the run: :func:`to_exception` turns the task's failure into the error the
  caller sees (Riera's own errors as themselves, others as :class:`~riera.TaskError` naming the
  operator and partition, the original as ``__cause__``);
- ``rows_needed`` (a preview): stop starting tasks once the finished ones from partition 0 on
  hold that many rows;
- Ctrl-C and SIGTERM propagate; what a failed attempt wrote is released by its key.

Executors register by name (``register``); the ``executor`` setting (env ``RIERA_EXECUTOR``)
picks one, :func:`choose` decides per run (the one exception: small runs of built-in operators),
and :func:`create` is the only place that builds one.

Why small runs stay in the driver: starting worker processes costs half a second (a forkserver
importing pyarrow, numpy and pandas), and a run over a megabyte of data without user code takes
milliseconds in one thread. Such a run cannot crash the driver or hang in user code, and the
semantics are the same everywhere (the conformance suite), so nothing but its speed changes —
which is what a user of Polars or DuckDB expects of ``head()`` on a small file. The rule looks at
the plan only, never at whether workers happen to be warm, so a run goes the same way every time.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from riera.config import Settings
from riera.errors import ConfigError, RieraError, TaskError
from riera.exchange.base import Exchange, SegmentKey
from riera.exec.hooks import Hooks, StageInfo, TaskInfo
from riera.exec.worker import TaskFailure, TaskResult
from riera.physical.stage import Stage


class Executor(Protocol):
    """Runs the tasks of one stage at a time (see the module docstring for the contract)."""

    name: str

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
    ) -> list[TaskResult]: ...

    def forget(self, stage_key: str) -> None:
        """The stage is finished: drop whatever was cached for it."""

    def shutdown(self) -> None:
        """Release workers and connections; the executor is not used again."""


_REGISTRY: dict[str, Callable[[Settings], Executor]] = {}


def register(name: str, factory: Callable[[Settings], Executor]) -> None:
    _REGISTRY[name] = factory


def available() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def create(settings: Settings, name: str | None = None) -> Executor:
    """The executor ``name`` (default: the one the settings name)."""
    _load_builtin()
    name = name or settings.executor
    factory = _REGISTRY.get(name)
    if factory is None:
        raise ConfigError(f"unknown executor {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return factory(settings)


INLINE = "inprocess"


def choose(settings: Settings, source_bytes: int, user_code: bool) -> str:
    """The executor of a run whose sources hold ``source_bytes`` and that calls user code (Python
    functions, external programs) or not: the configured one, except that a run of built-in
    operators over at most ``inline_bytes`` runs in the driver (see the module docstring)."""
    if not user_code and source_bytes <= settings.inline_bytes:
        return INLINE
    return settings.executor


def _load_builtin() -> None:
    if "local" not in _REGISTRY:
        from riera.exec import inprocess, local

        register("local", local.WorkerPool)
        register("inprocess", inprocess.InProcessExecutor)


def prefix_rows(results: Sequence[TaskResult | None]) -> int:
    """Rows of the finished tasks from partition 0 up to the first one not finished."""
    rows = 0
    for r in results:
        if r is None:
            break
        rows += r.rows_out
    return rows


def fill(task: TaskInfo, r: TaskResult) -> None:
    """Copy a finished task's figures into the hooks' view of it."""
    task.status = "ok"
    task.worker_pid = r.pid
    task.started, task.ended = r.started, r.ended
    task.rows_in, task.rows_out = r.rows_in, r.rows_out
    task.bytes_in, task.bytes_out = r.bytes_in, r.bytes_out
    task.phases = r.phases
    task.refs, task.hashes, task.part = r.refs, r.hashes, r.part
    task.records = r.records


def to_exception(f: TaskFailure, stage: Stage) -> BaseException:
    """The error a failed task raises in the driver."""
    original = f.original
    if original is None and f.exception is not None:
        try:
            original = pickle.loads(f.exception)
        except Exception:
            original = None
    if isinstance(original, RieraError):
        original.add_note(f"(in operator {f.operator!r}, stage {stage.id}, partition {f.index})")
        return original
    err = TaskError(f.operator, stage.id, f.index, f.error_type, f.message, f.traceback)
    if original is not None:
        err.__cause__ = original
    return err
