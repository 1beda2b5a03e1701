"""``riera bench analytics``: analytical queries over Parquet, Riera's expressions beside DuckDB and
Polars on the same files, the same number of threads.

The data is a TPC-H-shaped star (lineitem, orders, customer, supplier, nation, region) generated
with numpy: decimal prices and discounts, ``date32`` dates and ``string_view`` text columns, as
Polars and DataFusion write them. Four queries, each written the way a careful user of each engine
would write it:

- **q1** filter + derived columns + group-by (TPC-H Q1);
- **q3** a 3-way join with aggregation and top 10 (Q3);
- **q5** a 6-way join with aggregation (Q5);
- **topk** the 100 line items with the largest discounted price.

Every engine's answer is compared with DuckDB's before a time is reported. Medians of
``repeats`` runs, min–max, and ratios to DuckDB and Polars from the same process.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from riera_bench.measure import MB, Options, Stats, machine_info

Progress = Callable[[str], None]
QUERIES = ("q1", "q3", "q5", "topk")
NATIONS = 25
SEGMENTS = ("AUTOMOBILE", "BUILDING", "FURNITURE", "HOUSEHOLD", "MACHINERY")
REGIONS = ("AFRICA", "AMERICA", "ASIA", "EUROPE", "MIDDLE EAST")
DAY0 = dt.date(1992, 1, 1)


class AnalyticsError(RuntimeError):
    """Engines disagreed on an answer."""


@dataclass(frozen=True)
class AnalyticsConfig(Options):
    lineitem_rows: int = 8_000_000  # 165 MB of Parquet with the other tables, ~1 GB as Arrow
    repeats: int = 3
    threads: int = 2
    base_dir: Path | None = None
    queries: tuple[str, ...] = QUERIES
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> AnalyticsConfig:
        return cls(lineitem_rows=60_000, repeats=1, quick=True)


@dataclass
class QueryResult:
    times: dict[str, Stats] = field(default_factory=dict)  # engine -> seconds


@dataclass
class AnalyticsReport:
    config: AnalyticsConfig
    machine: dict[str, Any]
    parquet_bytes: int = 0
    engines: list[str] = field(default_factory=list)
    queries: dict[str, QueryResult] = field(default_factory=dict)
    seconds: float = 0.0


# -- data -------------------------------------------------------------------------------------


def _decimal(cents: np.ndarray) -> pa.Array:
    """Integer cents as ``decimal128(12, 2)``: the unscaled 128-bit values written directly."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)  # the high word: the sign, extended
    return pa.Array.from_buffers(pa.decimal128(12, 2), len(cents), [None, pa.py_buffer(words)])


def _text(values: list[str], idx: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(idx)).cast(pa.string_view())


def generate(directory: Path, lineitem_rows: int, seed: int = 0) -> int:
    """The six tables as Parquet files under ``directory``; returns their total size in bytes."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    n_orders = max(10, lineitem_rows // 4)
    n_cust = max(10, n_orders // 10)
    n_supp = max(10, lineitem_rows // 600)
    tables = {
        "region": pa.table(
            {"r_regionkey": np.arange(5), "r_name": pa.array(REGIONS).cast(pa.string_view())}
        ),
        "nation": pa.table(
            {
                "n_nationkey": np.arange(NATIONS),
                "n_name": pa.array([f"NATION{i:02d}" for i in range(NATIONS)]).cast(
                    pa.string_view()
                ),
                "n_regionkey": np.arange(NATIONS) % 5,
            }
        ),
        "customer": pa.table(
            {
                "c_custkey": np.arange(n_cust),
                "c_nationkey": rng.integers(0, NATIONS, n_cust),
                "c_mktsegment": _text(list(SEGMENTS), rng.integers(0, 5, n_cust)),
            }
        ),
        "supplier": pa.table(
            {"s_suppkey": np.arange(n_supp), "s_nationkey": rng.integers(0, NATIONS, n_supp)}
        ),
        "orders": pa.table(
            {
                "o_orderkey": np.arange(n_orders),
                "o_custkey": rng.integers(0, n_cust, n_orders),
                "o_orderdate": _dates(rng.integers(0, 2400, n_orders)),
                "o_totalprice": _decimal(rng.integers(100_00, 500_000_00, n_orders)),
            }
        ),
    }
    orderkey = rng.integers(0, n_orders, lineitem_rows)
    tables["lineitem"] = pa.table(
        {
            "l_orderkey": orderkey,
            "l_suppkey": rng.integers(0, n_supp, lineitem_rows),
            "l_quantity": _decimal(rng.integers(1, 51, lineitem_rows) * 100),
            "l_extendedprice": _decimal(rng.integers(900_00, 105_000_00, lineitem_rows)),
            "l_discount": _decimal(rng.integers(0, 11, lineitem_rows)),
            "l_tax": _decimal(rng.integers(0, 9, lineitem_rows)),
            "l_returnflag": _text(["A", "N", "R"], rng.integers(0, 3, lineitem_rows)),
            "l_linestatus": _text(["F", "O"], rng.integers(0, 2, lineitem_rows)),
            "l_shipdate": _dates(rng.integers(0, 2500, lineitem_rows)),
        }
    )
    total = 0
    for name, table in tables.items():
        path = directory / f"{name}.parquet"
        # Decimals of up to 18 digits stored as INT64, as DuckDB and Polars write them.
        pq.write_table(table, path, row_group_size=1 << 20, store_decimal_as_integer=True)
        total += path.stat().st_size
    return total


def _dates(days: np.ndarray) -> pa.Array:
    base = (DAY0 - dt.date(1970, 1, 1)).days
    return pa.array((days + base).astype(np.int32)).cast(pa.date32())


# -- the queries --------------------------------------------------------------------------------

SQL = {
    "q1": """SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
        sum(l_extendedprice) AS sum_base, sum(l_extendedprice * (1 - l_discount)) AS sum_disc,
        sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
        avg(l_quantity) AS avg_qty, count(*) AS n
        FROM '{d}/lineitem.parquet' WHERE l_shipdate <= DATE '1998-09-02'
        GROUP BY ALL ORDER BY l_returnflag, l_linestatus""",
    "q3": """SELECT l_orderkey, o_orderdate, sum(l_extendedprice * (1 - l_discount)) AS revenue
        FROM '{d}/customer.parquet' c JOIN '{d}/orders.parquet' o ON c_custkey = o_custkey
        JOIN '{d}/lineitem.parquet' l ON l_orderkey = o_orderkey
        WHERE c_mktsegment = 'BUILDING' AND o_orderdate < DATE '1995-03-15'
          AND l_shipdate > DATE '1995-03-15'
        GROUP BY ALL ORDER BY revenue DESC, l_orderkey LIMIT 10""",
    "q5": """SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
        FROM '{d}/customer.parquet' JOIN '{d}/orders.parquet' ON c_custkey = o_custkey
        JOIN '{d}/lineitem.parquet' ON l_orderkey = o_orderkey
        JOIN '{d}/supplier.parquet' ON l_suppkey = s_suppkey AND c_nationkey = s_nationkey
        JOIN '{d}/nation.parquet' ON s_nationkey = n_nationkey
        JOIN '{d}/region.parquet' ON n_regionkey = r_regionkey
        WHERE r_name = 'ASIA' AND o_orderdate >= DATE '1994-01-01'
          AND o_orderdate < DATE '1995-01-01'
        GROUP BY ALL ORDER BY revenue DESC""",
    "topk": """SELECT l_orderkey, l_extendedprice * (1 - l_discount) AS value
        FROM '{d}/lineitem.parquet' ORDER BY value DESC, l_orderkey LIMIT 100""",
}


def duckdb_query(d: Path, q: str, threads: int) -> list[tuple[Any, ...]]:
    import duckdb

    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {threads}")
        return [tuple(r) for r in con.execute(SQL[q].format(d=d)).fetchall()]
    finally:
        con.close()


def riera_query(d: Path, q: str) -> list[tuple[Any, ...]]:
    import riera
    from riera import col

    def read(name: str) -> Any:
        return riera.read_parquet(str(d / f"{name}.parquet"))

    price = col("l_extendedprice") * (1 - col("l_discount"))
    if q == "q1":
        out = (
            read("lineitem")
            .filter(col("l_shipdate") <= dt.date(1998, 9, 2))
            .group_by("l_returnflag", "l_linestatus")
            .agg(
                sum_qty=col("l_quantity").sum(),
                sum_base=col("l_extendedprice").sum(),
                sum_disc=price.sum(),
                sum_charge=(price * (1 + col("l_tax"))).sum(),
                avg_qty=col("l_quantity").mean(),
                n=("*", "count"),
            )
            .sort(["l_returnflag", "l_linestatus"])
        )
        return [tuple(r.values()) for r in out.collect()]
    if q == "q3":
        customers = read("customer").filter(col("c_mktsegment") == "BUILDING")
        orders = read("orders").filter(col("o_orderdate") < dt.date(1995, 3, 15))
        items = read("lineitem").filter(col("l_shipdate") > dt.date(1995, 3, 15))
        out = (
            customers.join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(items, left_on="o_orderkey", right_on="l_orderkey")
            .group_by("o_orderkey", "o_orderdate")
            .agg(revenue=price.sum())
            .sort(["revenue", "o_orderkey"], descending=[True, False])
        )
        return [tuple(r.values()) for r in out.take(10)]
    if q == "q5":
        region = read("region").filter(col("r_name") == "ASIA")
        orders = read("orders").filter(
            (col("o_orderdate") >= dt.date(1994, 1, 1)) & (col("o_orderdate") < dt.date(1995, 1, 1))
        )
        out = (
            read("customer")
            .join(orders, left_on="c_custkey", right_on="o_custkey")
            .join(read("lineitem"), left_on="o_orderkey", right_on="l_orderkey")
            .join(
                read("supplier"),
                left_on=["l_suppkey", "c_nationkey"],
                right_on=["s_suppkey", "s_nationkey"],
            )
            .join(read("nation"), left_on="c_nationkey", right_on="n_nationkey")
            .join(region, left_on="n_regionkey", right_on="r_regionkey")
            .group_by("n_name")
            .agg(revenue=price.sum())
            .sort("revenue", descending=True)
        )
        return [tuple(r.values()) for r in out.collect()]
    out = (
        read("lineitem")
        .select("l_orderkey", value=price)
        .sort(["value", "l_orderkey"], descending=[True, False])
    )
    return [tuple(r.values()) for r in out.take(100)]


def polars_query(d: Path, q: str) -> list[tuple[Any, ...]]:
    import polars as pl

    def scan(name: str) -> Any:
        return pl.scan_parquet(d / f"{name}.parquet")

    # Polars (2.x) keeps the larger of the two scales in a decimal product and rounds every row
    # to it, where SQL keeps the sum of the scales. Widening the price to scale 6 first makes
    # Polars compute the exact SQL answer (cents x cents x cents needs 6 digits).
    price = pl.col("l_extendedprice").cast(pl.Decimal(38, 6)) * (1 - pl.col("l_discount"))
    if q == "q1":
        lf = (
            scan("lineitem")
            .filter(pl.col("l_shipdate") <= dt.date(1998, 9, 2))
            .group_by("l_returnflag", "l_linestatus")
            .agg(
                pl.col("l_quantity").sum().alias("sum_qty"),
                pl.col("l_extendedprice").sum().alias("sum_base"),
                price.sum().alias("sum_disc"),
                (price * (1 + pl.col("l_tax"))).sum().alias("sum_charge"),
                pl.col("l_quantity").mean().alias("avg_qty"),
                pl.len().alias("n"),
            )
            .sort("l_returnflag", "l_linestatus")
        )
    elif q == "q3":
        lf = (
            scan("customer").filter(pl.col("c_mktsegment") == "BUILDING")
            .join(scan("orders").filter(pl.col("o_orderdate") < dt.date(1995, 3, 15)),
                  left_on="c_custkey", right_on="o_custkey")
            .join(scan("lineitem").filter(pl.col("l_shipdate") > dt.date(1995, 3, 15)),
                  left_on="o_orderkey", right_on="l_orderkey")
            .group_by("o_orderkey", "o_orderdate").agg(price.sum().alias("revenue"))
            .sort(["revenue", "o_orderkey"], descending=[True, False]).head(10)
        )  # fmt: skip
    elif q == "q5":
        lf = (
            scan("customer")
            .join(scan("orders").filter((pl.col("o_orderdate") >= dt.date(1994, 1, 1))
                                        & (pl.col("o_orderdate") < dt.date(1995, 1, 1))),
                  left_on="c_custkey", right_on="o_custkey")
            .join(scan("lineitem"), left_on="o_orderkey", right_on="l_orderkey")
            .join(scan("supplier"), left_on=["l_suppkey", "c_nationkey"],
                  right_on=["s_suppkey", "s_nationkey"])
            .join(scan("nation"), left_on="c_nationkey", right_on="n_nationkey")
            .join(scan("region").filter(pl.col("r_name") == "ASIA"), left_on="n_regionkey",
                  right_on="r_regionkey")
            .group_by("n_name").agg(price.sum().alias("revenue"))
            .sort("revenue", descending=True)
        )  # fmt: skip
    else:
        lf = (
            scan("lineitem").select("l_orderkey", price.alias("value"))
            .sort(["value", "l_orderkey"], descending=[True, False]).head(100)
        )  # fmt: skip
    return [tuple(r) for r in lf.collect().rows()]


def _norm(value: Any) -> Any:
    if isinstance(value, float | decimal.Decimal):
        return round(float(value), 2)
    return value


def _check(q: str, engine: str, got: list[tuple[Any, ...]], want: list[tuple[Any, ...]]) -> None:
    g = [tuple(_norm(v) for v in r) for r in got]
    w = [tuple(_norm(v) for v in r) for r in want]
    if q in ("q1", "q5"):
        g, w = sorted(g, key=repr), sorted(w, key=repr)
    if g != w:
        raise AnalyticsError(f"{q}: {engine} disagrees with DuckDB: {g[:3]} vs {w[:3]}")


def run(config: AnalyticsConfig, progress: Progress | None = None) -> AnalyticsReport:
    import riera

    say = progress or (lambda _m: None)
    report = AnalyticsReport(config, machine_info())
    root = Path(tempfile.mkdtemp(prefix="riera-bench-analytics-", dir=config.base_dir))
    t0 = time.perf_counter()
    os.environ.setdefault("POLARS_MAX_THREADS", str(config.threads))
    try:
        d = root / "data"
        report.parquet_bytes = generate(d, config.lineitem_rows)
        say(f"{report.parquet_bytes / MB:,.0f} MB of Parquet, {config.lineitem_rows:,} line items")
        riera.init(workers=config.threads, progress="off", provenance="off")
        engines: dict[str, Callable[[str], list[tuple[Any, ...]]]] = {
            "duckdb": lambda q: duckdb_query(d, q, config.threads),
            "riera": lambda q: riera_query(d, q),
        }
        try:
            import polars  # noqa: F401

            engines["polars"] = lambda q: polars_query(d, q)
        except ImportError:
            say("polars is not installed: pip install -e './benchmarks[peers]'; skipped")
        report.engines = list(engines)
        for q in config.queries:
            want = duckdb_query(d, q, config.threads)
            result = QueryResult()
            for name, fn in engines.items():
                _check(q, name, fn(q), want)  # also warms caches and workers
                stats = Stats()
                for _ in range(config.repeats):
                    start = time.perf_counter()
                    fn(q)
                    stats.add(time.perf_counter() - start)
                result.times[name] = stats
                say(f"  {q} {name}: {stats.median:.3f} s")
            report.queries[q] = result
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def render(report: AnalyticsReport) -> str:
    c = report.config
    peers = [e for e in ("duckdb", "polars") if e in report.engines]
    lines = [
        "# Analytical queries over Parquet: Riera's expressions beside DuckDB and Polars",
        "",
        f"{report.parquet_bytes / MB:,.0f} MB of Parquet ({c.lineitem_rows:,} line items; decimal, "
        f"date32 and string_view columns); {c.threads} threads/workers each; {c.repeats} timed "
        f"run(s) after a checked warm-up; medians, min–max in parentheses. Total "
        f"{report.seconds:.0f} s." + (" **quick: the numbers mean little.**" if c.quick else ""),
        "",
        "| query | "
        + " | ".join(f"{e} (s)" for e in report.engines)
        + "".join(f" | riera ÷ {p}" for p in peers)
        + " |",
        "|:--" + "|--:" * (len(report.engines) + len(peers)) + "|",
    ]
    for q, r in report.queries.items():
        cells = [f"{r.times[e].median:.3f} ({r.times[e].range_str()})" for e in report.engines]
        ratios = [f"{r.times['riera'].median / r.times[p].median:.2f}×" for p in peers]
        lines.append(f"| {q} | " + " | ".join(cells + ratios) + " |")
    return "\n".join(lines) + "\n"
