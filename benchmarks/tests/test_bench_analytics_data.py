"""The analytics benchmark's data: tables written as directories of Parquet files, a row group at a
time, the same data whatever the file layout, and kept data reused only when its manifest matches.

300,000 line items cut into files of 50,000 rows (not a multiple of the generator's random blocks,
so files also start inside a block) give 6 line-item files and 2 order files, small enough to run
in a second.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from riera_bench import analytics as a

ROWS = 300_000
FILE_ROWS = 50_000


def read(directory: Path, table: str) -> pa.Table:
    """The table's files in name order, as one table."""
    files = sorted((directory / table).glob("*.parquet"))
    return pa.concat_tables(pq.read_table(f) for f in files)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory: pytest.TempPathFactory) -> a.ParquetData:
    return a.generate(tmp_path_factory.mktemp("chunked") / "data", ROWS, file_rows=FILE_ROWS)


def test_files_rows_and_types(chunked: a.ParquetData) -> None:
    rows = a.table_rows(ROWS)
    assert rows["orders"] == 75_000 and rows["customer"] == 7_500 and rows["supplier"] == 500
    manifest = json.loads((chunked.directory / a.MANIFEST).read_text())
    assert manifest["complete"] and manifest["lineitem_rows"] == ROWS and manifest["seed"] == 0
    assert manifest["files"] == chunked.files == 6 + 2 + 4
    assert (
        manifest["bytes"]
        == chunked.bytes
        == sum(f.stat().st_size for f in chunked.directory.glob("*/*.parquet"))
    )
    for name in a.TABLES:
        files = sorted((chunked.directory / name).glob("*.parquet"))
        want_files = -(-rows[name] // FILE_ROWS)
        assert [f.name for f in files] == [f"part-{i:05d}.parquet" for i in range(want_files)]
        metas = [pq.ParquetFile(f).metadata for f in files]
        assert [m.num_rows for m in metas] == [
            min(FILE_ROWS, rows[name] - i * FILE_ROWS) for i in range(want_files)
        ]
        assert chunked.tables[name] == a.TableFiles(
            rows[name], want_files, chunked.tables[name].bytes
        )
        assert pq.read_schema(files[0]) == a.SCHEMAS[name]
    decimal = pq.ParquetFile(chunked.directory / "lineitem" / "part-00000.parquet").schema
    assert decimal.column(3).physical_type == "INT64"  # l_extendedprice, decimal(12, 2)
    assert a.SCHEMAS["lineitem"].field("l_extendedprice").type == pa.decimal128(12, 2)
    assert a.SCHEMAS["lineitem"].field("l_shipdate").type == pa.date32()
    assert a.SCHEMAS["lineitem"].field("l_returnflag").type == pa.string_view()


def test_row_groups_are_bounded(tmp_path: Path) -> None:
    """Files larger than a row group hold several, of ``ROW_GROUP`` rows at most."""
    data = a.generate(tmp_path / "data", 4 * a.ROW_GROUP + 10, file_rows=3 * a.ROW_GROUP)
    meta = pq.ParquetFile(data.directory / "lineitem" / "part-00000.parquet").metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [a.ROW_GROUP] * 3
    assert pq.ParquetFile(data.directory / "lineitem" / "part-00001.parquet").metadata.num_rows == (
        a.ROW_GROUP + 10
    )


def test_keys_reference_each_other(chunked: a.ParquetData) -> None:
    d, rows = chunked.directory, a.table_rows(ROWS)
    for name, key in (("orders", "o_orderkey"), ("customer", "c_custkey"),
                      ("supplier", "s_suppkey"), ("nation", "n_nationkey"),
                      ("region", "r_regionkey")):  # fmt: skip
        keys = read(d, name)[key].to_numpy()
        assert (keys == range(rows[name])).all(), name  # 0, 1, ... in file order, no gap
    for name, column, target in (("lineitem", "l_orderkey", "orders"),
                                 ("lineitem", "l_suppkey", "supplier"),
                                 ("orders", "o_custkey", "customer"),
                                 ("customer", "c_nationkey", "nation"),
                                 ("supplier", "s_nationkey", "nation"),
                                 ("nation", "n_regionkey", "region")):  # fmt: skip
        bounds = pc.min_max(read(d, name)[column]).as_py()
        assert bounds["min"] >= 0 and bounds["max"] < rows[target], (column, bounds)
        if name == "lineitem":  # large tables use most of the keys they reference
            used = pc.count_distinct(read(d, name)[column]).as_py()
            assert used > 0.9 * rows[target], (column, used)


def test_same_data_whatever_the_layout(chunked: a.ParquetData, tmp_path: Path) -> None:
    again = a.generate(tmp_path / "again", ROWS, file_rows=FILE_ROWS)
    whole = a.generate(tmp_path / "whole", ROWS)  # one file per table
    other_seed = a.generate(tmp_path / "seed1", ROWS, seed=1, file_rows=FILE_ROWS)
    assert whole.files == 6
    for name in a.TABLES:
        want = read(chunked.directory, name)
        assert read(again.directory, name).equals(want), name
        assert read(whole.directory, name).equals(want), name
        if name not in ("region", "nation"):  # the two fixed tables
            assert not read(other_seed.directory, name).equals(want), name
    assert read(again.directory, "lineitem").num_rows == ROWS


def test_engines_agree_over_the_directories(chunked: a.ParquetData) -> None:
    """Every engine reads the tables' several files and gives DuckDB's answers."""
    pytest.importorskip("duckdb")
    engines = {"riera": a.riera_query}
    try:
        import polars  # noqa: F401

        engines["polars"] = a.polars_query
    except ImportError:
        pass
    for q in a.QUERIES:
        want = a.duckdb_query(chunked.directory, q, 2)
        assert want, q
        for name, query in engines.items():
            a._check(q, name, query(chunked.directory, q), want)


def test_kept_data_is_reused_or_generated_anew(tmp_path: Path) -> None:
    said: list[str] = []
    keep = tmp_path / "keep"
    first = a.kept_data(keep, 20_000, 0, said.append)
    assert not first.reused and first.tables["lineitem"].rows == 20_000
    stamp = (keep / "lineitem" / "part-00000.parquet").stat().st_mtime_ns

    again = a.kept_data(keep, 20_000, 0, said.append)
    assert again.reused and again.tables == first.tables and again.bytes == first.bytes
    assert (keep / "lineitem" / "part-00000.parquet").stat().st_mtime_ns == stamp

    other = a.kept_data(keep, 30_000, 0, said.append)  # another size replaces it
    assert not other.reused and other.tables["lineitem"].rows == 30_000
    assert any("holds 20,000 line items" in m for m in said)

    (keep / "orders" / "part-00000.parquet").write_bytes(b"truncated")  # a damaged file
    assert not a.kept_data(keep, 30_000, 0, said.append).reused

    manifest = json.loads((keep / a.MANIFEST).read_text())  # an interrupted generation
    (keep / a.MANIFEST).write_text(json.dumps({**manifest, "complete": False}))
    assert not a.kept_data(keep, 30_000, 0, said.append).reused
    assert a.kept_data(keep, 30_000, 0, said.append).reused


def test_kept_data_never_empties_a_foreign_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(a.AnalyticsError, match=r"holds other files and no manifest\.json"):
        a.kept_data(tmp_path, 20_000, 0, lambda _m: None)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
