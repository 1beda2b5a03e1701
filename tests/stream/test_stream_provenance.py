"""A streaming query is a run in the provenance store, each epoch an activity recorded after its
commit point — queryable with SQL while the query runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import riera
import riera.testing as t
from riera import col
from riera.errors import StreamError


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "brokers"))
    rt = riera.init(home=str(tmp_path / "home"), provenance="tasks", progress="off")
    yield rt
    riera.shutdown()


def test_epochs_are_activities_queryable_while_the_query_runs(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = t.memory_stream("prov-in", [{"w": w} for w in ["a", "b", "a", "c"]])
    counts = riera.read_stream(url, schema={"w": "string"}).group_by("w").agg(n=col("w").count())
    q = counts.write_stream("memory://prov-out", checkpoint=tmp_path / "ck",
                            trigger=riera.stream.continuous(checkpoint="50ms"))  # fmt: skip
    try:
        assert q.wait_for_epoch(0, 30)
        t.send(url, [{"w": "z"}])
        assert q.wait_for_epoch(1, 30)
        runtime.provenance.flush()
        store = runtime.provenance.store
        runs = store.sql("SELECT status, action FROM runs WHERE run_id = :r", {"r": q.run_id}).rows
        assert runs == [("running", "write_stream")]  # SQL sees the live query
        epochs = store.sql(
            "SELECT epoch, status, records_in, records_out, positions_from, positions_to, "
            "state_hash FROM stream_epochs WHERE run_id = :r ORDER BY epoch",
            {"r": q.run_id},
        ).rows
        assert [e[:4] for e in epochs[:2]] == [(0, "committed", 4, 3), (1, "committed", 1, 1)]
        assert epochs[0][5] == epochs[1][4]  # what epoch 1 used starts where epoch 0 ended
        assert epochs[0][6] != epochs[1][6]  # different state changes, different hashes
        ops = store.sql("SELECT count(*) FROM operators WHERE run_id = :r", {"r": q.run_id}).rows
        assert ops[0][0] >= 2
    finally:
        q.stop()
    runtime.provenance.flush()
    assert runtime.provenance.store.sql(
        "SELECT status FROM runs WHERE run_id = :r", {"r": q.run_id}
    ).rows == [("ok",)]


def test_a_failing_query_records_its_epoch_as_aborted(runtime, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    url = t.memory_stream("prov-bad", [{"w": "a"}])

    def explode(table, epoch, seq):  # type: ignore[no-untyped-def]
        raise RuntimeError("the sink is down")

    counts = riera.read_stream(url, schema={"w": "string"}).group_by("w").agg(n=col("w").count())
    q = counts.write_stream(explode, checkpoint=tmp_path / "ck2")
    with pytest.raises(StreamError, match="the sink is down"):
        q.await_termination(30)
    runtime.provenance.flush()
    store = runtime.provenance.store
    assert store.sql("SELECT status FROM runs WHERE run_id = :r", {"r": q.run_id}).rows == [
        ("failed",)
    ]
    rows = store.sql("SELECT status FROM stream_epochs WHERE run_id = :r", {"r": q.run_id}).rows
    assert rows == [("aborted",)]


def _epoch_of(store, runs: list[str]) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """Source offset (one partition) -> the epoch that read it, from stream_epochs' ranges."""
    import json

    out: dict[int, int] = {}
    rows = store.sql(
        "SELECT epoch, positions_from, positions_to FROM stream_epochs WHERE run_id IN "
        "(:a, :b) AND status = 'committed'",
        {"a": runs[0], "b": runs[-1]},
    ).rows
    for epoch, start, end in rows:
        start, end = (json.loads(v) if isinstance(v, str) else v for v in (start, end))
        lo, hi = int(start["0"]["0"] or 0), int(end["0"]["0"] or 0)
        for offset in range(lo, hi):
            out[offset] = epoch
    return out


@pytest.mark.parametrize("kind", ["tumbling", "session"])
def test_per_window_lineage_names_the_epochs_of_every_record_across_a_restart(
    runtime, tmp_path: Path, kind: str
) -> None:  # type: ignore[no-untyped-def]
    """With lineage=True each window row is recorded with the epochs whose records reached it;
    the oracle is where each record sits in the source and which epoch's range holds it. A window
    open across a restart keeps the epochs of the first run."""
    if kind == "tumbling":
        window = riera.stream.tumbling("10s", on="ts")
    else:
        window = riera.stream.session("5s", on="ts")
    sec = 1_000
    first = [{"k": "a", "ts": 1 * sec}, {"k": "b", "ts": 2 * sec}]
    second = [{"k": "a", "ts": 3 * sec}, {"k": "b", "ts": 4 * sec}]
    third = [{"k": "a", "ts": 5 * sec}, {"k": "c", "ts": 25 * sec}]  # the last closes [0, 10 s)
    sent = first + second + third
    url = t.memory_stream(f"prov-lineage-{kind}", first)

    def start():  # type: ignore[no-untyped-def]
        counts = (
            riera.read_stream(url, schema={"k": "string", "ts": "int64"})
            .with_watermark("ts", delay="0s")
            .group_by("k", window=window)
            .agg(n=col("k").count())
        )
        return counts.write_stream(f"memory://prov-lineage-out-{kind}", checkpoint=tmp_path / "ck3",
                                   trigger=riera.stream.continuous(checkpoint="50ms"),
                                   lineage=True)  # fmt: skip

    q1 = start()
    assert q1.wait_for_epoch(0, 30)
    t.send(url, second)
    import time

    end = time.monotonic() + 30
    while q1.metrics["records_in"] < len(first + second):
        assert time.monotonic() < end, q1.metrics
        time.sleep(0.02)
    q1.stop()  # commits what is in flight
    q2 = start()  # resumes: window [0, 10 s) of "a" holds records of the first run's epochs
    t.send(url, third)
    try:
        end = time.monotonic() + 30
        store = runtime.provenance.store
        while True:
            runtime.provenance.flush()
            rows = store.sql(
                "SELECT run_id, epoch, key, window_start, window_end, from_epochs "
                "FROM stream_window_lineage WHERE run_id IN (:a, :b)",
                {"a": q1.run_id, "b": q2.run_id},
            ).rows
            if len({(r[2], r[3]) for r in rows}) >= 2:
                break
            assert time.monotonic() < end, rows
            time.sleep(0.05)
    finally:
        q2.stop()
    import json

    epoch_of = _epoch_of(store, [q1.run_id, q2.run_id])
    latest: dict[tuple[str, int], tuple[int, list[int]]] = {}
    for _, _, key, start_ms, end_ms, from_epochs in sorted(rows, key=lambda r: r[1]):
        epochs = json.loads(from_epochs) if isinstance(from_epochs, str) else from_epochs
        latest[(json.loads(key)[0], start_ms)] = (end_ms, epochs)
    assert {k for k, _ in latest} == {"a", "b"}
    for (key, start_ms), (end_ms, epochs) in latest.items():
        offsets = [i for i, r in enumerate(sent)
                   if r["k"] == key and start_ms <= r["ts"] < end_ms]  # fmt: skip
        assert len(offsets) >= 2
        listed = sorted(e for first, last in epochs for e in range(first, last + 1))
        assert listed == sorted({epoch_of[o] for o in offsets}), (key, start_ms, epochs)
    a_ranges = next(e for (k, _), (_, e) in latest.items() if k == "a")
    assert sum(last - first + 1 for first, last in a_ranges) >= 2, "a's window spans the restart"
