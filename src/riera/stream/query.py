"""``StreamingQuery``: the handle ``Dataset.write_stream`` returns, and the run it drives.

The engine runs in a thread of the calling process. The handle reports its status, progress
(the last epochs) and metrics; ``stop()`` commits what is in flight and returns;
``await_termination()`` waits for the end (a failure is raised there, with its cause). A query is
one run in the provenance store (action ``write_stream``) and each committed epoch one row of
``stream_epochs``, written while it runs — SQL sees a live query. Hooks with an
``on_stream_epoch(info)`` method are called after every commit.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
import uuid
from typing import Any

from riera.errors import FencedError
from riera.stream.engine import Engine
from riera.stream.handle import QueryHandle

log = logging.getLogger(__name__)


class StreamingQuery(QueryHandle):
    """A running streaming query (see :meth:`riera.Dataset.write_stream`)."""

    def __init__(self, engine: Engine, name: str, root: Any, settings: Any) -> None:
        self.engine = engine
        self.name = name
        self.id = uuid.uuid4().hex[:12]
        self.run_id = f"stream-{time.strftime('%Y%m%d-%H%M%S')}-{self.id}"
        self._root, self._settings = root, settings
        self._error: BaseException | None = None
        self._state = "starting"
        self._progress: collections.deque[dict[str, Any]] = collections.deque(maxlen=100)
        self._started_evt = threading.Event()
        self._collector: Any = None
        self._hooks: list[Any] = []
        self._last_status = 0.0
        engine.on_epoch = self._on_epoch
        self._thread = threading.Thread(target=self._main, name=f"riera-stream-{name}", daemon=True)

    # -- life -------------------------------------------------------------------------------------
    def _begin(self) -> None:
        self._thread.start()
        self._started_evt.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _main(self) -> None:
        try:
            self.engine.start(self.name)
            self._provenance_start()
            self._state = "running"
            self._started_evt.set()
            self.engine.run()
            self._state = "finished" if self.engine.finished_idle else "stopped"
        except BaseException as err:  # reported by await_termination / the start
            self._error = err
            self._state = "failed"
            if self._started_evt.is_set() and self.engine.log is not None:
                with contextlib.suppress(FencedError):  # a newer holder owns the log now
                    self.engine.log.mark_aborted(self.engine.epoch)
                self._on_epoch({"epoch": self.engine.epoch, "status": "aborted",
                                "started": self.engine._epoch_started, "committed": time.time(),
                                "positions_from": self.engine._from})  # fmt: skip
            if not self._started_evt.is_set():
                self._started_evt.set()
            else:
                log.error("streaming query %s failed: %s", self.name, err)
        finally:
            self._write_status()
            self._provenance_end()
            self.engine.close()

    def request_stop(self) -> None:
        self.engine.stop_event.set()

    # -- what it reports --------------------------------------------------------------------------
    @property
    def status(self) -> dict[str, Any]:
        """``state`` (starting, running, stopped, finished, failed), the epoch, the error."""
        m = self.engine.metrics
        return {"name": self.name, "run_id": self.run_id, "state": self._state,
                "epoch": m.epoch, "committed_epoch": m.committed_epoch,
                "error": None if self._error is None else str(self._error)}  # fmt: skip

    @property
    def progress(self) -> list[dict[str, Any]]:
        """The last epochs committed (up to 100), oldest first."""
        return list(self._progress)

    @property
    def metrics(self) -> dict[str, Any]:
        """Latency percentiles, throughput, lag, watermark, state size, checkpoint times and
        per-process CPU/memory (:mod:`riera.stream.metrics`)."""
        return self.engine.status()

    def late_records(self) -> list[dict[str, Any]]:
        """Records that arrived after their window was purged (the last 10,000 kept)."""
        with self.engine.late_lock:
            return list(self.engine.late)

    def wait_for_epoch(self, epoch: int, timeout: float = 30.0) -> bool:
        """Wait until ``epoch`` is committed (True) or the query ended or timed out (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.is_active:
            if self.engine.metrics.committed_epoch >= epoch:
                return True
            time.sleep(0.005)
        return self.engine.metrics.committed_epoch >= epoch

    # -- epochs: provenance, status file, hooks ---------------------------------------------------
    def _on_epoch(self, info: dict[str, Any]) -> None:
        self._progress.append(info)
        if self._collector is not None:
            from riera.provenance.capture import utc

            row = {k: v for k, v in info.items() if k not in ("started", "committed")}
            row.update(run_id=self.run_id, started_at=utc(info["started"]),
                       committed_at=utc(info["committed"]), source=self.engine.plan.source.url,
                       seconds=info["committed"] - info["started"])  # fmt: skip
            row.pop("lineage", None)
            events: list[Any] = [("put", "stream_epochs", row)]
            for item in info.get("lineage", ()):
                events.append(("put", "stream_window_lineage", {
                    **item, "run_id": self.run_id, "epoch": info["epoch"],
                    "key": json.dumps(item["key"], default=str)}))  # fmt: skip
            self._collector.emit(events)
        for hook in self._hooks:
            fn = getattr(hook, "on_stream_epoch", None)
            if fn is not None:
                try:
                    fn(info)
                except Exception as err:
                    log.warning("hook %r failed on a stream epoch: %s", hook, err)
        if time.monotonic() - self._last_status >= 1.0:
            self._write_status()

    def _write_status(self) -> None:
        self._last_status = time.monotonic()
        if self.engine.log is None:
            return
        try:
            self.engine.log.write_status({**self.status, **self.engine.status(), "pid": os.getpid(),
                                          "written_at": time.time()})  # fmt: skip
        except Exception as err:
            log.debug("stream status not written: %s", err)

    def _provenance_start(self) -> None:
        from riera.runtime import get_runtime

        runtime = get_runtime()
        self._hooks = list(runtime.hooks.hooks)
        self._collector = runtime.provenance
        if self._collector is None:
            return
        import json
        import platform
        import sys

        from riera.provenance.capture import operator_rows, utc

        self._collector.emit([("put", "runs", {
            "run_id": self.run_id, "status": "running", "action": "write_stream",
            "pid": os.getpid(), "started_at": utc(time.time()), "workers": 1,
            "exchange": "stream", "executor": "stream", "capture": self._settings.provenance,
            "settings": self._settings.model_dump_json(),
            "python_version": platform.python_version(), "argv": json.dumps(sys.argv),
            "plan": json.dumps({"job": self.engine.job, "source": self.engine.plan.source.url,
                                "trigger": self.engine.opt.trigger.kind,
                                "guarantee": self.engine.opt.guarantee,
                                "checkpoint": str(self.engine.opt.checkpoint),
                                "sink": self.engine.slots[0].sink.url}),
        })] + [("put", "operators", r) for r in operator_rows(self.run_id, self._root)])  # fmt: skip

    def _provenance_end(self) -> None:
        if self._collector is None:
            return
        from riera.provenance.capture import utc

        status = {"finished": "ok", "stopped": "ok", "failed": "failed"}.get(self._state, "failed")
        self._collector.emit([("put", "runs", {
            "run_id": self.run_id, "status": status, "ended_at": utc(time.time()),
            "error": None if self._error is None else str(self._error)})])  # fmt: skip
        self._collector.flush()
