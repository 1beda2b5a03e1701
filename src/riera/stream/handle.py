"""What a running query's handle offers, whether one driver runs it
(:class:`~riera.stream.query.StreamingQuery`) or this driver's part of a sharded job
(:class:`~riera.stream.leased.LeasedQuery`): a thread that runs it, stop and wait."""

from __future__ import annotations

import threading
from typing import Any

from riera.errors import StreamError


class QueryHandle:
    kind = "streaming query"
    name: str
    _thread: threading.Thread
    _error: BaseException | None

    def request_stop(self) -> None:
        """Ask the query to commit what is in flight and stop, without waiting (signal-safe)."""
        raise NotImplementedError

    def stop(self, timeout: float = 60.0) -> None:
        """Commit what is in flight, then stop (idempotent)."""
        self.request_stop()
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise StreamError(f"{self.kind} {self.name} did not stop within {timeout:.0f} s")

    def await_termination(self, timeout: float | None = None) -> bool:
        """Wait until the query ends (stopped, finished idle, or failed: the error is raised
        here). True when it ended, False on timeout."""
        self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        if self._error is not None:
            raise StreamError(f"{self.kind} {self.name} failed: {self._error}") from self._error
        return True

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def is_active(self) -> bool:
        return self._thread.is_alive()
