"""The plans analytical queries get: broadcast joins, top-k, row groups streamed through a task,
balanced Parquet splits. Each answer is checked against the plan without the optimisation (or
against pyarrow), under every executor."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

import riera
from riera import col
from riera.config import load_settings
from riera.io import readers
from riera.physical.planner import explain


def _rows(ds: riera.Dataset) -> list[tuple[Any, ...]]:
    return sorted((tuple(r.values()) for r in ds.collect()), key=repr)


def _sides() -> tuple[riera.Dataset, riera.Dataset]:
    rng = np.random.default_rng(7)
    keys = rng.integers(0, 40, 3000).tolist()
    keys[::97] = [None] * len(keys[::97])  # null keys never match
    big = riera.from_arrow(
        pa.table(
            {
                "k": pa.array(keys, pa.int64()),
                "v": pa.array(rng.integers(0, 1000, 3000)),
                "s": pa.array([f"w{i % 13}" for i in range(3000)], pa.string_view()),
            }
        ),
        partitions=4,
    )
    small = riera.from_arrow(
        pa.table(
            {
                "key": pa.array([*range(0, 60, 2), None], pa.int64()),
                "label": pa.array([f"é{i}" for i in range(31)], pa.string_view()),
                "v": pa.array([decimal.Decimal(i) / 4 for i in range(31)], pa.decimal128(10, 2)),
            }
        )
    )
    return big, small


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti", "right", "outer"])
def test_a_small_side_is_broadcast_and_answers_as_the_shuffle_join(workers: int, how: str) -> None:
    big, small = _sides()
    broadcast = big.join(small, left_on="k", right_on="key", how=how)  # type: ignore[arg-type]
    shuffled = big.join(
        small,
        left_on="k",
        right_on="key",
        how=how,  # type: ignore[arg-type]
        partitions=3,  # an explicit partition count always shuffles
    )
    plan = broadcast.explain(show=False)
    if how in ("inner", "left", "semi", "anti"):
        assert "(broadcast right)" in plan, plan
    else:  # a right or full outer join keeps every right row: it cannot stream the left
        assert "(broadcast" not in plan, plan
    assert "broadcast" not in shuffled.explain(show=False)
    assert broadcast.columns() == shuffled.columns()
    assert _rows(broadcast) == _rows(shuffled)


def test_the_small_left_side_of_an_inner_join_is_broadcast(workers: int) -> None:
    big, small = _sides()
    ds = small.join(big, left_on="key", right_on="k")
    assert "(broadcast left)" in ds.explain(show=False)
    want = small.join(big, left_on="key", right_on="k", partitions=2)
    assert ds.columns() == want.columns() == ("key", "label", "v", "v_right", "s")
    assert _rows(ds) == _rows(want)
    # chained: both small tables broadcast into the one stage that reads the big side
    chained = big.join(small, left_on="k", right_on="key").join(
        small.rename({"key": "key2", "label": "label2", "v": "v2"}), left_on="k", right_on="key2"
    )
    plan = chained.explain(show=False)
    assert plan.count("(broadcast right)") == 2, plan
    assert len(chained.collect()) == len(ds.collect())


def test_sides_of_equal_size_and_runs_recording_lineage_shuffle() -> None:
    big, small = _sides()
    equal = big.join(big.rename({"k": "k2", "v": "v2", "s": "s2"}), left_on="k", right_on="k2")
    plan = explain(equal._node, load_settings(workers=2))
    assert "(broadcast" not in plan and "planned again, adaptively" in plan  # sized at run time
    lookup = big.join(small, left_on="k", right_on="key")
    assert "(broadcast right)" in explain(lookup._node, load_settings(workers=2))
    assert "broadcast" not in explain(lookup._node, load_settings(workers=2, broadcast_bytes=0))
    records = load_settings(workers=2, provenance="records")
    assert "broadcast" not in explain(lookup._node, records)


def test_sort_then_limit_is_a_top_k_over_every_key_type(workers: int) -> None:
    n = 5000
    rng = np.random.default_rng(3)
    price = rng.integers(-(10**6), 10**6, n)
    words = [f"w{i % 50}" for i in range(n)]
    table = pa.table(
        {
            "price": pa.array([decimal.Decimal(int(p)) / 100 for p in price], pa.decimal128(12, 2)),
            "word": pa.array(words, pa.string_view()),
            "x": pa.array([None if i % 11 == 0 else float(i % 7) for i in range(n)]),
            "id": pa.array(range(n), pa.int64()),
        }
    )
    ds = riera.from_arrow(table, partitions=3)
    cases = [
        (["price", "id"], [True, False]),  # decimals without nulls: select_k
        (["word", "id"], [False, True]),  # string_view: the full sort
        (["x", "id"], [True, False]),  # nulls last: the full sort
    ]
    for keys, desc in cases:
        top = ds.sort(keys, descending=desc).limit(7)
        assert "top 7" in top.explain(show=False)
        order = [(k, "descending" if d else "ascending") for k, d in zip(keys, desc, strict=True)]
        plain = table.set_column(1, "word", table.column("word").cast(pa.string()))
        idx = pc.sort_indices(plain, order)  # nulls at the end
        want = plain.take(idx).slice(0, 7).column("id").to_pylist()
        assert [r["id"] for r in top.collect()] == want, keys
        assert [r["id"] for r in ds.sort(keys, descending=desc).take(7)] == want, keys


def test_row_groups_stream_through_a_task(workers: int, tmp_path: Path) -> None:
    n = 120_000
    table = pa.table(
        {
            "g": pa.array([f"g{i % 5}" for i in range(n)], pa.string_view()),
            "q": pa.array([decimal.Decimal(i % 1000) / 10 for i in range(n)], pa.decimal128(12, 1)),
            "day": pa.array(np.arange(n) % 400, pa.int32()).cast(pa.date32()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path, row_group_size=7_000, store_decimal_as_integer=True)
    ds = (
        riera.read_parquet(str(path), partition_bytes=max(1, path.stat().st_size // 3))
        .filter(col("q") > 50)
        .filter(lambda r: r["g"] != "g3")
        .with_columns(twice=col("q") * 2)
        .group_by("g")
        .agg(total=col("twice").sum(), n=("*", "count"))
    )
    got = {r["g"]: (r["total"], r["n"]) for r in ds.collect()}
    plain = table.set_column(0, "g", table.column("g").cast(pa.string()))
    t = plain.filter(pc.and_(pc.greater(plain["q"], 50), pc.not_equal(plain["g"], "g3")))
    want = {}
    for g in set(t.column("g").to_pylist()):
        part = t.filter(pc.equal(t["g"], g))
        want[g] = (sum(part.column("q").to_pylist()) * 2, part.num_rows)
    assert got == want
    assert riera.get_runtime().last_run is not None
    assert sum(s.num_tasks for s in riera.get_runtime().last_run.stages[:1]) > 1


def test_iter_parquet_split_yields_the_kept_row_groups(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": pa.array(range(100))}), path, row_group_size=10)
    split = readers.Split(str(path), row_groups=tuple(range(10)))
    parts = list(readers.iter_parquet_split(split, ["x"]))
    assert [p.num_rows for p in parts] == [10] * 10
    assert pa.concat_tables(parts).equals(readers.read_parquet_split(split, ["x"]))
    pruned = list(readers.iter_parquet_split(split, ["x"], pc.field("x") >= 95))
    assert [p.column("x").to_pylist()[0] for p in pruned] == [90]
    none = list(readers.iter_parquet_split(split, ["x"], pc.field("x") > 1000))
    assert len(none) == 1 and none[0].num_rows == 0 and none[0].column_names == ["x"]


def test_parquet_splits_balance_row_groups_by_their_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"x": rng.integers(0, 2**62, 80_000)}), path, row_group_size=10_000)
    size = path.stat().st_size
    quarters = readers.parquet_splits(((str(path), size),), -(-size // 4))
    assert [s.row_groups for s in quarters] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [s.row_groups for s in readers.parquet_splits(((str(path), size),), 1)] == [
        (i,) for i in range(8)
    ]
    assert len(readers.parquet_splits(((str(path), size),), 10 * size)) == 1
