"""Several drivers, one job: the key groups cut into shards leased in Redis with fencing tokens.

Drivers are real processes (``riera stream wordcount --coordinator …``) on one machine, sharing
the checkpoint directory. They split the shards, take over those of a driver killed with
``kill -9``, and a driver that was paused past its lease (``SIGSTOP``, as a long GC pause or a
network partition would) cannot commit when it wakes up: its token is older than the one the new
holder handed to the checkpoint log and the sink. The batch engine is the oracle: the final totals
equal ``group_by().agg()`` over everything sent.

Redis at ``RIERA_TEST_REDIS`` (default 127.0.0.1:6379): skipped when absent, failed under
``RIERA_TEST_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import riera
from riera import col
from riera.errors import CheckpointError
from riera.stream.connectors.memory import Broker
from riera.stream.lease import ShardLeases
from riera.testing import send
from services import service_missing
from wordcount_data import messages, oracle, wordcount_query

pytestmark = pytest.mark.integration

REDIS = os.environ.get("RIERA_TEST_REDIS", "127.0.0.1:6379")
COORD = f"redis://{REDIS}/0"
SHARDS = 4
TTL_MS = 1000


@pytest.fixture
def job() -> Iterator[str]:
    """A unique job name; its lease keys are deleted afterwards."""
    import redis

    client = redis.Redis.from_url(COORD)
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        service_missing(f"Redis at {REDIS} is not reachable ({err}); set RIERA_TEST_REDIS")
    name = f"leases-{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        keys = list(client.scan_iter(match=f"riera:lease:{name}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    brokers = tmp_path / "brokers"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(brokers))
    return {**os.environ, "RIERA_BROKER_DIR": str(brokers), "RIERA_PROVENANCE": "off"}


def _wait(cond: Callable[[], Any], what: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# -- the lease protocol ---------------------------------------------------------------------------


def test_leases_are_exclusive_expire_and_fence(job: str) -> None:
    a = ShardLeases(COORD, job, "a", shards=SHARDS, key_groups=16, plan="p", ttl_ms=400)
    b = ShardLeases(COORD, job, "b", shards=SHARDS, key_groups=16, plan="p", ttl_ms=400)
    try:
        groups = [list(a.groups(s)) for s in range(SHARDS)]
        assert sorted(g for gs in groups for g in gs) == list(range(16)), "shards cover the groups"
        first = a.acquire(0)
        assert first is not None and first.token == 1
        assert b.acquire(0) is None, "a held shard is not given to another driver"
        assert a.acquire(0) == first, "its holder acquiring it again keeps its token"
        assert a.heartbeat([first]) == []
        assert b.heartbeat([]) == [] and b.alive == 2 and b.fair_share() == 2
        assert a.holders()[0] == ("a", 1)
        # a stops renewing (paused): once its lease expires, b takes the shard with a new token
        second = _wait(lambda: b.acquire(0), "the lease to expire", timeout=10)
        assert second.token == 2
        assert a.heartbeat([first]) == [first], "a learns it lost the shard"
        a.release(first)  # a stale release does not free b's lease
        assert a.holders()[0] == ("b", 2)
        b.release(second)
        assert a.holders()[0] is None
        with pytest.raises(CheckpointError, match="started with 4 shards"):
            ShardLeases(COORD, job, "c", shards=2, key_groups=16, plan="p")
        with pytest.raises(CheckpointError, match="another plan"):
            ShardLeases(COORD, job, "c", shards=SHARDS, key_groups=16, plan="q")
    finally:
        a.close()
        b.close()


def test_write_stream_with_coordinator_refuses_what_cannot_be_shared(
    job: str, env: dict[str, str]
) -> None:
    from riera.testing import CollectSink

    counts = (
        riera.read_stream("memory://leases-x", schema={"w": "string"})
        .group_by("w")
        .agg(n=col("w").count())
    )
    with pytest.raises(riera.PlanError, match="must be a URL"):
        counts.write_stream(CollectSink(), coordinator=COORD, checkpoint="/tmp/x", name=job)
    with pytest.raises(riera.PlanError, match="every driver reaches"):
        counts.write_stream("memory://leases-y", coordinator=COORD, name=job)
    with pytest.raises(riera.PlanError, match="shards must be"):
        counts.write_stream("memory://leases-y", coordinator=COORD, checkpoint="/tmp/x",
                            shards=0, name=job)  # fmt: skip


def test_a_taken_over_log_and_state_refuse_the_old_holder(tmp_path: Path) -> None:
    """Every write of a leased shard's log and state checks the token inside its transaction:
    after a newer holder took them, the old one can neither log, mark, roll back nor put —
    not even mark its epoch aborted — and recovery replays an aborted epoch all the same."""
    from riera.errors import FencedError
    from riera.stream.checkpoint import CheckpointLog
    from riera.stream.state import SqliteStateStore

    old_log = CheckpointLog(tmp_path, "job", "plan", 8, leased=True)
    old_log.take_fence(1)
    old_state = SqliteStateStore(tmp_path / "state.sqlite", 8)
    old_state.take_fence(1)
    old_log.log_epoch(0, {0: {0: 5}}, None, 1, 5)
    old_state.put(0, [("op", 0, b"k", 1)])
    new_log = CheckpointLog(tmp_path, "job", "plan", 8, leased=True)  # no file lock: the lease
    new_log.take_fence(2)
    new_state = SqliteStateStore(tmp_path / "state.sqlite", 8)
    new_state.take_fence(2)
    for write in (lambda: old_log.log_epoch(1, {0: {0: 9}}, None, 2, 4),
                  lambda: old_log.mark_committed(0, 1), lambda: old_log.mark_aborted(0),
                  lambda: old_log.set_meta(restarts="1"), lambda: old_log.prune(5),
                  lambda: old_state.put(1, [("op", 0, b"k", 99)]),
                  lambda: old_state.rollback(-1), lambda: old_state.compact(0)):  # fmt: skip
        with pytest.raises(FencedError, match="fenced at token 2"):
            write()
    with pytest.raises(FencedError) as caught:
        old_log.take_fence(1)
    assert caught.value.held_token == 2
    assert dict(new_state.load("op", 5)) == {b"k": 1}, "the old holder changed nothing"
    new_log.mark_aborted(0)  # for the record: recovery still replays its boundaries
    assert [r.epoch for r in new_log.epochs_after(-1)] == [0]
    assert new_log.get(0) is not None and new_log.get(0).positions == {0: {0: 5}}
    for closer in (old_log, new_log, old_state, new_state):
        closer.close()


def test_a_global_aggregate_is_refused_in_shards(
    job: str, tmp_path: Path, env: dict[str, str]
) -> None:
    total = riera.read_stream("memory://leases-g", schema={"w": "string"}).agg(n=col("w").count())
    with pytest.raises(riera.PlanError, match="without group_by keys"):
        total.write_stream("memory://leases-g-out", coordinator=COORD, checkpoint=tmp_path,
                           name=job)  # fmt: skip


# -- drivers as processes -------------------------------------------------------------------------


def _totals(name: str) -> dict[str, int]:
    broker = Broker(name)
    try:
        return {json.loads(k)[0]: json.loads(r)["total"] for k, r in
                broker.db.execute("SELECT k, row FROM latest").fetchall()}  # fmt: skip
    finally:
        broker.close()


class Driver:
    def __init__(self, env: dict[str, str], job: str, ckpt: Path, *extra: str) -> None:
        cmd = [sys.executable, "-m", "riera", "stream", "wordcount", "--from", "memory://in",
               "--to", "memory://out?mode=upsert", "--checkpoint", str(ckpt), "--interval", "100",
               "--coordinator", COORD, "--shards", str(SHARDS), "--name", job,
               "--lease-ttl", str(TTL_MS), *extra]  # fmt: skip
        self.log = ckpt.parent / f"driver-{time.monotonic_ns()}.log"
        with self.log.open("wb") as errors:
            self.proc = subprocess.Popen(cmd, env=env,
                                         stdout=subprocess.DEVNULL, stderr=errors)  # fmt: skip
        self.member = f"{socket.gethostname()}:{self.proc.pid}"

    def stderr(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"driver did not stop: {self.stderr()[-3000:]}") from None


def _holders(job: str) -> dict[int, str | None]:
    leases = ShardLeases(COORD, job, "observer", shards=SHARDS, key_groups=128,
                         plan=_plan(job))  # fmt: skip
    try:
        return {s: (h[0] if h else None) for s, h in leases.holders().items()}
    finally:
        leases.close()


def _plan(job: str) -> str:
    import redis

    client = redis.Redis.from_url(COORD)
    try:
        plan = client.hget(f"riera:lease:{job}:meta", "plan")
    finally:
        client.close()
    assert plan is not None, "no driver registered the job yet"
    return str(plan.decode())


def _count(job: str, member: str) -> int:
    """Shards held by the driver named ``member`` (its identity adds a random suffix)."""
    return sum(1 for h in _holders(job).values() if h is not None and h.startswith(member + "/"))


def test_drivers_split_the_shards_and_take_over_a_killed_one(
    env: dict[str, str], tmp_path: Path, job: str
) -> None:
    rows = messages(6000, seed=1)
    send("memory://in", rows[:2000], key="chave")
    ckpt = tmp_path / "ckpt"
    a = Driver(env, job, ckpt)
    b: Driver | None = None
    try:
        _wait(lambda: _plan_ready(job) and _count(job, a.member) == SHARDS, "a to hold every shard")
        b = Driver(env, job, ckpt)
        _wait(lambda: _count(job, a.member) == 2 and _count(job, b.member) == 2,  # type: ignore[union-attr]
              "the drivers to split the shards 2/2")  # fmt: skip
        send("memory://in", rows[2000:4000], key="chave")
        _wait(lambda: _totals("out") == oracle(rows[:4000]), "both drivers' totals")
        a.proc.kill()  # kill -9: its shards' leases expire, b takes them over
        a.proc.wait()
        send("memory://in", rows[4000:], key="chave")
        _wait(lambda: _count(job, b.member) == SHARDS, "b to take every shard")  # type: ignore[union-attr]
        _wait(lambda: _totals("out") == oracle(rows), "exact totals after the take-over")
        assert b.stop() == 0, b.stderr()[-3000:]
        b = None
        assert _totals("out") == oracle(rows)
        shown = subprocess.run([sys.executable, "-m", "riera", "stream", "status", str(ckpt)],
                               env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        for s in range(SHARDS):
            assert f"shard-{s}" in shown.stdout and f"{job}/shard-{s}" in shown.stdout
    finally:
        a.stop()
        if b is not None:
            b.stop()


def _plan_ready(job: str) -> bool:
    try:
        _plan(job)
    except AssertionError:
        return False
    return True


def _records_in(ckpt: Path) -> int:
    total = 0
    for status in ckpt.glob("shard-*/status.json"):
        try:
            total += int(json.loads(status.read_text()).get("records_in") or 0)
        except (ValueError, OSError):
            pass
    return total


def test_a_paused_driver_cannot_commit_after_its_shards_were_taken_over(
    env: dict[str, str], tmp_path: Path, job: str
) -> None:
    rows = messages(5000, seed=2)
    send("memory://in", rows[:1500], key="chave")
    ckpt = tmp_path / "ckpt"
    # a checkpoints every 5 s: what it read since its last commit is in flight when it pauses
    a = Driver(env, job, ckpt, "--interval", "5000")
    b: Driver | None = None
    try:
        _wait(lambda: _plan_ready(job) and _count(job, a.member) == SHARDS, "a to hold every shard")
        _wait(lambda: _totals("out") == oracle(rows[:1500]), "a's first commit")
        before = _records_in(ckpt)
        send("memory://in", rows[1500:2500], key="chave")
        _wait(lambda: _records_in(ckpt) > before, "a to read the new records", timeout=30)
        a.proc.send_signal(signal.SIGSTOP)  # the zombie: alive, holding uncommitted records
        b = Driver(env, job, ckpt)
        _wait(lambda: _count(job, b.member) == SHARDS, "b to take every shard")  # type: ignore[union-attr]
        send("memory://in", rows[2500:4000], key="chave")
        _wait(lambda: _totals("out") == oracle(rows[:4000]), "b's totals")
        a.proc.send_signal(signal.SIGCONT)  # a wakes up with its old tokens
        text = _wait(lambda: ("fenced" in a.stderr() or "taken over" in a.stderr()) and a.stderr(),
                     "a to learn it was fenced")  # fmt: skip
        assert "taken over" in text or "fenced at token" in text
        assert _totals("out") == oracle(rows[:4000]), "nothing of the zombie was committed"
        # a is a live driver again: b hands it half the shards, with new tokens
        _wait(lambda: _count(job, a.member) == 2 and _count(job, b.member) == 2,  # type: ignore[union-attr]
              "the shards to be split again")  # fmt: skip
        send("memory://in", rows[4000:], key="chave")
        _wait(lambda: _totals("out") == oracle(rows), "exact totals at the end")
        assert a.stop() == 0, a.stderr()[-3000:]
        assert b.stop() == 0, b.stderr()[-3000:]
        b = None
        assert _totals("out") == oracle(rows)
        broker = Broker("out")
        try:
            fences = dict(broker.db.execute("SELECT job, fence FROM commits").fetchall())
        finally:
            broker.close()
        shard_jobs = {j: f for j, f in fences.items() if "/shard-" in j}
        assert len(shard_jobs) == SHARDS and all(f >= 2 for f in shard_jobs.values()), fences
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_one_driver_keeps_its_leases_while_it_starts_many_shards(
    job: str, tmp_path: Path, env: dict[str, str]
) -> None:
    """Starting a shard (recovery, replay) and stopping one take longer than a short lease; the
    renewals run on their own thread, so the driver never loses a lease to itself."""
    rows = messages(3000, seed=5)
    send("memory://in", rows, key="chave")
    q = wordcount_query("memory://in").write_stream("memory://out?mode=upsert", checkpoint=tmp_path / "ck",
                            coordinator=COORD, shards=8, name=job, lease_ttl="300ms",
                            stop_when_idle="1s")  # fmt: skip
    assert q.await_termination(120)
    status = q.status
    assert status["state"] == "finished", status
    assert status["lost"] == 0 and status["taken_over"] == 8, status
    assert _totals("out") == oracle(rows)
