"""The machine's figures for the dashboard's metrics panel: system RAM, the shared-memory
directory (and how much of it Riera's own segments take), and the dashboard process itself.

One reading serves every tab: a reading is kept for ``max_age_s`` (1 s) and shared, under a
lock, so a page open in many tabs costs one ``psutil`` call a second, not one per tab and frame.
The dict returned is that shared reading: callers must not change it.

- **RAM** is ``psutil.virtual_memory()``: total, available, and the percentage in use
  (``(total - available) / total``, the figure the document logged per message).
- **Shared memory** is ``shutil.disk_usage`` of ``/dev/shm``, plus Riera's segments there: files
  named ``riera-*`` (the exchange's ``riera-<pid>-<run>-…`` segments; the drivers' empty
  ``riera-<pid>.lock`` files are not segments and are not counted). ``riera_bytes`` is what they
  occupy (allocated blocks, comparable to ``used``); ``riera_size`` their sizes as created. Where
  the directory does not exist (macOS), the whole part is ``None``.
- **The process** is the dashboard's own: USS (memory only it holds, what it would give back)
  and PSS (its fair share of shared pages) from ``memory_full_info()``, RSS always; where the
  full figures are not allowed, USS and PSS are ``None``. CPU % is since the previous reading
  (the first reading: since the process started). The keys match the per-process rows of a
  query's status (``cpu_percent``, ``uss_bytes``, ``pss_bytes``, ``rss_bytes``), so one panel
  draws both.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["SHM_DIR", "system_metrics"]

SHM_DIR = Path("/dev/shm")
MAX_AGE_S = 1.0

_lock = threading.Lock()
_cache: dict[Path, tuple[float, dict[str, Any]]] = {}
_me: Any = None  # this process's psutil.Process: its cpu_percent counts since the last call


def system_metrics(
    shm_dir: str | os.PathLike[str] | None = None, max_age_s: float = MAX_AGE_S
) -> dict[str, Any]:
    """RAM, shared memory and this process's memory and CPU, read at most once per ``max_age_s``
    (shared between callers and threads; ``max_age_s=0`` reads afresh).

    ``shm_dir``: the shared-memory directory to report (default ``/dev/shm``).

    >>> m = system_metrics()
    >>> sorted(m)
    ['process', 'ram', 'sampled_at', 'shm']
    >>> 0 <= m["ram"]["used_percent"] <= 100 and m["process"]["rss_bytes"] > 0
    True
    >>> system_metrics() is m  # within a second: the same reading
    True
    """
    directory = Path(shm_dir) if shm_dir is not None else SHM_DIR
    with _lock:  # one reader at a time; the others wait and share its reading
        cached = _cache.get(directory)
        if cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        reading = {"sampled_at": time.time(), "ram": _ram(), "shm": _shm(directory),
                   "process": _process()}  # fmt: skip
        _cache[directory] = (time.monotonic(), reading)
        return reading


def _ram() -> dict[str, Any]:
    import psutil

    vm = psutil.virtual_memory()
    return {"total": vm.total, "available": vm.available, "used_percent": vm.percent}


def _shm(directory: Path) -> dict[str, Any] | None:
    try:
        usage = shutil.disk_usage(directory)
    except (FileNotFoundError, NotADirectoryError):
        return None
    count = occupied = size = 0
    try:
        with os.scandir(directory) as listing:
            entries = [e for e in listing
                       if e.name.startswith("riera-") and not e.name.endswith(".lock")]  # fmt: skip
    except OSError:  # not ours to list: the usage still says something
        entries = []
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            st = entry.stat(follow_symlinks=False)
        except FileNotFoundError:  # released while we looked
            continue
        count += 1
        size += st.st_size
        occupied += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return {"path": str(directory), "total": usage.total, "used": usage.used, "free": usage.free,
            "riera_segments": count, "riera_bytes": occupied, "riera_size": size}  # fmt: skip


def _process() -> dict[str, Any]:
    import psutil

    global _me
    if _me is None or _me.pid != os.getpid():  # a forked child measures itself
        _me = psutil.Process()
        first = True
    else:
        first = False
    with _me.oneshot():
        try:
            mem = _me.memory_full_info()
            uss, pss = mem.uss, getattr(mem, "pss", None)
        except (psutil.AccessDenied, AttributeError):
            mem, uss, pss = _me.memory_info(), None, None
        cpu = _me.cpu_percent(None)
        if first:  # cpu_percent's first call has nothing to compare with: the lifetime mean
            times = _me.cpu_times()
            alive = max(time.time() - _me.create_time(), 1e-3)
            cpu = round(100.0 * (times.user + times.system) / alive, 1)
    return {"pid": _me.pid, "cpu_percent": cpu, "uss_bytes": uss, "pss_bytes": pss,
            "rss_bytes": mem.rss}  # fmt: skip
