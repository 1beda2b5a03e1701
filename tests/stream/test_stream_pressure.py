"""Pressure and restarts of what a query depends on: a slow sink slows the sources and memory
stays flat; Redis killed and restarted from its append-only file in the middle of commits leaves
exact totals; a backlog replayed at full speed gives the windows real time gives."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import riera
import riera.stream
import riera.testing as t
from riera import col
from services import free_port, service_missing, stop_process, wait_until

pytestmark = pytest.mark.integration


def test_a_slow_sink_slows_the_source_and_memory_stays_flat(tmp_path: Path) -> None:
    """The loop is synchronous: while the sink takes its time, nothing more is read, so a fast
    source with millions of records waiting costs no memory."""

    def endless(partition: int) -> Iterator[dict[str, str]]:
        i = 0
        while True:
            yield {"w": f"w{i % 50}"}
            i += 1

    def slow(table, epoch, seq):  # type: ignore[no-untyped-def]
        time.sleep(0.05)

    url = riera.stream.from_generator(endless, name="pressure-endless")
    counts = riera.read_stream(url, schema={"w": "string"}).group_by("w").agg(n=col("w").count())
    q = counts.write_stream(slow, checkpoint=tmp_path / "ck", guarantee="at_least_once",
                            trigger=riera.stream.continuous("0ms", checkpoint="200ms"))  # fmt: skip
    me = psutil.Process()
    try:
        assert q.wait_for_epoch(2, 60)
        base = me.memory_full_info().uss
        read_before = q.metrics["records_in"]
        samples = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            samples.append(me.memory_full_info().uss)
            time.sleep(0.25)
        read = q.metrics["records_in"] - read_before
    finally:
        q.stop()
    assert max(samples) - base < 64 * 2**20, (
        f"memory grew by {(max(samples) - base) / 2**20:.0f} MiB"
    )
    # the sink took ≥ 50 ms per write, one write per poll of ≤ 20,000 records: the reading kept
    # pace with it instead of running ahead
    assert read <= 20_000 * (3 / 0.05 + 2)


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[tuple[int, Path, list[subprocess.Popen[bytes]]]]:
    """A redis-server of our own that keeps everything in an append-only file (fsync always)."""
    if shutil.which("redis-server") is None:
        service_missing("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    yield port, data, procs
    for p in procs:
        if p.poll() is None:
            stop_process(p)


def _start_redis(port: int, data: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    import redis

    log = data / "redis.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    procs.append(proc)

    def ready() -> bool:
        try:
            return bool(redis.Redis(port=port).ping())
        except redis.RedisError:
            return False

    wait_until(ready, proc, "redis-server", log)


def test_redis_killed_and_restarted_from_its_aof_mid_commit_leaves_exact_totals(
    aof_redis: tuple[int, Path, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    import redis

    port, data, procs = aof_redis
    _start_redis(port, data, procs)
    src = f"redis://127.0.0.1:{port}/0/purchases?partitions=2"
    dst = f"redis://127.0.0.1:{port}/0/totals"
    rng = random.Random(5)
    rows = [{"chave": str(i), "valorA": rng.choice("abcde"), "valorB": "1"} for i in range(6000)]
    t.send(src, rows, key="chave")
    env = {**os.environ, "RIERA_PROVENANCE": "off"}
    cmd = [sys.executable, "-m", "riera", "stream", "wordcount", "--from", src, "--to", dst,
           "--checkpoint", str(tmp_path / "ck"), "--interval", "50", "--until-idle", "1"]  # fmt: skip
    kills = 0
    for _ in range(8):
        query = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if kills < 2:  # Redis dies under the running query, between or inside its commits
            time.sleep(random.Random(kills).uniform(0.8, 1.6))
            procs[-1].send_signal(signal.SIGKILL)
            procs[-1].wait()
            kills += 1
            query.communicate(timeout=60)  # the query fails on the lost connection…
            _start_redis(port, data, procs)  # …and Redis comes back from its AOF
            continue
        _, errors = query.communicate(timeout=120)
        assert query.returncode == 0, errors.decode()[-3000:]
        break
    client = redis.Redis(port=port)
    totals = {
        json.loads(k)[0]: json.loads(v)["total"] for k, v in client.hgetall("totals:latest").items()
    }
    expected: dict[str, int] = {}
    for r in rows:
        expected[r["valorA"]] = expected.get(r["valorA"], 0) + 1
    assert totals == expected
    assert kills == 2


def test_a_backlog_replayed_at_full_speed_gives_the_real_time_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event-time windows do not depend on when records arrive: three seconds of events fed as
    they happen, and the same events read at once from a backlog, close the same windows with
    the same totals."""
    monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "brokers"))
    start = 1_700_000_000_000
    rng = random.Random(9)
    events = sorted(
        ({"w": rng.choice("xyz"), "ts": start + rng.randrange(0, 3000)} for _ in range(600)),
        key=lambda e: e["ts"],
    )

    def windows(url: str) -> list[tuple[object, ...]]:
        ds = (
            riera.read_stream(url, schema={"w": "string", "ts": "int64"})
            .with_watermark("ts", delay="100ms", idle_timeout="300ms")
            .group_by("w", window=riera.stream.tumbling("500ms", on="ts"))
            .agg(n=col("w").count())
        )
        rows = t.run_stream(ds, idle=1.5, dead_letter=t.CollectSink())
        return sorted((r["w"], r["window_start"], r["n"]) for r in rows)

    live = t.memory_stream("live-events")
    sender_done = []

    def feed() -> None:  # real time: each event when its time comes (from a thread)
        t0 = time.monotonic()
        for e in events:
            due = t0 + (e["ts"] - start) / 1000
            time.sleep(max(0.0, due - time.monotonic()))
            t.send(live, [e])
        sender_done.append(True)

    import threading

    feeder = threading.Thread(target=feed)
    feeder.start()
    real_time = windows(live)
    feeder.join()
    backlog = windows(t.memory_stream("backlog-events", events))
    assert sender_done and backlog == real_time
    assert sum(n for *_, n in backlog) == len(events)
