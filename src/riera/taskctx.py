"""What a task tells provenance beyond its result: program runs, file versions, domain rows.

Operators run in worker processes, far from the store. While a task runs, :func:`current` returns
its :class:`TaskContext`; operators append ``(kind, row)`` records to it (a black-box program's
command line and exit code, the Git blobs of the files it wrote, a dataset's domain attributes).
The records ride back to the driver with the task's result — also when the task fails, so a
failed program is on record — and the capture hook turns them into store events there. Workers
still never talk to the store.

Nothing is recorded when the stage's capture is ``off`` (the ``provenance`` setting, or
``Dataset.provenance(False)``): operators ask :meth:`TaskContext.captures` first and skip the work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Record = tuple[str, dict[str, Any]]


@dataclass
class TaskContext:
    stage_id: str
    index: int
    capture: str  # off | tasks | records
    versions: Path | None  # the Git repository that versions file groups, or None
    records: list[Record] = field(default_factory=list)
    programs: int = 0  # black-box program runs so far in this task
    # Side inputs (a broadcast join's small side): stage id -> loader, and what was loaded.
    side_loaders: dict[str, Any] = field(default_factory=dict)
    side_tables: dict[str, Any] = field(default_factory=dict)

    def side(self, stage_id: str) -> Any:
        """The whole output of ``stage_id`` (an Arrow table), loaded once per task."""
        if stage_id not in self.side_tables:
            try:
                load = self.side_loaders[stage_id]
            except KeyError:
                raise RuntimeError(f"this task was given no side input {stage_id!r}") from None
            self.side_tables[stage_id] = load()
        return self.side_tables[stage_id]

    @property
    def captures(self) -> bool:
        return self.capture != "off"

    def record(self, kind: str, row: Any) -> None:
        if self.captures:
            self.records.append((kind, row))


_versions: Path | None = None
_current: TaskContext | None = None


def configure(versions: Path | None) -> None:
    """Called once per worker process: where file groups are versioned (None: nowhere)."""
    global _versions
    _versions = versions


def begin(stage_id: str, index: int, capture: str) -> TaskContext:
    global _current
    _current = TaskContext(stage_id, index, capture, _versions if capture != "off" else None)
    return _current


def end() -> list[Record]:
    global _current
    ctx, _current = _current, None
    return ctx.records if ctx is not None else []


def current() -> TaskContext | None:
    """The running task's context (None outside a task, e.g. in the driver)."""
    return _current


def current_task() -> TaskContext:
    """The running task's context (raises outside a task)."""
    if _current is None:
        raise RuntimeError("no Riera task is running in this process")
    return _current
