"""Leases of a job's shards in Redis, with fencing tokens: several drivers, one query.

A job's ``key_groups`` are cut into ``shards`` contiguous ranges, fixed at the first start like
the key groups themselves. A driver runs the shards it holds a lease on; a lease lives ``ttl``
milliseconds unless its holder renews it, so the shards of a driver that died, hung or lost the
network go to the others once their leases expire.

Each acquisition of a shard takes the next **fencing token** of that shard (``INCR``). The new
holder hands its token to every sink and to the shard's checkpoint log before it does anything
else (see :meth:`riera.stream.engine.Engine.start`), and both refuse a smaller token from then
on: a driver that was paused past its lease (a stopped process, a long GC pause, a partition)
and wakes up cannot commit anything, even if it does not know yet that it lost the lease.

Every time comes from the Redis server (``TIME`` inside the scripts), so clocks of different
machines never have to agree.

Keys, under ``riera:lease:{JOB}:``: ``meta`` (a hash: shards, key groups, plan), ``members``
(a sorted set: driver → expiry, ms), ``shard:S`` (``member token``, with the lease's expiry),
``fence:S`` (the shard's last token) and ``finished`` (a hash: shard → when it last ended idle,
ms). A job's keys stay after it ends (its shard count and tokens must outlive its drivers);
:meth:`ShardLeases.drop` removes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from riera.errors import CheckpointError, MissingExtraError, StreamError

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: shard key, fence key; ARGV: member, ttl ms. Returns the token, or false when held.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local who, token = string.match(cur, '^(.*) (%d+)$')
  if who == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(token)
  end
  return false
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. token, 'PX', ARGV[2])
return token
"""

# KEYS: members, shard keys...; ARGV: member, ttl, tokens... Returns the indexes lost.
_RENEW = (
    _NOW
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lost = {}
for i = 2, #KEYS do
  if redis.call('GET', KEYS[i]) == ARGV[1] .. ' ' .. ARGV[i + 1] then
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  else
    table.insert(lost, i - 2)
  end
end
return {lost, redis.call('ZCARD', KEYS[1])}
"""
)

# KEYS: shard key; ARGV: member, token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] .. ' ' .. ARGV[2] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS: meta; ARGV: shards, key groups, plan. The first driver's settings, set atomically.
_META = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'shards', ARGV[1], 'key_groups', ARGV[2], 'plan', ARGV[3])
end
return redis.call('HGETALL', KEYS[1])
"""

# KEYS: fence key; ARGV: floor. Tokens continue above the floor (a checkpoint's newest token).
_FLOOR = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if cur < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# KEYS: finished; ARGV: shard.
_FINISHED = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], now)
return now
"""
)

_TIME = (
    _NOW
    + """
return now
"""
)


@dataclass(frozen=True)
class Lease:
    shard: int
    token: int


class ShardLeases:
    """One driver's view of a job's shard leases (see the module docstring)."""

    def __init__(self, url: str, job: str, member: str, *, shards: int, key_groups: int,
                 plan: str, ttl_ms: int = 3000) -> None:  # fmt: skip
        if ttl_ms < 300:
            raise StreamError(f"shard leases: ttl must be at least 300 ms; got {ttl_ms}")
        self.url, self.job, self.member, self.ttl_ms = url, job, member, ttl_ms
        self.client = _connect(url, timeout_s=max(0.1, ttl_ms / 3000))
        self.prefix = f"riera:lease:{job}:"
        self._acquire = self.client.register_script(_ACQUIRE)
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)
        self._meta_script = self.client.register_script(_META)
        self._floor = self.client.register_script(_FLOOR)
        self._finished = self.client.register_script(_FINISHED)
        self._time = self.client.register_script(_TIME)
        self.shards, self.key_groups = self._meta(shards, key_groups, plan)
        self.alive = 1

    def _meta(self, shards: int, key_groups: int, plan: str) -> tuple[int, int]:
        """The job's shard count and key groups: set by the first driver, checked by the others."""
        flat = self._meta_script(keys=[self.prefix + "meta"], args=[shards, key_groups, plan])
        got = {flat[i].decode(): flat[i + 1].decode() for i in range(0, len(flat), 2)}
        if got["plan"] != plan:
            raise CheckpointError(
                f"job {self.job!r} at {self.url} runs another plan ({got['plan']}; this one is "
                f"{plan}); drivers of one job must run the same query. Give this one another name."
            )
        held_shards, held_groups = int(got["shards"]), int(got["key_groups"])
        if (held_shards, held_groups) != (shards, key_groups):
            raise CheckpointError(
                f"job {self.job!r} at {self.url} was started with {held_shards} shards of "
                f"{held_groups} key groups; this driver asks for {shards} of {key_groups}. Both "
                f"are fixed at the first start: use the same values."
            )
        if held_shards > held_groups:
            raise StreamError(f"job {self.job!r}: more shards ({held_shards}) than key groups")
        return held_shards, held_groups

    def groups(self, shard: int) -> range:
        """The key groups of a shard."""
        per = self.key_groups / self.shards
        return range(math.ceil(shard * per), math.ceil((shard + 1) * per))

    def heartbeat(self, held: list[Lease]) -> list[Lease]:
        """Say this driver is alive and renew its leases; the leases it lost."""
        keys = [self.prefix + "members", *(self._shard_key(x.shard) for x in held)]
        lost, alive = self._renew(keys=keys, args=[self.member, self.ttl_ms,
                                                   *(x.token for x in held)])  # fmt: skip
        self.alive = max(1, int(alive))
        return [held[int(i)] for i in lost]

    def fair_share(self) -> int:
        """How many shards each live driver should hold (rounded up)."""
        return math.ceil(self.shards / self.alive)

    def acquire(self, shard: int) -> Lease | None:
        token = self._acquire(keys=[self._shard_key(shard), self.prefix + f"fence:{shard}"],
                              args=[self.member, self.ttl_ms])  # fmt: skip
        return None if token is None else Lease(shard, int(token))

    def raise_floor(self, shard: int, floor: int) -> None:
        """The next token of ``shard`` is above ``floor`` (Redis lost its counters, and the
        shard's checkpoint holds a newer token than it hands out)."""
        self._floor(keys=[self.prefix + f"fence:{shard}"], args=[floor])

    def now_ms(self) -> int:
        """The Redis server's time (the clock every lease is measured by)."""
        return int(self._time(keys=[], args=[]))

    def mark_finished(self, shard: int) -> None:
        self._finished(keys=[self.prefix + "finished"], args=[shard])

    def finished_since(self, since_ms: int) -> set[int]:
        """The shards that ended idle at or after ``since_ms`` (server time)."""
        got = self.client.hgetall(self.prefix + "finished")
        return {int(k) for k, v in got.items() if int(v) >= since_ms}

    def release(self, lease: Lease) -> None:
        self._release(keys=[self._shard_key(lease.shard)], args=[self.member, lease.token])

    def leave(self) -> None:
        self.client.zrem(self.prefix + "members", self.member)

    def holders(self) -> dict[int, tuple[str, int] | None]:
        """Who holds each shard now, and with which token."""
        values = self.client.mget([self._shard_key(s) for s in range(self.shards)])
        out: dict[int, tuple[str, int] | None] = {}
        for s, v in enumerate(values):
            if v is None:
                out[s] = None
            else:
                who, _, token = v.decode().rpartition(" ")
                out[s] = (who, int(token))
        return out

    def order(self) -> list[int]:
        """The shards in the order this driver tries them: from a place its name picks, so
        drivers starting together do not all race for shard 0."""
        import xxhash

        first = xxhash.xxh64_intdigest(self.member.encode()) % self.shards
        return [(first + i) % self.shards for i in range(self.shards)]

    def _shard_key(self, shard: int) -> str:
        return self.prefix + f"shard:{shard}"

    def drop(self) -> None:
        """Forget the job's leases and tokens (tests, or a job that will never run again)."""
        keys = list(self.client.scan_iter(match=self.prefix + "*"))
        if keys:
            self.client.delete(*keys)

    def close(self) -> None:
        self.client.close()


def _connect(url: str, timeout_s: float = 5.0) -> Any:
    """A client for ``redis://HOST:PORT[/DB]``, checked at once."""
    try:
        import redis
    except ImportError as err:
        raise MissingExtraError(
            f"{url}: shard leases need the redis client: pip install 'riera[redis]'"
        ) from err
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise StreamError(f"coordinator {url!r}: expected redis://HOST:PORT/DB")
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        client.ping()
    except redis.RedisError as err:
        raise StreamError(f"coordinator {url}: cannot reach Redis: {err}") from err
    return client
