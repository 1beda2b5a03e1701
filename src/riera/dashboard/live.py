"""What the live stream view shows: the streaming queries the provenance store knows, and for
one of them a *frame* — its top-N keys by value read from its sink, and its metrics from the
status file in its checkpoint directory. The server computes frames at its display rate, not
per event, so a chart's cost does not grow with the stream's."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from riera.errors import RieraError

TOP_N = 30
UNTREATED_MAX = 500  # keys of the untreated view (the document drew every word)
SINK_TTL_S = 10.0  # an open sink is reopened this often (a broker replaced since is seen)
FRAMES_KEPT_S = 60.0  # a cached frame nobody asked for in this long is forgotten


class Streams:
    def __init__(self, store: Any, top_n: int = TOP_N, max_age_s: float = 0.1) -> None:
        self.store, self.top_n, self.max_age_s = store, top_n, max_age_s
        self._sinks: dict[str, tuple[float, Any]] = {}  # url -> (opened at, sink)
        self._frames: dict[tuple[str, bool], tuple[float, dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._procs: dict[int, psutil.Process] = {}  # producers, kept for CPU % between readings

    def queries(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest streaming queries: run id, status, start, job, source, sink."""
        rows = self.store.sql(
            "SELECT run_id, status, started_at, plan FROM runs WHERE action = 'write_stream' "
            "ORDER BY started_at DESC",
            limit=limit,
        ).to_dicts()
        out = []
        for row in rows:
            plan = _plan(row.pop("plan"))
            out.append({**row, "job": plan.get("job"), "source": plan.get("source"),
                        "sink": plan.get("sink"), "guarantee": plan.get("guarantee")})  # fmt: skip
        return out

    def frame(self, run_id: str, untreated: bool = False) -> dict[str, Any]:
        """The latest state of one query (without a timestamp, so equal frames compare equal).
        Tabs watching the same query share one reading of it per ``max_age_s``."""
        key = (run_id, untreated)
        with self._lock:
            cached = self._frames.get(key)
        if cached is not None and time.monotonic() - cached[0] < self.max_age_s:
            return dict(cached[1])
        frame = self.read(run_id, untreated)
        now = time.monotonic()
        with self._lock:
            for old in [k for k, (at, _) in self._frames.items() if now - at > FRAMES_KEPT_S]:
                del self._frames[old]
            if frame.get("state") != "unknown":  # no entry for ids that name no query
                self._frames[key] = (now, frame)
        return dict(frame)

    def read(self, run_id: str, untreated: bool = False) -> dict[str, Any]:
        """The query's state now (no sharing: a plain GET)."""
        rows = self.store.sql(
            "SELECT status, plan FROM runs WHERE run_id = :r AND action = 'write_stream'",
            {"r": run_id},
        ).rows
        if not rows:
            return {"run_id": run_id, "state": "unknown", "error": "no such streaming query"}
        status, plan_text = rows[0]
        plan = _plan(plan_text)
        frame: dict[str, Any] = {"run_id": run_id, "job": plan.get("job"), "state": status}
        metrics = _status(plan.get("checkpoint"))
        if metrics:
            frame["metrics"] = {k: metrics.get(k) for k in (
                "committed_epoch", "records_in", "records_per_second", "latency", "lag",
                "watermark", "checkpoint_ms", "processes", "written_at", "state")}  # fmt: skip
        sink = plan.get("sink")
        if not sink:
            frame["error"] = "this query's sink is not recorded (started before the dashboard)"
            return frame
        try:
            frame["top"], frame["keys"], every = self._top(sink)
            if untreated:  # document 000's chart: every key, in the sink's order, unsorted
                frame["untreated"] = every[:UNTREATED_MAX]
        except Exception as err:  # a sink that fails (Redis down, …) is this frame's error
            self._drop(sink)
            message = str(err) if isinstance(err, RieraError | OSError) else repr(err)
            frame["error"] = f"{sink}: {message}"
        return frame

    def _top(self, url: str) -> tuple[list[dict[str, Any]], int, list[dict[str, Any]]]:
        """The top-N by value, the number of keys, and every key in the sink's order."""
        every = sink_rows(self._sink(url))
        ranked = sorted(every, key=lambda r: (-r["value"], r["key"]))  # ties by key: stable
        return ranked[: self.top_n], len(every), every

    def _sink(self, url: str) -> Any:
        """The sink at ``url``, kept open for :data:`SINK_TTL_S` (then reopened: a broker
        deleted and made again since is read afresh). The dashboard creates nothing: a
        ``memory://`` broker that does not exist is an error, not a new empty file."""
        from riera.stream.connectors.base import open_sink

        now = time.monotonic()
        with self._lock:
            held = self._sinks.get(url)
            if held is not None and now - held[0] < SINK_TTL_S:
                return held[1]
        if held is not None:
            self._drop(url)
        _exists(url)
        sink = open_sink(url)
        with self._lock:
            self._sinks[url] = (now, sink)
        return sink

    def _drop(self, url: str) -> None:
        with self._lock:
            held = self._sinks.pop(url, None)
        if held is not None:
            with contextlib.suppress(Exception):
                held[1].close()

    def producers(self, run_id: str) -> list[dict[str, Any]]:
        """The processes that announced themselves as producers of the query's source
        (:mod:`riera.stream.announce`), sampled here: CPU % since the last reading, USS, PSS."""
        from riera.stream.announce import announced

        rows = self.store.sql("SELECT plan FROM runs WHERE run_id = :r", {"r": run_id}).rows
        source = _plan(rows[0][0]).get("source") if rows else None
        if not source:
            return []
        out = []
        everyone = announced(prune=False)  # one reading of the directory; deletes nothing
        records = [r for r in everyone if r.get("url") == str(source)]
        with self._lock:  # forget producers that stopped announcing
            for gone in set(self._procs) - {int(r["pid"]) for r in everyone}:
                del self._procs[gone]
        for record in records:
            pid = int(record["pid"])
            with self._lock:
                proc = self._procs.get(pid)
                if proc is None:
                    proc = self._procs[pid] = psutil.Process(pid)
                    proc.cpu_percent(None)  # the first reading starts the interval
            try:
                with proc.oneshot():
                    cpu = proc.cpu_percent(None)
                    try:
                        mem = proc.memory_full_info()
                        uss, pss = mem.uss, getattr(mem, "pss", None)
                    except psutil.AccessDenied:
                        mem, uss, pss = proc.memory_info(), None, None
            except psutil.Error:
                with self._lock:
                    self._procs.pop(pid, None)
                continue
            out.append({"pid": pid, "name": "producer: " + record.get("cmd", ""),
                        "cpu_percent": round(cpu, 1), "uss_bytes": uss, "pss_bytes": pss,
                        "rss_bytes": mem.rss})  # fmt: skip
        return out

    def close(self) -> None:
        with self._lock:
            for _, sink in self._sinks.values():
                with contextlib.suppress(Exception):
                    sink.close()
            self._sinks.clear()


def sink_rows(sink: Any) -> list[dict[str, Any]]:
    """Every key's latest value in a sink, ``{"key", "value"}``, keys in the order they first
    reached it: what the live view and the PNG report chart. ``sink`` is a URL (opened and closed
    here) or an open sink; it must keep a latest row per key (``memory://``, ``redis://``).

    The key is the row's key values joined by " · "; the value, the row's last numeric column
    (rows without one are left out).

    >>> class Sink:  # any sink with latest(): {JSON list of the key values: row}
    ...     def latest(self):
    ...         return {'["fogão"]': {"valorA": "fogão", "total": 3}, '["freezer"]': {"total": 1}}
    >>> sink_rows(Sink())
    [{'key': 'fogão', 'value': 3}, {'key': 'freezer', 'value': 1}]
    """
    if isinstance(sink, str):
        from riera.stream.connectors.base import open_sink

        opened = open_sink(sink)
        try:
            return sink_rows(opened)
        finally:
            opened.close()
    reader = getattr(sink, "latest", None)
    if reader is None:
        raise RieraError("this sink keeps no latest row per key (use memory:// or redis://)")
    latest: dict[str, dict[str, Any]] = reader()
    every: list[dict[str, Any]] = []
    for key, row in latest.items():
        value = _value(row)
        if value is not None:
            every.append({"key": _label(key, row), "value": value})
    return every


def _exists(url: str) -> None:
    """Refuse a ``memory://`` sink whose broker file is not there (opening would create it)."""
    if not url.startswith("memory://"):
        return
    from riera.stream.connectors.memory import broker_dir

    name = url[len("memory://") :].split("?", 1)[0].rstrip("/")
    path = broker_dir() / f"{name}.sqlite"
    if not path.exists():
        raise RieraError(f"no embedded broker {name!r} in {broker_dir()} (the query's "
                         f"RIERA_BROKER_DIR must be the dashboard's too)")  # fmt: skip


def _plan(text: Any) -> dict[str, Any]:
    try:
        plan = json.loads(text) if isinstance(text, str) else (text or {})
    except ValueError:
        return {}
    return plan if isinstance(plan, dict) else {}


def _status(checkpoint: str | None) -> dict[str, Any]:
    if not checkpoint:
        return {}
    path = Path(checkpoint) / "status.json"
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    data["age_s"] = round(time.time() - float(data.get("written_at") or 0), 3)
    return data


def _value(row: dict[str, Any]) -> float | None:
    """The value a bar shows: the row's last numeric column."""
    for v in reversed(list(row.values())):
        if isinstance(v, int | float) and not isinstance(v, bool):
            return v
    return None


def _label(key: str, row: dict[str, Any]) -> str:
    try:
        parts = json.loads(key)
    except ValueError:
        return key
    if isinstance(parts, list):
        return " · ".join(str(p) for p in parts)
    return str(parts)
