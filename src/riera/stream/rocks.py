"""The ``rocksdict`` state store (``pip install 'riera[rocksdict]'``): RocksDB for state larger
than SQLite handles well, same contract (:class:`riera.stream.state.StateStore`).

Keys are ``op \\0 key-group(4 bytes) key \\0 epoch(8 bytes, big-endian)``, so one key's versions
are adjacent and in epoch order; an epoch's changes go in one ``WriteBatch`` (atomic) with the
store's epoch; the WAL is synced on every batch.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from riera.errors import CheckpointError, MissingExtraError
from riera.stream.state import Change

_META = b"\x00meta\x00"


def _split(raw: bytes) -> tuple[bytes, int]:
    """(op, kg, key) prefix and epoch of a stored key."""
    return raw[:-9], struct.unpack(">q", raw[-8:])[0]


class RocksStateStore:
    def __init__(self, path: str | Path, key_groups: int) -> None:
        try:
            from rocksdict import Options, Rdict, WriteBatch, WriteOptions
        except ImportError as err:
            raise MissingExtraError(
                "state_store='rocksdict' needs rocksdict: pip install 'riera[rocksdict]'"
            ) from err
        self._WriteBatch = WriteBatch
        self.path = Path(path)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        try:
            self.db: Any = Rdict(str(self.path), opts)  # raw_mode: bytes keys and values
        except Exception as err:  # rocksdict raises its own exception types
            raise CheckpointError(f"state store {self.path}: cannot open it: {err}") from err
        self._sync = WriteOptions()
        self._sync.sync = True
        known = self.db.get(_META + b"key_groups")
        if known is None:
            self.db[_META + b"key_groups"] = str(key_groups).encode()
            self.key_groups = key_groups
        else:
            self.key_groups = int(known)

    @staticmethod
    def _key(op: str, kg: int, key: bytes, epoch: int) -> bytes:
        return (
            op.encode() + b"\x00" + struct.pack(">I", kg) + key + b"\x00" + struct.pack(">q", epoch)
        )

    def epoch(self) -> int:
        raw = self.db.get(_META + b"epoch")
        return -1 if raw is None else int(raw)

    def put(self, epoch: int, changes: Iterable[Change]) -> None:
        batch = self._WriteBatch(raw_mode=True)
        for op, kg, key, value in changes:
            stored = b"" if value is None else b"\x01" + pickle.dumps(value, protocol=5)
            batch.put(self._key(op, kg, key, epoch), stored)
        batch.put(_META + b"epoch", str(epoch).encode())
        self.db.write(batch, self._sync)

    def _versions(self, op: str) -> Iterator[tuple[bytes, int, bytes]]:
        prefix = op.encode() + b"\x00"
        for raw, value in self.db.items(from_key=prefix):
            if not raw.startswith(prefix):
                break
            head, epoch = _split(raw)
            yield head, epoch, value

    def load(self, op: str, upto: int, groups: Iterable[int] | None = None
             ) -> Iterator[tuple[bytes, Any]]:  # fmt: skip
        wanted = None if groups is None else set(groups)
        skip = len(op.encode()) + 1
        best: dict[bytes, bytes] = {}
        for head, epoch, value in self._versions(op):
            if epoch <= upto:
                best[head] = value  # versions come in epoch order: the last one ≤ upto wins
        for head, value in best.items():
            kg = struct.unpack(">I", head[skip : skip + 4])[0]
            if (wanted is None or kg in wanted) and value:
                yield head[skip + 4 :], pickle.loads(value[1:])

    def _ops(self) -> set[str]:
        ops = set()
        for raw in self.db.keys():  # noqa: SIM118 (an Rdict, iterated by key)
            key = bytes(raw)
            if not key.startswith(_META):
                ops.add(key.split(b"\x00", 1)[0].decode())
        return ops

    def rollback(self, after: int) -> None:
        batch = self._WriteBatch(raw_mode=True)
        for op in self._ops():
            for head, epoch, _ in self._versions(op):
                if epoch > after:
                    batch.delete(head + b"\x00" + struct.pack(">q", epoch))
        batch.put(_META + b"epoch", str(min(after, self.epoch())).encode())
        self.db.write(batch, self._sync)

    def compact(self, upto: int) -> None:
        batch = self._WriteBatch(raw_mode=True)
        for op in self._ops():
            previous: tuple[bytes, int, bytes] | None = None
            for head, epoch, value in self._versions(op):
                if previous is not None and previous[0] == head and epoch <= upto:
                    batch.delete(previous[0] + b"\x00" + struct.pack(">q", previous[1]))
                previous = (head, epoch, value)
                # a tombstone that is its key's newest version ≤ upto hides nothing: drop it
            self._drop_tombstones(op, upto, batch)
        self.db.write(batch, self._sync)

    def _drop_tombstones(self, op: str, upto: int, batch: Any) -> None:
        last: dict[bytes, tuple[int, bytes]] = {}
        for head, epoch, value in self._versions(op):
            last[head] = (epoch, value)
        for head, (epoch, value) in last.items():
            if not value and epoch <= upto:
                batch.delete(head + b"\x00" + struct.pack(">q", epoch))

    def stats(self) -> dict[str, int]:
        keys = 0
        for op in self._ops():
            last: dict[bytes, bytes] = {}
            for head, _, value in self._versions(op):
                last[head] = value
            keys += sum(1 for v in last.values() if v)
        size = sum(p.stat().st_size for p in self.path.glob("*") if p.is_file())
        return {"keys": keys, "bytes": size}

    def close(self) -> None:
        self.db.close()
