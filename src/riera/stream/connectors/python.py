"""Sinks inside the driver: a Python callback, a collecting list (for tests) and the live view.

They live in the query's process, so they cannot survive it: their commit record is in memory.
:class:`Callback` passes ``(table, epoch, seq)`` so a function can make its own side effects
idempotent; :class:`LiveView` is what the dashboard subscribes to.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal

import pyarrow as pa

from riera.errors import FencedError
from riera.stream.connectors.rows import dumps


class _InMemoryCommits:
    url = "python://"
    mode: Literal["upsert", "append"] = "append"

    def __init__(self) -> None:
        self._last = (-1, -1)
        self._fence = 0
        self.lock = threading.Lock()
        self.job = ""
        self.key: tuple[str, ...] = ()

    def open(self, job: str, key: Sequence[str]) -> None:
        self.job, self.key = job, tuple(key)

    def committed(self) -> tuple[int, int]:
        return self._last

    def _admit(self, epoch: int, seq: int, fence: int) -> bool:
        if fence < self._fence:
            raise FencedError(
                f"{self.url}: fenced at token {self._fence}; this driver holds {fence}"
            )
        self._fence = fence
        if (epoch, seq) <= self._last:
            return False
        self._last = (epoch, seq)
        return True

    def close(self) -> None:
        pass


class Callback(_InMemoryCommits):
    """Calls ``fn(table, epoch, seq)`` (or ``fn(table)``) for every write."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.fn = fn
        self.url = f"python://{getattr(fn, '__qualname__', 'callback')}"
        import inspect

        try:
            self._full = len(inspect.signature(fn).parameters) >= 3
        except (TypeError, ValueError):
            self._full = False

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        with self.lock:
            if not self._admit(epoch, seq, fence):
                return False
            if rows.num_rows:
                if self._full:
                    self.fn(rows, epoch, seq)
                else:
                    self.fn(rows)
            return True


class Collect(_InMemoryCommits):
    """Keeps every written table (``riera.testing``): ``rows()`` gives them as dicts."""

    url = "python://collect"

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[pa.Table] = []

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        with self.lock:
            if not self._admit(epoch, seq, fence):
                return False
            if rows.num_rows:
                self.tables.append(rows)
            return True

    def rows(self) -> list[dict[str, Any]]:
        with self.lock:
            return [r for t in self.tables for r in t.to_pylist()]


class LiveView(_InMemoryCommits):
    """The latest row per key, with a top-N by a value column — what a live chart draws.

    ``version`` increases with every applied write, so a subscriber (the dashboard's server)
    polls :meth:`wait` for a newer version instead of receiving every update: the display rate
    is decoupled from the event rate.
    """

    mode: Literal["upsert", "append"] = "upsert"

    def __init__(self, name: str = "live", value: str | None = None) -> None:
        super().__init__()
        self.url = f"python://live/{name}"
        self.name = name
        self.value = value
        self.latest: dict[str, dict[str, Any]] = {}
        self.version = 0
        self._changed = threading.Condition(self.lock)

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        with self.lock:
            if not self._admit(epoch, seq, fence):
                return False
            for row in rows.to_pylist():
                key = dumps([row.get(c) for c in self.key]) if self.key else dumps(row)
                self.latest[key] = row
            self.version += 1
            self._changed.notify_all()
            return True

    def wait(self, after: int, timeout: float) -> int:
        """Block until the version exceeds ``after`` (or ``timeout``); the current version."""
        with self.lock:
            self._changed.wait_for(lambda: self.version > after, timeout)
            return self.version

    def top(self, n: int = 30, by: str | None = None) -> list[dict[str, Any]]:
        """The ``n`` rows with the largest ``by`` (default: the view's value column, else the
        last numeric column), ties broken by key so the order is stable."""
        with self.lock:
            rows = list(self.latest.items())
        column = by or self.value
        if column is None and rows:
            numeric = [k for k, v in rows[0][1].items() if isinstance(v, int | float)]
            column = numeric[-1] if numeric else None
        if column is None:
            return [r for _, r in rows[:n]]
        rows.sort(key=lambda kv: (-(kv[1].get(column) or 0), kv[0]))
        return [r for _, r in rows[:n]]

    def to_json(self, n: int = 30) -> str:
        return json.dumps({"name": self.name, "version": self.version, "top": self.top(n)},
                          default=str)  # fmt: skip
