"""``riera bench analytics``: analytical queries over Parquet, Riera's expressions beside DuckDB and
Polars on the same files, the same number of threads.

The data is a TPC-H-shaped star (lineitem, orders, customer, supplier, nation, region) generated
with numpy: decimal prices and discounts, ``date32`` dates and ``string_view`` text columns, as
Polars and DataFusion write them. Each table is a directory of Parquet files
(``lineitem/part-00000.parquet``, ...) of up to ``FILE_ROWS`` rows, as Spark, DuckDB and Polars
write a large dataset, and every engine reads the same files. The default, 64M line items, is
1.39 GB of Parquet in 24 files (1.11 GB of it line items). The generator writes one row group at a
time, so its memory does not grow with the size (~0.4 GB peak RSS; ~17 s for the default size).
Each block of ``BLOCK`` rows is drawn from its own random stream, so the data depends only on the
row count and the seed, not on how the tables are cut into files.
``--keep-data DIR`` keeps the data, with a ``manifest.json`` of its row count, seed and sizes, and
reuses it on later runs of the same size.

Four queries, each written the way a careful user of each engine would write it:

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
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
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
    lineitem_rows: int = 64_000_000  # 1.39 GB of Parquet with the other tables, 24 files
    repeats: int = 3
    threads: int = 2
    base_dir: Path | None = None  # parent of the temporary data directory
    keep_data: Path | None = None  # the data's directory, kept and reused (see kept_data)
    seed: int = 0
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
    data: ParquetData | None = None
    engines: list[str] = field(default_factory=list)
    queries: dict[str, QueryResult] = field(default_factory=dict)
    seconds: float = 0.0


# -- data -------------------------------------------------------------------------------------

ROW_GROUP = 1 << 20  # rows per Parquet row group, as DuckDB and Polars write them
FILE_ROWS = 4 * ROW_GROUP  # rows per file (and the most a generator holds at once: one row group)
BLOCK = 1 << 16  # rows drawn from one random stream, so the file layout never changes the data
GENERATOR = 2  # the generator's version: kept data written by another version is generated anew
MANIFEST = "manifest.json"
TABLES = ("region", "nation", "customer", "supplier", "orders", "lineitem")
_DEC = pa.decimal128(12, 2)
SCHEMAS = {
    "region": pa.schema([("r_regionkey", pa.int64()), ("r_name", pa.string_view())]),
    "nation": pa.schema(
        [("n_nationkey", pa.int64()), ("n_name", pa.string_view()), ("n_regionkey", pa.int64())]
    ),
    "customer": pa.schema(
        [("c_custkey", pa.int64()), ("c_nationkey", pa.int64()), ("c_mktsegment", pa.string_view())]
    ),
    "supplier": pa.schema([("s_suppkey", pa.int64()), ("s_nationkey", pa.int64())]),
    "orders": pa.schema(
        [
            ("o_orderkey", pa.int64()),
            ("o_custkey", pa.int64()),
            ("o_orderdate", pa.date32()),
            ("o_totalprice", _DEC),
        ]
    ),
    "lineitem": pa.schema(
        [
            ("l_orderkey", pa.int64()),
            ("l_suppkey", pa.int64()),
            ("l_quantity", _DEC),
            ("l_extendedprice", _DEC),
            ("l_discount", _DEC),
            ("l_tax", _DEC),
            ("l_returnflag", pa.string_view()),
            ("l_linestatus", pa.string_view()),
            ("l_shipdate", pa.date32()),
        ]
    ),
}


def table_rows(lineitem_rows: int) -> dict[str, int]:
    """Rows of each table for ``lineitem_rows`` line items (4 per order, 10 orders a customer)."""
    n_orders = max(10, lineitem_rows // 4)
    return {
        "region": len(REGIONS),
        "nation": NATIONS,
        "customer": max(10, n_orders // 10),
        "supplier": max(10, lineitem_rows // 600),
        "orders": n_orders,
        "lineitem": lineitem_rows,
    }


@dataclass(frozen=True)
class TableFiles:
    rows: int
    files: int
    bytes: int


@dataclass(frozen=True)
class ParquetData:
    """Generated tables: ``<directory>/<table>/part-NNNNN.parquet``, described by ``manifest.json``."""

    directory: Path
    lineitem_rows: int
    seed: int
    tables: dict[str, TableFiles]
    seconds: float  # how long the generation took (when it ran, not when the data is reused)
    reused: bool = False

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tables.values())

    @property
    def files(self) -> int:
        return sum(t.files for t in self.tables.values())

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables.values())


def _decimal(cents: np.ndarray) -> pa.Array:
    """Integer cents as ``decimal128(12, 2)``: the unscaled 128-bit values written directly."""
    words = np.empty((len(cents), 2), dtype=np.int64)
    words[:, 0] = cents
    words[:, 1] = np.where(cents < 0, -1, 0)  # the high word: the sign, extended
    return pa.Array.from_buffers(_DEC, len(cents), [None, pa.py_buffer(words)])


def _text(values: Sequence[str], idx: np.ndarray) -> pa.Array:
    return pa.array(values, pa.string()).take(pa.array(idx)).cast(pa.string_view())


def _dates(days: np.ndarray) -> pa.Array:
    base = (DAY0 - dt.date(1970, 1, 1)).days
    return pa.array((days + base).astype(np.int32)).cast(pa.date32())


def _block(
    name: str, rng: np.random.Generator, start: int, n: int, rows: dict[str, int]
) -> list[Any]:
    """The columns of rows ``start .. start + n`` of table ``name``; keys reference ``rows``."""
    keys = np.arange(start, start + n)
    if name == "region":
        return [keys, _text(REGIONS, keys)]
    if name == "nation":
        return [keys, _text([f"NATION{i:02d}" for i in range(NATIONS)], keys), keys % len(REGIONS)]
    if name == "customer":
        return [keys, rng.integers(0, NATIONS, n), _text(SEGMENTS, rng.integers(0, 5, n))]
    if name == "supplier":
        return [keys, rng.integers(0, NATIONS, n)]
    if name == "orders":
        return [
            keys,
            rng.integers(0, rows["customer"], n),
            _dates(rng.integers(0, 2400, n)),
            _decimal(rng.integers(100_00, 500_000_00, n)),
        ]
    return [
        rng.integers(0, rows["orders"], n),
        rng.integers(0, rows["supplier"], n),
        _decimal(rng.integers(1, 51, n) * 100),
        _decimal(rng.integers(900_00, 105_000_00, n)),
        _decimal(rng.integers(0, 11, n)),
        _decimal(rng.integers(0, 9, n)),
        _text(["A", "N", "R"], rng.integers(0, 3, n)),
        _text(["F", "O"], rng.integers(0, 2, n)),
        _dates(rng.integers(0, 2500, n)),
    ]


def table_slice(name: str, start: int, stop: int, rows: dict[str, int], seed: int) -> pa.Table:
    """Rows ``start .. stop`` of table ``name``: each block of ``BLOCK`` rows comes from its own
    random stream (seeded by ``seed``, the table and the block's number), so a row's values do not
    depend on how the table is cut into files, nor on the order the tables are written in."""
    first, last = start // BLOCK, -(-stop // BLOCK)
    blocks = []
    for b in range(first, last):
        lo, hi = b * BLOCK, min(rows[name], (b + 1) * BLOCK)
        rng = np.random.default_rng([seed, TABLES.index(name), b])
        blocks.append(
            pa.Table.from_arrays(_block(name, rng, lo, hi - lo, rows), schema=SCHEMAS[name])
        )
    return pa.concat_tables(blocks).slice(start - first * BLOCK, stop - start)


def generate(
    directory: Path, lineitem_rows: int, seed: int = 0, *, file_rows: int = FILE_ROWS
) -> ParquetData:
    """The six tables under ``directory`` (created; it must be empty), each a directory of Parquet
    files of ``file_rows`` rows, written a row group at a time: memory stays bounded by one row
    group whatever the size. ``manifest.json`` is written first marked incomplete, then with the
    sizes once every file is in place.

    >>> import tempfile
    >>> tmp = tempfile.TemporaryDirectory()
    >>> data = generate(Path(tmp.name) / "data", 1000, file_rows=100)
    >>> data.tables["lineitem"], data.tables["orders"].files, data.files
    (TableFiles(rows=1000, files=10, bytes=...), 3, 17)
    >>> tmp.cleanup()
    """
    if lineitem_rows < 1 or file_rows < 1:
        raise ValueError(
            f"generate: expected positive row counts; got {lineitem_rows}, {file_rows}"
        )
    t0 = time.perf_counter()
    directory.mkdir(parents=True, exist_ok=True)
    if any(directory.iterdir()):
        raise AnalyticsError(
            f"{directory} is not empty: the data is generated into a new directory"
        )
    _write_manifest(directory, lineitem_rows, seed, None)
    rows = table_rows(lineitem_rows)
    tables = {name: _write_table(directory / name, name, rows, seed, file_rows) for name in TABLES}
    data = ParquetData(directory, lineitem_rows, seed, tables, time.perf_counter() - t0)
    _write_manifest(directory, lineitem_rows, seed, data)
    return data


def _write_table(
    out: Path, name: str, rows: dict[str, int], seed: int, file_rows: int
) -> TableFiles:
    out.mkdir()
    total = rows[name]
    size = 0
    starts = range(0, total, file_rows)
    for i, start in enumerate(starts):
        path = out / f"part-{i:05d}.parquet"
        stop = min(total, start + file_rows)
        # Decimals of up to 18 digits stored as INT64, as DuckDB and Polars write them.
        with pq.ParquetWriter(path, SCHEMAS[name], store_decimal_as_integer=True) as writer:
            for lo in range(start, stop, ROW_GROUP):
                piece = table_slice(name, lo, min(stop, lo + ROW_GROUP), rows, seed)
                writer.write_table(piece, row_group_size=ROW_GROUP)
        size += path.stat().st_size
    return TableFiles(total, len(starts), size)


def _write_manifest(
    directory: Path, lineitem_rows: int, seed: int, data: ParquetData | None
) -> None:
    doc: dict[str, Any] = {
        "generator": GENERATOR,
        "lineitem_rows": lineitem_rows,
        "seed": seed,
        "complete": data is not None,
    }
    if data is not None:
        doc |= {
            "bytes": data.bytes,
            "files": data.files,
            "seconds": round(data.seconds, 1),
            "tables": {name: asdict(t) for name, t in data.tables.items()},
        }
    tmp = directory / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(doc, indent=2) + "\n")
    tmp.replace(directory / MANIFEST)


def kept_data(directory: Path, lineitem_rows: int, seed: int, progress: Progress) -> ParquetData:
    """The data kept in ``directory`` when its manifest names the same generator, row count and
    seed and every file is there with its size; otherwise the data is generated there anew (a
    directory holding anything but data of this generator is refused, never emptied)."""
    manifest = _read_manifest(directory)
    if manifest is not None and manifest.get("complete"):
        want = {"generator": GENERATOR, "lineitem_rows": lineitem_rows, "seed": seed}
        if all(manifest.get(k) == v for k, v in want.items()):
            data = _intact(directory, manifest)
            if data is not None:
                return data
            progress(f"{directory}: files differ from {MANIFEST}; generating the data again")
        else:
            progress(
                f"{directory} holds {manifest.get('lineitem_rows', 0):,} line items "
                f"(seed {manifest.get('seed')}, generator {manifest.get('generator')}); "
                f"generating {lineitem_rows:,} (seed {seed}) in their place"
            )
    if manifest is not None:
        for name in TABLES:
            shutil.rmtree(directory / name, ignore_errors=True)
        (directory / MANIFEST).unlink()
    elif directory.exists() and any(directory.iterdir()):
        raise AnalyticsError(
            f"--keep-data {directory}: the directory holds other files and no {MANIFEST}; give a "
            f"new or empty directory (or one where this benchmark kept its data)"
        )
    progress(f"generating {lineitem_rows:,} line items into {directory}")
    return generate(directory, lineitem_rows, seed)


def _read_manifest(directory: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise AnalyticsError(f"{directory / MANIFEST} cannot be read: {err}") from err
    return doc if isinstance(doc, dict) else None


def _intact(directory: Path, manifest: dict[str, Any]) -> ParquetData | None:
    """The kept data, if every table has the files and bytes its manifest records."""
    tables: dict[str, TableFiles] = {}
    for name in TABLES:
        try:
            want = TableFiles(**manifest["tables"][name])
        except (KeyError, TypeError):
            return None
        files = sorted((directory / name).glob("*.parquet"))
        if len(files) != want.files or sum(f.stat().st_size for f in files) != want.bytes:
            return None
        tables[name] = want
    return ParquetData(
        directory,
        manifest["lineitem_rows"],
        manifest["seed"],
        tables,
        float(manifest.get("seconds", 0.0)),
        reused=True,
    )


# -- the queries --------------------------------------------------------------------------------

SQL = {
    "q1": """SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty,
        sum(l_extendedprice) AS sum_base, sum(l_extendedprice * (1 - l_discount)) AS sum_disc,
        sum(l_extendedprice * (1 - l_discount) * (1 + l_tax)) AS sum_charge,
        avg(l_quantity) AS avg_qty, count(*) AS n
        FROM '{d}/lineitem/*.parquet' WHERE l_shipdate <= DATE '1998-09-02'
        GROUP BY ALL ORDER BY l_returnflag, l_linestatus""",
    "q3": """SELECT l_orderkey, o_orderdate, sum(l_extendedprice * (1 - l_discount)) AS revenue
        FROM '{d}/customer/*.parquet' c JOIN '{d}/orders/*.parquet' o ON c_custkey = o_custkey
        JOIN '{d}/lineitem/*.parquet' l ON l_orderkey = o_orderkey
        WHERE c_mktsegment = 'BUILDING' AND o_orderdate < DATE '1995-03-15'
          AND l_shipdate > DATE '1995-03-15'
        GROUP BY ALL ORDER BY revenue DESC, l_orderkey LIMIT 10""",
    "q5": """SELECT n_name, sum(l_extendedprice * (1 - l_discount)) AS revenue
        FROM '{d}/customer/*.parquet' JOIN '{d}/orders/*.parquet' ON c_custkey = o_custkey
        JOIN '{d}/lineitem/*.parquet' ON l_orderkey = o_orderkey
        JOIN '{d}/supplier/*.parquet' ON l_suppkey = s_suppkey AND c_nationkey = s_nationkey
        JOIN '{d}/nation/*.parquet' ON s_nationkey = n_nationkey
        JOIN '{d}/region/*.parquet' ON n_regionkey = r_regionkey
        WHERE r_name = 'ASIA' AND o_orderdate >= DATE '1994-01-01'
          AND o_orderdate < DATE '1995-01-01'
        GROUP BY ALL ORDER BY revenue DESC""",
    "topk": """SELECT l_orderkey, l_extendedprice * (1 - l_discount) AS value
        FROM '{d}/lineitem/*.parquet' ORDER BY value DESC, l_orderkey LIMIT 100""",
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
        return riera.read_parquet(str(d / name))  # the table's directory

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
        return pl.scan_parquet(str(d / name / "*.parquet"))

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
    root: Path | None = None
    t0 = time.perf_counter()
    os.environ.setdefault("POLARS_MAX_THREADS", str(config.threads))
    try:
        if config.keep_data is not None:
            data = kept_data(config.keep_data, config.lineitem_rows, config.seed, say)
        else:
            root = Path(tempfile.mkdtemp(prefix="riera-bench-analytics-", dir=config.base_dir))
            data = generate(root / "data", config.lineitem_rows, config.seed)
        report.data = data
        d = data.directory
        say(
            f"{data.bytes / MB:,.0f} MB of Parquet in {data.files} files, "
            f"{data.lineitem_rows:,} line items; "
            + (f"reused from {d}" if data.reused else f"generated in {data.seconds:.1f} s")
        )
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
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def render(report: AnalyticsReport) -> str:
    c = report.config
    data = report.data
    assert data is not None, "render() takes the report of a finished run"
    peers = [e for e in ("duckdb", "polars") if e in report.engines]
    origin = (
        f"reused from `{data.directory}`, generated earlier in {data.seconds:.1f} s"
        if data.reused
        else f"generated in {data.seconds:.1f} s"
    )
    lines = [
        "# Analytical queries over Parquet: Riera's expressions beside DuckDB and Polars",
        "",
        f"{data.bytes / MB:,.0f} MB of Parquet on disk in {data.files} files "
        f"({data.lineitem_rows:,} line items, {data.rows:,} rows in all; decimal, date32 and "
        f"string_view columns; seed {data.seed}; {origin}); {c.threads} threads/workers each; "
        f"{c.repeats} timed run(s) after a checked warm-up; medians, min–max in parentheses. "
        f"Total {report.seconds:.0f} s."
        + (" **quick: the numbers mean little.**" if c.quick else ""),
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
