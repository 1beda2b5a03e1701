"""What a streaming query computes: the batch engine is the oracle.

A finite stream run to the end gives, per key, exactly the rows ``group_by().agg()`` gives over the
same input — whatever the trigger, the guarantee, and however the input is cut into sends and
epochs. Expressions, row functions and enrichment joins run the batch kernels; operators that need
the whole input are refused where they are written; bad records go to the dead letters, counted,
while the others are counted exactly.

Everything runs against the real embedded broker (``memory://`` in a directory of the test's own).
"""

from __future__ import annotations

import itertools
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import riera
import riera.testing as rt
from riera import col
from riera.errors import CheckpointError, PlanError
from riera.stream import continuous, micro_batch, sliding, tumbling
from riera.stream.connectors.base import open_producer
from riera.stream.query import StreamingQuery

SCHEMA = {"k": "string", "v": "int64"}
TRIGGERS = {
    "continuous": lambda: continuous(),
    "continuous-50ms": lambda: continuous(checkpoint="50ms"),
    "micro-batch": lambda: micro_batch("50ms"),
}
GUARANTEES = ["exactly_once", "at_least_once"]


def _aggs() -> dict[str, Any]:
    return {
        "total": col("v").sum(),
        "n": col("v").count(),
        "lo": col("v").min(),
        "hi": col("v").max(),
        "avg": col("v").mean(),
        "first": col("v").first(),
    }


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A broker directory of the test's own."""
    folder = tmp_path / "brokers"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(folder))
    return folder


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def _wait(cond: Callable[[], bool], what: str, timeout: float = 8.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _committed_records(query: StreamingQuery) -> int:
    """Records of every committed epoch (the query keeps the last 100: enough here)."""
    return sum(int(p["records_in"]) for p in query.progress)


def _wait_committed(query: StreamingQuery, n: int) -> None:
    def done() -> bool:
        assert query.is_active or query.status["state"] != "failed", query.status
        return _committed_records(query) >= n

    _wait(done, f"{n} records committed ({query.status})")


def _last_per_key(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[Any, dict[str, Any]]:
    out: dict[Any, dict[str, Any]] = {}
    for r in rows:
        out[tuple(r[k] for k in keys)] = r
    return out


def _by_key(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[Any, dict[str, Any]]:
    out = {tuple(r[k] for k in keys): r for r in rows}
    assert len(out) == len(rows), "the oracle has one row per key"
    return out


def _run_in_sends(ds: riera.Dataset, url: str, chunks: list[list[dict[str, Any]]], tmp: Path,
                  **options: Any) -> tuple[list[dict[str, Any]], StreamingQuery]:  # fmt: skip
    """Start ``ds``, send each chunk once the previous one is committed (so they land in
    different epochs), then stop (committing what is in flight); the sink's rows."""
    sink = rt.CollectSink()
    query = ds.write_stream(sink, checkpoint=tmp / _name("ckpt"), **options)
    try:
        sent = 0
        for chunk in chunks:
            rt.send(url, chunk)
            sent += len(chunk)
            _wait_committed(query, sent)
    finally:
        query.stop()
    assert query.await_termination(5)
    rows: list[dict[str, Any]] = sink.rows()
    return rows, query


# -- running aggregates equal the batch oracle ----------------------------------------------------

_rows = st.lists(
    st.fixed_dictionaries({
        "k": st.one_of(st.sampled_from(["a", "b", "Fogão", ""]), st.text(max_size=4), st.none()),
        "v": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    }),
    min_size=1,
    max_size=40,
)  # fmt: skip


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("trigger", ["continuous", "micro-batch"])
@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(rows=_rows, cuts=st.lists(st.integers(0, 40), max_size=2))
def test_running_aggregates_equal_batch_oracle(
    broker: Path, tmp_path: Path, trigger: str, guarantee: str,
    rows: list[dict[str, Any]], cuts: list[int],
) -> None:  # fmt: skip
    """Final rows per key == batch group_by().agg(), the input fed in 1-3 sends, each committed
    (its own epoch) before the next is sent."""
    url = rt.memory_stream(_name("agg"))
    bounds = sorted({0, len(rows), *(min(c, len(rows)) for c in cuts)})
    chunks = [rows[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    ds = riera.read_stream(url, schema=SCHEMA).group_by("k").agg(**_aggs())
    trig = continuous(checkpoint="50ms") if trigger == "continuous" else micro_batch("50ms")
    got, query = _run_in_sends(ds, url, chunks, tmp_path, trigger=trig, guarantee=guarantee)
    want = riera.from_items(rows).group_by("k").agg(**_aggs()).collect()
    assert _last_per_key(got, ("k",)) == _by_key(want, ("k",))
    assert query.metrics["records_in"] == len(rows)
    assert query.metrics["dead_letters"] == 0


@pytest.mark.parametrize("guarantee", GUARANTEES)
@pytest.mark.parametrize("trigger", ["continuous", "micro-batch"])
def test_running_aggregates_until_idle(broker: Path, trigger: str, guarantee: str) -> None:
    """The plain case, every row in the stream before the query starts, default triggers'
    settings (continuous(): checkpoint every second) ended by stop_when_idle."""
    rows = [{"k": "ab"[i % 2] if i % 7 else None, "v": (i * 37) % 23 - 11 if i % 5 else None}
            for i in range(500)]  # fmt: skip
    url = rt.memory_stream(_name("idle"), rows)
    trig = continuous() if trigger == "continuous" else micro_batch("50ms")
    ds = riera.read_stream(url, schema=SCHEMA).group_by("k").agg(**_aggs())
    got = rt.run_stream(ds, idle=0.3, trigger=trig, guarantee=guarantee)
    want = riera.from_items(rows).group_by("k").agg(**_aggs()).collect()
    assert _last_per_key(got, ("k",)) == _by_key(want, ("k",))


def test_first_keeps_a_null_first_value_across_epochs(broker: Path, tmp_path: Path) -> None:
    """first() is the group's first row, null or not (as in batch), also when the later rows of
    the key come in another epoch."""
    rows: list[dict[str, Any]] = [
        {"k": "a", "v": None}, {"k": "a", "v": 5}, {"k": "b", "v": 7}, {"k": "b", "v": None},
    ]  # fmt: skip
    url = rt.memory_stream(_name("first"))
    ds = riera.read_stream(url, schema=SCHEMA).group_by("k").agg(**_aggs())
    got, _ = _run_in_sends(ds, url, [rows[:1], rows[1:3], rows[3:]], tmp_path,
                           trigger=micro_batch("50ms"))  # fmt: skip
    want = riera.from_items(rows).group_by("k").agg(**_aggs()).collect()
    assert _last_per_key(got, ("k",)) == _by_key(want, ("k",))
    assert _last_per_key(got, ("k",))[("a",)]["first"] is None


# -- narrow operators, post-aggregate expressions, enrichment -------------------------------------

EVENTS = [{"user": f"u{i % 7}", "amount": (i * 13) % 50 - 10, "qty": i % 4 or None,
           "tags": "x,y" if i % 3 == 0 else "z"} for i in range(120)]  # fmt: skip
EVENT_SCHEMA = {"user": "string", "amount": "int64", "qty": "int64", "tags": "string"}


def _pipeline(ds: riera.Dataset) -> riera.Dataset:
    """Expressions, filter (expression and function), map and flat_map before the aggregate, and
    arithmetic on aggregates after it."""
    return (
        ds.with_columns(doubled=col("amount") * 2, big=col("amount") > 20)
        .filter(col("amount") > -5)
        .map(
            lambda r: {**r, "user": r["user"].upper(), "cents": r["amount"] * 100},
            schema={
                "user": "string",
                "amount": "int64",
                "qty": "int64",
                "tags": "string",
                "doubled": "int64",
                "big": "bool",
                "cents": "int64",
            },
        )
        .filter(lambda r: r["user"] != "U3")
        .flat_map(
            lambda r: [{**r, "tag": t} for t in r["tags"].split(",")],
            schema={
                "user": "string",
                "amount": "int64",
                "qty": "int64",
                "tags": "string",
                "doubled": "int64",
                "big": "bool",
                "cents": "int64",
                "tag": "string",
            },
        )
        .group_by("user", "tag")
        .agg(
            total=col("doubled").sum(),
            ratio=col("cents").sum() / col("qty").count(),
            spread=col("amount").max() - col("amount").min(),
            rows=col("tag").count(),
        )
    )


@pytest.mark.parametrize("trigger", ["continuous", "micro-batch"])
def test_expressions_and_row_functions_match_batch(broker: Path, tmp_path: Path,
                                                   trigger: str) -> None:  # fmt: skip
    url = rt.memory_stream(_name("ev"))
    stream = _pipeline(riera.read_stream(url, schema=EVENT_SCHEMA))
    trig = continuous(checkpoint="50ms") if trigger == "continuous" else micro_batch("50ms")
    got, _ = _run_in_sends(stream, url, [EVENTS[:40], EVENTS[40:41], EVENTS[41:]], tmp_path,
                           trigger=trig)  # fmt: skip
    want = _pipeline(riera.from_items(EVENTS)).collect()
    assert want, "the oracle is not empty"
    assert _last_per_key(got, ("user", "tag")) == _by_key(want, ("user", "tag"))


def test_select_and_filter_without_aggregate_pass_rows_through(broker: Path) -> None:
    url = rt.memory_stream(_name("narrow"), EVENTS)
    ds = (
        riera.read_stream(url, schema=EVENT_SCHEMA)
        .filter(col("amount") >= 30)
        .select("user", cents=col("amount") * 100)
    )
    got = rt.run_stream(ds, idle=0.3)
    want = riera.from_items(EVENTS).filter(col("amount") >= 30).select(
        "user", cents=col("amount") * 100).collect()  # fmt: skip
    assert got == want  # a stateless query keeps the stream's order


USERS = [{"user": f"u{i}", "country": ["BR", "PT", "AO"][i % 3]} for i in range(5)]  # u5, u6 lack


@pytest.mark.parametrize("how", ["inner", "left"])
def test_stream_table_join_then_aggregate(broker: Path, tmp_path: Path, how: str) -> None:
    def plan(events: riera.Dataset) -> riera.Dataset:
        return (
            events.join(riera.from_items(USERS), on="user", how=how)  # type: ignore[arg-type]
            .group_by("country")
            .agg(total=col("amount").sum(), n=col("amount").count(), users=col("user").count())
        )

    url = rt.memory_stream(_name("join"))
    got, _ = _run_in_sends(plan(riera.read_stream(url, schema=EVENT_SCHEMA)), url,
                           [EVENTS[:60], EVENTS[60:]], tmp_path, trigger=micro_batch("50ms"))  # fmt: skip
    want = plan(riera.from_items(EVENTS)).collect()
    if how == "left":  # u5 and u6 have no country: one group of unmatched rows
        assert (None,) in _by_key(want, ("country",))
    assert _last_per_key(got, ("country",)) == _by_key(want, ("country",))


# -- refused where written -------------------------------------------------------------------------


def _stream(broker: Path) -> riera.Dataset:
    return riera.read_stream(rt.memory_stream(_name("v")), schema={"k": "string", "ts": "int64"})


@pytest.mark.parametrize(
    ("op", "fix"),
    [
        (lambda d: d.sort("k"), "live view"),
        (lambda d: d.limit(3), "live view"),
        (lambda d: d.distinct(), r"group_by\(\.\.\., window=\.\.\.\)"),
        (lambda d: d.unique("k"), r"group_by\(\.\.\., window=\.\.\.\)"),
    ],
    ids=["sort", "limit", "distinct", "unique"],
)
def test_whole_input_operators_are_refused_naming_the_fix(
    broker: Path, op: Callable[[riera.Dataset], Any], fix: str
) -> None:
    with pytest.raises(PlanError, match=f"a stream has no end.*{fix}"):
        op(_stream(broker))


@pytest.mark.parametrize("action", ["collect", "count", "to_arrow"])
def test_actions_on_a_stream_name_write_stream(broker: Path, action: str) -> None:
    with pytest.raises(PlanError, match=r"write_stream"):
        getattr(_stream(broker), action)()


def test_event_time_window_needs_a_watermark(broker: Path, tmp_path: Path) -> None:
    ds = _stream(broker).group_by("k", window=tumbling("10s", on="ts")).agg(n=col("k").count())
    with pytest.raises(PlanError, match=r"with_watermark\('ts'"):
        ds.write_stream(rt.CollectSink(), checkpoint=tmp_path / "c")
    # processing-time windows need none
    ok = _stream(broker).group_by("k", window=tumbling("10s")).agg(n=col("k").count())
    query = ok.write_stream(rt.CollectSink(), checkpoint=tmp_path / "d", stop_when_idle=0.05)
    assert query.await_termination(10)


def test_join_of_two_streams_is_refused(broker: Path, tmp_path: Path) -> None:
    a, b = _stream(broker), _stream(broker)
    with pytest.raises(PlanError, match=r"two streams"):
        a.join(b, on="k").write_stream(rt.CollectSink(), checkpoint=tmp_path / "c")


def test_exactly_once_from_a_socket_is_refused(broker: Path, tmp_path: Path) -> None:
    from services import free_port

    ds = riera.read_stream(f"tcp://127.0.0.1:{free_port()}", format="text")
    with pytest.raises(PlanError, match=r"exactly_once is impossible.*at_least_once"):
        ds.write_stream(rt.CollectSink(), checkpoint=tmp_path / "c")


def test_second_query_on_a_running_checkpoint_is_refused(broker: Path, tmp_path: Path) -> None:
    ds = _stream(broker).group_by("k").agg(n=col("k").count())
    first = ds.write_stream(rt.CollectSink(), checkpoint=tmp_path / "c")
    try:
        with pytest.raises(CheckpointError, match=r"in use by a running query"):
            ds.write_stream(rt.CollectSink(), checkpoint=tmp_path / "c")
        assert first.is_active
    finally:
        first.stop()
    # once stopped, the directory is free again
    again = ds.write_stream(rt.CollectSink(), checkpoint=tmp_path / "c", stop_when_idle=0.05)
    assert again.await_termination(10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: tumbling("ten seconds"),
        lambda: tumbling(0),
        lambda: tumbling("-1s"),
        lambda: sliding("10s", "20s"),
        lambda: tumbling("10s", allowed_lateness="soon"),
        lambda: micro_batch("0s"),
        lambda: continuous(checkpoint="fast"),
    ],
    ids=["words", "zero", "negative", "slide>size", "lateness", "interval0", "checkpoint"],
)
def test_bad_durations_are_refused(make: Callable[[], Any]) -> None:
    with pytest.raises(PlanError, match=r"duration|longer than size"):
        make()


def test_bad_duration_message_names_the_accepted_forms() -> None:
    with pytest.raises(PlanError, match=r"tumbling\(size=\).*'ten seconds'.*'10s'"):
        tumbling("ten seconds")


# -- dead letters -----------------------------------------------------------------------------------

GOOD = [{"k": "a", "v": 1}, {"k": "a", "v": 0}, {"k": "b", "v": 2}, {"k": "b", "v": 5},
        {"k": "a", "v": 4}]  # fmt: skip
BAD_MESSAGES = [b"not json", b'{"k": "b", "v": "x"}', b"[1, 2]"]


def _dead_letter_input(url: str) -> None:
    producer = open_producer(url)
    try:
        rt.send(url, GOOD[:2])
        producer.send([(None, m, None) for m in BAD_MESSAGES])
        rt.send(url, GOOD[2:])
    finally:
        producer.close()


def _inverse(ds: riera.Dataset) -> riera.Dataset:
    return ds.map(lambda r: {**r, "inv": 100 // r["v"]}, name="invert").group_by("k").agg(
        n=col("inv").count(), s=col("inv").sum())  # fmt: skip


@pytest.mark.parametrize("trigger", ["continuous", "micro-batch"])
def test_dead_letters_to_a_sink(broker: Path, tmp_path: Path, trigger: str) -> None:
    url = rt.memory_stream(_name("dl"))
    _dead_letter_input(url)
    dead = rt.CollectSink()
    out = rt.CollectSink()
    trig = continuous() if trigger == "continuous" else micro_batch("50ms")
    query = _inverse(riera.read_stream(url, schema=SCHEMA)).write_stream(
        out, trigger=trig, checkpoint=tmp_path / "c", dead_letter=dead, stop_when_idle=0.3)  # fmt: skip
    assert query.await_termination(10)
    # the good rows but v=0 (the map raised on it) are counted exactly
    assert _last_per_key(out.rows(), ("k",)) == {
        ("a",): {"k": "a", "n": 2, "s": 100 + 25},
        ("b",): {"k": "b", "n": 2, "s": 50 + 20},
    }
    letters = dead.rows()
    assert [d["value"] for d in letters[:3]] == [m.decode() for m in BAD_MESSAGES]
    for d in letters[:3]:
        assert d["reason"].startswith(f"read_stream({url})"), d
        assert "undecodable message" in d["reason"]
    assert letters[3]["reason"].startswith("invert") and "ZeroDivisionError" in letters[3]["reason"]
    assert '"v":0' in letters[3]["value"].replace(" ", "")
    assert len(letters) == 4
    assert query.metrics["dead_letters"] == 4
    assert query.metrics["records_in"] == len(GOOD) + len(BAD_MESSAGES)


def test_dead_letters_default_to_sqlite_in_the_checkpoint(broker: Path, tmp_path: Path) -> None:
    url = rt.memory_stream(_name("dl"))
    _dead_letter_input(url)
    out = rt.CollectSink()
    ckpt = tmp_path / "ckpt"
    query = _inverse(riera.read_stream(url, schema=SCHEMA)).write_stream(
        out, checkpoint=ckpt, stop_when_idle=0.3)  # fmt: skip
    assert query.await_termination(10)
    assert _last_per_key(out.rows(), ("k",))[("a",)]["n"] == 2
    db = sqlite3.connect(ckpt / "dead_letters.sqlite")
    try:
        stored = db.execute("SELECT value, reason FROM dead_letters ORDER BY at_ms").fetchall()
    finally:
        db.close()
    assert [v for v, _ in stored[:3]] == [m.decode() for m in BAD_MESSAGES]
    assert all("undecodable message" in r for _, r in stored[:3])
    assert "invert" in stored[3][1] and "ZeroDivisionError" in stored[3][1]
    assert len(stored) == 4 == query.metrics["dead_letters"]


def test_a_row_failing_in_a_later_operator_leaves_the_others_exact(broker: Path) -> None:
    """map(v + 1) then map(100 // v): the row with v = -1 fails in the second map; the other rows
    go through each map once, and the dead letter names the second map and holds the input row."""
    url = rt.memory_stream(_name("chain"), [{"k": "a", "v": 1}, {"k": "a", "v": -1},
                                            {"k": "a", "v": 3}])  # fmt: skip
    dead = rt.CollectSink()
    ds = (
        riera.read_stream(url, schema=SCHEMA)
        .map(lambda r: {**r, "v": r["v"] + 1}, name="plus_one")
        .map(lambda r: {**r, "inv": 100 // r["v"]}, name="invert")
        .group_by("k")
        .agg(s=col("inv").sum(), n=col("inv").count())
    )
    got = rt.run_stream(ds, idle=0.3, dead_letter=dead)
    assert got[-1] == {"k": "a", "s": 100 // 2 + 100 // 4, "n": 2}
    (letter,) = dead.rows()
    assert letter["reason"].startswith("invert"), letter
    assert '"v":-1' in letter["value"].replace(" ", ""), letter


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_upsert_sink_ends_with_the_totals_of_an_epoch_of_several_polls(
    broker: Path, tmp_path: Path, kind: str
) -> None:
    """Continuous trigger, exactly-once (the defaults), checkpoint every 5 s: two sends, each
    processed by its own poll, then stop — one epoch holding two totals of key "a": the sink
    ends with the later one (upsert sinks used to keep the first row of a key in one write)."""
    url = rt.memory_stream(_name("ups"))
    out = f"memory://{_name('totals')}" if kind == "memory" else (
        f"sqlite:///{tmp_path}/out.db?table=totals")  # fmt: skip
    ds = riera.read_stream(url, schema=SCHEMA).group_by("k").agg(n=col("v").count())
    query = ds.write_stream(out, trigger=continuous(checkpoint="5s"), checkpoint=tmp_path / "c")
    try:
        for sent, v in enumerate([1, 2], 1):
            rt.send(url, [{"k": "a", "v": v}])
            _wait(lambda: query.engine.metrics.records_in.total >= sent, "the poll")  # noqa: B023
    finally:
        query.stop()
    assert len(query.progress) == 1
    if kind == "memory":
        sink = riera.stream.open_sink(out)
        try:
            latest = {r["k"]: r["n"] for r in sink.latest().values()}  # type: ignore[attr-defined]
        finally:
            sink.close()
    else:
        db = sqlite3.connect(tmp_path / "out.db")
        try:
            latest = dict(db.execute("SELECT k, n FROM totals").fetchall())
        finally:
            db.close()
    assert latest == {"a": 2}
