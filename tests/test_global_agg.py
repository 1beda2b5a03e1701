"""``Dataset.agg``: aggregations over all rows, as SQL's aggregates without GROUP BY — one row,
also over no rows — under every executor, against DuckDB on the same data."""

from __future__ import annotations

import decimal

import duckdb
import pyarrow as pa
import pytest

import riera
from riera import col


def _table(n: int) -> pa.Table:
    return pa.table(
        {
            "v": pa.array([None if i % 7 == 0 else i for i in range(n)], pa.int64()),
            "price": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
            "word": pa.array([f"w{i % 5}" for i in range(n)]).cast(pa.string_view()),
        }
    )


@pytest.mark.parametrize("n", [0, 1, 500])
def test_one_row_like_sql(workers: int, n: int) -> None:
    t = _table(n)
    got = (
        riera.from_arrow(t, partitions=3)
        .agg(
            rows=("*", "count"),
            n=col("v").count(),
            s=col("v").sum(),
            lo=col("v").min(),
            avg=col("v").mean(),
            cost=(col("price") * 2).sum(),
            first_word=col("word").min(),
        )
        .collect()
    )
    want = duckdb.sql(
        "SELECT count(*) AS rows, count(v) AS n, sum(v) AS s, min(v) AS lo, avg(v) AS avg, "
        "sum(price * 2) AS cost, min(word) AS first_word FROM t"
    ).fetchall()
    assert len(got) == 1 and len(want) == 1
    values = tuple(got[0].values())
    if n == 0:  # over no rows: counts are 0, every other aggregate is null
        assert values == (0, 0, None, None, None, None, None) == want[0]
    else:
        assert values[:4] + values[5:] == want[0][:4] + want[0][5:]
        assert values[4] == pytest.approx(want[0][4])


def test_an_aggregate_needs_an_aggregation() -> None:
    with pytest.raises(riera.PlanError, match="aggregates nothing"):
        riera.range(3).agg(x=col("id"))
