"""``redis://HOST:PORT/DB/STREAM[?partitions=P]``: Redis Streams as source and sink.

**Partitions.** One stream per partition: ``STREAM`` when P is 1, else ``STREAM:0`` … ``STREAM:P-1``.
Riera assigns partitions itself and reads by explicit entry IDs (``XREAD``/``XRANGE``); the position
of a partition is the ID of the last entry read. Consumer groups hand out *entries*, not partitions,
and ``XREADGROUP >`` after a restart skips what was pending, so a group is never the commit point:
Riera only moves a group's last-delivered ID to the committed position (``XGROUP SETID``), so
``XINFO GROUPS`` shows the query's lag to other tools, and trims (``XTRIM MINID``) with ``?trim=1``.

**Messages** have the fields ``v`` (the value, JSON), ``k`` (the key) and ``ts`` (the producer's
Unix time in ms). An entry written by another tool without ``v`` is read as the JSON object of all
its fields.

**Sink.** One Lua function call per write — atomic in Redis, fenced and idempotent:
``STREAM:commits`` holds ``epoch:seq:fence`` per job; for an upsert sink ``STREAM:latest`` and
``STREAM:versions`` hold the latest row and its version per key, and only newer versions are
applied; every applied row is also appended to ``STREAM`` (what the document's consumer reads).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from riera.errors import FencedError, MissingExtraError, PlanError, SourceTrimmedError, StreamError
from riera.stream.connectors import base
from riera.stream.connectors.rows import dumps, encode_rows

_COMMIT = """
local function newer(a_e, a_s, b_e, b_s)
  return a_e > b_e or (a_e == b_e and a_s > b_s)
end
local job, epoch, seq, fence = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local upsert, now = ARGV[5] == '1', ARGV[6]
local c = redis.call('HGET', KEYS[1], job)
if c then
  local ce, cs, cf = string.match(c, '^(%-?%d+):(%-?%d+):(%-?%d+)$')
  ce, cs, cf = tonumber(ce), tonumber(cs), tonumber(cf)
  if fence < cf then return {-1, cf} end
  if not newer(epoch, seq, ce, cs) then
    if fence > cf then redis.call('HSET', KEYS[1], job, ce .. ':' .. cs .. ':' .. fence) end
    return {0, cf}
  end
end
local applied = 0
local ver = epoch .. ':' .. seq
for i = 7, #ARGV, 2 do
  local k, v = ARGV[i], ARGV[i + 1]
  local ok = true
  if upsert then
    local old = redis.call('HGET', KEYS[3], k)
    if old then
      local oe, os = string.match(old, '^(%-?%d+):(%-?%d+)$')
      ok = not newer(tonumber(oe), tonumber(os), epoch, seq)  -- later rows of one write win
    end
    if ok then
      redis.call('HSET', KEYS[2], k, v)
      redis.call('HSET', KEYS[3], k, ver)
    end
  end
  if ok then
    redis.call('XADD', KEYS[4], '*', 'k', k, 'v', v, 'ts', now)
    applied = applied + 1
  end
end
redis.call('HSET', KEYS[1], job, epoch .. ':' .. seq .. ':' .. fence)
return {1, applied}
"""


def _client(url: base.Url) -> tuple[Any, str]:
    try:
        import redis
    except ImportError as err:
        raise MissingExtraError(
            f"{url.raw}: Redis streams need the redis client: pip install 'riera[redis]'"
        ) from err
    segments = [s for s in url.path.split("/") if s]
    if len(segments) < 2 or not segments[0].isdigit():
        raise PlanError(
            f"{url.raw}: expected redis://HOST:PORT/DB/STREAM, e.g. "
            f"redis://127.0.0.1:6379/0/mensagens-produtor"
        )
    client = redis.Redis(host=url.host or "127.0.0.1", port=url.port or 6379, db=int(segments[0]))
    return client, "/".join(segments[1:])


def _streams(name: str, partitions: int) -> list[str]:
    return [name] if partitions == 1 else [f"{name}:{p}" for p in range(partitions)]


def _partitions(client: Any, url: base.Url, name: str) -> int:
    """From ``?partitions=``, else from ``NAME:meta`` (written by the first to use the stream)."""
    meta = f"{name}:meta"
    try:
        known = client.hget(meta, "partitions")
    except Exception as err:  # redis.ConnectionError and friends
        raise StreamError(f"{url.raw}: cannot reach Redis: {err}") from err
    asked = url.int_option("partitions", 0) if "partitions" in url.query else None
    if known is None:
        parts = asked or 1
        client.hsetnx(meta, "partitions", parts)
        return int(client.hget(meta, "partitions"))
    if asked is not None and asked != int(known):
        raise PlanError(f"{url.raw}: stream {name!r} has {int(known)} partitions, not {asked}")
    return int(known)


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _message(fields: dict[bytes, bytes], part: int, entry_id: str) -> base.Message:
    value = fields.get(b"v")
    if value is None:
        value = dumps({k.decode(): v.decode(errors="replace") for k, v in fields.items()}).encode()
    ts = fields.get(b"ts")
    try:
        ts_ms = float(ts) if ts is not None else None
    except ValueError:
        ts_ms = None
    return base.Message(value, fields.get(b"k"), ts_ms, part, entry_id)


def _fields(flat: list[bytes]) -> tuple[bytes | None, bytes | None, float]:
    """``(value, key, ts)`` of an entry's flat field list; a foreign entry without ``v`` becomes
    the JSON object of all its fields."""
    value = key = None
    ts = float("nan")
    for i in range(0, len(flat) - 1, 2):
        name = flat[i]
        if name == b"v":
            value = flat[i + 1]
        elif name == b"k":
            key = flat[i + 1]
        elif name == b"ts":
            try:
                ts = float(flat[i + 1])
            except ValueError:
                pass
    if value is None:
        value = dumps({flat[i].decode(): flat[i + 1].decode(errors="replace")
                       for i in range(0, len(flat) - 1, 2)}).encode()  # fmt: skip
    return value, key, ts


def _float(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return float("nan")


class RedisReader:
    def __init__(self, client: Any, streams: list[str], start: dict[int, str]) -> None:
        self.client, self.streams, self._pos = client, streams, dict(start)
        self._index = {s.encode(): p for p, s in enumerate(streams)}
        # Replies as the server sent them: redis-py's reply parsing (a dict per entry) cost more
        # than everything else of a poll (RawBatch, base.py).
        self.raw = client.__class__(connection_pool=client.connection_pool)
        for command in ("XREAD", "XRANGE"):
            self.raw.set_response_callback(command, lambda reply, **kw: reply)

    def poll_raw(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
                 ) -> base.RawBatch | None:  # fmt: skip
        """:meth:`poll` as columns."""
        replies: list[tuple[int, list[Any]]] = []
        if upto is None:
            args: list[Any] = ["XREAD", "COUNT", max_records]
            if timeout_s > 0:
                args += ["BLOCK", max(1, int(timeout_s * 1000))]
            args += ["STREAMS", *(self.streams[p] for p in self._pos), *self._pos.values()]
            reply = self.raw.execute_command(*args)
            if not reply:
                return None
            items = reply.items() if isinstance(reply, dict) else reply
            replies = [(self._index[name], entries) for name, entries in items]
            got = sum(len(e) for _, e in replies)
            if timeout_s > 0 and got < max_records:
                # A blocked XREAD wakes on the first entry of a producer's pipelined burst: take
                # the rest of the burst now (one cheap round trip) rather than one more lap later.
                after = dict(self._pos)
                for part, entries in replies:
                    if entries:
                        last = entries[-1][0]
                        after[part] = last.decode() if isinstance(last, bytes) else str(last)
                more = self.raw.execute_command(
                    "XREAD", "COUNT", max_records - got, "STREAMS",
                    *(self.streams[p] for p in after), *after.values(),
                )  # fmt: skip
                if more:
                    extra = more.items() if isinstance(more, dict) else more
                    replies += [(self._index[name], entries) for name, entries in extra]
        else:
            room = max_records
            for part, pos in self._pos.items():
                if part not in upto or room <= 0:
                    continue
                bound = str(upto[part])
                if _id_tuple(pos) >= _id_tuple(bound):
                    continue
                entries = self.raw.execute_command(
                    "XRANGE", self.streams[part], f"({pos}", bound, "COUNT", room
                )
                if entries:
                    replies.append((part, entries))
                    room -= len(entries)
        values: list[bytes] = []
        keys: list[bytes | None] = []
        stamps: list[bytes] = []  # parsed to floats in one numpy call below
        parts: list[int] = []
        for part, entries in replies:
            for _, flat in entries:
                # Riera's own layout, v [k] ts, without a Python loop per field
                if flat[0] == b"v" and len(flat) in (4, 6) and flat[-2] == b"ts":
                    values.append(flat[1])
                    keys.append(flat[3] if len(flat) == 6 else None)
                    stamps.append(flat[-1])
                else:
                    v, k, t = _fields(flat)
                    values.append(v)  # type: ignore[arg-type]
                    keys.append(k)
                    stamps.append(repr(t).encode())
            parts += [part] * len(entries)
            if entries:
                last = entries[-1][0]
                self._pos[part] = last.decode() if isinstance(last, bytes) else str(last)
        if not values:
            return None
        try:
            ts = np.array(stamps).astype(np.float64)
        except ValueError:  # a foreign ts that is no number
            ts = np.array([_float(t) for t in stamps], np.float64)
        return base.RawBatch(values, keys, ts, np.array(parts, np.int64))

    def poll(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
             ) -> list[base.Message]:  # fmt: skip
        if upto is not None:
            return self._range(max_records, upto)
        keys = {self.streams[p]: pos for p, pos in self._pos.items()}
        block = max(1, int(timeout_s * 1000)) if timeout_s > 0 else None
        reply = self.client.xread(keys, count=max_records, block=block) or []
        out: list[base.Message] = []
        index = {s: p for p, s in enumerate(self.streams)}
        for stream, entries in reply:
            part = index[stream.decode()]
            for entry_id, fields in entries:
                eid = entry_id.decode()
                out.append(_message(fields, part, eid))
                self._pos[part] = eid
        return out

    def _range(self, max_records: int, upto: dict[int, Any]) -> list[base.Message]:
        out: list[base.Message] = []
        for part, pos in self._pos.items():
            if part not in upto or len(out) >= max_records:
                continue
            bound = str(upto[part])
            if _id_tuple(pos) >= _id_tuple(bound):
                continue
            entries = self.client.xrange(
                self.streams[part], min=f"({pos}", max=bound, count=max_records - len(out)
            )
            for entry_id, fields in entries:
                eid = entry_id.decode()
                out.append(_message(fields, part, eid))
                self._pos[part] = eid
        return out

    def positions(self) -> dict[int, Any]:
        return dict(self._pos)

    def close(self) -> None:
        pass


class RedisSource:
    replayable = True

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.client, self.name = _client(url)
        self.n = _partitions(self.client, url, self.name)
        self.streams = _streams(self.name, self.n)
        self.trim = url.query.get("trim", "0") in ("1", "true", "yes")
        self.group = url.query.get("group", "riera")

    def partitions(self) -> int:
        return self.n

    def reader(self, start: dict[int, Any]) -> RedisReader:
        begin: dict[int, str] = {}
        for part, pos in start.items():
            begin[part] = "0-0" if pos is None else str(pos)
            if pos is not None:
                self._check_trim(part, str(pos))
        return RedisReader(self.client, self.streams, begin)

    def _check_trim(self, part: int, pos: str) -> None:
        stream = self.streams[part]
        try:
            info = self.client.xinfo_stream(stream)
        except Exception:  # no such stream: nothing was trimmed from it
            return
        deleted = info.get("max-deleted-entry-id") or b"0-0"
        deleted = deleted.decode() if isinstance(deleted, bytes) else str(deleted)
        first = info.get("first-entry")
        first_id = first[0].decode() if first else None
        # XTRIM does not move max-deleted-entry-id (only XDEL does): a trim past the resume
        # position shows as removed entries and an oldest entry (or, once the stream is empty,
        # a last generated ID) newer than that position. Riera's own ?trim=1 keeps the entry at
        # the committed position itself, so it never trips this.
        last = info.get("last-generated-id")
        head = first_id or (last.decode() if isinstance(last, bytes) else last)
        removed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
        if removed and head and _id_tuple(str(head)) > _id_tuple(pos):
            raise SourceTrimmedError(
                f"{self.url}: stream {stream!r} was trimmed: its oldest entry is now {head}, but "
                f"the query must resume after entry {pos}: records it never read may be gone. "
                f"Restart with a new checkpoint directory to read from what remains."
            )
        if _id_tuple(deleted) > _id_tuple(pos) and (
            first_id is None or _id_tuple(first_id) > _id_tuple(pos)
        ):
            # Entries after the resume position were deleted: were they trimmed before we read
            # them? Only if the oldest entry left is newer than what we must resume from.
            nxt = self.client.xrange(stream, min=f"({pos}", count=1)
            if not nxt or _id_tuple(nxt[0][0].decode()) > _id_tuple(deleted) or first_id is None:
                raise SourceTrimmedError(
                    f"{self.url}: stream {stream!r} was trimmed past entry {deleted}, but the "
                    f"query must resume after entry {pos}: records it never read are gone. "
                    f"Restart with a new checkpoint directory to read from what remains."
                )

    def release(self, upto: dict[int, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for part, pos in upto.items():
            stream = self.streams[part]
            pipe.xgroup_create(stream, self.group, id=str(pos), mkstream=True)
        for result in pipe.execute(raise_on_error=False):
            if isinstance(result, Exception) and "BUSYGROUP" not in str(result):
                raise StreamError(f"{self.url}: cannot record the committed position: {result}")
        pipe = self.client.pipeline(transaction=False)
        for part, pos in upto.items():
            pipe.xgroup_setid(self.streams[part], self.group, id=str(pos))
            if self.trim:
                pipe.xtrim(self.streams[part], minid=str(pos), approximate=False)
        pipe.execute()

    def lag(self, positions: dict[int, Any]) -> dict[int, int | None]:
        """Entries after each position, counted up to 1,000 (1000 reads "1,000 or more")."""
        out: dict[int, int | None] = {}
        for part, pos in positions.items():
            entries = self.client.execute_command(
                "XRANGE", self.streams[part], f"({pos or '0-0'}", "+", "COUNT", 1000
            )
            out[part] = len(entries or [])
        return out

    def close(self) -> None:
        self.client.close()


class RedisProducer:
    def __init__(self, url: base.Url) -> None:
        self.client, name = _client(url)
        self.n = _partitions(self.client, url, name)
        self.streams = _streams(name, self.n)
        self._sent = 0

    def send(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        """One MULTI/EXEC: the messages of a send appear together, so a reader blocked on the
        stream wakes once for all of them, not after the first with the rest behind it."""
        pipe = self.client.pipeline(transaction=True)
        for key, value, ts in messages:
            part = base.partition_of(key, self.n, self._sent)
            self._sent += 1
            fields: dict[str, Any] = {"v": value}
            if key is not None:
                fields["k"] = key
            fields["ts"] = repr(ts if ts is not None else time.time() * 1000)
            pipe.xadd(self.streams[part], fields)
        pipe.execute()

    def close(self) -> None:
        self.client.close()


class RedisSink:
    """Commits rows to Redis with one atomic, fenced, idempotent Lua call per write."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.client, self.name = _client(url)
        mode = url.query.get("mode", "upsert")
        if mode not in ("upsert", "append"):
            raise PlanError(f"{url.raw}: ?mode= must be upsert or append; got {mode!r}")
        self.mode: Literal["upsert", "append"] = mode  # type: ignore[assignment]
        self._script = self.client.register_script(_COMMIT)
        self.keys = [f"{self.name}:commits", f"{self.name}:latest", f"{self.name}:versions",
                     self.name]  # fmt: skip
        self.job = ""
        self.key: tuple[str, ...] = ()

    def open(self, job: str, key: Sequence[str]) -> None:
        self.job, self.key = job, tuple(key)
        self.client.hsetnx(f"{self.name}:meta", "partitions", 1)

    def committed(self) -> tuple[int, int]:
        raw = self.client.hget(self.keys[0], self.job)
        if raw is None:
            return (-1, -1)
        epoch, seq, _ = raw.decode().split(":")
        return int(epoch), int(seq)

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        args: list[Any] = [self.job, epoch, seq, fence, "1" if self.mode == "upsert" else "0",
                           repr(time.time() * 1000)]  # fmt: skip
        for key, payload in encode_rows(rows, self.key if self.mode == "upsert" else ()):
            args += [key, payload]
        status, detail = self._script(keys=self.keys, args=args)
        if status == -1:
            raise FencedError(
                f"{self.url}: job {self.job!r} is fenced at token {detail}; this driver holds "
                f"{fence}: another driver took the job over"
            )
        return bool(status == 1)

    def latest(self) -> dict[str, Any]:
        import json

        return {k.decode(): json.loads(v) for k, v in self.client.hgetall(self.keys[1]).items()}

    def close(self) -> None:
        self.client.close()
