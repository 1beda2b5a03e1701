"""Execution hooks: progress bars, metrics and provenance observe runs through these; the scheduler
does not know who listens (the Dask callbacks pattern).

Subclass :class:`Hooks` and override what you need, then pass it to ``riera.init(hooks=[...])`` or
register it with :func:`riera.add_hooks`. Hooks run in the driver, synchronously, between
scheduling decisions: keep them fast, and hand slow work (database writes) to a thread.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class TaskInfo:
    run_id: str
    stage_id: str
    index: int
    attempt: int
    worker_pid: int = 0
    started: float = 0.0
    ended: float = 0.0
    rows_in: int = 0
    rows_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    status: str = "running"  # running | ok | failed | lost
    error: str | None = None
    phases: dict[str, float] = field(default_factory=dict)  # read / ops / write seconds
    host: str = ""
    # What the task read and wrote (for provenance): its input as scheduled (a file split, a
    # range, refs of upstream partitions), its output refs with their content hashes (``None``
    # where not computed), and the output file it wrote, if any.
    input: Any = None
    refs: list[Any] = field(default_factory=list)
    hashes: list[str | None] = field(default_factory=list)
    part: dict[str, Any] | None = None
    # What operators told provenance inside the task (programs, file versions, domain rows).
    records: list[Any] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started)


@dataclass
class StageInfo:
    run_id: str
    stage_id: str
    label: str
    num_tasks: int
    started: float = 0.0
    ended: float = 0.0
    rows_out: int = 0
    bytes_out: int = 0
    retries: int = 0
    status: str = "running"
    spilled_bytes: int = 0  # written to the spill backend instead of the run's exchange
    # The stage's reader (riera.physical.stage.Reader): ``reader.elements(task.input)`` names
    # the data a task of the stage read.
    reader: Any = None


@dataclass
class RunInfo:
    run_id: str
    action: str
    workers: int
    exchange: str
    started: float = 0.0
    ended: float = 0.0
    status: str = "running"  # running | ok | failed | cancelled
    error: str | None = None
    stages: list[StageInfo] = field(default_factory=list)
    plan: dict[str, Any] = field(default_factory=dict)
    spilled_bytes: int = 0  # data that did not fit shared memory and went to disk
    root: Any = None  # the logical plan's root node (prospective provenance reads its operators)
    stage_ops: dict[str, list[str]] = field(default_factory=dict)  # stage id -> operator names
    stage_capture: dict[str, str] = field(default_factory=dict)  # stage id -> off|tasks|records
    executor: str = ""  # what ran the tasks (riera.exec.base.choose)

    @property
    def seconds(self) -> float:
        return max(0.0, self.ended - self.started)

    @property
    def tasks(self) -> int:
        return sum(s.num_tasks for s in self.stages)

    @property
    def retries(self) -> int:
        return sum(s.retries for s in self.stages)


class Hooks:
    """Override any of these; the default does nothing."""

    def on_run_start(self, run: RunInfo) -> None: ...
    def on_stage_start(self, stage: StageInfo) -> None: ...
    def on_task_start(self, task: TaskInfo) -> None: ...
    def on_task_end(self, task: TaskInfo) -> None: ...
    def on_stage_end(self, stage: StageInfo) -> None: ...
    def on_run_end(self, run: RunInfo) -> None: ...


class HookList(Hooks):
    """Fans each event out to several hooks; a failing hook is logged, never fails the run."""

    def __init__(self, hooks: Iterable[Hooks] = ()) -> None:
        self.hooks = list(hooks)

    def _emit(self, event: str, arg: Any) -> None:
        for h in self.hooks:
            try:
                getattr(h, event)(arg)
            except Exception:
                log.exception("hook %s.%s failed", type(h).__name__, event)

    def on_run_start(self, run: RunInfo) -> None:
        self._emit("on_run_start", run)

    def on_stage_start(self, stage: StageInfo) -> None:
        self._emit("on_stage_start", stage)

    def on_task_start(self, task: TaskInfo) -> None:
        self._emit("on_task_start", task)

    def on_task_end(self, task: TaskInfo) -> None:
        self._emit("on_task_end", task)

    def on_stage_end(self, stage: StageInfo) -> None:
        self._emit("on_stage_end", stage)

    def on_run_end(self, run: RunInfo) -> None:
        self._emit("on_run_end", run)
