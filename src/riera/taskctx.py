"""What a task tells provenance beyond its result: program runs, file versions, domain rows.

Operators run in worker processes, far from the store. While a task runs, :func:`current` returns
its :class:`TaskContext`; operators append ``(kind, row)`` records to it (a black-box program's
command line and exit code, the Git blobs of the files it wrote, a dataset's domain attributes).
The records ride back to the driver with the task's result — also when the task fails, so a
failed program is on record — and the capture hook turns them into store events there. Workers
still never talk to the store.

Nothing is recorded when the stage's capture is ``off`` (the ``provenance`` setting, or
``Dataset.provenance(False)``): operators ask :meth:`TaskContext.captures` first and skip the work.

Tasks of one stage that run in the same process may also share what is costly to make and the
same for all of them — a broadcast join's small side, loaded and hashed once per worker instead
of once per task (:meth:`TaskContext.shared`). It is dropped when the driver says the stage is
over (:func:`forget`).
"""

from __future__ import annotations

from collections.abc import Callable
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
    stage_key: str = ""  # <run>/<stage>: what tasks of this stage share in this process
    records: list[Record] = field(default_factory=list)
    programs: int = 0  # black-box program runs so far in this task
    # Side inputs (a broadcast join's small side): stage id -> loader.
    side_loaders: dict[str, Any] = field(default_factory=dict)

    def side(self, stage_id: str) -> Any:
        """The whole output of ``stage_id`` (an Arrow table), loaded once per process for all
        the tasks of this stage that run there."""
        try:
            load = self.side_loaders[stage_id]
        except KeyError:
            raise RuntimeError(f"this task was given no side input {stage_id!r}") from None
        return self.shared(("side", stage_id), load)

    def shared(self, name: Any, make: Callable[[], Any]) -> Any:
        """``make()``, made once per process for every task of this stage (see the module
        docstring); it must depend only on what all the stage's tasks share."""
        box = _shared.setdefault(self.stage_key, {})
        if name not in box:
            box[name] = make()
        return box[name]

    @property
    def captures(self) -> bool:
        return self.capture != "off"

    def record(self, kind: str, row: Any) -> None:
        if self.captures:
            self.records.append((kind, row))


_versions: Path | None = None
_current: TaskContext | None = None
_shared: dict[str, dict[Any, Any]] = {}  # stage key -> what its tasks share in this process


def configure(versions: Path | None) -> None:
    """Called once per worker process: where file groups are versioned (None: nowhere)."""
    global _versions
    _versions = versions


def begin(stage_id: str, index: int, capture: str, stage_key: str = "") -> TaskContext:
    global _current
    _current = TaskContext(
        stage_id, index, capture, _versions if capture != "off" else None, stage_key
    )
    return _current


def forget(stage_key: str) -> None:
    """The stage is over: drop what its tasks shared in this process."""
    _shared.pop(stage_key, None)


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
