"""Windows on streams: what they emit, when, and what happens to late records.

Event-time windows are checked against pandas computing the same windows over the whole input; the
lateness rules are checked at their exact boundaries, as ``riera.stream.operators`` states them:

- a window ``[start, end)`` fires (``emit="close"``) when the watermark reaches ``end``, and is
  purged when the watermark reaches ``end + allowed_lateness``;
- a record is judged against the watermark the engine had before the batch holding it (the previous
  epoch's, under exactly-once), and is *late* when every window it falls into is purged: it then
  goes to ``query.late_records()`` and ``metrics["late_records"]``, never dropped silently;
- a record for a window that fired but is not purged fires it again, updated.

Every query reads the real embedded broker (``memory://``) in a directory of the test's own; event
times are Unix milliseconds in a ``ts`` column.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import riera
import riera.testing as rt
from riera import col
from riera.stream import Window, continuous, micro_batch, session, sliding, tumbling
from riera.stream.connectors.memory import Broker
from riera.stream.query import StreamingQuery
from riera.stream.state import STORES

SCHEMA = {"k": "string", "ts": "int64", "v": "int64"}
BASE = 1_700_000_000_000  # Unix ms (2023-11-14), a multiple of every window size used here
TRIGGERS: dict[str, Callable[[], Any]] = {
    "micro-batch": lambda: micro_batch("50ms"),
    "continuous": lambda: continuous(checkpoint="50ms"),
}


@pytest.fixture
def broker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
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


def _alive(query: StreamingQuery) -> bool:
    """True, or fail at once with the query's error when it failed."""
    assert query.status["state"] != "failed", query.status["error"]
    return True


def _wait_committed(query: StreamingQuery, n: int) -> None:
    def done() -> bool:
        _alive(query)
        return sum(int(p["records_in"]) for p in query.progress) >= n

    _wait(done, f"{n} records committed")


def _ms(value: Any) -> int:
    return round(value.timestamp() * 1000)


def _plain(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Rows as sortable tuples ``(k, start ms, end ms, aggregates…)``."""
    out = []
    for r in rows:
        rest = tuple(v for c, v in r.items() if c not in ("k", "window_start", "window_end"))
        out.append((r["k"], _ms(r["window_start"]), _ms(r["window_end"]), *rest))
    return sorted(out)


def _windowed(url: str, window: Window, *, delay: str = "0s", idle: str | None = None
              ) -> riera.Dataset:  # fmt: skip
    return (
        riera.read_stream(url, schema=SCHEMA)
        .with_watermark("ts", delay=delay, idle_timeout=idle)
        .group_by("k", window=window)
        .agg(n=col("v").count(), total=col("v").sum(), hi=col("v").max())
    )


# -- the pandas oracle -----------------------------------------------------------------------------


def _pandas_windows(events: list[dict[str, Any]], kind: str, size: int, slide: int
                    ) -> list[tuple[Any, ...]]:  # fmt: skip
    df = pd.DataFrame(events)
    if kind == "tumbling":
        df["start"] = df["ts"] // size * size
        df["end"] = df["start"] + size
    elif kind == "sliding":  # every start s (a multiple of slide) with s <= ts < s + size
        df["start"] = [
            list(range((ts - size) // slide * slide + slide, ts // slide * slide + 1, slide))
            for ts in df["ts"]
        ]
        df = df.explode("start")
        df["start"] = df["start"].astype("int64")
        df["end"] = df["start"] + size
    else:  # session: per key, a new session where the gap to the previous record exceeds size
        df = df.sort_values(["k", "ts"], kind="stable")
        new = (df["k"] != df["k"].shift()) | (df["ts"] - df["ts"].shift() > size)
        df["sid"] = new.cumsum()
        df["start"] = df.groupby("sid")["ts"].transform("min")
        df["end"] = df.groupby("sid")["ts"].transform("max") + size
    g = df.groupby(["k", "start", "end"]).agg(n=("v", "count"), total=("v", "sum"),
                                              hi=("v", "max")).reset_index()  # fmt: skip
    return sorted(
        (r["k"], int(r["start"]), int(r["end"]), int(r["n"]), int(r["total"]), int(r["hi"]))
        for r in g.to_dict("records")
    )


def _events(seed: int, n: int = 150) -> list[dict[str, Any]]:
    """Events every ~20 ms of event time, each up to 45 ms out of order (less than the delay)."""
    rng = random.Random(seed)
    return [{"k": rng.choice("abc"), "ts": BASE + 20 * i + rng.randint(0, 45),
             "v": rng.randint(-5, 20)} for i in range(n)]  # fmt: skip


WINDOWS = {
    "tumbling": (lambda: tumbling("200ms", on="ts"), 200, 200),
    "sliding": (lambda: sliding("300ms", "100ms", on="ts"), 300, 100),
    "session": (lambda: session("80ms", on="ts"), 80, 80),
}


@pytest.mark.parametrize("trigger", list(TRIGGERS))
@pytest.mark.parametrize("kind", list(WINDOWS))
def test_event_time_windows_equal_pandas(broker: Path, tmp_path: Path, kind: str,
                                         trigger: str) -> None:  # fmt: skip
    """Sent in four parts, each committed before the next; the last windows close once the stream
    is idle (idle_timeout), and every window is emitted once, equal to pandas'."""
    make, size, slide = WINDOWS[kind]
    events = _events(seed=len(kind))
    want = _pandas_windows(events, kind, size, slide)
    url = rt.memory_stream(_name(kind))
    sink = rt.CollectSink()
    query = _windowed(url, make(), delay="50ms", idle="1s").write_stream(
        sink, trigger=TRIGGERS[trigger](), checkpoint=tmp_path / "ckpt")  # fmt: skip
    try:
        for part in range(4):
            rt.send(url, events[part * 40 : (part + 1) * 40])
            _wait_committed(query, min(len(events), (part + 1) * 40))
        _wait(lambda: _alive(query) and len(sink.rows()) >= len(want), "the last windows")
    finally:
        query.stop()
    assert _plain(sink.rows()) == want
    assert query.metrics["late_records"] == 0
    assert query.late_records() == []


def test_event_time_windows_at_least_once(broker: Path, tmp_path: Path) -> None:
    """The same under at-least-once (outputs leave as soon as they are made)."""
    events = _events(seed=11)
    want = _pandas_windows(events, "tumbling", 200, 200)
    url = rt.memory_stream(_name("alo"))
    sink = rt.CollectSink()
    query = _windowed(url, tumbling("200ms", on="ts"), delay="50ms", idle="1s").write_stream(
        sink, trigger=continuous(checkpoint="50ms"), guarantee="at_least_once",
        checkpoint=tmp_path / "ckpt")  # fmt: skip
    try:
        for part in range(3):
            rt.send(url, events[part * 50 : (part + 1) * 50])
            _wait_committed(query, (part + 1) * 50)
        _wait(lambda: len(sink.rows()) >= len(want), "the last windows")
    finally:
        query.stop()
    assert _plain(sink.rows()) == want


# -- lateness at its boundaries ------------------------------------------------------------------


class Stepper:
    """Sends one batch at a time and returns what the sink got for it (each batch is committed
    before the next is sent, so it is judged against the watermark the previous one left)."""

    def __init__(self, url: str, query: StreamingQuery, sink: Any) -> None:
        self.url, self.query, self.sink = url, query, sink
        self.sent = 0
        self.seen = 0

    def __call__(self, *events: tuple[str, int]) -> list[tuple[Any, ...]]:
        rt.send(self.url, [{"k": k, "ts": ts, "v": 1} for k, ts in events])
        self.sent += len(events)
        _wait_committed(self.query, self.sent)
        rows = self.sink.rows()
        new, self.seen = rows[self.seen :], len(rows)
        return [(r["k"], _ms(r["window_start"]), r["n"]) for r in new]

    @property
    def watermark(self) -> int:
        return int(self.query.progress[-1]["watermark"])


LATE_MODES = {
    "micro-batch": (lambda: micro_batch("20ms"), "exactly_once"),
    "continuous": (lambda: continuous(checkpoint="20ms"), "exactly_once"),
    "continuous-at-least-once": (lambda: continuous(checkpoint="20ms"), "at_least_once"),
}


@pytest.mark.parametrize("mode", list(LATE_MODES))
@pytest.mark.parametrize("lateness", [0, 5000])
def test_lateness_boundaries(broker: Path, tmp_path: Path, lateness: int, mode: str) -> None:
    """tumbling(10s), delay 0. At watermark W = 10 000, ``[0, 10 000)`` has fired: a record at
    W is on time (next window); one at W - 1 is late without lateness, else it fires the window
    again; within the lateness a key new to a fired window fires it at once. The window is purged
    at W = end + lateness exactly: a record for it is then late, kept and counted."""
    trigger, guarantee = LATE_MODES[mode]
    url = rt.memory_stream(_name("late"))
    sink = rt.CollectSink()
    window = tumbling("10s", on="ts", allowed_lateness=lateness / 1000)
    query = _windowed(url, window).write_stream(
        sink, trigger=trigger(), guarantee=guarantee, checkpoint=tmp_path / "ckpt")  # fmt: skip
    step = Stepper(url, query, sink)
    try:
        assert step(("a", 1000), ("a", 2000), ("a", 10_000)) == [("a", 0, 2)]
        assert step.watermark == 10_000
        # exactly at the watermark: on time, in [10 000, 20 000), which stays open;
        # 1 ms before it: [0, 10 000) has fired (and without lateness, is purged)
        got = step(("a", 10_000), ("a", 9_999), ("c", 9_500))
        if lateness:
            assert sorted(got) == [("a", 0, 3), ("c", 0, 1)]
        else:
            assert got == []
        assert step(("a", 14_999)) == []
        assert step.watermark == 14_999
        # the last moment before the purge: end + lateness > W
        assert step(("a", 0)) == ([("a", 0, 4)] if lateness else [])
        assert step(("a", 15_000)) == []  # W = end + lateness: purged (without lateness, long ago)
        assert step(("a", 5_000), ("b", 15_000)) == []  # late, and on time but not closed
        assert sorted(step(("a", 100_000))) == [("a", 10_000, 4), ("b", 10_000, 1)]
    finally:
        query.stop()
    late = [(r["k"], r["ts"]) for r in query.late_records()]
    if lateness:
        assert late == [("a", 5_000)]
    else:
        assert late == [("a", 9_999), ("c", 9_500), ("a", 0), ("a", 5_000)]
    assert query.metrics["late_records"] == len(late)
    assert sum(p["late_records"] for p in query.progress) == len(late)
    # every emitted row was counted once: nothing was dropped silently
    assert sum(1 for _ in sink.rows()) == (6 if lateness else 3)


def test_late_records_go_to_a_late_sink(broker: Path, tmp_path: Path) -> None:
    url = rt.memory_stream(_name("latesink"))
    sink, late = rt.CollectSink(), rt.CollectSink()
    query = _windowed(url, tumbling("10s", on="ts")).write_stream(
        sink, late=late, trigger=micro_batch("20ms"), checkpoint=tmp_path / "ckpt")  # fmt: skip
    step = Stepper(url, query, sink)
    try:
        step(("a", 1000), ("a", 20_000))
        step(("a", 3000), ("b", 21_000), ("c", 25_000))
    finally:
        query.stop()
    assert late.rows() == [{"k": "a", "ts": 3000, "v": 1}]
    assert query.late_records() == late.rows()
    assert query.metrics["late_records"] == 1


def test_session_lateness(broker: Path, tmp_path: Path) -> None:
    """A session ``[first, last + gap)`` closes at W = last + gap and is purged at
    W = last + gap + lateness; a record that bridges into a fired session fires it again."""
    url = rt.memory_stream(_name("sess"))
    sink = rt.CollectSink()
    window = session("1s", on="ts", allowed_lateness="2s")
    query = _windowed(url, window).write_stream(
        sink, trigger=micro_batch("20ms"), checkpoint=tmp_path / "ckpt")  # fmt: skip
    step = Stepper(url, query, sink)
    try:
        assert step(("a", 1000), ("a", 1500)) == []  # a: [1 000, 2 500), W = 1 500
        assert step(("x", 2500)) == [("a", 1000, 2)]  # W = 2 500 = last + gap: fires
        assert step(("a", 2000)) == [("a", 1000, 3)]  # joins the fired session: fires again
        assert step(("x", 4499)) == [("x", 2500, 1)]  # a's session now ends at 3 000
        assert step(("x", 5000)) == []  # W = 2 000 + 1 000 + 2 000: a's session is purged
        # too old for a session of its own to be on time, not too old for the lateness: a new
        # session that is already closed fires at once
        assert step(("a", 2600)) == [("a", 2600, 1)]
        assert step(("a", 1200)) == []  # near no session, 1 200 + 1 000 + 2 000 <= W: late
    finally:
        query.stop()
    assert [(r["k"], r["ts"]) for r in query.late_records()] == [("a", 1200)]
    assert query.metrics["late_records"] == 1


def test_emit_update_emits_every_change(broker: Path, tmp_path: Path) -> None:
    url = rt.memory_stream(_name("upd"))
    sink = rt.CollectSink()
    window = tumbling("10s", on="ts", emit="update")
    query = _windowed(url, window).write_stream(
        sink, trigger=micro_batch("20ms"), checkpoint=tmp_path / "ckpt")  # fmt: skip
    step = Stepper(url, query, sink)
    try:
        assert step(("a", 1000)) == [("a", 0, 1)]
        assert step(("a", 2000)) == [("a", 0, 2)]
        assert step(("b", 3000)) == [("b", 0, 1)]  # only what changed
        assert step(("a", 3000), ("a", 4000), ("b", 5000)) == [("a", 0, 4), ("b", 0, 2)]
        assert step(("a", 12_000)) == [("a", 10_000, 1)]  # closing [0, 10 000) emits nothing
        assert step(("a", 5000)) == []  # late: purged at the close (no lateness)
    finally:
        query.stop()
    assert query.metrics["late_records"] == 1
    assert [r["n"] for r in sink.rows() if r["k"] == "a"] == [1, 2, 4, 1]


def test_emit_update_sliding(broker: Path, tmp_path: Path) -> None:
    """A record in two sliding windows updates both."""
    url = rt.memory_stream(_name("updsl"))
    sink = rt.CollectSink()
    window = sliding("10s", "5s", on="ts", emit="update")
    query = _windowed(url, window).write_stream(
        sink, trigger=micro_batch("20ms"), checkpoint=tmp_path / "ckpt")  # fmt: skip
    step = Stepper(url, query, sink)
    try:
        assert sorted(step(("a", 6000))) == [("a", 0, 1), ("a", 5000, 1)]
        assert sorted(step(("a", 9000))) == [("a", 0, 2), ("a", 5000, 2)]
        assert sorted(step(("a", 10_000))) == [("a", 5000, 3), ("a", 10_000, 1)]
    finally:
        query.stop()


# -- idle streams and processing time -------------------------------------------------------------


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_idle_stream_closes_its_window_on_wall_clock_time(broker: Path, tmp_path: Path,
                                                          trigger: str) -> None:  # fmt: skip
    """No event after ``BASE + 500``: once the stream has been silent for idle_timeout, the
    watermark follows the wall clock from the last event, so ``[BASE, BASE + 1 s)`` closes about
    500 ms after that event — not before."""
    url = rt.memory_stream(_name("idle"))
    sink = rt.CollectSink()
    query = _windowed(url, tumbling("1s", on="ts"), idle="200ms").write_stream(
        sink, trigger=TRIGGERS[trigger](), checkpoint=tmp_path / "ckpt")  # fmt: skip
    try:
        sent = time.monotonic()
        rt.send(url, [{"k": "a", "ts": BASE + 100, "v": 1}, {"k": "a", "ts": BASE + 500, "v": 2}])
        _wait(lambda: _alive(query) and bool(sink.rows()), "the idle window to close")
        waited = time.monotonic() - sent
        assert query.is_active
    finally:
        query.stop()
    assert waited >= 0.5, f"the window closed {waited:.3f} s after its last event"
    (row,) = sink.rows()
    assert (_ms(row["window_start"]), _ms(row["window_end"]), row["n"], row["total"]) == (
        BASE, BASE + 1000, 2, 3)  # fmt: skip
    assert query.progress[-1]["watermark"] >= BASE + 1000
    assert query.metrics["records_in"] == 2


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_processing_time_windows_bracket_arrival(broker: Path, tmp_path: Path,
                                                 trigger: str) -> None:  # fmt: skip
    url = rt.memory_stream(_name("proc"))
    sink = rt.CollectSink()
    ds = riera.read_stream(url, schema=SCHEMA).group_by("k", window=tumbling("300ms")).agg(
        n=col("v").count())  # fmt: skip
    query = ds.write_stream(sink, trigger=TRIGGERS[trigger](), checkpoint=tmp_path / "ckpt")
    try:
        before = time.time() * 1000
        rt.send(url, [{"k": "a", "ts": 0, "v": 1}] * 5)
        _wait(lambda: sum(r["n"] for r in sink.rows()) >= 5, "the processing-time windows")
        after = time.time() * 1000
    finally:
        query.stop()
    rows = sink.rows()
    assert sum(r["n"] for r in rows) == 5
    for r in rows:
        start, end = _ms(r["window_start"]), _ms(r["window_end"])
        assert end - start == 300 and start % 300 == 0
        assert start <= after and end > before, (before, start, end, after)
        assert end <= after  # emitted only once processing time passed its end


# -- restarts ------------------------------------------------------------------------------------


def _sink_rows(name: str) -> list[dict[str, Any]]:
    broker = Broker(name)
    try:
        return [json.loads(v) for (v,) in
                broker.db.execute("SELECT value FROM log ORDER BY part, off")]  # fmt: skip
    finally:
        broker.close()


@pytest.mark.parametrize("trigger", list(TRIGGERS))
def test_open_window_survives_a_restart(broker: Path, tmp_path: Path, trigger: str) -> None:
    url = rt.memory_stream(_name("restart"))
    out = _name("out")
    ckpt = tmp_path / "ckpt"

    def start() -> StreamingQuery:
        return _windowed(url, tumbling("10s", on="ts")).write_stream(
            f"memory://{out}?mode=append", trigger=TRIGGERS[trigger](), checkpoint=ckpt)  # fmt: skip

    first = start()
    try:
        rt.send(url, [{"k": "a", "ts": 1000, "v": 1}, {"k": "a", "ts": 2000, "v": 2},
                      {"k": "b", "ts": 3000, "v": 5}])  # fmt: skip
        _wait_committed(first, 3)
    finally:
        first.stop()
    assert _sink_rows(out) == []  # the window is open
    second = start()
    try:
        rt.send(url, [{"k": "a", "ts": 4000, "v": 4}])
        _wait_committed(second, 1)
        rt.send(url, [{"k": "a", "ts": 25_000, "v": 100}])
        _wait(lambda: _alive(second) and len(_sink_rows(out)) >= 2, "the restored window")
    finally:
        second.stop()
    rows = sorted((r["k"], r["window_start"], r["n"], r["total"], r["hi"]) for r in _sink_rows(out))
    assert [(k, n, t, h) for k, _, n, t, h in rows] == [("a", 3, 7, 4), ("b", 1, 5, 5)]
    assert rows[0][1] == rows[1][1] and str(rows[0][1]).startswith("1970-01-01")


def test_idle_timer_survives_a_restart(broker: Path, tmp_path: Path) -> None:
    """Stopped with an open window of an idle-timed watermark, restarted, and no event ever
    comes again: the window still closes on wall-clock time, once."""
    url = rt.memory_stream(_name("idlerestart"))
    out = _name("out")
    ckpt = tmp_path / "ckpt"

    def start() -> StreamingQuery:
        return _windowed(url, tumbling("1s", on="ts"), idle="200ms").write_stream(
            f"memory://{out}?mode=append", trigger=micro_batch("20ms"), checkpoint=ckpt)  # fmt: skip

    first = start()
    try:
        rt.send(url, [{"k": "a", "ts": BASE + 100, "v": 1}])
        _wait_committed(first, 1)
    finally:
        first.stop()
    assert _sink_rows(out) == []  # stopped well before it could close (900 ms + 200 ms idle)
    second = start()
    try:
        _wait(lambda: _alive(second) and bool(_sink_rows(out)), "the window to close", 5)
    finally:
        second.stop()
    assert [(r["k"], r["n"]) for r in _sink_rows(out)] == [("a", 1)]


@pytest.mark.parametrize("store", list(STORES))
def test_processing_time_window_survives_a_restart(broker: Path, tmp_path: Path,
                                                   store: str) -> None:  # fmt: skip
    """A processing-time window open when the query stops closes after the restart, by the
    clock alone (no new event), with the totals from before the stop, once — whatever the
    state store."""
    if store == "rocksdict" and importlib.util.find_spec("rocksdict") is None:
        pytest.skip("state store 'rocksdict': the rocksdict package is not installed")
    url = rt.memory_stream(_name("procrestart"))
    out = _name("out")
    ckpt = tmp_path / "ckpt"
    size = 2000

    def start() -> StreamingQuery:
        ds = riera.read_stream(url, schema=SCHEMA).group_by("k", window=tumbling(size / 1000))
        return ds.agg(n=col("v").count(), total=col("v").sum()).write_stream(
            f"memory://{out}?mode=append", trigger=micro_batch("20ms"), checkpoint=ckpt,
            state_store=store)  # fmt: skip

    first = start()
    try:
        _wait(lambda: time.time() * 1000 % size < 200, "the start of a window", 5)
        sent = time.time() * 1000
        rt.send(url, [{"k": "a", "ts": 0, "v": 1}, {"k": "a", "ts": 0, "v": 2}])
        _wait_committed(first, 2)
    finally:
        first.stop()
    assert time.time() * 1000 < math.floor(sent / size) * size + size, "too slow to test"
    assert _sink_rows(out) == []
    second = start()
    try:
        _wait(lambda: _alive(second) and bool(_sink_rows(out)), "the window to close", 5)
    finally:
        second.stop()
    assert [(r["k"], r["n"], r["total"]) for r in _sink_rows(out)] == [("a", 2, 3)]
