"""View, decimal, dictionary, temporal and nested columns through a real run on every exchange.

The conformance suite round-trips each type through each backend's ``put``/``get``; this runs
the operators that shuffle (group_by, sort, join, distinct, repartition by) on two workers with
each backend carrying the shuffle, and checks the results and their types against DuckDB.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Callable, Iterator
from typing import Any

import duckdb
import pyarrow as pa
import pytest

import riera

LOCAL = ["shm", "disk", "shm-pickle"]
REMOTE = ["redis", "s3-ipc", "s3-parquet", "s3fs-ipc", "s3fs-parquet"]
N = 400


def data() -> pa.Table:
    keys = [None if i % 11 == 0 else f"key-{i % 7}-{'x' * (i % 3 * 8)}" for i in range(N)]
    return pa.table(
        {
            "k": pa.array(keys, pa.string_view()),
            "b": pa.array([None if k is None else k.encode() for k in keys], pa.binary_view()),
            "d": pa.array([decimal.Decimal(i).scaleb(-2) for i in range(N)], pa.decimal128(12, 2)),
            "c": pa.array([["red", "green", None][i % 3] for i in range(N)]).dictionary_encode(),
            "t": pa.array(
                [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i) for i in range(N)],
                pa.timestamp("us", tz="UTC"),
            ),
            "l": pa.array([[i, i + 1] for i in range(N)], pa.list_(pa.int32())),
            "s": pa.array([{"i": i} for i in range(N)], pa.struct([("i", pa.int64())])),
        }
    )


@pytest.fixture(autouse=True, scope="module")
def _default_runtime_afterwards() -> Iterator[None]:
    """These tests re-initialise Riera; leave the default runtime for later modules."""
    yield
    riera.init(workers=2, progress="off")


@pytest.fixture(params=LOCAL + REMOTE)
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    name: str = request.param
    if name in LOCAL:
        overrides: dict[str, Any] = {"exchange": name}
    else:
        settings: Callable[[str], dict[str, Any]] = request.getfixturevalue("remote_settings")
        overrides = settings(name)
    riera.init(workers=2, progress="off", **overrides)
    yield name


def duck(sql: str, t: pa.Table) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    con.register("t", t.drop_columns(["b", "l", "s"]))
    return [tuple(r) for r in con.sql(sql).fetchall()]


def test_shuffles_keep_types_and_values_on_every_exchange(backend: str) -> None:
    src = data()
    ds = riera.from_arrow(src, partitions=3)

    grouped = ds.group_by("k").agg(total=("d", "sum"), n=("*", "count"), first=("t", "min"))
    got = grouped.sort("k", partitions=2).to_arrow()
    assert got.schema.field("k").type == pa.string_view()
    assert got.schema.field("total").type == pa.decimal128(38, 2)
    assert got.schema.field("first").type == pa.timestamp("us", tz="UTC")
    want = duck("SELECT k, sum(d), count(*), min(t) FROM t GROUP BY k ORDER BY k NULLS LAST", src)
    assert [tuple(r.values()) for r in got.to_pylist()] == want

    by_colour = ds.group_by("c").agg(hi=("k", "max"), n=("l", "count")).to_arrow()
    assert by_colour.schema.field("hi").type == pa.string_view()
    assert sorted(by_colour.to_pylist(), key=lambda r: str(r["c"])) == sorted(
        (
            {"c": c, "hi": hi, "n": n}
            for c, hi, n in duck("SELECT c, max(k), count(*) FROM t GROUP BY c", src)
        ),
        key=lambda r: str(r["c"]),
    )

    ordered = ds.sort(["b", "d"], descending=[True, False], partitions=3).to_arrow()
    assert ordered.schema == src.schema
    want_d = [r[0] for r in duck("SELECT d FROM t ORDER BY k DESC NULLS LAST, d", src)]
    assert ordered.column("d").to_pylist() == want_d

    right = riera.from_arrow(src.select(["k", "d", "l"]).slice(0, 50), partitions=2)
    joined = ds.join(right, on="k", how="inner", partitions=2).to_arrow()
    assert joined.schema.field("k").type == pa.string_view()
    assert joined.schema.field("l_right").type == pa.list_(pa.int32())
    con = duckdb.connect()
    con.register("a", src.drop_columns(["b", "s"]))
    con.register("r", src.select(["k", "d", "l"]).slice(0, 50))
    want_pairs = sorted(con.sql("SELECT a.d, r.d, r.l FROM a JOIN r ON a.k = r.k").fetchall())
    got_pairs = sorted((r["d"], r["d_right"], r["l_right"]) for r in joined.to_pylist())
    assert got_pairs == want_pairs

    distinct = ds.select("k", "c").distinct(partitions=2).to_arrow()
    assert distinct.schema.field("k").type == pa.string_view()
    assert (
        distinct.num_rows == duck("SELECT count(*) FROM (SELECT DISTINCT k, c FROM t)", src)[0][0]
    )

    spread = ds.repartition(3, by="k").to_arrow()
    assert spread.schema == src.schema
    assert sorted(spread.column("d").to_pylist()) == src.column("d").to_pylist()
