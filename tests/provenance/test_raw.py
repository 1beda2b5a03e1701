"""``riera prov raw``: SQL over the raw CSV/Parquet/JSON files a run wrote, in place (DuckDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import riera
from riera.errors import ProvenanceError, ReadOnlyError
from riera.io.sinks import EXTENSIONS
from riera.provenance.raw import raw_query


@pytest.fixture(scope="module")
def outputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One dataset written by Riera as CSV, Parquet and JSON (several part files each)."""
    tmp = tmp_path_factory.mktemp("raw")
    riera.init(workers=2, progress="off", home=str(tmp / "home"))
    try:
        ds = riera.from_items(
            [{"k": f"k{i % 4}", "v": i, "w": i / 10} for i in range(1000)], partitions=3
        )
        for fmt in ("csv", "parquet", "json"):
            getattr(ds, f"write_{fmt}")(str(tmp / fmt))
    finally:
        riera.shutdown()
    expected = pd.DataFrame({"k": [f"k{i % 4}" for i in range(1000)], "v": range(1000)})
    return {"tmp": tmp, "expected": expected.groupby("k")["v"].sum().to_dict()}


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_raw_query_reads_a_runs_files_in_place(outputs: dict[str, Any], fmt: str) -> None:
    pattern = f"{outputs['tmp'] / fmt}/part-*.{EXTENSIONS[fmt]}"
    got = raw_query(f"SELECT k, sum(v) AS total FROM '{pattern}' GROUP BY k ORDER BY k")
    assert got.columns == ["k", "total"]
    assert {k: int(total) for k, total in got.rows} == outputs["expected"]
    assert raw_query(f"SELECT count(*) FROM '{pattern}'").rows == [(1000,)]


def test_raw_queries_only_read(outputs: dict[str, Any], tmp_path: Path) -> None:
    target = tmp_path / "leak.csv"
    src = f"{outputs['tmp'] / 'csv'}/part-*.csv"
    for statement in (
        f"COPY (SELECT * FROM '{src}') TO '{target}'",
        f"ATTACH '{tmp_path / 'x.db'}'",
        f"SELECT 1; COPY (SELECT 1) TO '{target}'",
        "CREATE TABLE t AS SELECT 1",
    ):
        with pytest.raises(ReadOnlyError):
            raw_query(statement)
    assert list(tmp_path.iterdir()) == []
    assert raw_query(f"DESCRIBE SELECT * FROM '{src}'").rows  # describing is reading
    with pytest.raises(ProvenanceError, match="no_such_column"):
        raw_query(f"SELECT no_such_column FROM '{src}'")
    with pytest.raises(ProvenanceError, match="nowhere"):
        raw_query(f"SELECT * FROM '{tmp_path}/nowhere/*.csv'")


def test_cli_raw(outputs: dict[str, Any]) -> None:
    pattern = f"{outputs['tmp'] / 'parquet'}/*.parquet"
    env = {**os.environ, "COLUMNS": "200"}
    got = subprocess.run(
        [sys.executable, "-m", "riera", "prov", "raw",
         f"SELECT k, sum(w) AS w FROM '{pattern}' GROUP BY k ORDER BY k", "--json"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert got.returncode == 0, got.stderr
    rows = json.loads(got.stdout)
    assert [r["k"] for r in rows] == ["k0", "k1", "k2", "k3"]
    bad = subprocess.run(
        [sys.executable, "-m", "riera", "prov", "raw", "DROP TABLE x"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert bad.returncode == 1 and "only read" in bad.stderr
