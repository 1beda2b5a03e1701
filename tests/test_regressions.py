"""Regression tests for bugs found in review, each on the real engine with 2 workers."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

import riera


@pytest.fixture(autouse=True, scope="module")
def runtime() -> None:
    riera.init(workers=2, progress="off")


def test_rows_with_different_keys_keep_every_column() -> None:
    rows = (
        riera.range(4, partitions=1)
        .map(lambda r: {"a": r["id"]} if r["id"] % 2 == 0 else {"a": r["id"], "b": -r["id"]})
        .collect()
    )
    assert sorted(rows, key=lambda r: r["a"]) == [
        {"a": 0, "b": None},
        {"a": 1, "b": -1},
        {"a": 2, "b": None},
        {"a": 3, "b": -3},
    ]
    assert riera.from_items([{"a": 1}, {"b": 2}]).columns() == ("a", "b")


def test_group_by_and_join_on_64_bit_integer_keys() -> None:
    big = [2**62 + i for i in range(5)] * 3
    out = riera.from_items([{"k": k, "v": 1} for k in big], partitions=3)
    counts = out.group_by("k").count().collect()
    assert sorted((r["k"], r["count"]) for r in counts) == [(2**62 + i, 3) for i in range(5)]
    other = riera.from_items([{"k": 2**62 + 1, "w": "x"}])
    assert out.join(other, "k").count() == 3


def test_join_timestamps_of_different_units() -> None:
    t = dt.datetime(2024, 5, 1, 12, 0, 0)
    left = riera.from_arrow(
        pa.table({"t": pa.array([t] * 4, pa.timestamp("s")), "x": range(4)}), partitions=2
    )
    right = riera.from_arrow(pa.table({"t": pa.array([t], pa.timestamp("ms")), "y": [1]}))
    assert left.join(right, "t").count() == 4


def test_writes_skip_partitions_that_produced_nothing(tmp_path: Path) -> None:
    ds = riera.range(10, partitions=5).flat_map(
        lambda r: [{"line": f"row {r['id']}"}] if r["id"] >= 8 else []
    )
    ds.write_text(tmp_path / "txt")
    lines = sorted(riera.read_text(tmp_path / "txt").collect(), key=lambda r: r["text"])
    assert [r["text"] for r in lines] == ["row 8", "row 9"]
    ds.write_parquet(tmp_path / "pq")
    assert riera.read_parquet(tmp_path / "pq").count() == 2


def test_sys_exit_in_user_code_is_a_task_error_not_a_lost_worker() -> None:
    def leave(row: dict[str, int]) -> dict[str, int]:
        sys.exit(3)

    with pytest.raises(riera.TaskError, match=r"map\(.*leave\).*SystemExit"):
        riera.range(4, partitions=2).map(leave).collect()
    assert riera.range(4).count() == 4  # the workers survived


def test_a_function_the_workers_cannot_import_is_a_clear_task_error(tmp_path: Path) -> None:
    riera.range(2).count()  # workers (and their forkserver) start before the module exists
    (tmp_path / "only_in_driver.py").write_text("def plus(row):\n    return {'x': 1}\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import only_in_driver  # type: ignore[import-not-found]

        with pytest.raises(riera.TaskError, match="cannot load this stage's functions"):
            riera.range(4, partitions=2).map(only_in_driver.plus).collect()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("only_in_driver", None)


def test_reduce_by_key_rejects_several_keys() -> None:
    with pytest.raises(riera.PlanError, match="key must be one column name"):
        riera.from_items([{"k": 1, "value": 2}]).reduce_by_key(["k"], max)  # type: ignore[arg-type]


def test_range_reads_like_python_range() -> None:
    assert [r["id"] for r in riera.range(5, 10).collect()] == [5, 6, 7, 8, 9]
    assert [r["id"] for r in riera.range(0, 10, 3).collect()] == [0, 3, 6, 9]
    assert riera.range(3).count() == 3


@pytest.mark.parametrize("how", ["right", "outer", "semi", "anti"])
def test_more_join_types_match_pandas(how: str) -> None:
    a = pd.DataFrame({"k": [1, 2, 3, 3], "x": [10, 20, 30, 31]})
    b = pd.DataFrame({"k": [2, 3, 4], "y": [200, 300, 400]})
    got = riera.from_pandas(a, partitions=2).join(riera.from_pandas(b, partitions=3), "k", how)
    rows = sorted(tuple(sorted(r.items())) for r in got.collect())
    if how in ("semi", "anti"):
        matched = a[a["k"].isin(b["k"])] if how == "semi" else a[~a["k"].isin(b["k"])]
        want = matched.to_dict("records")
    else:
        merged = a.merge(b, on="k", how=how)
        want = [
            {k: (None if pd.isna(v) else int(v)) for k, v in r.items()}
            for r in merged.to_dict("records")
        ]
    assert rows == sorted(tuple(sorted(r.items())) for r in want)


def test_incompatible_partition_types_are_a_riera_error() -> None:
    ds = riera.range(4, partitions=2).map(
        lambda r: {"v": r["id"] if r["id"] < 2 else f"text {r['id']}"}
    )
    with pytest.raises(riera.RieraError, match="incompatible column types"):
        ds.collect()


def test_failed_write_keeps_a_directory_the_user_made(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()

    def boom(row: dict[str, int]) -> dict[str, int]:
        raise ValueError("no")

    with pytest.raises(riera.TaskError):
        riera.range(4).map(boom).write_csv(out, mode="overwrite")
    assert out.is_dir() and list(out.iterdir()) == []


def test_map_batches_batch_size_caps_rows_per_call() -> None:
    sizes = (
        riera.range(10, partitions=1)
        .map_batches(lambda t: {"n": [t.num_rows]}, batch_format="pyarrow", batch_size=4)
        .collect()
    )
    assert [r["n"] for r in sizes] == [4, 4, 2]
    with pytest.raises(riera.PlanError, match="batch_size"):
        riera.range(3).map_batches(lambda d: d, batch_size=0)


def test_string_sort_keys_match_python_order() -> None:
    import random
    import string

    rng = random.Random(7)
    alpha = string.ascii_letters + "éü€\x00 "
    vals = ["".join(rng.choice(alpha) for _ in range(rng.randint(0, 14))) for _ in range(3000)]
    vals += ["same-prefix" + s[:2] for s in vals[:40]]  # runs of equal 8-byte prefixes
    got = riera.from_items([{"k": v} for v in vals], partitions=3).sort("k", partitions=2)
    assert [r["k"] for r in got.collect()] == sorted(vals)


def test_dictionary_keys_whose_chunks_have_different_dictionaries(tmp_path: Path) -> None:
    """Acero refused "Unifying differing dictionaries" when a partition's dictionary key column
    had chunks encoded separately: a Parquet file of dictionary columns reads back with one
    dictionary per row group."""
    import pyarrow.parquet as pq

    chunks = [pa.array(v).dictionary_encode() for v in (["b", "a", "b"], ["c", "a"], ["a"])]
    t = pa.table({"k": pa.chunked_array(chunks), "v": [1, 2, 3, 4, 5, 6]})
    path = tmp_path / "dict.parquet"
    with pq.ParquetWriter(path, t.schema) as w:
        for batch in t.to_batches():
            w.write_table(pa.Table.from_batches([batch]))
    assert pq.ParquetFile(path).metadata.num_row_groups == 3
    for executor in ("inprocess", "local"):
        riera.init(workers=2, progress="off", executor=executor)
        ds = riera.read_parquet(str(path))
        got = ds.group_by("k").agg(s=("v", "sum")).sort("k").collect()
        assert got == [{"k": "a", "s": 13}, {"k": "b", "s": 4}, {"k": "c", "s": 4}]
        assert ds.distinct().count() == 6
        other = riera.from_items([{"k": "a", "w": 10}, {"k": "c", "w": 20}])
        joined = ds.join(other, on="k").sort("v").collect()
        assert [(r["k"], r["v"], r["w"]) for r in joined] == [
            ("a", 2, 10), ("c", 4, 20), ("a", 5, 10), ("a", 6, 10),
        ]  # fmt: skip
    riera.init(workers=2, progress="off")
