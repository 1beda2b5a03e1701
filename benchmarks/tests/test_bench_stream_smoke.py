"""Smoke test of ``riera bench stream`` (Riera rows on memory:// only, tiny sizes) and its helpers.

The study runs in a subprocess, as a user would run it, with no peer: only the table's shape and
its exactness claims are checked, never a timing.
"""

from __future__ import annotations

import collections
import re
from pathlib import Path

import numpy as np
import pytest

from markdown_report import run_cli, sections, table
from riera_bench import stream, stream_peers, stream_report

NUMBER = re.compile(r"^[\d,]+(\.\d+)?$")
THROUGHPUT = re.compile(r"^[\d,]+ \([\d,]+–[\d,]+\)$")


@pytest.mark.slow
def test_bench_stream_quick_riera_on_memory(tmp_path: Path) -> None:
    from riera.stream.connectors.memory import broker_dir

    out = tmp_path / "stream.md"
    code, stdout, stderr, pid = run_cli(
        "bench", "stream", "--quick", "--transports", "memory", "--peers", "", "--out", str(out),
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert code == 0, stderr
    assert "riera bench stream" in stdout and "exact counts" in stdout  # the rich table
    report = out.read_text(encoding="utf-8")
    assert "Trial run (--quick)" in report
    rows = table(report)
    assert [(r["engine"], r["guarantee"]) for r in rows] == [
        ("Riera", "at_least_once"),
        ("Riera", "exactly_once"),
        ("Riera", "exactly_once"),
    ]
    assert {r["mode / trigger"].split(" ")[0] for r in rows} == {"continuous", "micro_batch"}
    for row in rows:
        assert row["transport"].startswith("memory://"), row
        assert THROUGHPUT.match(row["throughput (words/s), median (min–max)"]), row
        for p in ("p50 (ms)", "p95 (ms)", "p99 (ms)"):
            assert NUMBER.match(row[p]), (p, row)
        assert NUMBER.match(row["× reference"]), row
        assert row["exact counts"] == "yes (2/2)", row  # one throughput and one latency run
        assert "error" not in row["notes"], row
    reference = next(r for r in rows if r["guarantee"] == "exactly_once")
    assert reference["× reference"] == "1.00"
    assert "NO — MISMATCH" not in report and "**MISMATCH" not in report
    assert {"Engines", "How the rows were measured"} <= set(sections(report))
    assert not list(broker_dir().glob(f"riera-bench-stream-{pid}-*"))  # its streams are dropped


def test_count_latencies_follows_running_totals() -> None:
    words = ["a", "b", "a", "a", "b"]
    ts = np.array([1000.0, 1000.0, 2000.0, 3000.0, 3000.0])
    log = [("a", 1, 1.5), ("b", 1, 1.6), ("a", 3, 3.5), ("b", 2, 4.0)]  # arrivals in Unix s
    lat, missing = stream.count_latencies(words, ts, log, skip=2)
    assert missing == 0
    assert sorted(lat.tolist()) == [500.0, 1000.0, 1500.0]  # events 2, 3 (a) and 4 (b)
    lat, missing = stream.count_latencies(words, ts, log[:3], skip=0)
    assert missing == 1  # the second b was never reflected


def test_compare_names_the_words_that_differ() -> None:
    want = collections.Counter({"Freezer": 2, "Microondas": 1})
    assert stream.compare({"Freezer": 2, "Microondas": 1}, want) is None
    assert stream.compare({"Freezer": 3, "Microondas": 1}, want) == "Freezer: 3 ≠ 2"
    assert "Microondas: None ≠ 1" in (stream.compare({"Freezer": 2}, want) or "")


def test_peer_output_lines_are_parsed() -> None:
    assert stream_peers.parse_output('@D 3 ["Ar Condicionado", 12]') == (3, "Ar Condicionado", 12)
    assert stream_peers.parse_output("r7> +U[Ar Condicionado, 41]") == (7, "Ar Condicionado", 41)
    assert stream_peers.parse_output("r7:1> +I[Freezer, 1]") == (7, "Freezer", 1)
    assert stream_peers.parse_output("r7> -U[Freezer, 1]") is None  # retractions are skipped
    assert stream_peers.parse_output("@START 1 1700000000.0") is None


def test_rows_say_mismatches_and_missing_peers_loudly() -> None:
    ok = stream.Row("Riera", "continuous-eo", "continuous", "exactly_once", "memory:// (x)")
    ok.throughput, ok.latency, ok.runs, ok.exact = [100.0, 120.0, 80.0], [(1.0, 2.0, 3.0)], 2, 2
    bad = stream.Row("PySpark", "spark", "micro-batch", "at_least_once", "files")
    bad.throughput, bad.runs, bad.exact = [50.0], 2, 1
    bad.mismatches = ["latency run: Freezer: 3 ≠ 2"]
    missing = stream.Row("Bytewax", "bytewax-redis", "per record", "at_least_once", "redis://")
    missing.problem = stream.INSTALL["bytewax"]
    assert stream_report.cells(ok, ok)[4:10] == [
        "100 (80–120)",
        "1.0",
        "2.0",
        "3.0",
        "1.00",
        "yes (2/2)",
    ]
    assert stream_report.cells(bad, ok)[8] == "0.50"
    assert stream_report.cells(bad, ok)[9].startswith("NO — MISMATCH (1/2: latency run: Freezer")
    assert stream_report.cells(missing, ok)[4] == "not installed: pip install 'bytewax>=0.21'"
