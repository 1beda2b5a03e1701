"""Keyed state: versioned by epoch in a local store, split into a fixed number of key groups.

Every stateful operator keeps its state as ``key -> value`` pairs (pickled Python values: the
partial states of the batch engine's mergeable aggregations, a window's partials, a session list).
A key belongs to one of ``key_groups`` groups, fixed when the query first starts (like Flink's
max parallelism): rescaling moves whole groups between workers and never rehashes a key, so a
query restarted with 1, 2 or 4 workers finds every key where it was.

**Versions.** :meth:`StateStore.put` writes the changes of one epoch in one transaction, as new
versions tagged with the epoch; older versions stay until :meth:`compact`. That is what lets
recovery go back to the state of any epoch not yet committed by every sink (sinks commit *after*
the state is durable, so after a crash between the two the state is one epoch ahead of a sink):
:meth:`rollback` drops the versions after the epoch to restore, and the epochs after it are
replayed from their logged source positions. A deleted key is a tombstone (``None``).

The default store is SQLite (stdlib, one file in the checkpoint directory, WAL). Stores are
found by name (:func:`open_state_store`); every store passes ``tests/stream/test_state_conformance.py``.
"""

from __future__ import annotations

import contextlib
import pickle
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import xxhash

from riera.errors import CheckpointError, FencedError, PlanError

Change = tuple[str, int, bytes, Any]  # operator, key group, key (encoded), value (None: deleted)


def encode_key(key: tuple[Any, ...]) -> bytes:
    """A key as stored: pickle of the tuple (stable for the scalars keys are made of)."""
    return pickle.dumps(key, protocol=5)


def decode_key(raw: bytes) -> tuple[Any, ...]:
    key: tuple[Any, ...] = pickle.loads(raw)
    return key


def key_group(raw_key: bytes, groups: int) -> int:
    return xxhash.xxh64_intdigest(raw_key) % groups


@runtime_checkable
class StateStore(Protocol):
    """Where keyed state becomes durable, one epoch at a time."""

    key_groups: int

    def epoch(self) -> int:
        """The last epoch whose changes are durable (-1: none)."""

    def put(self, epoch: int, changes: Iterable[Change]) -> None:
        """Make the changes of ``epoch`` durable, atomically (all or none), and record the epoch."""

    def load(self, op: str, upto: int, groups: Iterable[int] | None = None
             ) -> Iterator[tuple[bytes, Any]]:  # fmt: skip
        """The live ``(key, value)`` pairs of operator ``op`` as of epoch ``upto`` (the newest
        version ≤ upto per key; tombstones left out), restricted to key ``groups`` if given."""

    def rollback(self, after: int) -> None:
        """Forget every version written for an epoch after ``after``."""

    def compact(self, upto: int) -> None:
        """Drop versions no restore can need: those replaced by a newer version ≤ ``upto``."""

    def stats(self) -> dict[str, int]:
        """``keys`` (live) and ``bytes`` (on disk)."""

    def close(self) -> None: ...


class SqliteStateStore:
    """The default store: one SQLite file, WAL, synchronous=FULL so a committed epoch survives a
    power cut, not only a killed process."""

    def __init__(self, path: str | Path, key_groups: int) -> None:
        self.path = Path(path)
        try:
            self.db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                      check_same_thread=False)  # fmt: skip
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(
                """
                CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
                CREATE TABLE IF NOT EXISTS state (op TEXT, kg INTEGER, key BLOB, epoch INTEGER,
                    value BLOB, PRIMARY KEY (op, kg, key, epoch)) WITHOUT ROWID;
                """
            )
        except sqlite3.DatabaseError as err:
            raise CheckpointError(f"state store {self.path}: cannot open it: {err}") from err
        row = self.db.execute("SELECT v FROM meta WHERE k='key_groups'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta VALUES ('key_groups', ?)", (str(key_groups),))
            self.key_groups = key_groups
        else:
            self.key_groups = int(row[0])
        self.token: int | None = None  # a leased shard's fencing token (take_fence)

    def take_fence(self, token: int) -> None:
        """A leased shard's new holder: from now on every write by an older token is refused
        (:class:`FencedError`), inside the write's own transaction."""
        with self._tx(check=False):
            row = self.db.execute("SELECT v FROM meta WHERE k='fence'").fetchone()
            if row is not None and int(row[0]) > token:
                raise FencedError(f"state store {self.path} is fenced at token {row[0]}; this "
                                  f"driver holds {token}: another driver took the shard over",
                                  held_token=int(row[0]))  # fmt: skip
            self.db.execute(
                "INSERT INTO meta VALUES ('fence', ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                (str(token),),
            )
        self.token = token

    @contextlib.contextmanager
    def _tx(self, check: bool = True) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if check and self.token is not None:
                row = self.db.execute("SELECT v FROM meta WHERE k='fence'").fetchone()
                if row is not None and int(row[0]) != self.token:
                    raise FencedError(
                        f"state store {self.path} is fenced at token {row[0]}; this driver "
                        f"holds {self.token}: another driver took the shard over"
                    )
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def epoch(self) -> int:
        row = self.db.execute("SELECT v FROM meta WHERE k='epoch'").fetchone()
        return int(row[0]) if row else -1

    def put(self, epoch: int, changes: Iterable[Change]) -> None:
        rows = [
            (op, kg, key, epoch, None if value is None else pickle.dumps(value, protocol=5))
            for op, kg, key, value in changes
        ]
        with self._tx():
            self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?, ?, ?, ?)", rows)
            self.db.execute(
                "INSERT INTO meta VALUES ('epoch', ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                (str(epoch),),
            )

    def load(self, op: str, upto: int, groups: Iterable[int] | None = None
             ) -> Iterator[tuple[bytes, Any]]:  # fmt: skip
        sql = ("SELECT key, value, MAX(epoch) FROM state WHERE op=? AND epoch<=? "
               "{where} GROUP BY kg, key")  # fmt: skip
        params: list[Any] = [op, upto]
        where = ""
        if groups is not None:
            chosen = sorted(set(groups))
            where = f"AND kg IN ({','.join('?' * len(chosen))})" if chosen else "AND 0"
            params += chosen
        for key, value, _ in self.db.execute(sql.format(where=where), params):
            if value is not None:
                yield key, pickle.loads(value)

    def rollback(self, after: int) -> None:
        with self._tx():
            self.db.execute("DELETE FROM state WHERE epoch>?", (after,))
            self.db.execute(
                "INSERT INTO meta VALUES ('epoch', ?) ON CONFLICT(k) DO UPDATE SET v=excluded.v",
                (str(min(after, self.epoch())),),
            )

    def compact(self, upto: int) -> None:
        with self._tx():
            self._compact(upto)

    def _compact(self, upto: int) -> None:
        # A version is dead when a newer version ≤ upto of the same key exists; a tombstone that
        # is itself the newest version ≤ upto is dead too (nothing older can be restored).
        self.db.execute(
            """DELETE FROM state WHERE epoch<=? AND (
                 EXISTS (SELECT 1 FROM state n WHERE n.op=state.op AND n.kg=state.kg
                         AND n.key=state.key AND n.epoch>state.epoch AND n.epoch<=?)
                 OR (value IS NULL AND NOT EXISTS (SELECT 1 FROM state n WHERE n.op=state.op
                         AND n.kg=state.kg AND n.key=state.key AND n.epoch>state.epoch)))""",
            (upto, upto),
        )

    def stats(self) -> dict[str, int]:
        keys = self.db.execute(
            "SELECT COUNT(*) FROM (SELECT value, MAX(epoch) FROM state GROUP BY op, kg, key) "
            "WHERE value IS NOT NULL"
        ).fetchone()[0]
        size = sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())
        return {"keys": int(keys), "bytes": int(size)}

    def close(self) -> None:
        self.db.close()


STORES = ("sqlite", "rocksdict")


def open_state_store(kind: str, directory: Path, key_groups: int) -> StateStore:
    """The state store ``kind`` keeping its files in ``directory``."""
    if kind == "sqlite":
        return SqliteStateStore(directory / "state.sqlite", key_groups)
    if kind == "rocksdict":
        from riera.stream.rocks import RocksStateStore

        return RocksStateStore(directory / "state.rocks", key_groups)
    raise PlanError(f"state store must be one of {list(STORES)}; got {kind!r}")
