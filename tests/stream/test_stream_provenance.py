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
