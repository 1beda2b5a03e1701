"""Redis exchange: each partition is one Arrow IPC stream stored as a Redis string value.

Why Redis: workers on several machines can share one exchange without a shared filesystem, and
Redis keeps the data in RAM, so a read costs one network transfer and an IPC decode that points
into the fetched bytes (no further copy). It is the right exchange for moderate intermediate data
and many small partitions; for data larger than the server's memory use the S3 exchange.

Layout. A partition of task attempt ``key`` lives under ``riera:<run>.<owner>/<stage>/t<task>/
a<attempt>/p<partition>`` (:meth:`SegmentKey.object_path`), so a task attempt's or a run's keys
are found by prefix. A Redis bulk string is capped (``proto-max-bulk-len``, 512 MiB by default),
so a value above :data:`CHUNK_BYTES` is split into ``<key>:c0``, ``<key>:c1``… and ``<key>``
holds a small header, ``riera-chunks:<count>``. An IPC stream always starts with the 0xFFFFFFFF
continuation marker, so a header can never be mistaken for data. Chunks are written before their
header (one pipeline executes in order), so a reader that finds a header finds its chunks.

Round trips. A write is one pipelined round trip per partition (every ``SET`` in it carries the
expiry). A read of an unchunked value is one ``GET``; a chunked one is the header ``GET`` plus one
pipeline fetching every chunk, reassembled with one copy into an aligned Arrow buffer (the price
of values above the bulk-string cap). ``release`` reads the first bytes of each header
(``GETRANGE``, so it never downloads the data) and then ``UNLINK``s values and chunks in one more
round trip; ``UNLINK`` frees the memory in a server thread instead of blocking Redis.

Lifecycle. Every key expires after ``redis_ttl`` seconds, so what a crashed or killed driver left
behind disappears without a sweeper; a run that reads a stage's output later than ``redis_ttl``
after writing it gets a clear error naming the setting. ``release_task``/``release_run`` walk the
prefix with ``SCAN MATCH`` (never ``KEYS``, which blocks the server for the whole keyspace); SCAN
visits every key of the database, so give Riera its own database number (``redis://…/15``).

Confidentiality. With ``confidential=True`` the exchange only accepts a Redis on this machine: a
loopback address (``127.0.0.0/8``, ``::1``, ``localhost``) or a unix socket. Host names are not
resolved: a name that happens to resolve to a local address today is refused.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from riera.config import Settings
from riera.errors import ExchangeError, MissingExtraError
from riera.exchange.base import PerPartitionObjects, Ref, SegmentKey, from_ipc, register, to_ipc
from riera.exchange.policy import is_loopback_host, redact_url

log = logging.getLogger(__name__)

KEY_PREFIX = "riera:"
CHUNK_BYTES = 256 * 2**20  # half of Redis's default proto-max-bulk-len (512 MiB)
HEADER_MAGIC = b"riera-chunks:"
_HEADER_PEEK = len(HEADER_MAGIC) + 20  # enough for the magic and any chunk count
_CHUNK_SUFFIX = re.compile(rb":c\d+$")
_SCAN_COUNT = 1000
_UNLINK_BATCH = 1000
_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def _is_local_redis(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return True
    # redis-py connects to localhost when the URL names no host.
    return parts.hostname is None or is_loopback_host(parts.hostname)


def _import_redis() -> Any:
    try:
        import redis
    except ImportError as err:
        raise MissingExtraError(
            "the 'redis' exchange needs the redis client library, which is not installed: "
            "pip install 'riera[redis]'"
        ) from err
    return redis


class RedisExchange(PerPartitionObjects):
    """Arrow IPC streams in Redis string values, chunked above ``chunk_bytes``, expiring."""

    name = "redis"

    def __init__(
        self,
        url: str,
        ttl: int,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        confidential: bool = False,
        connect_timeout: float = 3.0,
        socket_timeout: float = 120.0,
    ) -> None:
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive; got {chunk_bytes}")
        self.url = url
        self.shown_url = redact_url(url)
        self.ttl = ttl
        self.chunk_bytes = chunk_bytes
        if confidential and not _is_local_redis(url):
            raise ExchangeError(
                f"the Redis exchange at {self.shown_url} is not on this machine and the setting "
                f"`confidential` is on (intermediate data must stay on this machine). Use a Redis "
                f"on 127.0.0.1/localhost or a unix socket (RIERA_REDIS_URL=unix:///path/to/"
                f"redis.sock), another exchange (shm, disk), or set confidential=False"
            )
        redis = _import_redis()
        from redis.backoff import ExponentialBackoff
        from redis.retry import Retry

        self._redis = redis
        try:
            self._client = redis.Redis.from_url(
                url,
                socket_connect_timeout=connect_timeout,
                socket_timeout=socket_timeout,
                # A refused connection fails within milliseconds; a dropped one is retried twice.
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 2),
            )
        except ValueError as err:
            raise ExchangeError(
                f"invalid Redis URL {self.shown_url} (setting redis_url): {err}; set "
                f"RIERA_REDIS_URL to e.g. redis://127.0.0.1:6379/0 or unix:///path/to/redis.sock"
            ) from err
        with self._errors("connect to"):
            self._client.ping()

    # -- writing -------------------------------------------------------------------------------
    def put_partition(self, table: pa.Table, key: SegmentKey, partition: int) -> Ref:
        name = KEY_PREFIX + key.object_path(partition)
        data = memoryview(to_ipc(table)).cast("B")  # redis-py sends memoryviews without a copy
        size = len(data)
        pipe = self._client.pipeline(transaction=False)
        if size <= self.chunk_bytes:
            pipe.set(name, data, ex=self.ttl)
        else:
            step = self.chunk_bytes
            count = -(-size // step)
            for i in range(count):
                pipe.set(f"{name}:c{i}", data[i * step : (i + 1) * step], ex=self.ttl)
            pipe.set(name, HEADER_MAGIC + str(count).encode(), ex=self.ttl)
        with self._errors("store", f"{name} ({size / 2**20:,.1f} MiB)"):
            pipe.execute()
        return Ref(self.name, name, table.num_rows, table.nbytes)

    # -- reading -------------------------------------------------------------------------------
    def get(self, ref: Ref) -> pa.Table:
        name = ref.location
        with self._errors("read", name):
            head = self._client.get(name)
        if head is None:
            raise self._gone(name)
        if not head.startswith(HEADER_MAGIC):
            return from_ipc(head)
        count = int(head[len(HEADER_MAGIC) :])
        pipe = self._client.pipeline(transaction=False)
        for i in range(count):
            pipe.get(f"{name}:c{i}")
        with self._errors("read", f"{name} ({count} chunks)"):
            chunks: list[bytes | None] = pipe.execute()
        if any(c is None for c in chunks):
            raise self._gone(name, partly=True)
        return from_ipc(_join(chunks))

    def _gone(self, name: str, partly: bool = False) -> ExchangeError:
        what = "some chunks of " if partly else ""
        return ExchangeError(
            f"{what}Redis key {name} at {self.shown_url} is gone: it was released before this "
            f"read, expired (the setting redis_ttl is {self.ttl} s; raise it for longer runs), "
            f"or was evicted (the server's maxmemory-policy should be noeviction)"
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def release(self, refs: Sequence[Ref]) -> None:
        names = list(dict.fromkeys(r.location for r in refs))
        if not names:
            return
        pipe = self._client.pipeline(transaction=False)
        for name in names:
            pipe.getrange(name, 0, _HEADER_PEEK)
        with self._errors("release", f"{len(names)} key(s)"):
            heads: list[bytes] = pipe.execute()
        keys: list[str] = []
        for name, head in zip(names, heads, strict=True):
            keys.append(name)
            if head.startswith(HEADER_MAGIC):
                keys.extend(f"{name}:c{i}" for i in range(int(head[len(HEADER_MAGIC) :])))
        pipe = self._client.pipeline(transaction=False)
        for start in range(0, len(keys), _UNLINK_BATCH):
            pipe.unlink(*keys[start : start + _UNLINK_BATCH])
        with self._errors("release", f"{len(names)} key(s)"):
            pipe.execute()

    def release_task(self, key: SegmentKey) -> int:
        return self._release_prefix(KEY_PREFIX + key.task_path)

    def release_run(self, key: SegmentKey) -> int:
        return self._release_prefix(KEY_PREFIX + key.run_path)

    def _release_prefix(self, prefix: str) -> int:
        """Unlink every key under ``prefix``; returns how many stored tables (not chunks) went."""
        pattern = _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
        tables = 0
        batch: list[bytes] = []
        with self._errors("release", f"keys {pattern}"):
            for k in self._client.scan_iter(match=pattern, count=_SCAN_COUNT):
                batch.append(k)
                if len(batch) >= _UNLINK_BATCH:
                    tables += self._unlink(batch)
                    batch = []
            if batch:
                tables += self._unlink(batch)
        return tables

    def _unlink(self, keys: list[bytes]) -> int:
        self._client.unlink(*keys)
        return sum(1 for k in keys if not _CHUNK_SUFFIX.search(k))

    # -- errors --------------------------------------------------------------------------------
    @contextmanager
    def _errors(self, action: str, what: str = "") -> Iterator[None]:
        """Turn redis-py's exceptions into :class:`ExchangeError` naming the server and the fix."""
        exc = self._redis.exceptions
        target = f"{what} in Redis at {self.shown_url}" if what else f"Redis at {self.shown_url}"
        try:
            yield
        except exc.AuthenticationError as err:
            raise ExchangeError(
                f"cannot {action} {target}: authentication failed ({err}); put the user and "
                f"password in RIERA_REDIS_URL (redis://user:password@host:6379/0)"
            ) from err
        except (exc.ConnectionError, exc.TimeoutError) as err:
            raise ExchangeError(
                f"cannot {action} {target}: {err}. Start Redis (`redis-server`) or set "
                f"RIERA_REDIS_URL to a running server (setting redis_url)"
            ) from err
        except exc.ResponseError as err:
            if str(err).startswith("OOM"):
                raise ExchangeError(
                    f"cannot {action} {target}: the server is out of memory ({err}). Raise its "
                    f"maxmemory, release data sooner (fewer partitions at once), or use the s3 "
                    f"or disk exchange"
                ) from err
            raise ExchangeError(f"cannot {action} {target}: Redis answered {err}") from err


def _join(chunks: list[bytes | None]) -> pa.Buffer:
    """The chunks as one 64-byte-aligned buffer; each chunk is dropped as soon as it is copied."""
    total = sum(len(c) for c in chunks if c is not None)
    out = pa.allocate_buffer(total)
    view = memoryview(out).cast("B")
    pos = 0
    for i, chunk in enumerate(chunks):
        assert chunk is not None
        view[pos : pos + len(chunk)] = chunk
        pos += len(chunk)
        chunks[i] = None
    view.release()
    return out


def _factory(settings: Settings) -> RedisExchange:
    return RedisExchange(settings.redis_url, settings.redis_ttl, confidential=settings.confidential)


register("redis", _factory)
