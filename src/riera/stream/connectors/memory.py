"""``memory://NAME``: the embedded broker, Riera's default when no Redis or Kafka is configured.

A broker is one SQLite database in shared memory (``/dev/shm/riera-broker-<uid>/NAME.sqlite``, or
``RIERA_BROKER_DIR``): a partitioned log of messages plus, for upsert sinks, the latest row per key.
Every process of one machine sees the same broker, so ``riera stream produce`` in one terminal feeds
``riera stream wordcount`` in another, and a killed driver finds its input where it left it. It lives
as long as the machine (tmpfs); ``Broker.drop`` removes it.

Readers in the producing process are woken at once; other processes poll every millisecond.
Positions are offsets: the offset of the next message to read in each partition.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from riera.errors import FencedError, PlanError, SourceTrimmedError
from riera.stream.connectors import base
from riera.stream.connectors.rows import encode_rows

_WAKE: dict[str, threading.Condition] = {}
_WAKE_LOCK = threading.Lock()


def broker_dir() -> Path:
    """Where ``memory://`` brokers live (``RIERA_BROKER_DIR`` overrides)."""
    env = os.environ.get("RIERA_BROKER_DIR")
    if env:
        return Path(env)
    shm = Path("/dev/shm")
    root = shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    return root / f"riera-broker-{os.getuid()}"


def _condition(path: str) -> threading.Condition:
    with _WAKE_LOCK:
        return _WAKE.setdefault(path, threading.Condition())


class Broker:
    """One embedded broker: a partitioned log and an upsert table in one SQLite file."""

    def __init__(self, name: str, partitions: int | None = None) -> None:
        if not name or "/" in name or name.startswith("."):
            raise PlanError(
                f"memory://{name}: a broker name is one path segment, e.g. memory://words"
            )
        folder = broker_dir()
        folder.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.path = str(folder / f"{name}.sqlite")
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                  check_same_thread=False)  # fmt: skip
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            """
                CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
                CREATE TABLE IF NOT EXISTS log (part INTEGER, off INTEGER, key BLOB, value BLOB,
                    ts REAL, PRIMARY KEY (part, off)) WITHOUT ROWID;
                CREATE TABLE IF NOT EXISTS low (part INTEGER PRIMARY KEY, off INTEGER);
                CREATE TABLE IF NOT EXISTS latest (k TEXT PRIMARY KEY, row TEXT, epoch INTEGER,
                    seq INTEGER);
                CREATE TABLE IF NOT EXISTS commits (job TEXT PRIMARY KEY, epoch INTEGER,
                    seq INTEGER, fence INTEGER);
                """
        )
        with self.transaction():
            row = self.db.execute("SELECT v FROM meta WHERE k='partitions'").fetchone()
            if row is None:
                self.partitions = partitions or 1
                self.db.execute(
                    "INSERT INTO meta VALUES ('partitions', ?)", (str(self.partitions),)
                )
            else:
                self.partitions = int(row[0])
                if partitions is not None and partitions != self.partitions:
                    raise PlanError(
                        f"memory://{name} has {self.partitions} partitions, not {partitions}; "
                        f"drop the ?partitions= option or use another name"
                    )
        self._wake = _condition(self.path)
        self._sent = 0

    def transaction(self) -> Any:
        return _Tx(self.db)

    # -- the log ----------------------------------------------------------------------------------
    def append(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        rows = []
        with self.transaction():
            ends = dict(self.db.execute("SELECT part, MAX(off) FROM log GROUP BY part").fetchall())
            lows = dict(self.db.execute("SELECT part, off FROM low").fetchall())
            for key, value, ts in messages:
                p = base.partition_of(key, self.partitions, self._sent)
                self._sent += 1
                last = ends.get(p)
                off = (last + 1) if last is not None else lows.get(p, 0)
                ends[p] = off
                rows.append((p, off, key, value, ts))
            self.db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)", rows)
        with self._wake:
            self._wake.notify_all()

    def read(self, part: int, start: int, limit: int, upto: int | None) -> list[tuple[Any, ...]]:
        if upto is None:
            sql = "SELECT off, key, value, ts FROM log WHERE part=? AND off>=? ORDER BY off LIMIT ?"
            return self.db.execute(sql, (part, start, limit)).fetchall()
        sql = ("SELECT off, key, value, ts FROM log WHERE part=? AND off>=? AND off<? "
               "ORDER BY off LIMIT ?")  # fmt: skip
        return self.db.execute(sql, (part, start, upto, limit)).fetchall()

    def low(self, part: int) -> int:
        row = self.db.execute("SELECT off FROM low WHERE part=?", (part,)).fetchone()
        return int(row[0]) if row else 0

    def end(self, part: int) -> int:
        row = self.db.execute("SELECT MAX(off) FROM log WHERE part=?", (part,)).fetchone()
        return self.low(part) if row[0] is None else int(row[0]) + 1

    def trim(self, part: int, below: int) -> None:
        """Delete the messages before offset ``below`` (what ``XTRIM MINID`` does in Redis)."""
        with self.transaction():
            self.db.execute("DELETE FROM log WHERE part=? AND off<?", (part, below))
            self.db.execute(
                "INSERT INTO low VALUES (?, ?) ON CONFLICT(part) DO UPDATE SET off=MAX(off, ?)",
                (part, below, below),
            )

    def wait(self, timeout: float) -> None:
        with self._wake:
            self._wake.wait(timeout)

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def drop(name: str) -> None:
        """Delete the broker ``name`` (its log, its upserts, its commit records)."""
        for suffix in ("", "-wal", "-shm"):
            Path(broker_dir() / f"{name}.sqlite{suffix}").unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # the last broker gone: no empty folder left in tmpfs
            broker_dir().rmdir()


class _Tx:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, kind: Any, *_: Any) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _broker(url: base.Url) -> Broker:
    name = (url.host or "") + url.path.rstrip("/")
    parts = url.int_option("partitions", 0) if "partitions" in url.query else None
    return Broker(name, parts)


class MemoryReader:
    def __init__(self, broker: Broker, start: dict[int, int]) -> None:
        self.broker = broker
        self._pos = dict(start)

    def poll(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
             ) -> list[base.Message]:  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            out: list[base.Message] = []
            for part, pos in self._pos.items():
                if upto is not None and part not in upto:
                    continue
                if len(out) >= max_records:
                    break
                bound = None if upto is None else int(upto[part])
                if bound is not None and pos >= bound:
                    continue
                for off, key, value, ts in self.broker.read(
                    part, pos, max_records - len(out), bound
                ):
                    out.append(base.Message(value, key, ts, part, off + 1))
                if out and out[-1].partition == part:
                    self._pos[part] = out[-1].position
            remaining = deadline - time.monotonic()
            if out or remaining <= 0:
                return out
            self.broker.wait(min(remaining, 0.001))

    def poll_raw(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
                 ) -> base.RawBatch | None:  # fmt: skip
        """:meth:`poll` as columns (no object per message)."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows: list[tuple[Any, ...]] = []
            parts: list[int] = []
            for part, pos in self._pos.items():
                if (upto is not None and part not in upto) or len(rows) >= max_records:
                    continue
                bound = None if upto is None else int(upto[part])
                if bound is not None and pos >= bound:
                    continue
                got = self.broker.read(part, pos, max_records - len(rows), bound)
                if got:
                    rows += got
                    parts += [part] * len(got)
                    self._pos[part] = got[-1][0] + 1
            remaining = deadline - time.monotonic()
            if rows:
                return base.RawBatch(
                    [r[2] for r in rows],
                    [r[1] for r in rows],
                    np.array([np.nan if r[3] is None else r[3] for r in rows], np.float64),
                    np.array(parts, np.int64),
                )
            if remaining <= 0:
                return None
            self.broker.wait(min(remaining, 0.001))

    def positions(self) -> dict[int, Any]:
        return dict(self._pos)

    def close(self) -> None:
        pass


class MemorySource:
    """Reads a ``memory://NAME`` broker's partitions by offset."""

    replayable = True

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.broker = _broker(url)

    def partitions(self) -> int:
        return self.broker.partitions

    def reader(self, start: dict[int, Any]) -> MemoryReader:
        begin: dict[int, int] = {}
        for part, pos in start.items():
            low = self.broker.low(part)
            if pos is None:
                begin[part] = low
            elif int(pos) < low:
                raise SourceTrimmedError(
                    f"{self.url}: partition {part} was trimmed to offset {low}, but the query must "
                    f"resume from offset {pos}: {low - int(pos)} records are gone. Restart the query "
                    f"with a new checkpoint directory to read from what remains."
                )
            else:
                begin[part] = int(pos)
        return MemoryReader(self.broker, begin)

    def release(self, upto: dict[int, Any]) -> None:
        pass  # the log is kept: other queries may read it; Broker.trim trims on demand

    def lag(self, positions: dict[int, Any]) -> dict[int, int | None]:
        return {p: max(0, self.broker.end(p) - int(pos or 0)) for p, pos in positions.items()}

    def close(self) -> None:
        self.broker.close()


class MemoryProducer:
    def __init__(self, url: base.Url) -> None:
        self.broker = _broker(url)

    def send(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        self.broker.append(messages)

    def close(self) -> None:
        self.broker.close()


class MemorySink:
    """Writes rows to a ``memory://NAME`` broker: each row is appended to its log as a JSON message
    (so a downstream query or ``riera stream counts`` can read it), and, for an upsert sink, kept as
    the latest row of its key. ``?mode=append`` keeps only the log."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        mode = url.query.get("mode", "upsert")
        if mode not in ("upsert", "append"):
            raise PlanError(f"{url.raw}: ?mode= must be upsert or append; got {mode!r}")
        self.mode: Literal["upsert", "append"] = mode  # type: ignore[assignment]
        self.broker = _broker(url)
        self.job = ""
        self.key: tuple[str, ...] = ()

    def open(self, job: str, key: Sequence[str]) -> None:
        self.job, self.key = job, tuple(key)

    def committed(self) -> tuple[int, int]:
        row = self.broker.db.execute(
            "SELECT epoch, seq FROM commits WHERE job=?", (self.job,)
        ).fetchone()
        return (int(row[0]), int(row[1])) if row else (-1, -1)

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        now = time.time() * 1000
        with self.broker.transaction() as db:
            row = db.execute(
                "SELECT epoch, seq, fence FROM commits WHERE job=?", (self.job,)
            ).fetchone()
            if row is not None:
                if fence < row[2]:
                    raise FencedError(
                        f"{self.url}: job {self.job!r} is fenced at token {row[2]}; this driver "
                        f"holds {fence}: another driver took the job over"
                    )
                if (epoch, seq) <= (row[0], row[1]):
                    if fence > row[2]:  # skipped, but its token fences older drivers out
                        db.execute("UPDATE commits SET fence=? WHERE job=?", (fence, self.job))
                    return False
            messages = []
            for key, payload in encode_rows(rows, self.key if self.mode == "upsert" else ()):
                if self.mode == "upsert":
                    done = db.execute(
                        "INSERT INTO latest VALUES (?, ?, ?, ?) ON CONFLICT(k) DO UPDATE SET "
                        "row=excluded.row, epoch=excluded.epoch, seq=excluded.seq "
                        "WHERE (latest.epoch, latest.seq) <= (excluded.epoch, excluded.seq)",
                        (key, payload, epoch, seq),
                    )
                    if done.rowcount == 0:
                        continue  # an older version: never replaces a newer one
                messages.append((key.encode() if key else None, payload.encode(), now))
            db.execute(
                "INSERT INTO commits VALUES (?, ?, ?, ?) ON CONFLICT(job) DO UPDATE SET "
                "epoch=excluded.epoch, seq=excluded.seq, fence=excluded.fence",
                (self.job, epoch, seq, fence),
            )
            self._append_locked(db, messages)
        with self.broker._wake:
            self.broker._wake.notify_all()
        return True

    def _append_locked(self, db: sqlite3.Connection, messages: list[Any]) -> None:
        if not messages:
            return
        ends = dict(db.execute("SELECT part, MAX(off) FROM log GROUP BY part").fetchall())
        out = []
        for key, value, ts in messages:
            p = base.partition_of(key, self.broker.partitions, self.broker._sent)
            self.broker._sent += 1
            last = ends.get(p)
            off = (last + 1) if last is not None else self.broker.low(p)
            ends[p] = off
            out.append((p, off, key, value, ts))
        db.executemany("INSERT INTO log VALUES (?, ?, ?, ?, ?)", out)

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest row per key (upsert sinks), keys in the order they first arrived."""
        rows = self.broker.db.execute("SELECT k, row FROM latest ORDER BY rowid").fetchall()
        return {k: json.loads(r) for k, r in rows}

    def close(self) -> None:
        self.broker.close()
