"""Smoke test of ``riera bench raw`` (DuckDB in place vs loading into SQLite), tiny sizes."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from markdown_report import run_cli, table
from riera_bench import raw

SECONDS = re.compile(r"^\d+\.\d{3}( \(\d+\.\d+–\d+\.\d+\))?$")


@pytest.mark.slow
def test_bench_raw_quick(tmp_path: Path) -> None:
    code, stdout, stderr, _ = run_cli(
        "bench", "raw", "--quick", "--dir", str(tmp_path / "data"), cwd=tmp_path
    )
    assert code == 0, stderr
    assert "answers equal" in stderr
    rows = table(stdout)
    assert len(rows) == 2
    for row in rows:
        for column in ("first answer in place (s)", "first answer after loading (s)",
                       "load into SQLite (s)", "next query in SQLite (s)"):  # fmt: skip
            assert SECONDS.match(row[column]), (column, row[column])
        assert re.match(r"^(never|\d+ quer(y|ies))$", row["loading pays off after"])
    assert list((tmp_path / "data").iterdir()) == []


def test_generated_csv_has_the_rows_it_claims(tmp_path: Path) -> None:
    rows = raw.generate(tmp_path / "csv", 200_000)
    files = sorted((tmp_path / "csv").glob("*.csv"))
    assert len(files) == raw.FILES
    assert sum(pacsv.read_csv(f).num_rows for f in files) == rows
    assert 150_000 < sum(f.stat().st_size for f in files) < 260_000


def test_break_even_arithmetic() -> None:
    s = raw.SizeResult(1.0, 10)
    for stats, value in ((s.duckdb_first, 1.0), (s.duckdb_next, 1.0), (s.sqlite_first, 5.0),
                         (s.sqlite_next, 0.5)):  # fmt: skip
        stats.add(value)
    assert s.break_even() == pytest.approx(9.0)  # 5 + 0.5·8 = 1 + 1·8
    s.sqlite_next.samples = [2.0]
    assert math.isinf(s.break_even())


def test_a_mean_that_ties_at_the_last_digit_agrees(tmp_path: Path) -> None:
    """(0.552198 + 0.982211) / 2 = 0.7672045 is a rounding tie: DuckDB 2 and SQLite round it
    differently, so the study compares unrounded means (this failed with DuckDB 2.0.1)."""
    import pyarrow as pa

    data = tmp_path / "csv"
    data.mkdir()
    pacsv.write_csv(
        pa.table({"k": ["k01132", "k01132"], "v": [3, 10], "w": [0.552198, 0.982211]}),
        data / "part-00000.csv",
    )
    in_place = raw._duckdb(f"{data}/*.csv", raw.QUERY)
    con = raw._load_sqlite([data / "part-00000.csv"], tmp_path / "t.db")
    try:
        loaded = raw._sqlite(con, raw.QUERY)
    finally:
        con.close()
    raw._same(in_place, loaded, "tie")
    assert in_place[0][:2] == ("k01132", 2)
    with pytest.raises(raw.RawBenchError, match="row 0"):
        raw._same(in_place, [("k01132", 2, 0.7672)], "changed")
