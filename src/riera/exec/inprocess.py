"""The in-process executor: every task runs in the driver, one after another.

For debugging: a ``breakpoint()`` in a row function stops in your terminal, ``pdb.post_mortem``
on a :class:`~riera.TaskError`'s ``__cause__`` lands in the frame that raised, and a profiler sees
the user code. The semantics are the local pool's — the same task function
(``riera.exec.worker._run``), the same exchange and refs, the same hooks, errors and previews — so a
pipeline that works here works there; only parallelism and the isolation of a crash differ (a
segfault in a task takes the driver with it, and nothing is retried).

>>> import riera
>>> _ = riera.init(executor="inprocess", progress="off", provenance="off")
>>> riera.range(10).filter(lambda r: r["id"] % 2 == 0).count()
5
>>> _ = riera.init(progress="off")
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from riera import taskctx
from riera.config import Settings
from riera.exchange.base import Exchange, SegmentKey
from riera.exchange.policy import Exchanges
from riera.exec import worker
from riera.exec.base import fill, prefix_rows, to_exception
from riera.exec.hooks import Hooks, StageInfo, TaskInfo
from riera.exec.worker import TaskFailure, TaskResult
from riera.physical.stage import Stage


class InProcessExecutor:
    name = "inprocess"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._exchanges: Exchanges | None = None

    def _setup(self) -> Exchanges:
        if self._exchanges is None:  # what a worker process does when it starts
            self._exchanges = Exchanges(self.settings)
            taskctx.configure(self.settings.versions_repo)
        return self._exchanges

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
        exchanges = self._setup()
        writer = exchanges.writer(stage.exchange)
        results: list[TaskResult | None] = [None] * len(inputs)
        for index, task_input in enumerate(inputs):
            if rows_needed is not None and prefix_rows(results) >= rows_needed:
                break
            task = TaskInfo(run_id, stage.id, index, 0, os.getpid(), time.time())
            hooks.on_task_start(task)
            outcome = worker._run(
                stage, index, 0, task_input, make_key(index, 0), writer, exchanges
            )
            if isinstance(outcome, TaskFailure):
                task.status, task.ended = "failed", time.time()
                task.error = f"{outcome.error_type}: {outcome.message}"
                task.records = outcome.records
                hooks.on_task_end(task)
                raise to_exception(outcome, stage)
            results[index] = outcome
            fill(task, outcome)
            task.input = task_input
            info.rows_out += outcome.rows_out
            info.bytes_out += outcome.bytes_out
            hooks.on_task_end(task)
        return [r for r in results if r is not None]

    def forget(self, stage_key: str) -> None:
        """Drop what the stage's tasks shared (a broadcast side and its hash index)."""
        taskctx.forget(stage_key)

    def shutdown(self) -> None:
        self._exchanges = None
