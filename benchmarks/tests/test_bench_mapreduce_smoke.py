"""Smoke tests of ``riera bench mapreduce`` (tiny sizes), its data and its verifier.

The study runs in a subprocess, as a user would run it; only the report's shape and its
verification claims are checked, never a timing. No peer engine is required: Polars and DuckDB
are measured when they are importable, otherwise the study runs with ``--peers ''``. DuckDB's job
is also run in this process on a few small files and its output verified (DuckDB comes with
``riera[raw]``, a dependency of the benchmarks).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from markdown_report import CLI, RANGE, sections, tables
from riera_bench import mapreduce, peers

NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")
HAS_POLARS = importlib.util.find_spec("polars") is not None
HAS_DUCKDB = importlib.util.find_spec("duckdb") is not None


@pytest.mark.slow
def test_bench_mapreduce_quick(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "report.md"
    peer_list = ",".join(p for p, has in (("polars", HAS_POLARS), ("duckdb", HAS_DUCKDB)) if has)
    args = ["bench", "mapreduce", "--quick", "--backends", "shm,disk", "--peers", peer_list]
    args += ["--dir", str(data_dir), "--out", str(out)]
    proc = subprocess.run(
        [*CLI, *args], cwd=tmp_path, capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr
    report = proc.stdout
    assert out.read_text(encoding="utf-8") == report
    assert "bench:" in proc.stderr and "bench:" not in report
    assert report.startswith("# Riera MapReduce study")
    assert "**quick" in report
    secs = sections(report)
    assert {"4 MB", "Beside document 002", "Engines"} <= set(secs)

    summary, detail = tables(secs["4 MB"])
    engines = {("Riera", "shm"), ("Riera", "disk")}
    engines |= {("Polars", "–")} if HAS_POLARS else set()
    engines |= {("DuckDB", "–")} if HAS_DUCKDB else set()
    assert {(r["engine"], r["exchange"]) for r in summary} == engines
    assert {(r["engine"], r["exchange"], r["P"]) for r in detail} == {
        (e, x, p) for e, x in engines for p in ("1", "2")
    }
    for row in detail:
        assert NUMBER.match(row["median (s)"]), row
        assert RANGE.match(row["min–max (s)"]), row
        assert row["runs"] == "1"
        assert float(row["MB/s"].replace(",", "")) > 0
        assert row["verified"].startswith("yes (1/1)"), row
        assert NUMBER.match(row["ratio to Riera shm"]), row
        if (row["engine"], row["exchange"]) == ("Riera", "shm"):
            assert row["ratio to Riera shm"] == "1.00"
    for row in summary:
        for p in ("P=1", "P=2"):
            assert re.match(r"^\d+\.\d+ \(\d+\.\d\d\)$", row[f"{p}: median (s), ratio"]), row
    assert "WRONG" not in report
    assert f"Verification: {len(detail)} timed job(s) in {len(detail)} configuration(s)" in report

    doc = secs["Beside document 002"]
    for figure in ("41.35%", "31.48%", "11.20%", "49.33%", "54.04%", "47.93%", "65.22%"):
        assert figure in doc
    assert "P 1→2" in doc

    engines_table = tables(secs["Engines"])[0]
    assert {r["engine"] for r in engines_table} >= {"Riera (shm)", "Riera (disk)"}
    assert all(r["status"] == "ran" for r in engines_table)
    assert not list(data_dir.glob("riera-bench-mapreduce-*"))  # the data directory is removed


def test_duckdb_job_verifies(tmp_path: Path) -> None:
    # A quote in the path: the file names reach DuckDB as SQL string literals.
    inp = peers.generate(tmp_path / "it's input", 3_000 * peers.LINE_LEN, 3)
    start, job, stop = peers.ENGINES["duckdb"]
    ctx = peers.Context(procs=2, tmp=tmp_path / "tmp", ram=2**30)
    start(ctx)
    try:
        assert "duckdb" in ctx.info and "threads = P" in ctx.info
        threads, temp = ctx.handle.execute(
            "SELECT current_setting('threads'), current_setting('temp_directory')"
        ).fetchall()[0]
        assert threads == 2 and Path(temp) == ctx.tmp / "duckdb"
        job(ctx, inp.files[:1], tmp_path / "warm-up")  # the warm-up job: the first file
        v = peers.verify_output(tmp_path / "warm-up").expect(inp.first_rows, inp.first_checksum)
        assert v.ok, v.problems
        job(ctx, inp.files, tmp_path / "out")
        v = peers.verify_output(tmp_path / "out").expect(inp.rows, inp.checksum)
        assert v.ok and v.rows == 3_000 and v.order == "file names", v.problems
    finally:
        stop(ctx)
    table = pq.read_table(tmp_path / "out")
    assert table.schema.field("key").type == pa.string()
    keys = table.column("key").to_pylist()
    assert keys == sorted(keys, key=str.encode)  # byte order


def _write_parquet(rows: pa.Table, out: Path, parts: list[tuple[int, int]]) -> None:
    out.mkdir()
    for i, (lo, hi) in enumerate(parts):
        pq.write_table(rows.slice(lo, hi - lo), out / f"part-{i:05d}.parquet")


def test_verify_output_catches_wrong_results(tmp_path: Path) -> None:
    inp = peers.generate(tmp_path / "in", 2_000 * peers.LINE_LEN, 2)
    assert inp.rows == 2_000 and len(inp.files) == 2
    types = {"key": pa.string(), "value": pa.string()}
    opts = pacsv.ConvertOptions(column_types=types)
    table = pa.concat_tables(pacsv.read_csv(f, convert_options=opts) for f in inp.files)
    assert table.num_rows == inp.rows
    srt = table.sort_by("key")

    _write_parquet(srt, tmp_path / "good", [(0, 700), (700, 2_000)])
    v = peers.verify_output(tmp_path / "good").expect(inp.rows, inp.checksum)
    assert v.ok and v.rows == 2_000 and v.files == 2 and v.order == "file names", v.problems

    # sorted, but the file names do not follow the key ranges
    _write_parquet(srt, tmp_path / "renamed", [(700, 2_000), (0, 700)])
    v = peers.verify_output(tmp_path / "renamed").expect(inp.rows, inp.checksum)
    assert v.ok and v.order == "first keys"

    _write_parquet(table, tmp_path / "unsorted", [(0, 2_000)])
    v = peers.verify_output(tmp_path / "unsorted").expect(inp.rows, inp.checksum)
    assert not v.ok and "out of key order" in v.problems[0]

    _write_parquet(srt, tmp_path / "overlap", [(0, 1_200), (700, 2_000)])
    assert not peers.verify_output(tmp_path / "overlap").ok

    _write_parquet(srt, tmp_path / "lost", [(0, 1_999)])
    v = peers.verify_output(tmp_path / "lost").expect(inp.rows, inp.checksum)
    assert not v.ok and "1,999 rows" in v.problems[0]

    values = srt.column("value").to_pylist()
    values[5] = values[5][::-1]  # same length, same order of keys: only the checksum sees it
    altered = srt.set_column(1, "value", pa.array(values))
    _write_parquet(altered, tmp_path / "altered", [(0, 2_000)])
    v = peers.verify_output(tmp_path / "altered").expect(inp.rows, inp.checksum)
    assert not v.ok and "checksum" in v.problems[0]

    assert not peers.verify_output(tmp_path / "missing").ok


def test_input_lines_and_checksum() -> None:
    lines = peers.make_lines(10, 1_000)
    assert lines.shape == (1_000, peers.LINE_LEN)
    assert (lines[:, peers.KEY_LEN] == ord(",")).all() and (lines[:, -1] == ord("\n")).all()
    assert np.isin(lines[:, : peers.KEY_LEN], np.frombuffer(peers.ALPHABET, np.uint8)).all()
    assert (peers.make_lines(0, 1_010)[10:] == lines).all()  # any split gives the same data
    keys = np.ascontiguousarray(lines[:, : peers.KEY_LEN])
    values = np.ascontiguousarray(lines[:, peers.KEY_LEN + 1 : -1])
    total = peers.row_checksum(keys, values)
    perm = np.random.default_rng(0).permutation(1_000)
    assert peers.row_checksum(keys[perm], values[perm]) == total  # order-independent
    assert peers.row_checksum(keys[:-1], values[:-1]) != total


def test_missing_peer_is_reported_not_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "distributed" else real(name, *a),
    )
    assert mapreduce.peer_problem("dask") == peers.INSTALL_HINT
    machine = {"date": "today", "cores": 2, "usable_cores": 2, "ram": 2**30, "python": "3"}
    machine |= {"pyarrow": "x", "riera": "0", "shm_dir": "/dev/shm", "shm_total": 0}
    machine |= {"platform": "p", "load": (0.0, 0.0, 0.0)}
    report = mapreduce.MapReduceReport(
        mapreduce.MapReduceConfig.quick_defaults(),
        machine,
        unavailable={"Dask (distributed)": peers.INSTALL_HINT},
    )
    text = mapreduce.render(report)
    assert "| Dask (distributed) | – | not installed (pip install 'riera-bench[peers]') |" in text
