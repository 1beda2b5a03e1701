"""``riera bench raw``: time to the first answer from a run's raw output files.

Document 001 weighed querying raw scientific files in place (PostgresRaw) against loading them into
a database first (FastBit indexes over loaded data). This study repeats the comparison on CSV files
of growing size, for the question a scientist asks of a run's output — an aggregate over a filter:

- **in place**: DuckDB scans the CSV files where they lie (``riera prov raw``);
- **load first**: the files are parsed (pyarrow) and inserted into a fresh SQLite database in one
  transaction (the provenance store's engine), then the same query runs there.

Reported per size: the first answer's time for each (load + query for SQLite), a second query's
time (the load is paid once), and how many repeated queries it takes before loading first pays
off. Every answer is compared between the two paths.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from riera_bench.measure import MB, Options, Stats, machine_info, timed

Progress = Callable[[str], None]
# No round() in SQL: a mean of two 6-digit values is often an exact tie at the 7th digit, and engines
# round ties differently (DuckDB 2 rounds the decimal tie up, SQLite's double rounds it down); the
# answers are compared at double precision instead (``_same``).
QUERY = "SELECT k, count(*) AS n, avg(w) AS w FROM {src} WHERE v % 7 = 3 GROUP BY k ORDER BY k"
QUERY2 = "SELECT max(v) AS v FROM {src} WHERE k = 'k00042'"
FILES = 4  # each size is split into this many part files, as a run with 4 partitions writes them


class RawBenchError(RuntimeError):
    """The two paths disagreed on an answer."""


@dataclass(frozen=True)
class RawConfig(Options):
    sizes_mb: tuple[int, ...] = (10, 50, 100, 200)
    repeats: int = 3
    base_dir: Path | None = None
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> RawConfig:
        return cls(sizes_mb=(1, 2), repeats=1, quick=True)


@dataclass
class SizeResult:
    mb: float
    rows: int
    duckdb_first: Stats = field(default_factory=Stats)
    duckdb_next: Stats = field(default_factory=Stats)
    sqlite_load: Stats = field(default_factory=Stats)
    sqlite_first: Stats = field(default_factory=Stats)  # load + first query
    sqlite_next: Stats = field(default_factory=Stats)

    def break_even(self) -> float:
        """Queries after which loading first has paid off (inf if it never does)."""
        gain = self.duckdb_next.median - self.sqlite_next.median
        if gain <= 0:
            return math.inf
        return max(1.0, (self.sqlite_first.median - self.duckdb_first.median) / gain + 1)


@dataclass
class RawReport:
    config: RawConfig
    machine: dict[str, Any]
    sizes: list[SizeResult] = field(default_factory=list)
    seconds: float = 0.0


def generate(directory: Path, nbytes: int, seed: int = 0) -> int:
    """CSV part files ``k,v,w`` (about ``nbytes`` in all); returns the row count."""
    directory.mkdir(parents=True)
    rows = max(FILES, nbytes // 26)
    rng = np.random.default_rng(seed)
    per = -(-rows // FILES)
    for i in range(FILES):
        n = min(per, rows - i * per)
        keys = rng.integers(0, 100_000, n)
        table = pa.table(
            {
                "k": pa.array(np.char.add("k", np.char.zfill(keys.astype(str), 5))),
                "v": pa.array(rng.integers(0, 10**6, n)),
                "w": pa.array(np.round(rng.random(n), 6)),
            }
        )
        pacsv.write_csv(table, directory / f"part-{i:05d}.csv")
    return rows


def _duckdb(pattern: str, query: str) -> list[tuple[Any, ...]]:
    from riera.provenance.raw import raw_query

    return raw_query(query.format(src=f"'{pattern}'")).rows


def _load_sqlite(files: Sequence[Path], db: Path) -> sqlite3.Connection:
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    con.execute("CREATE TABLE t (k TEXT, v INTEGER, w REAL)")
    with con:
        for f in files:
            for batch in pacsv.open_csv(f):
                cols = [batch.column(i).to_pylist() for i in range(3)]
                con.executemany("INSERT INTO t VALUES (?, ?, ?)", zip(*cols, strict=True))
    return con


def _sqlite(con: sqlite3.Connection, query: str) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in con.execute(query.format(src="t")).fetchall()]


def _same(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]], what: str) -> None:
    """Equal rows: exact for keys and counts; floats to double precision (the engines sum in
    different orders, so the last bits of a mean may differ, never more)."""

    def equal(x: Any, y: Any) -> bool:
        if isinstance(x, float) or isinstance(y, float):
            return math.isclose(x, y, rel_tol=1e-12, abs_tol=1e-12)
        return bool(x == y)

    for i, (ra, rb) in enumerate(zip(a, b, strict=False)):
        if len(ra) != len(rb) or not all(equal(x, y) for x, y in zip(ra, rb, strict=True)):
            raise RawBenchError(f"DuckDB and SQLite disagree ({what}), row {i}: {ra} vs {rb}")
    if len(a) != len(b):
        raise RawBenchError(f"DuckDB and SQLite disagree ({what}): {len(a)} vs {len(b)} rows")


def run(config: RawConfig, progress: Progress | None = None) -> RawReport:
    from riera.config import load_settings

    say = progress or (lambda _msg: None)
    report = RawReport(config, machine_info(load_settings().shm_dir))
    if config.base_dir is not None:
        config.base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="riera-bench-raw-", dir=config.base_dir))
    say(f"working directory {root}")
    t0 = time.perf_counter()
    from riera.provenance.raw import raw_query

    raw_query("SELECT 1")  # DuckDB's import and start-up are not part of an answer
    try:
        for mb in config.sizes_mb:
            data = root / f"csv-{mb}"
            rows = generate(data, mb * MB)
            files = sorted(data.glob("*.csv"))
            size = SizeResult(sum(f.stat().st_size for f in files) / MB, rows)
            pattern = f"{data}/*.csv"
            say(f"{size.mb:,.0f} MB, {rows:,} rows in {len(files)} CSV files")
            for rep in range(config.repeats):
                first, dt = timed(partial(_duckdb, pattern, QUERY))
                size.duckdb_first.add(dt)
                second, dt2 = timed(partial(_duckdb, pattern, QUERY2))
                size.duckdb_next.add(dt2)
                db = root / f"load-{mb}-{rep}.db"
                con, load = timed(partial(_load_sqlite, files, db))
                try:
                    answer, q = timed(partial(_sqlite, con, QUERY))
                    answer2, q2 = timed(partial(_sqlite, con, QUERY2))
                finally:
                    con.close()
                db.unlink()
                _same(first, answer, f"{mb} MB, query 1")
                _same(second, answer2, f"{mb} MB, query 2")
                size.sqlite_load.add(load)
                size.sqlite_first.add(load + q)
                size.sqlite_next.add(q2)
                say(f"  run {rep + 1}: DuckDB in place {dt:.3f} s; SQLite load {load:.3f} s "
                    f"+ query {q:.3f} s (answers equal)")  # fmt: skip
            report.sizes.append(size)
            shutil.rmtree(data)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def render(report: RawReport) -> str:
    c = report.config
    lines = [
        "# Raw outputs: query in place (DuckDB) or load into SQLite first",
        "",
        f"{FILES} CSV part files per size (`k,v,w`); {c.repeats} repeat(s); medians, min–max in "
        f"parentheses. Query 1: `{QUERY.format(src='files')}`; query 2: "
        f"`{QUERY2.format(src='files')}`. Total time {report.seconds:.0f} s."
        + (" **quick (smoke-test sizes; the numbers mean little)**." if c.quick else ""),
        "",
        "| CSV (MB) | rows | first answer in place (s) | load into SQLite (s) | first answer "
        "after loading (s) | next query in place (s) | next query in SQLite (s) | in place first "
        "answer × faster | loading pays off after |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for s in report.sizes:
        be = s.break_even()
        lines.append(
            f"| {s.mb:,.1f} | {s.rows:,} | {s.duckdb_first.median:.3f} "
            f"({s.duckdb_first.range_str()}) | {s.sqlite_load.median:.3f} | "
            f"{s.sqlite_first.median:.3f} ({s.sqlite_first.range_str()}) | "
            f"{s.duckdb_next.median:.3f} | {s.sqlite_next.median:.3f} | "
            f"{s.sqlite_first.median / s.duckdb_first.median:.1f}× | "
            + ("never" if math.isinf(be) else f"{math.ceil(be)} quer{'y' if be <= 1 else 'ies'}")
            + " |"
        )
    return "\n".join(lines) + "\n"
