"""Measurement helpers shared by Riera's benchmarks: timings and peak memory.

- :class:`Stats` holds the wall-clock samples of repeated runs (median, min, max).
- :func:`timed` / :func:`repeat` time a callable with ``time.perf_counter``.
- :class:`PeakMemory` is a sampler thread that, every ~20 ms, sums the resident set size (RSS) of
  this process and all its descendants (the forkserver and the worker processes), and the bytes
  allocated in the shared-memory directory by this driver's segments (``riera-<pid>-*.arrow``),
  keeping the peaks. Use it as a context manager around the code being measured.
- :func:`machine_info` describes the machine for a report header.

About the memory figures. ``RSS`` counts every page a process has mapped and touched, including
shared-memory pages; a segment mapped by a worker and by the driver is counted by both, and it is
also counted by the ``/dev/shm`` figure. So the *summed RSS* over-counts shared data. The
``footprint`` figure is a better estimate of what the machine really spent: the sum of each
process's private (anonymous) resident memory, ``rss - shared``, plus the ``/dev/shm`` bytes, both
taken in the same sample.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Self, TypeVar

import psutil

T = TypeVar("T")

MB = 1_000_000  # benchmark sizes and throughputs use decimal units: 1 MB = 10**6 bytes
GB = 1_000_000_000


class Options:
    """Base of the frozen study configs: the CLI's options (``None``: not given) applied."""

    def with_options(self, **changes: Any) -> Self:
        """A copy with the given (non-None) options applied."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[type-var]


@dataclass
class Stats:
    """Wall-clock seconds of repeated runs of one thing."""

    samples: list[float] = field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)

    def rate(self, nbytes: float, unit: float = MB) -> float:
        """Throughput at the median time, in ``unit`` per second."""
        return nbytes / unit / self.median if self.median > 0 else float("inf")

    def range_str(self, scale: float = 1.0, digits: int = 3) -> str:
        """``min–max`` (scaled, e.g. ``scale=1000`` for milliseconds)."""
        return f"{self.min * scale:.{digits}f}–{self.max * scale:.{digits}f}"


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Run ``fn`` once; returns its result and the elapsed wall-clock seconds."""
    t0 = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0


def repeat(
    fn: Callable[[], Any],
    times: int,
    *,
    before: Callable[[], Any] | None = None,
    after: Callable[[Any], Any] | None = None,
) -> Stats:
    """Time ``fn`` ``times`` times; ``before()`` and ``after(result)`` run untimed around each."""
    stats = Stats()
    for _ in range(times):
        if before is not None:
            before()
        result, dt = timed(fn)
        stats.add(dt)
        if after is not None:
            after(result)
    return stats


# -- peak memory ------------------------------------------------------------------------------------


@dataclass
class MemoryPeak:
    """Peaks seen by a :class:`PeakMemory` sampler (bytes)."""

    rss_sum: int = 0  # peak of the summed RSS of the process tree
    shm: int = 0  # peak of the bytes allocated by this driver's segments in the shm directory
    footprint: int = 0  # peak of (summed private RSS + shm bytes), in the same sample
    samples: int = 0

    def merge(self, other: MemoryPeak) -> MemoryPeak:
        """The larger of each peak (for the peak over several runs)."""
        return MemoryPeak(
            max(self.rss_sum, other.rss_sum),
            max(self.shm, other.shm),
            max(self.footprint, other.footprint),
            self.samples + other.samples,
        )


class PeakMemory:
    """Sample memory every ``interval`` seconds in a thread; read :attr:`peak` after the block.

    >>> with PeakMemory() as mem:
    ...     data = b"x" * 50_000_000
    >>> mem.peak.rss_sum > 50_000_000
    True
    """

    def __init__(
        self,
        interval: float = 0.02,
        shm_dir: str | os.PathLike[str] = "/dev/shm",
        owner: int | None = None,
        children_every: int = 10,
    ) -> None:
        self.interval = interval
        self.shm_dir = Path(shm_dir)
        owner = os.getpid() if owner is None else owner
        self._shm_prefix = f"riera-{owner}-"
        self._children_every = max(1, children_every)
        self._me = psutil.Process()
        self._procs: list[psutil.Process] = [self._me]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peak = MemoryPeak()

    def __enter__(self) -> PeakMemory:
        self.peak = MemoryPeak()
        self._stop.clear()
        self._refresh_children()
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="riera-bench-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._sample()

    def _loop(self) -> None:
        i = 0
        while not self._stop.wait(self.interval):
            i += 1
            if i % self._children_every == 0:
                self._refresh_children()
            self._sample()

    def _refresh_children(self) -> None:
        # Listing descendants scans /proc (about a millisecond): only every few samples. Workers
        # are long-lived, so a fresh one is picked up within ``children_every * interval``.
        try:
            self._procs = [self._me, *self._me.children(recursive=True)]
        except psutil.Error:
            self._procs = [self._me]

    def _sample(self) -> None:
        rss = private = 0
        for p in self._procs:
            try:
                mi = p.memory_info()
            except psutil.Error:  # exited between listing and sampling
                continue
            rss += mi.rss
            private += max(0, mi.rss - getattr(mi, "shared", 0))
        shm = shm_bytes(self.shm_dir, self._shm_prefix)
        pk = self.peak
        pk.samples += 1
        pk.rss_sum = max(pk.rss_sum, rss)
        pk.shm = max(pk.shm, shm)
        pk.footprint = max(pk.footprint, private + shm)


def shm_bytes(directory: str | os.PathLike[str], prefix: str = "riera-") -> int:
    """Bytes allocated by the ``<prefix>*.arrow`` files in ``directory`` (0 if it is missing)."""
    total = 0
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name.startswith(prefix) and name.endswith(".arrow"):
                    try:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                    except FileNotFoundError:  # released while we looked
                        pass
    except FileNotFoundError:
        return 0
    return total


# -- formatting -------------------------------------------------------------------------------------


def fmt_bytes(n: float) -> str:
    """Binary units: ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


# -- the machine ------------------------------------------------------------------------------------


def machine_info(shm_dir: str | os.PathLike[str] = "/dev/shm") -> dict[str, Any]:
    """Cores, RAM, Python, library versions, shared-memory size, load, date."""
    import numpy
    import pyarrow

    from riera import __version__

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count() or 1
    try:
        shm_total = shutil.disk_usage(shm_dir).total
    except OSError:
        shm_total = 0
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover
        load = (0.0, 0.0, 0.0)
    return {
        "cores": os.cpu_count() or 1,
        "usable_cores": usable,
        "ram": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "pyarrow": pyarrow.__version__,
        "numpy": numpy.__version__,
        "riera": __version__,
        "shm_dir": str(shm_dir),
        "shm_total": shm_total,
        "load": load,
        "platform": platform.platform(terse=True),
        "date": _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
    }


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server process started for a study or a test; kill it after 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
