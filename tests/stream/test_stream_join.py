"""Windowed joins of two streams: pairs emitted as soon as both rows exist, left rows without a
match emitted when their window closes, rows for dropped windows late — and refused without a
window."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import riera
import riera.stream
import riera.testing as t
from riera.errors import PlanError

START = 1_700_000_000_000


@pytest.fixture(autouse=True)
def brokers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "brokers"))


def _streams(clicks: list[dict[str, object]], views: list[dict[str, object]]):  # type: ignore[no-untyped-def]
    left = riera.read_stream(
        t.memory_stream("clicks", clicks), schema={"user": "string", "ts": "int64", "ad": "string"}
    )
    right = riera.read_stream(
        t.memory_stream("views", views), schema={"user": "string", "ts": "int64", "page": "string"}
    )
    wm = {"delay": "0ms", "idle_timeout": "200ms"}
    return left.with_watermark("ts", **wm), right.with_watermark("ts", **wm)


def _oracle(
    clicks: list[dict[str, object]], views: list[dict[str, object]], size: int, how: str
) -> list[tuple[object, ...]]:
    c = pd.DataFrame(clicks)
    v = pd.DataFrame(views)
    c["w"] = c["ts"] - c["ts"] % size
    v["w"] = v["ts"] - v["ts"] % size
    out = c.merge(v, on=["user", "w"], how=how, suffixes=("", "_right"))
    return sorted(
        (r.user, int(r.ts), r.ad, None if pd.isna(r.page) else r.page, int(r.w))
        for r in out.itertuples()
    )


def test_inner_and_left_window_joins_match_pandas() -> None:
    clicks = [
        {"user": u, "ts": START + ms, "ad": f"ad{i}"}
        for i, (u, ms) in enumerate(
            [("ana", 100), ("bo", 300), ("ana", 1200), ("cy", 1500), ("bo", 2100)]
        )
    ]
    views = [
        {"user": u, "ts": START + ms, "page": f"p{i}"}
        for i, (u, ms) in enumerate(
            [("ana", 50), ("ana", 900), ("bo", 1100), ("cy", 1900), ("bo", 2500)]
        )
    ]
    for how in ("inner", "left"):
        left, right = _streams(clicks, views)
        joined = left.join(right, on="user", how=how, window=riera.stream.tumbling("1s"))
        rows = t.run_stream(joined, idle=1.0, dead_letter=t.CollectSink())
        got = sorted(
            (r["user"], r["ts"], r["ad"], r["page"], int(r["window_start"].timestamp() * 1000))
            for r in rows
        )
        assert got == _oracle(clicks, views, 1000, how), how


def test_two_streams_without_a_window_are_refused() -> None:
    left, right = _streams(
        [{"user": "a", "ts": START, "ad": "x"}], [{"user": "a", "ts": START, "page": "y"}]
    )
    with pytest.raises(PlanError, match=r"without a window.*window=riera.stream.tumbling"):
        left.join(right, on="user")
    with pytest.raises(PlanError, match=r"'inner' or 'left'"):
        left.join(right, on="user", how="outer", window=riera.stream.tumbling("1s"))
