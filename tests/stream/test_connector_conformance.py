"""One conformance suite for every stream connector: the properties of ``riera.stream.connectors.base``
checked over each source (memory, redis, file, tcp, kafka) and each sink (memory, redis, file,
sqlite, postgresql, kafka), against real services.

A *kit* wraps one connector kind for the tests: it opens the connector at a fresh name (uuid), knows
how to produce to a source and trim it, how to read back what a sink holds, and cleans up (the
memory broker lives under ``tmp_path``, Redis keys and PostgreSQL tables are deleted, Kafka topics
too). A property that does not apply to a kind (replaying a socket, upserting into files) is not
run for it: each kit says what it supports.

Services: Redis at ``RIERA_TEST_REDIS`` (default 127.0.0.1:6379) and PostgreSQL at
``RIERA_TEST_PG_DSN`` (default ``postgresql://postgres@127.0.0.1:5432/test``) skip when absent, and
fail under ``RIERA_TEST_REQUIRE_SERVICES=1`` (CI). Kafka runs only where ``RIERA_TEST_KAFKA=
host:port`` names a broker, and skips otherwise, even on CI: no broker runs on the CI machines.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from riera.errors import FencedError, PlanError, SourceTrimmedError
from riera.stream.connectors import base
from riera.stream.connectors.base import FINAL, Message, committed_epoch
from services import free_port, redis_client, service_missing

REDIS = os.environ.get("RIERA_TEST_REDIS", "127.0.0.1:6379")
PG_DSN = os.environ.get("RIERA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
KAFKA = os.environ.get("RIERA_TEST_KAFKA", "")
KAFKA_SKIP = "set RIERA_TEST_KAFKA=host:port to test the Kafka connectors against a broker"

SOURCES = ["memory", "redis", "file", "tcp", "kafka"]
SINKS = ["memory", "redis", "file", "sqlite", "postgresql", "kafka"]


def _uid() -> str:
    return uuid.uuid4().hex[:12]


def _redis_client() -> Any:
    client = redis_client()
    return client


def _redis_cleanup(client: Any, name: str) -> None:
    keys = list(client.scan_iter(match=f"{name}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _pg_connect() -> Any:
    import psycopg

    try:
        return psycopg.connect(PG_DSN, connect_timeout=3, autocommit=True)
    except psycopg.Error as err:
        service_missing(
            f"PostgreSQL at {PG_DSN} is not reachable ({str(err).strip()}); set RIERA_TEST_PG_DSN"
        )


def _kafka_admin() -> Any:
    if not KAFKA:
        pytest.skip(KAFKA_SKIP)
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": KAFKA})


def _kafka_drop(admin: Any, topics: list[str]) -> None:
    for future in admin.delete_topics(topics, operation_timeout=10).values():
        try:
            future.result()
        except Exception:  # already gone, or never made
            pass


# -- sources --------------------------------------------------------------------------------------


@dataclass
class SourceKit:
    """One source at a fresh name, its producer, and what the kind supports."""

    kind: str
    url: str
    partitions: int
    produce: Callable[[list[tuple[bytes | None, bytes, float | None]]], None]
    order: Callable[[Any], Any]  # a sort key for positions
    trim: Callable[[int, Any], None] | None = None  # drop a partition's records through a position
    closers: list[Callable[[], None]] = field(default_factory=list)

    def source(self) -> base.Source:
        src = base.open_source(self.url)
        self.closers.append(src.close)
        return src

    def reader(self, src: base.Source, start: dict[int, Any]) -> base.SourceReader:
        reader = src.reader(start)
        self.closers.append(reader.close)
        return reader


def _redis_id(pos: str) -> tuple[int, int]:
    ms, _, seq = str(pos).partition("-")
    return int(ms), int(seq or 0)


@pytest.fixture(params=SOURCES)
def source_kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[int], SourceKit]]:
    """``make(partitions)``: a fresh source of the parametrized kind (file and tcp: always 1)."""
    kind: str = request.param
    kits: list[SourceKit] = []
    cleanups: list[Callable[[], None]] = []

    def make(partitions: int) -> SourceKit:
        name = f"riera-test-{_uid()}"
        if kind == "memory":
            from riera.stream.connectors.memory import Broker

            monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "broker"))
            url = f"memory://{name}?partitions={partitions}"
            producer = base.open_producer(url)

            def trim_memory(part: int, pos: Any) -> None:
                broker = Broker(name)
                broker.trim(part, int(pos))
                broker.close()

            kit = SourceKit(kind, url, partitions, producer.send, int, trim_memory)
        elif kind == "redis":
            client = _redis_client()
            url = f"redis://{REDIS}/0/{name}?partitions={partitions}"
            producer = base.open_producer(url)
            cleanups.append(lambda: _redis_cleanup(client, name))

            def trim_redis(part: int, pos: Any) -> None:
                ms, seq = _redis_id(pos)
                stream = name if partitions == 1 else f"{name}:{part}"
                client.xtrim(stream, minid=f"{ms}-{seq + 1}", approximate=False)

            kit = SourceKit(kind, url, partitions, producer.send, _redis_id, trim_redis)
        elif kind == "file":
            folder = tmp_path / name
            url = f"file://{folder}"
            producer = base.open_producer(url)

            def trim_file(part: int, pos: Any) -> None:
                (folder / pos[0]).unlink()

            kit = SourceKit(kind, url, 1, producer.send, tuple, trim_file)
        elif kind == "tcp":
            url = f"tcp://127.0.0.1:{free_port()}"
            producer = base.open_producer(url)
            kit = SourceKit(kind, url, 1, producer.send, int)
        else:
            admin = _kafka_admin()
            url = f"kafka://{KAFKA}/{name}?partitions={partitions}"
            producer = base.open_producer(url)
            cleanups.append(lambda: _kafka_drop(admin, [name]))

            def trim_kafka(part: int, pos: Any) -> None:
                from confluent_kafka import TopicPartition

                futures = admin.delete_records([TopicPartition(name, part, int(pos))])
                for future in futures.values():
                    future.result()

            kit = SourceKit(kind, url, partitions, producer.send, int, trim_kafka)
        kit.closers.append(producer.close)
        kits.append(kit)
        return kit

    yield make
    for kit in kits:
        for close in reversed(kit.closers):
            close()
    for cleanup in cleanups:
        cleanup()


def _value(i: int, key: str | None = None) -> bytes:
    return json.dumps({"i": i, "k": key, "ts": 1_000 + i}).encode()


def _produce(kit: SourceKit, n: int, first: int = 0) -> None:
    kit.produce([(None, _value(i), 1_000.0 + i) for i in range(first, first + n)])


def _drain(reader: base.SourceReader, n: int, upto: dict[int, Any] | None = None,
           timeout: float = 10.0) -> list[Message]:  # fmt: skip
    """Poll until ``n`` messages came (or the timeout passed); small batches on purpose."""
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out += reader.poll(7, 0.2, upto)
    return out


def _ints(messages: list[Message]) -> list[int]:
    return [json.loads(m.value)["i"] for m in messages]


def test_source_reads_everything_in_order(source_kit: Callable[[int], SourceKit]) -> None:
    kit = source_kit(1)
    src = kit.source()
    reader = kit.reader(src, dict.fromkeys(range(src.partitions())))
    _produce(kit, 25)
    got = _drain(reader, 25)
    assert _ints(got) == list(range(25))
    assert [m.partition for m in got] == [0] * 25
    assert [m.ts_ms for m in got] == [1_000.0 + i for i in range(25)]
    orders = [kit.order(m.position) for m in got]
    assert orders == sorted(orders) and len(set(orders)) == 25, "positions must advance"
    assert reader.positions()[0] == got[-1].position
    assert reader.poll(10, 0.05) == []


def test_source_resumes_exactly_after_a_position(source_kit: Callable[[int], SourceKit]) -> None:
    kit = source_kit(1)
    src = kit.source()
    if not src.replayable:
        pytest.skip(f"{kit.kind}:// is not replayable: a resumed reader cannot read again")
    _produce(kit, 20)
    first = _drain(kit.reader(src, {0: None}), 20)
    assert _ints(first) == list(range(20))
    again = kit.source()  # as a restarted driver would
    rest = _drain(kit.reader(again, {0: first[11].position}), 8)
    assert _ints(rest) == list(range(12, 20))
    assert [m.position for m in rest] == [m.position for m in first[12:]]
    assert kit.reader(again, {0: first[-1].position}).poll(10, 0.05) == []


def test_source_upto_stops_exactly(source_kit: Callable[[int], SourceKit]) -> None:
    kit = source_kit(1)
    src = kit.source()
    reader = kit.reader(src, {0: None})
    _produce(kit, 15)
    # A line count for a socket (the ninth line); else the ninth message's logged position.
    bound = _drain(kit.reader(src, {0: None}), 15)[8].position if src.replayable else 9
    head = _drain(reader, 100, upto={0: bound}, timeout=1.0)
    assert _ints(head) == list(range(9))
    assert reader.positions()[0] == bound
    assert reader.poll(10, 0.05, upto={0: bound}) == []
    assert reader.poll(10, 0.05, upto={}) == [], "an unnamed partition is not read"
    assert _ints(_drain(reader, 6)) == list(range(9, 15))


def test_source_upto_leaves_unnamed_partitions_alone(
    source_kit: Callable[[int], SourceKit],
) -> None:
    kit = source_kit(3)
    if kit.partitions == 1:
        pytest.skip(f"{kit.kind}:// has one partition")
    src = kit.source()
    kit.produce([(f"k{i}".encode(), _value(i, f"k{i}"), None) for i in range(30)])
    everything = _drain(kit.reader(src, dict.fromkeys(range(3))), 30)
    in_one = [m for m in everything if m.partition == 1]
    assert in_one, "30 keys should reach partition 1"
    reader = kit.reader(src, dict.fromkeys(range(3)))
    got = _drain(reader, 100, upto={1: in_one[-1].position}, timeout=1.0)
    assert {m.partition for m in got} == {1}
    assert _ints(got) == _ints(in_one)


def test_source_empty_poll_waits_about_the_timeout(source_kit: Callable[[int], SourceKit]) -> None:
    kit = source_kit(1)
    src = kit.source()
    reader = kit.reader(src, dict.fromkeys(range(src.partitions())))
    began = time.monotonic()
    assert reader.poll(10, 0.3) == []
    took = time.monotonic() - began
    assert 0.15 <= took < 1.5, f"an empty poll with a 0.3 s timeout took {took:.3f} s"


def test_source_same_key_same_partition(source_kit: Callable[[int], SourceKit]) -> None:
    kit = source_kit(3)
    src = kit.source()
    reader = kit.reader(src, dict.fromkeys(range(src.partitions())))
    keys = [f"key-{k}" for k in range(6)]
    kit.produce([(keys[i % 6].encode(), _value(i, keys[i % 6]), None) for i in range(36)])
    got = _drain(reader, 36)
    assert len(got) == 36
    parts: dict[str, set[int]] = {}
    order: dict[str, list[int]] = {}
    for m in got:
        data = json.loads(m.value)
        parts.setdefault(data["k"], set()).add(m.partition)
        order.setdefault(data["k"], []).append(data["i"])
        if m.key is not None:
            assert m.key == data["k"].encode()
    assert all(len(p) == 1 for p in parts.values()), parts
    assert all(seq == sorted(seq) for seq in order.values()), "a key's messages stay in order"
    if kit.partitions > 1:
        assert len(set().union(*parts.values())) > 1, "six keys should spread over partitions"


def test_source_trimmed_below_resume_position_refuses(
    source_kit: Callable[[int], SourceKit],
) -> None:
    kit = source_kit(1)
    if kit.trim is None:
        pytest.skip(f"{kit.kind}:// keeps nothing to trim")
    src = kit.source()
    _produce(kit, 10)
    got = _drain(kit.reader(src, {0: None}), 10)
    kit.trim(0, got[5].position)  # records 0..5 gone; a query at record 2 never read 3..5
    with pytest.raises(SourceTrimmedError, match=r"checkpoint|Restore"):
        kit.source().reader({0: got[2].position})


# -- sinks ----------------------------------------------------------------------------------------


@dataclass
class SinkKit:
    """Opens sinks of one kind at one fresh place and reads back what they hold."""

    kind: str
    modes: tuple[str, ...]  # what the kind supports, the default first
    url: Callable[[str], str]  # mode -> URL
    contents: Callable[[Any, str], list[dict[str, Any]]]  # (sink, mode) -> its rows, sorted
    per_key_versions: bool = True  # an older version from another job never replaces a newer
    sinks: list[Any] = field(default_factory=list)

    def open(self, job: str, mode: str | None = None, key: tuple[str, ...] = ("word",)) -> Any:
        sink = base.open_sink(self.url(mode or self.modes[0]))
        self.sinks.append(sink)
        sink.open(job, key)
        return sink


def _sorted(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(rows, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def _memory_contents(name: str) -> Callable[[Any, str], list[dict[str, Any]]]:
    def contents(sink: Any, mode: str) -> list[dict[str, Any]]:
        if mode == "upsert":
            return _sorted(list(sink.latest().values()))
        rows = sink.broker.read(0, 0, 1_000_000, None)
        return _sorted([json.loads(value) for _, _, value, _ in rows])

    return contents


@pytest.fixture(params=SINKS)
def sink_kit(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SinkKit]:
    kind: str = request.param
    name = f"riera-test-{_uid()}"
    cleanups: list[Callable[[], None]] = []
    if kind == "memory":
        monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "broker"))
        kit = SinkKit(kind, ("upsert", "append"), lambda m: f"memory://{name}-{m}?mode={m}",
                      _memory_contents(name))  # fmt: skip
    elif kind == "redis":
        client = _redis_client()
        cleanups.append(lambda: _redis_cleanup(client, name))

        def redis_contents(sink: Any, mode: str) -> list[dict[str, Any]]:
            if mode == "upsert":
                return _sorted(list(sink.latest().values()))
            entries = client.xrange(sink.name)
            return _sorted([json.loads(fields[b"v"]) for _, fields in entries])

        kit = SinkKit(kind, ("upsert", "append"),
                      lambda m: f"redis://{REDIS}/0/{name}-{m}?mode={m}", redis_contents)  # fmt: skip
    elif kind == "file":
        kit = SinkKit(kind, ("append",), lambda m: f"file://{tmp_path / name}",
                      lambda sink, mode: _sorted(sink.rows()))  # fmt: skip
    elif kind in ("sqlite", "postgresql"):
        table = f"riera_t_{_uid()}"
        if kind == "sqlite":
            db = tmp_path / "out.db"
            base_url = f"sqlite:///{db}"  # SQLAlchemy's form: four slashes for /tmp/...
            assert base_url.startswith("sqlite:////")
        else:
            conn = _pg_connect()
            base_url = PG_DSN

            def drop() -> None:
                for mode in ("upsert", "append"):
                    conn.execute(f'DROP TABLE IF EXISTS "{table}_{mode}"')
                    with_commits = conn.execute("SELECT to_regclass('riera_commits')").fetchone()
                    if with_commits and with_commits[0] is not None:
                        conn.execute(
                            "DELETE FROM riera_commits WHERE tbl = %s", (f"{table}_{mode}",)
                        )
                conn.close()

            cleanups.append(drop)
        sep = "&" if "?" in base_url else "?"
        kit = SinkKit(kind, ("upsert", "append"),
                      lambda m: f"{base_url}{sep}table={table}_{m}&mode={m}",
                      lambda sink, mode: _sorted(list(sink.latest().values())))  # fmt: skip
    else:
        admin = _kafka_admin()
        topics = [f"{name}-{m}{suffix}" for m in ("upsert", "append")
                  for suffix in ("", ".riera-commits")]  # fmt: skip
        cleanups.append(lambda: _kafka_drop(admin, topics))
        kit = SinkKit(kind, ("upsert", "append"), lambda m: f"kafka://{KAFKA}/{name}-{m}?mode={m}",
                      lambda sink, mode: _sorted(list(sink.latest().values())),
                      per_key_versions=False)  # fmt: skip
    yield kit
    for sink in kit.sinks:
        sink.close()
    for cleanup in cleanups:
        cleanup()


def _rows(*pairs: tuple[str, int]) -> pa.Table:
    return pa.table({"word": [w for w, _ in pairs], "n": [n for _, n in pairs]})


def _job() -> str:
    return f"job-{_uid()}"


def test_sink_write_then_committed(sink_kit: SinkKit) -> None:
    job = _job()
    sink = sink_kit.open(job)
    assert sink.committed() == (-1, -1)
    assert sink.write(_rows(("a", 1), ("b", 2)), 0, 0, 1) is True
    assert sink.committed() == (0, 0)
    assert sink.write(_rows(("c", 3)), 0, 1, 1) is True
    assert sink.committed() == (0, 1)
    mode = sink_kit.modes[0]
    assert sink_kit.contents(sink, mode) == _sorted(
        [{"word": "a", "n": 1}, {"word": "b", "n": 2}, {"word": "c", "n": 3}]
    )
    again = sink_kit.open(job)  # a restarted driver sees the record
    assert again.committed() == (0, 1)
    assert sink_kit.open(_job()).committed() == (-1, -1), "another job has no record yet"


def test_sink_rewrite_of_an_applied_write_is_skipped(sink_kit: SinkKit) -> None:
    sink = sink_kit.open(_job())
    mode = sink_kit.modes[0]
    assert sink.write(_rows(("a", 1)), 1, 3, 1) is True
    before = sink_kit.contents(sink, mode)
    assert sink.write(_rows(("a", 100), ("z", 9)), 1, 3, 1) is False
    assert sink.write(_rows(("a", 200)), 1, 2, 1) is False
    assert sink.write(_rows(("a", 300)), 0, FINAL, 1) is False
    assert sink_kit.contents(sink, mode) == before
    assert sink.committed() == (1, 3)


def test_sink_older_fence_is_refused(sink_kit: SinkKit) -> None:
    job = _job()
    sink = sink_kit.open(job)
    mode = sink_kit.modes[0]
    assert sink.write(_rows(("a", 1)), 0, 0, 2) is True
    before = sink_kit.contents(sink, mode)
    zombie = sink_kit.open(job)
    with pytest.raises(FencedError, match=r"fenced|taken over"):
        zombie.write(_rows(("a", 666)), 0, 1, 1)
    assert sink.committed() == (0, 0)
    assert sink_kit.contents(sink, mode) == before
    assert sink.write(_rows(("a", 2)), 0, 1, 3) is True  # a newer token is taken
    with pytest.raises(FencedError):
        sink.write(_rows(("a", 5)), 0, 2, 2)
    assert sink.committed() == (0, 1)


def _claim_fences(sink_kit: SinkKit, job: str, old: Any) -> None:
    """A new driver's first act: a write of nothing at the last applied identifier, which the
    sink skips (or, for a job without a record, applies empty) but whose token it keeps."""
    mode = sink_kit.modes[0]
    before = sink_kit.contents(old, mode)
    newer = sink_kit.open(job)
    epoch, seq = newer.committed()
    assert newer.write(pa.table({}), epoch, seq, 5) is (epoch == -1)
    assert newer.committed() == (epoch, seq)
    with pytest.raises(FencedError, match=r"fenced|taken over"):
        old.write(_rows(("a", 666)), epoch + 1, 0, 4)  # the driver it took over from
    assert sink_kit.contents(old, mode) == before
    assert newer.write(_rows(("b", 2)), epoch + 1, FINAL, 5) is True
    assert newer.committed() == (epoch + 1, FINAL)


def test_sink_skipped_write_still_fences(sink_kit: SinkKit) -> None:
    job = _job()
    old = sink_kit.open(job)
    assert old.write(_rows(("a", 1)), 3, FINAL, 4) is True
    _claim_fences(sink_kit, job, old)


def test_sink_first_claim_fences(sink_kit: SinkKit) -> None:
    job = _job()
    _claim_fences(sink_kit, job, sink_kit.open(job))


def test_sink_upsert_never_goes_backwards(sink_kit: SinkKit) -> None:
    if "upsert" not in sink_kit.modes:
        with pytest.raises(PlanError, match="upsert"):
            base.open_sink(sink_kit.url("append") + "?mode=upsert")
        return
    sink = sink_kit.open(_job(), "upsert")
    assert sink.write(_rows(("a", 20), ("b", 1)), 2, 0, 1) is True
    assert sink.write(_rows(("a", 15)), 1, 5, 1) is False
    assert sink.write(_rows(("b", 2)), 2, 1, 1) is True
    expected = _sorted([{"word": "a", "n": 20}, {"word": "b", "n": 2}])
    assert sink_kit.contents(sink, "upsert") == expected
    if sink_kit.per_key_versions:
        # Another job, whose own record lets version (1, 5) in: the stored (2, 0) row stays.
        other = sink_kit.open(_job(), "upsert")
        assert other.write(_rows(("a", 15), ("c", 7)), 1, 5, 1) is True
        expected = _sorted([*expected, {"word": "c", "n": 7}])
        assert sink_kit.contents(sink, "upsert") == expected


def test_sink_append_keeps_every_row(sink_kit: SinkKit) -> None:
    if "append" not in sink_kit.modes:
        pytest.skip(f"{sink_kit.kind} sinks only upsert")
    sink = sink_kit.open(_job(), "append")
    assert sink.write(_rows(("a", 1), ("a", 1)), 0, 0, 1) is True
    assert sink.write(_rows(("a", 1), ("b", 2)), 0, 1, 1) is True
    assert sink.write(_rows(("a", 9)), 0, 1, 1) is False
    assert sink_kit.contents(sink, "append") == _sorted(
        [{"word": "a", "n": 1}] * 3 + [{"word": "b", "n": 2}]
    )


def test_sink_final_seq_completes_the_epoch(sink_kit: SinkKit) -> None:
    sink = sink_kit.open(_job())
    assert sink.write(_rows(("a", 1)), 3, 0, 1) is True
    assert committed_epoch(sink) == 2
    assert sink.write(_rows(("b", 1)), 3, 1, 1) is True
    assert committed_epoch(sink) == 2
    assert sink.write(_rows(), 3, FINAL, 1) is True
    assert sink.committed() == (3, FINAL)
    assert committed_epoch(sink) == 3
    assert sink.write(_rows(("c", 1)), 4, 0, 1) is True
    assert committed_epoch(sink) == 3


def test_sink_empty_write_records_the_commit(sink_kit: SinkKit) -> None:
    sink = sink_kit.open(_job())
    empty = pa.table({"word": pa.array([], pa.string()), "n": pa.array([], pa.int64())})
    assert sink.write(empty, 0, 0, 1) is True
    assert sink.committed() == (0, 0)
    assert sink_kit.contents(sink, sink_kit.modes[0]) == []
    assert sink.write(empty, 0, 0, 1) is False
    assert sink.write(_rows(("a", 1)), 0, 1, 1) is True
    assert sink_kit.contents(sink, sink_kit.modes[0]) == [{"word": "a", "n": 1}]


# -- what is particular to one connector -----------------------------------------------------------


def _values(messages: list[Message]) -> list[bytes]:
    return [m.value for m in messages]


def test_file_source_tails_complete_lines_across_files(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.log").write_bytes(b"one\ntw")
    (folder / ".a.log.swp").write_bytes(b"hidden\n")
    (folder / "b.log.tmp").write_bytes(b"in progress\n")
    src = base.open_source(f"file://{folder}?delete=1")
    with contextlib.closing(src.reader({0: None})) as reader:
        assert _values(reader.poll(10, 0.05)) == [b"one"], "a partial last line waits"
        assert reader.poll(10, 0.05) == []
        with open(folder / "a.log", "ab") as f:
            f.write(b"o\nthr")
        got = reader.poll(10, 0.05)
        assert _values(got) == [b"two"] and got[0].position == ["a.log", 8]
        (folder / "b.log").write_bytes(b'{"w": "four", "ts": 1234}\nfive')
        got = _drain(reader, 2)
        assert _values(got) == [b"thr", b'{"w": "four", "ts": 1234}'], (
            "a finished file's tail is read"
        )
        assert got[0].position == ["a.log", 11] and got[1].ts_ms == 1234.0
        assert src.lag(reader.positions()) == {0: 0}, (
            "the newest file's partial line is not counted"
        )
        assert src.lag({0: ["a.log", 4]}) == {0: 3}
        src.release(reader.positions())
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "b.log",
            "b.log.tmp",
        ], "?delete=1 deletes the files wholly before the committed position"
        with pytest.raises(SourceTrimmedError, match=r"a\.log"):
            src.reader({0: ["a.log", 8]})


def test_file_sink_replay_overwrites_a_crashed_write(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    sink = base.open_sink(f"file://{folder}")
    sink.open("job", ())
    assert sink.write(_rows(("a", 1)), 0, 0, 1)
    # A crash between the data file's rename and the commit record's: the data file of (0, 1) is
    # in place, the record still says (0, 0).
    (folder / "epoch-0000000000-0000000001.jsonl").write_text('{"word": "stale", "n": 0}\n')
    assert sink.write(_rows(("b", 2)), 0, 1, 1) is True
    assert sink.rows() == [{"word": "a", "n": 1}, {"word": "b", "n": 2}]
    assert sink.write(pa.table({}), 0, FINAL, 1) is True
    assert committed_epoch(sink) == 0
    # The committed files are a log another query can tail, in commit order.
    with contextlib.closing(base.open_source(f"file://{folder}").reader({0: None})) as reader:
        assert [json.loads(v)["word"] for v in _values(_drain(reader, 2))] == ["a", "b"]
    other = base.open_sink(f"file://{folder}")
    other.open("another-job", ())
    with pytest.raises(PlanError, match="another directory"):
        other.write(_rows(("c", 3)), 0, 0, 1)


@pytest.mark.parametrize("scheme", ["file", "tcp"])
def test_line_producers_refuse_newlines(scheme: str, tmp_path: Path) -> None:
    url = f"file://{tmp_path}" if scheme == "file" else f"tcp://127.0.0.1:{free_port()}"
    producer = base.open_producer(url)
    try:
        with pytest.raises(PlanError, match="newline"):
            producer.send([(None, b"two\nlines", None)])
    finally:
        producer.close()


def test_tcp_reader_counts_on_and_reconnects() -> None:
    url = f"tcp://127.0.0.1:{free_port()}"
    server = base.open_producer(url)
    reader = base.open_source(url).reader({0: 5})  # a logged count: it just goes on counting
    try:
        server.send([(None, b"a", None)])
        got = _drain(reader, 1)
        assert _values(got) == [b"a"] and got[0].position == 6
        server.close()
        server = base.open_producer(url)  # the server comes back on the same port
        deadline = time.monotonic() + 10
        while server.clients() == 0 and time.monotonic() < deadline:  # type: ignore[attr-defined]
            reader.poll(1, 0.05)  # polls reconnect
        server.send([(None, b"b", None)])
        got = _drain(reader, 1)
        assert _values(got) == [b"b"] and reader.positions() == {0: 7}
    finally:
        reader.close()
        server.close()


def test_tcp_errors_name_the_address(monkeypatch: pytest.MonkeyPatch) -> None:
    from riera.errors import StreamError
    from riera.stream.connectors import tcp

    port = free_port()
    with pytest.raises(StreamError, match=f"127.0.0.1:{port}.*within 0.2 s"):
        base.open_source(f"tcp://127.0.0.1:{port}?connect_timeout=0.2").reader({0: None})
    monkeypatch.setattr(tcp, "SEND_WAIT_S", 0.2)
    server = base.open_producer(f"tcp://127.0.0.1:{port}")
    try:
        with pytest.raises(StreamError, match=f"no client connected to 127.0.0.1:{port}"):
            server.send([(None, b"x", None)])
    finally:
        server.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh table's URL (without ?mode=) in SQLite or PostgreSQL."""
    table = f"riera_t_{_uid()}"
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'out.db'}?table={table}"
        return
    conn = _pg_connect()
    try:
        yield f"{PG_DSN}?table={table}"
    finally:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        conn.execute("DELETE FROM riera_commits WHERE tbl = %s", (table,))
        conn.close()


def test_sql_sink_types_and_keyless_upsert(sql_url: str) -> None:
    import datetime as dt
    from decimal import Decimal

    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)
    rows = pa.table(
        {
            "n": pa.array([1], pa.int32()),
            "x": [2.5],
            "ok": [True],
            "s": ["olá"],
            "at": pa.array([when], pa.timestamp("us", tz="UTC")),
            "d": pa.array([dt.date(2024, 5, 1)], pa.date32()),
            "m": pa.array([Decimal("12.34")], pa.decimal128(10, 2)),
            "tags": [["a", "b"]],
        }
    )
    sink = base.open_sink(sql_url)
    try:
        sink.open("job", ())  # no key: a global aggregate keeps one row
        assert sink.write(rows, 0, 0, 1)
        assert sink.write(rows.set_column(0, "n", pa.array([2], pa.int32())), 0, 1, 1)
        latest = sink.latest()  # type: ignore[attr-defined]
        assert list(latest) == [""]
        row = latest[""]
        assert row["n"] == 2 and row["x"] == 2.5 and row["s"] == "olá"
        if sql_url.startswith("postgresql"):
            assert row["ok"] is True and row["at"] == when and row["d"] == dt.date(2024, 5, 1)
            assert row["m"] == Decimal("12.34") and row["tags"] == ["a", "b"]
        else:  # SQLite keeps what it cannot type as text
            assert row["ok"] == 1 and row["at"] == when.isoformat() and row["m"] == "12.34"
            assert json.loads(row["tags"]) == ["a", "b"]
    finally:
        sink.close()


def test_sql_sink_refuses_a_table_of_other_columns(sql_url: str) -> None:
    from riera.errors import SinkError

    sink = base.open_sink(sql_url)
    try:
        sink.open("job", ("word",))
        assert sink.write(_rows(("a", 1)), 0, 0, 1)
        with pytest.raises(SinkError, match="drop the table"):
            sink.write(pa.table({"word": ["b"], "total": [2]}), 0, 1, 1)
        assert sink.committed() == (0, 0), "a failed write commits nothing"
        assert sink.write(_rows(("b", 2)), 0, 1, 1)
    finally:
        sink.close()
    with pytest.raises(PlanError, match=r"\?table="):
        base.open_sink(sql_url.split("?")[0])
