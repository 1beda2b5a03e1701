"""Document 000's word count end to end on a real Redis: messages in a 3-partition Redis stream,
running totals committed exactly once to another Redis stream, read back by ``riera stream
counts``; and the fencing that keeps a superseded driver from committing anything.

Redis at ``RIERA_TEST_REDIS`` (default 127.0.0.1:6379): skipped when absent, failed under
``RIERA_TEST_REQUIRE_SERVICES=1``. Streams have unique names and are deleted afterwards.
"""

from __future__ import annotations

import collections
import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import riera
from riera import col
from riera.apps.streamcount import wordcount
from riera.errors import FencedError
from riera.stream.connectors.base import FINAL, open_sink
from riera.stream.connectors.redis import RedisSink
from riera.testing import send
from services import redis_client

pytestmark = pytest.mark.integration

REDIS = os.environ.get("RIERA_TEST_REDIS", "127.0.0.1:6379")
WORDS = ["Freezer", "Ar Condicionado", "Microondas", "Geladeira", "Fogão"]


@pytest.fixture
def redis_names() -> Iterator[tuple[Any, list[str]]]:
    """A client and a list to put the stream names used in: every key under them is deleted."""
    client = redis_client()
    names: list[str] = []
    try:
        yield client, names
    finally:
        for name in names:
            keys = list(client.scan_iter(match=f"{name}*"))
            if keys:
                client.delete(*keys)
        client.close()


def _redis_sink(url: str) -> RedisSink:
    sink = open_sink(url)
    assert isinstance(sink, RedisSink)
    return sink


def _uid(prefix: str) -> str:
    return f"riera-test-{prefix}-{uuid.uuid4().hex[:10]}"


def _messages(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"chave": str(i), "valorA": rng.choice(WORDS), "valorB": str(rng.randint(1, 3))}
            for i in range(n)]  # fmt: skip


def _oracle(rows: list[dict[str, str]]) -> dict[str, int]:
    totals = riera.from_items(rows).group_by("valorA").agg(total=col("valorB").cast("int64").sum())
    return {r["valorA"]: r["total"] for r in totals.collect()}


@pytest.mark.parametrize("trigger", ["micro-batch", "continuous"])
def test_wordcount_redis_to_redis_exactly_once(redis_names: tuple[Any, list[str]],
                                               tmp_path: Path, trigger: str) -> None:  # fmt: skip
    """900 messages over 3 partitions, sent in three parts while the query runs (micro-batch:
    each part its own epoch; continuous, checkpointing every 5 s: three polls in one epoch)."""
    client, names = redis_names
    src_name, dst_name = _uid("in"), _uid("out")
    names += [src_name, dst_name]
    src = f"redis://{REDIS}/0/{src_name}?partitions=3"
    dst = f"redis://{REDIS}/0/{dst_name}"
    rows = _messages(900, seed=5)
    send(src, rows[:300], key="chave")
    assert [client.xlen(f"{src_name}:{p}") > 0 for p in range(3)] == [True] * 3
    query = wordcount(src, dst, str(tmp_path / "ckpt"), trigger=trigger,
                      interval_ms=50 if trigger == "micro-batch" else 5000,
                      guarantee="exactly_once")  # fmt: skip
    try:
        sent = 300
        for part in (rows[300:600], rows[600:], []):  # each once the previous one is processed
            deadline = time.monotonic() + 10
            while query.metrics["records_in"] < sent:
                assert time.monotonic() < deadline and query.is_active, query.status
                time.sleep(0.005)
            send(src, part, key="chave")
            sent += len(part)
    finally:
        query.stop()
    assert query.await_termination(5)
    assert query.metrics["records_in"] == len(rows)
    assert len(query.progress) == (3 if trigger == "micro-batch" else 1)
    want = _oracle(rows)
    # every total the sink appended is new (exactly once: no epoch committed twice)
    series: dict[str, list[int]] = collections.defaultdict(list)
    for _, fields in client.xrange(dst_name):
        row = json.loads(fields[b"v"])
        series[row["valorA"]].append(row["total"])
    for word, totals in series.items():
        assert totals == sorted(set(totals)), f"{word}: totals repeated or went back: {totals}"
    # the CLI reads the latest totals back, most frequent first
    env = {**os.environ, "RIERA_PROVENANCE": "off"}
    done = subprocess.run([sys.executable, "-m", "riera", "stream", "counts", dst], env=env,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    expected = sorted(want.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(w, int(t)) for w, t in lines] == expected


def test_upsert_keeps_the_last_row_of_a_key_within_one_write(
    redis_names: tuple[Any, list[str]],
) -> None:
    _, names = redis_names
    name = _uid("upsert")
    names.append(name)
    sink = _redis_sink(f"redis://{REDIS}/0/{name}")
    try:
        sink.open("job", ("w",))
        assert sink.write(pa.table({"w": ["a", "b", "a"], "n": [1, 1, 2]}), 0, FINAL, 1)
        assert sink.latest() == {'["a"]': {"w": "a", "n": 2}, '["b"]': {"w": "b", "n": 1}}
    finally:
        sink.close()


def test_an_older_fence_is_refused_and_writes_nothing(
    redis_names: tuple[Any, list[str]],
) -> None:
    client, names = redis_names
    name = _uid("fence")
    names.append(name)
    url = f"redis://{REDIS}/0/{name}"
    old, new = _redis_sink(url), _redis_sink(url)
    try:
        for sink in (old, new):
            sink.open("job-1", ("word",))
        assert old.write(pa.table({"word": ["a"], "n": [1]}), 0, FINAL, fence=1)
        assert new.write(pa.table({"word": ["a", "b"], "n": [5, 6]}), 1, FINAL, fence=2)
        before = (client.xlen(name), client.hgetall(f"{name}:latest"))
        # the old driver wakes up and tries to commit a later epoch, in one and in two writes
        with pytest.raises(FencedError, match=r"fenced at token 2.*holds 1"):
            old.write(pa.table({"word": ["a", "c"], "n": [99, 99]}), 2, FINAL, fence=1)
        with pytest.raises(FencedError):
            old.write(pa.table({"word": ["d"], "n": [99]}), 3, 1, fence=1)
        assert (client.xlen(name), client.hgetall(f"{name}:latest")) == before
        assert new.latest() == {'["a"]': {"word": "a", "n": 5}, '["b"]': {"word": "b", "n": 6}}
        assert new.committed() == (1, FINAL)
        assert all(json.loads(f[b"v"])["n"] != 99 for _, f in client.xrange(name))
        # the newer driver goes on; a replayed write of it is skipped, not applied twice
        assert not new.write(pa.table({"word": ["a"], "n": [5]}), 1, FINAL, fence=2)
        assert new.write(pa.table({"word": ["a"], "n": [7]}), 2, FINAL, fence=2)
        assert new.latest()['["a"]'] == {"word": "a", "n": 7}
    finally:
        old.close()
        new.close()


def test_a_restarted_query_fences_the_previous_driver(redis_names: tuple[Any, list[str]],
                                                      tmp_path: Path) -> None:  # fmt: skip
    """Each start of a query takes a larger fencing token from its checkpoint: once a second run
    of the word count committed, a sink still holding the first run's token is refused."""
    client, names = redis_names
    src_name, dst_name = _uid("in"), _uid("out")
    names += [src_name, dst_name]
    src = f"redis://{REDIS}/0/{src_name}"
    dst = f"redis://{REDIS}/0/{dst_name}"
    ckpt = str(tmp_path / "ckpt")
    send(src, _messages(50, seed=1), key="chave")
    first = wordcount(src, dst, ckpt, interval_ms=50, until_idle=0.3)
    assert first.await_termination(20)
    job, fence_1 = first.engine.job, first.engine.fence
    send(src, _messages(20, seed=2), key="chave")
    second = wordcount(src, dst, ckpt, interval_ms=50, until_idle=0.3)
    assert second.await_termination(20)
    assert second.engine.fence > fence_1
    zombie = open_sink(dst)
    try:
        zombie.open(job, ("valorA",))
        length = client.xlen(dst_name)
        with pytest.raises(FencedError):
            zombie.write(pa.table({"valorA": ["Freezer"], "total": [-1]}), 10**6, FINAL,
                         fence_1)  # fmt: skip
        assert client.xlen(dst_name) == length
    finally:
        zombie.close()
    totals = {json.loads(k)[0]: json.loads(v)["total"]
              for k, v in client.hgetall(f"{dst_name}:latest").items()}  # fmt: skip
    assert totals == _oracle(_messages(50, seed=1) + _messages(20, seed=2))
