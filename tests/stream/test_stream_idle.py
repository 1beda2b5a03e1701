"""stop_when_idle counts idleness from polls, not from the clock: a commit that stalls the loop
past the idle time must not end the query on a poll answered before the stall, or the records
that arrived meanwhile would never be read (the demo once ended its word count after 500 of
3,000 purchases this way, on a machine busy starting a browser)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import riera
from riera import col
from riera.stream import Callback, continuous, micro_batch
from riera.testing import send

SCHEMA = {"chave": "string", "valorA": "string", "valorB": "string"}


def _rows(word: str, n: int, start: int) -> list[dict[str, str]]:
    return [{"chave": str(start + i), "valorA": word, "valorB": "1"} for i in range(n)]


@pytest.mark.parametrize(
    ("trigger", "workers"),
    [(continuous(checkpoint="100ms"), 1), (micro_batch("100ms"), 1),
     (continuous(checkpoint="100ms"), 2)],
    ids=["continuous", "micro-batch", "continuous-2-worker-processes"],
)  # fmt: skip
def test_a_commit_stalled_past_the_idle_time_does_not_end_the_query(
    trigger: Any, workers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "brokers"))
    stalled, totals = threading.Event(), {}
    lock = threading.Lock()

    def sink(table: pa.Table) -> None:
        with lock:
            for row in table.to_pylist():
                totals[row["valorA"]] = row["total"]
        if not stalled.is_set():  # the first commit stalls for three idle times
            stalled.set()
            send(
                "memory://idle-in?partitions=2", _rows("later", 7, 1000), key="chave"
            )  # arrives meanwhile
            threading.Event().wait(1.5)

    send("memory://idle-in?partitions=2", _rows("first", 5, 0), key="chave")
    query = (
        riera.read_stream("memory://idle-in?partitions=2", schema=SCHEMA)
        .group_by("valorA")
        .agg(total=col("valorB").cast("int64").sum())
        .write_stream(
            Callback(sink),
            checkpoint=tmp_path / "ck",
            trigger=trigger,
            stop_when_idle="0.5s",
            workers=workers,
        )
    )
    assert query.await_termination(60), "the query never went idle"
    assert stalled.is_set()
    assert totals == {"first": 5, "later": 7}, "what arrived during the stall was read"
