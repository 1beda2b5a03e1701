"""Smoke test of ``riera bench analytics``: tiny data, every query checked against DuckDB."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from markdown_report import run_cli, table

SECONDS = re.compile(r"^\d+\.\d{3} \(\d+\.\d+–\d+\.\d+\)$")


@pytest.mark.slow
def test_bench_analytics_quick(tmp_path: Path) -> None:
    code, stdout, stderr, _ = run_cli("bench", "analytics", "--quick", "--dir", str(tmp_path),
                                      cwd=tmp_path)  # fmt: skip
    assert code == 0, stderr
    rows = table(stdout)
    assert [r["query"] for r in rows] == ["q1", "q3", "q5", "topk"]
    for row in rows:
        assert SECONDS.match(row["riera (s)"]) and SECONDS.match(row["duckdb (s)"]), row
        assert re.match(r"^\d+\.\d\d×$", row["riera ÷ duckdb"])
    assert list(tmp_path.iterdir()) == []  # the generated data is removed
