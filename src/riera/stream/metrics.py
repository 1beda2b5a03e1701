"""What a streaming query measures, for its users and for the study of document 000.

- **End-to-end latency per event**: from the producer's timestamp (``ts`` of the message) to the
  moment the sink write holding the event's effect returned — committed, not merely computed.
  Kept as the last 100,000 samples (p50/p95/p99 over them) and as totals.
- **Throughput**, records in and rows out, over the last 10 seconds and since the start.
- **Lag** per source partition, the **watermark**, **state size**, **checkpoint duration**.
- **CPU and memory of each process of the pipeline**, sampled every second by a thread:
  ``psutil`` CPU percent between two samples one second apart (not two calls back to back, which
  is what made the document's readings 0 or 100), and USS/PSS — the memory a process owns, and
  its fair share of shared pages — so a shared-memory segment is not counted once per process.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from typing import Any

import numpy as np

SAMPLES = 100_000


class Latency:
    """A ring of the last :data:`SAMPLES` latencies (ms) and their percentiles."""

    def __init__(self) -> None:
        self._ring = np.zeros(SAMPLES, dtype=np.float64)
        self._n = 0
        self._lock = threading.Lock()

    def add(self, ts_ms: np.ndarray, now_ms: float) -> None:
        if len(ts_ms) == 0:
            return
        values = np.maximum(0.0, now_ms - ts_ms[~np.isnan(ts_ms)])
        with self._lock:
            for chunk in np.array_split(values, max(1, -(-len(values) // SAMPLES))):
                start = self._n % SAMPLES
                end = start + len(chunk)
                if end <= SAMPLES:
                    self._ring[start:end] = chunk
                else:
                    cut = SAMPLES - start
                    self._ring[start:] = chunk[:cut]
                    self._ring[: end - SAMPLES] = chunk[cut:]
                self._n += len(chunk)

    def samples(self) -> np.ndarray:
        with self._lock:
            return self._ring[: min(self._n, SAMPLES)].copy()

    def summary(self) -> dict[str, float | int | None]:
        s = self.samples()
        if len(s) == 0:
            return {"count": self._n, "p50_ms": None, "p95_ms": None, "p99_ms": None,
                    "max_ms": None}  # fmt: skip
        p50, p95, p99 = np.percentile(s, [50, 95, 99])
        return {"count": self._n, "p50_ms": round(float(p50), 3), "p95_ms": round(float(p95), 3),
                "p99_ms": round(float(p99), 3), "max_ms": round(float(s.max()), 3)}  # fmt: skip


class Rate:
    """Counts per second over a sliding window of whole seconds."""

    def __init__(self, window_s: int = 10) -> None:
        self.total = 0
        self._window = window_s
        self._buckets: collections.deque[list[float]] = collections.deque()
        self._started = time.monotonic()

    def add(self, n: int) -> None:
        if n <= 0:
            return
        self.total += n
        now = time.monotonic()
        second = float(int(now))
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += n
        else:
            self._buckets.append([second, float(n)])
        while self._buckets and self._buckets[0][0] < second - self._window:
            self._buckets.popleft()

    def per_second(self) -> float:
        now = time.monotonic()
        span = min(self._window, max(1e-3, now - self._started))
        recent = sum(n for s, n in self._buckets if s >= now - self._window)
        return recent / span


class ProcessSampler:
    """Samples CPU % and USS/PSS of this process and its children once a second."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval = interval_s
        self.latest: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._procs: dict[int, Any] = {}
        self._thread = threading.Thread(target=self._loop, name="riera-stream-sampler",
                                        daemon=True)  # fmt: skip

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        import psutil

        me = psutil.Process(os.getpid())
        while not self._stop.wait(self.interval):
            rows = []
            try:
                procs = [me, *me.children(recursive=True)]
            except psutil.Error:
                continue
            for p in procs:
                known = self._procs.setdefault(p.pid, p)
                try:
                    cpu = known.cpu_percent(None)  # since this object's previous call
                    mem = known.memory_full_info()
                    rows.append({"pid": p.pid, "name": " ".join(known.cmdline()[:3])[:80],
                                 "cpu_percent": cpu, "uss_bytes": mem.uss,
                                 "pss_bytes": getattr(mem, "pss", None), "rss_bytes": mem.rss})  # fmt: skip
                except psutil.Error:
                    self._procs.pop(p.pid, None)
            self.latest = rows


class QueryMetrics:
    """All of a query's figures; :meth:`snapshot` is what the handle, the CLI and hooks show."""

    def __init__(self) -> None:
        self.latency = Latency()
        self.records_in = Rate()
        self.rows_out = Rate()
        self.late = 0
        self.dead_letters = 0
        self.epoch = -1
        self.committed_epoch = -1
        self.watermark: int | None = None
        self.lag: dict[str, int | None] = {}
        self.state: dict[str, int] = {}
        self.checkpoint_ms: collections.deque[float] = collections.deque(maxlen=100)
        self.sampler = ProcessSampler()
        self.started = time.time()

    def snapshot(self) -> dict[str, Any]:
        cps = sorted(self.checkpoint_ms)
        return {
            "epoch": self.epoch,
            "committed_epoch": self.committed_epoch,
            "records_in": self.records_in.total,
            "rows_out": self.rows_out.total,
            "records_per_second": round(self.records_in.per_second(), 1),
            "latency": self.latency.summary(),
            "watermark": self.watermark,
            "lag": self.lag,
            "late_records": self.late,
            "dead_letters": self.dead_letters,
            "state_store": self.state,
            "checkpoint_ms": {
                "last": round(self.checkpoint_ms[-1], 3) if cps else None,
                "p50": round(cps[len(cps) // 2], 3) if cps else None,
            },
            "processes": self.sampler.latest,
            "uptime_s": round(time.time() - self.started, 3),
        }
