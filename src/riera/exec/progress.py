"""Progress bars per stage (tasks done/total, rows, bytes), shown when stderr is a terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from riera.exec.hooks import Hooks, RunInfo, StageInfo, TaskInfo


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressHook(Hooks):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress: Progress | None = None
        self.bars: dict[str, Any] = {}
        self.totals: dict[str, tuple[int, int]] = {}  # stage -> rows, bytes so far

    def on_run_start(self, run: RunInfo) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rows]:>12} rows {task.fields[size]:>11}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.progress.start()

    def on_stage_start(self, stage: StageInfo) -> None:
        if self.progress is None:
            return
        label = stage.label if len(stage.label) <= 48 else stage.label[:45] + "..."
        self.bars[stage.stage_id] = self.progress.add_task(
            f"{stage.stage_id} {label}", total=stage.num_tasks, rows="0", size="0 B"
        )

    def on_task_end(self, task: TaskInfo) -> None:
        if self.progress is None or task.status != "ok":
            return
        bar = self.bars.get(task.stage_id)
        if bar is None:
            return
        rows, size = self.totals.get(task.stage_id, (0, 0))
        rows, size = rows + task.rows_out, size + task.bytes_out
        self.totals[task.stage_id] = (rows, size)
        self.progress.update(bar, advance=1, rows=f"{rows:,}", size=human_bytes(size))

    def on_run_end(self, run: RunInfo) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
            self.bars.clear()
            self.totals.clear()
