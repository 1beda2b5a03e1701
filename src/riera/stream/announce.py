"""Producers announce themselves, so the dashboard can show them among a query's processes.

A producer process (``riera stream produce``, :func:`riera.apps.producers.produce` with a URL)
writes ``<home>/producers/<pid>-<n>.json`` — its pid, its process's start time, the stream URL it
sends to and its command line — for as long as it sends, and removes it when it stops. The
dashboard lists the announcements whose URL is the query's source and samples those processes
itself (CPU, USS, PSS), since they are not children of the query's driver. An announcement whose
process is gone (killed with ``kill -9``) is ignored and removed by the next reader; a reused pid
is told apart by the start time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

__all__ = ["announce", "announced"]

_counter = itertools.count()


def _directory(home: Path | None) -> Path:
    if home is None:
        from riera.config import load_settings

        home = load_settings().home
    return Path(home) / "producers"


@contextlib.contextmanager
def announce(url: str, home: Path | None = None) -> Iterator[Path | None]:
    """Announce this process as a producer of ``url`` while the block runs (best effort: a home
    that cannot be written only means the dashboard will not list it)."""
    path: Path | None = None
    try:
        directory = _directory(home)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{os.getpid()}-{next(_counter)}.json"
        me = psutil.Process()
        record = {"pid": me.pid, "create_time": me.create_time(), "url": url,
                  "cmd": " ".join(sys.argv)[:300], "started_at": time.time()}  # fmt: skip
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, path)
    except (OSError, psutil.Error):
        path = None
    try:
        yield path
    finally:
        if path is not None:
            with contextlib.suppress(OSError):
                path.unlink()


def announced(url: str | None = None, home: Path | None = None, *, prune: bool = True
              ) -> list[dict[str, Any]]:  # fmt: skip
    """The live producers' announcements (of ``url`` only, when given), oldest first; with
    ``prune``, those of dead processes are removed."""
    directory = _directory(home)
    found = []
    try:
        entries = sorted(directory.glob("*.json"))
    except OSError:
        return []
    for entry in entries:
        try:
            record = json.loads(entry.read_text())
            alive = psutil.Process(int(record["pid"])).create_time() == record["create_time"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written or removed: the next reading sees it whole
        except psutil.Error:
            alive = False
        if not alive:
            if prune:
                with contextlib.suppress(OSError):
                    entry.unlink()
            continue
        if url is None or record.get("url") == url:
            found.append(record)
    return sorted(found, key=lambda r: r.get("started_at", 0))
