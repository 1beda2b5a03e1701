"""The checkpoint directory: the epoch log, the lock, the fencing token and the status file.

Layout of ``DIR``::

    log.sqlite     meta (job, plan, key groups, fencing token) and one row per epoch: its source
                   positions and watermark, logged *before* anything of the epoch becomes durable,
                   then marked committed once every sink holds it
    state.sqlite   keyed state (riera.stream.state)
    status.json    the query's latest metrics, rewritten every second (``riera stream status DIR``)
    lock           held (fcntl) by the running query: a second query on DIR fails at once

**Fencing.** Each start takes the next token (:meth:`CheckpointLog.acquire_fence`) and hands it to
every sink with each write; sinks refuse writes carrying an older token than the newest they saw,
so a driver that was paused (or partitioned away) and wakes up after a newer one took over cannot
commit anything.

**Faults.** ``RIERA_STREAM_CRASH=step[@epoch][,step…]`` kills the process (SIGKILL, as ``kill -9``)
at a named step of the checkpoint protocol — ``process``, ``log_positions``, ``state_durable``,
``sink_commit:<i>``, ``cleanup`` — the first time that step runs (for that epoch, if given).
The tests use it to crash between every two steps.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from riera.errors import CheckpointError, FencedError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS epochs (
    epoch INTEGER PRIMARY KEY,
    positions TEXT NOT NULL,     -- JSON: {"source index": {"partition": position}}
    watermark INTEGER,           -- event-time watermark after the epoch (ms), NULL: none
    proc_ms INTEGER NOT NULL,    -- processing time the epoch closed at (ms)
    status TEXT NOT NULL,        -- logged | committed | aborted
    logged_at REAL, committed_at REAL,
    records_in INTEGER, records_out INTEGER, attempts INTEGER DEFAULT 1
);
"""


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    positions: dict[int, dict[int, Any]]
    watermark: int | None
    proc_ms: int
    status: str


def _crash_points(spec: str) -> dict[str, int | None]:
    points: dict[str, int | None] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        step, _, epoch = item.partition("@")
        points[step] = int(epoch) if epoch else None
    return points


def fault_point(step: str, epoch: int) -> None:
    """Die like ``kill -9`` here when ``RIERA_STREAM_CRASH`` names this step (and epoch)."""
    spec = os.environ.get("RIERA_STREAM_CRASH")
    if not spec:
        return
    points = _crash_points(spec)
    if step in points and points[step] in (None, epoch):
        os.kill(os.getpid(), signal.SIGKILL)


class CheckpointLog:
    """The epoch log of one query, in ``DIR/log.sqlite``; holds ``DIR/lock`` while open."""

    def __init__(self, directory: str | Path, job: str, plan: str, key_groups: int,
                 *, leased: bool = False) -> None:  # fmt: skip
        """``leased``: a shard of a job run by several drivers (riera.stream.lease): the lease in
        Redis, not a file lock, says who may write here, and :meth:`take_fence` fences the log."""
        self.dir = Path(directory)
        self.token: int | None = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CheckpointError(
                f"checkpoint directory {self.dir}: cannot create it: {err}"
            ) from err
        self._lock = None if leased else self._take_lock()
        self.db = sqlite3.connect(str(self.dir / "log.sqlite"), timeout=30, isolation_level=None,
                                  check_same_thread=False)  # fmt: skip
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        known = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        if not known:
            self._set({"job": job, "plan": plan, "key_groups": str(key_groups), "fence": "0",
                       "created": str(time.time())})  # fmt: skip
            known = dict(self.db.execute("SELECT k, v FROM meta").fetchall())
        elif known.get("plan") != plan:
            self.close()
            raise CheckpointError(
                f"checkpoint directory {self.dir} belongs to another query (plan "
                f"{known.get('plan')}, this one is {plan}); resuming it would mix their state. "
                f"Give this query its own directory."
            )
        self.job: str = known["job"]
        self.key_groups = int(known["key_groups"])

    def _take_lock(self) -> Any:
        lock = open(self.dir / "lock", "a+")  # noqa: SIM115 (held while the query runs)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as err:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise CheckpointError(
                f"checkpoint directory {self.dir} is in use by a running query ({holder}); stop "
                f"it first, or give this query its own directory"
            ) from err
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()}")
        lock.flush()
        return lock

    def _set(self, values: dict[str, str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany(
            "INSERT INTO meta VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
            list(values.items()),
        )
        self.db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT v FROM meta WHERE k=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, **values: str | None) -> None:
        """Set (or, with None, delete) meta values, in one transaction."""
        with self._tx():
            for k, v in values.items():
                if v is None:
                    self.db.execute("DELETE FROM meta WHERE k=?", (k,))
                else:
                    self.db.execute(
                        "INSERT INTO meta VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                        (k, v),
                    )

    def acquire_fence(self) -> int:
        """The next fencing token (each start of the query takes a larger one)."""
        self.db.execute("BEGIN IMMEDIATE")
        token = int(self.db.execute("SELECT v FROM meta WHERE k='fence'").fetchone()[0]) + 1
        self.db.execute("UPDATE meta SET v=? WHERE k='fence'", (str(token),))
        self.db.execute("COMMIT")
        return token

    def take_fence(self, token: int) -> None:
        """A leased shard's new holder: from now on only ``token`` (or a newer one) writes here."""
        self.db.execute("BEGIN IMMEDIATE")
        held = int(self.db.execute("SELECT v FROM meta WHERE k='fence'").fetchone()[0])
        if held > token:
            self.db.execute("ROLLBACK")
            raise FencedError(f"checkpoint {self.dir} is fenced at token {held}; this driver "
                              f"holds {token}: another driver took the shard over (or the "
                              f"coordinator lost its tokens)", held_token=held)  # fmt: skip
        self.db.execute("UPDATE meta SET v=? WHERE k='fence'", (str(token),))
        self.db.execute("COMMIT")
        self.token = token

    def check_fence(self) -> None:
        """Raise :class:`FencedError` if a newer holder took the shard over (leased only)."""
        if self.token is None:
            return
        held = int(self.db.execute("SELECT v FROM meta WHERE k='fence'").fetchone()[0])
        if held != self.token:
            raise FencedError(f"checkpoint {self.dir} is fenced at token {held}; this driver "
                              f"holds {self.token}: another driver took the shard over")  # fmt: skip

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction; for a leased shard, refused (FencedError) once a newer holder
        took the log over — checked inside the transaction, so no write slips in after it."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            self.check_fence()
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _write(self, sql: str, args: tuple[Any, ...]) -> None:
        with self._tx():
            self.db.execute(sql, args)

    # -- epochs -----------------------------------------------------------------------------------
    def log_epoch(self, epoch: int, positions: dict[int, dict[int, Any]], watermark: int | None,
                  proc_ms: int, records_in: int) -> None:  # fmt: skip
        """Step 1 of a checkpoint: the epoch's source positions and watermark."""
        self._write(
            "INSERT INTO epochs (epoch, positions, watermark, proc_ms, status, logged_at, "
            "records_in) VALUES (?, ?, ?, ?, 'logged', ?, ?) ON CONFLICT(epoch) DO UPDATE SET "
            "attempts=attempts+1",
            (epoch, json.dumps(positions), watermark, proc_ms, time.time(), records_in),
        )

    def mark_committed(self, epoch: int, records_out: int) -> None:
        self._write(
            "UPDATE epochs SET status='committed', committed_at=?, records_out=? WHERE epoch=?",
            (time.time(), records_out, epoch),
        )

    def mark_aborted(self, epoch: int) -> None:
        """Note that the epoch was given up (for the record only: recovery replays it with the
        same boundaries all the same, since some sink may hold it already)."""
        self._write("UPDATE epochs SET status='aborted' WHERE epoch=? AND status='logged'",
                    (epoch,))  # fmt: skip

    def epochs_after(self, epoch: int) -> list[EpochRecord]:
        rows = self.db.execute(
            "SELECT epoch, positions, watermark, proc_ms, status FROM epochs WHERE epoch>? "
            "ORDER BY epoch",
            (epoch,),
        ).fetchall()
        return [_record(r) for r in rows]

    def get(self, epoch: int) -> EpochRecord | None:
        row = self.db.execute(
            "SELECT epoch, positions, watermark, proc_ms, status FROM epochs WHERE epoch<=? "
            "ORDER BY epoch DESC LIMIT 1",
            (epoch,),
        ).fetchone()
        return _record(row) if row else None

    def last_epoch(self) -> int:
        row = self.db.execute("SELECT MAX(epoch) FROM epochs").fetchone()
        return -1 if row[0] is None else int(row[0])

    def prune(self, below: int) -> None:
        """Forget epochs older than ``below`` (no recovery can start before it)."""
        self._write("DELETE FROM epochs WHERE epoch<?", (below,))

    def write_status(self, status: dict[str, Any]) -> None:
        tmp = self.dir / f"status.json.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(status, default=str))
        os.replace(tmp, self.dir / "status.json")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.db.close()
        if self._lock is not None:
            with contextlib.suppress(Exception):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
                self._lock.close()


def _record(row: tuple[Any, ...]) -> EpochRecord:
    positions = {
        int(s): {int(p): v for p, v in parts.items()} for s, parts in json.loads(row[1]).items()
    }
    return EpochRecord(int(row[0]), positions, row[2], int(row[3]), str(row[4]))


def read_status(directory: str | Path) -> dict[str, Any]:
    """The status a running (or finished) query last wrote in its checkpoint directory."""
    path = Path(directory) / "status.json"
    if not path.exists():
        raise CheckpointError(
            f"{directory}: no status.json: not a checkpoint directory, or its query never started"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data
