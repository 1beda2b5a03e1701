"""The contracts every stream source and sink meets, and the registry that finds them by URL.

**Sources** are partitioned logs. The engine assigns partitions itself and reads by explicit
positions, never through a broker-side cursor: a position is JSON data (a Redis entry ID, an
offset, ``[file, byte]``) saved in the checkpoint log at each epoch, and a restarted query reads
again from exactly there. A replayable source can also stop exactly at a logged position
(``upto``), which is how recovery replays an epoch with the same boundaries.

**Sinks** commit each write atomically, idempotently and fenced:

- a write is identified by ``(epoch, seq)``; the sink stores, in the same atomic step as the data,
  the last identifier it applied for the job, and skips any write at or below it — so a write
  replayed after a crash is applied once;
- ``seq == FINAL`` marks an epoch complete: :meth:`Sink.committed` is the last such epoch;
- every write carries the job's *fencing token*; the sink keeps the largest token it has seen for
  the job and refuses a smaller one (:class:`~riera.errors.FencedError`): a zombie driver that wakes
  up after a newer one took over cannot commit;
- an upsert sink keeps, per key, the version ``(epoch, seq)`` of the value it holds, and never lets
  an older version replace a newer one: a consumer never sees a total go backwards.

Connectors are found by URL scheme (:func:`open_source`, :func:`open_sink`); a third party adds one
with :func:`register`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa

from riera.errors import PlanError

FINAL = 1 << 30  # the seq of the write that completes an epoch

Position = Any  # JSON data, chosen by the source


@dataclass(frozen=True, slots=True)
class Message:
    """One record read from a source partition."""

    value: bytes
    key: bytes | None
    ts_ms: float | None  # when the producer made it (Unix ms), if it says
    partition: int
    position: Position  # the partition's position just after this message


@dataclass(slots=True)
class RawBatch:
    """Messages as columns — what a reader's optional ``poll_raw`` returns instead of one
    :class:`Message` object per record (the per-object cost dominated reading from Redis)."""

    values: list[bytes]
    keys: list[bytes | None]
    ts: Any  # numpy float64 array, ms, NaN where the producer gave none
    parts: Any  # numpy int64 array

    @staticmethod
    def of(messages: list[Message]) -> RawBatch:
        import numpy as np

        n = len(messages)
        return RawBatch(
            [m.value for m in messages],
            [m.key for m in messages],
            np.fromiter((np.nan if m.ts_ms is None else m.ts_ms for m in messages), np.float64, n),
            np.fromiter((m.partition for m in messages), np.int64, n),
        )


@runtime_checkable
class SourceReader(Protocol):
    """Reads the partitions assigned to one consumer, from given positions."""

    def poll(
        self, max_records: int, timeout_s: float, upto: dict[int, Position] | None = None
    ) -> list[Message]:
        """Up to ``max_records`` messages, waiting at most ``timeout_s`` for the first; with
        ``upto``, never beyond those positions (inclusive) in the partitions it names, and nothing
        from a partition it does not name."""

    def positions(self) -> dict[int, Position]:
        """Per assigned partition, the position after the last message polled."""

    def close(self) -> None: ...


@runtime_checkable
class Source(Protocol):
    url: str
    #: whether reading again from a logged position gives the same messages (exactly-once needs it)
    replayable: bool

    def partitions(self) -> int: ...

    def reader(self, start: dict[int, Position | None]) -> SourceReader:
        """A reader of these partitions from these positions (None: from the beginning). Raises
        :class:`~riera.errors.SourceTrimmedError` when a position is older than what the source
        still holds."""

    def release(self, upto: dict[int, Position]) -> None:
        """Everything up to these positions is committed: the source may acknowledge or trim it."""

    def lag(self, positions: dict[int, Position]) -> dict[int, int | None]:
        """Messages after ``positions`` per partition (None where the source cannot tell)."""

    def close(self) -> None: ...


@runtime_checkable
class Sink(Protocol):
    url: str
    mode: Literal["upsert", "append"]

    def open(self, job: str, key: Sequence[str]) -> None:
        """Prepare to write for ``job``; ``key`` names the columns an upsert sink keys by."""

    def committed(self) -> tuple[int, int]:
        """The last ``(epoch, seq)`` applied for the job; ``(-1, -1)`` when none."""

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        """Apply ``rows`` atomically as write ``(epoch, seq)``; False when it was applied before
        (skipped). Raises :class:`~riera.errors.FencedError` for a fence older than the newest."""

    def close(self) -> None: ...


@runtime_checkable
class Producer(Protocol):
    """Appends messages to a source's partitions (what the document's producers, the tests and
    :mod:`riera.testing` write with). A message goes to the partition its key hashes to."""

    def send(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        """Append ``(key, value, producer ts in Unix ms)`` messages, in order."""

    def close(self) -> None: ...


def partition_of(key: bytes | None, partitions: int, counter: int) -> int:
    """The partition a key goes to (keyless messages go round-robin by ``counter``)."""
    if partitions == 1:
        return 0
    if key is None:
        return counter % partitions
    import xxhash

    return xxhash.xxh64_intdigest(key) % partitions


def committed_epoch(sink: Sink) -> int:
    """The last epoch the sink holds completely (its FINAL write applied)."""
    epoch, seq = sink.committed()
    return epoch if seq >= FINAL else epoch - 1


# -- URLs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Url:
    """A parsed connector URL: ``scheme://host:port/path?query``."""

    raw: str
    scheme: str
    host: str | None
    port: int | None
    path: str
    query: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str) -> Url:
        parts = urlsplit(raw)
        if not parts.scheme:
            raise PlanError(
                f"stream URL {raw!r} has no scheme; use redis://HOST:PORT/DB/STREAM, "
                f"kafka://HOST:PORT/TOPIC, file:///DIR, tcp://HOST:PORT or memory://NAME"
            )
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        try:
            port = parts.port
        except ValueError as err:
            raise PlanError(f"stream URL {raw!r}: bad port: {err}") from err
        return cls(raw, parts.scheme, parts.hostname, port, parts.path, query)

    def int_option(self, name: str, default: int) -> int:
        value = self.query.get(name)
        if value is None:
            return default
        try:
            out = int(value)
        except ValueError as err:
            raise PlanError(f"{self.raw}: ?{name}= must be an integer; got {value!r}") from err
        if out < 1:
            raise PlanError(f"{self.raw}: ?{name}= must be ≥ 1; got {out}")
        return out


Factory = Callable[[Url], Any]
_SOURCES: dict[str, str | Factory] = {
    "memory": "riera.stream.connectors.memory:MemorySource",
    "redis": "riera.stream.connectors.redis:RedisSource",
    "kafka": "riera.stream.connectors.kafka:KafkaSource",
    "file": "riera.stream.connectors.files:DirectorySource",
    "tcp": "riera.stream.connectors.tcp:TcpSource",
}
_SINKS: dict[str, str | Factory] = {
    "memory": "riera.stream.connectors.memory:MemorySink",
    "redis": "riera.stream.connectors.redis:RedisSink",
    "kafka": "riera.stream.connectors.kafka:KafkaSink",
    "file": "riera.stream.connectors.files:DirectorySink",
    "sqlite": "riera.stream.connectors.sql:SqlSink",
    "postgresql": "riera.stream.connectors.sql:SqlSink",
}


_PRODUCERS: dict[str, str | Factory] = {
    "memory": "riera.stream.connectors.memory:MemoryProducer",
    "redis": "riera.stream.connectors.redis:RedisProducer",
    "kafka": "riera.stream.connectors.kafka:KafkaProducer",
    "file": "riera.stream.connectors.files:DirectoryProducer",
    "tcp": "riera.stream.connectors.tcp:TcpProducer",
}


def register(
    scheme: str,
    *,
    source: Factory | None = None,
    sink: Factory | None = None,
    producer: Factory | None = None,
) -> None:
    """Make ``scheme://`` URLs open ``source(url)`` / ``sink(url)`` / ``producer(url)``."""
    for table, factory in ((_SOURCES, source), (_SINKS, sink), (_PRODUCERS, producer)):
        if factory is not None:
            table[scheme] = factory


def _resolve(table: dict[str, str | Factory], url: Url, what: str) -> Any:
    entry = table.get(url.scheme)
    if entry is None:
        raise PlanError(
            f"no stream {what} for {url.scheme}:// URLs ({url.raw!r}); known: {sorted(table)}"
        )
    if isinstance(entry, str):
        module, _, name = entry.partition(":")
        entry = getattr(importlib.import_module(module), name)
    return entry(url)


_OBJECTS: dict[str, Any] = {}  # in-process sources by URL (python://generator/NAME)


def register_object(url: str, source: Any) -> None:
    """Make ``url`` open this in-process source object (the last registration wins)."""
    _OBJECTS[url] = source


def open_source(url: str | Url) -> Source:
    """The source a URL names (``memory://words``, ``redis://127.0.0.1:6379/0/in?partitions=4``…)."""
    raw = url.raw if isinstance(url, Url) else url
    if raw in _OBJECTS:
        found: Source = _OBJECTS[raw]
        return found
    if raw.startswith("python://"):
        raise PlanError(
            f"{raw}: no in-process source of that name in this process; call "
            f"riera.stream.from_generator(..., name=...) before read_stream"
        )
    parsed = url if isinstance(url, Url) else Url.parse(url)
    src: Source = _resolve(_SOURCES, parsed, "source")
    return src


def open_sink(url: str | Url) -> Sink:
    """The sink a URL names."""
    parsed = url if isinstance(url, Url) else Url.parse(url)
    sink: Sink = _resolve(_SINKS, parsed, "sink")
    return sink


def open_producer(url: str | Url) -> Producer:
    """A producer appending to the source a URL names."""
    parsed = url if isinstance(url, Url) else Url.parse(url)
    producer: Producer = _resolve(_PRODUCERS, parsed, "producer")
    return producer
