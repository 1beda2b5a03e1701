"""The broadcast join's indexed hash join (riera.physical.hashjoin) gives what Arrow's join
(``joins.join_tables``) gives — rows, names, order and types — for every case it takes, and
declines the others; and a broadcast stage builds the index once per worker."""

from __future__ import annotations

import datetime as dt
import decimal
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import riera
from riera.physical import hashjoin
from riera.physical.joins import join_tables

KEY_TYPES = [pa.int64(), pa.int32(), pa.int16(), pa.uint32(), pa.date32()]


def _rows(t: pa.Table) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(repr(v) for v in r.values()) for r in t.to_pylist())


def _key_array(values: list[int | None], t: pa.DataType) -> pa.Array:
    if pa.types.is_date32(t):
        return pa.array([None if v is None else dt.date(2000, 1, 1) + dt.timedelta(days=v)
                         for v in values], t)  # fmt: skip
    return pa.array(values, t)


@st.composite
def sides(draw: st.DrawFn) -> tuple[pa.Table, pa.Table, pa.DataType]:
    t = draw(st.sampled_from(KEY_TYPES))
    # dense, sparse and very sparse keys (as far as the type holds them)
    spread = draw(st.sampled_from([10, 1000, 10**6 if t != pa.int16() else 30_000]))
    small_keys = draw(st.lists(st.integers(0, spread), max_size=25, unique=True))
    small_keys = [k if draw(st.integers(0, 9)) else None for k in small_keys]
    n = draw(st.integers(0, 40))
    big_keys = [draw(st.sampled_from([*[k for k in small_keys if k is not None], 7, None]))
                for _ in range(n)]  # fmt: skip
    small = pa.table({
        "id": _key_array(small_keys, t),
        "name": pa.array([f"n{i}" * (i % 4) for i in range(len(small_keys))]).cast(
            pa.string_view()),
        "v": pa.array(range(len(small_keys)), pa.int64()),
    })  # fmt: skip
    big = pa.table({
        "k": _key_array(big_keys, t),
        "v": pa.array(range(n), pa.int64()),
        "amount": pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(12, 2)),
        "tags": pa.array([[i] * (i % 3) for i in range(n)], pa.list_(pa.int64())),
    })  # fmt: skip
    return small, big, t


@settings(max_examples=150, deadline=None)
@given(data=sides(), how=st.sampled_from(["inner", "left", "semi", "anti"]))
def test_small_right_side_joins_like_arrow(
    data: tuple[pa.Table, pa.Table, pa.DataType], how: str
) -> None:
    small, big, _ = data
    index = hashjoin.Index.build(small, "id")
    assert index is not None  # unique keys
    got = hashjoin.broadcast_join(big, index, ["k"], ["id"], how, "right", "j", "_right")
    want = join_tables(big, small, ["k"], how, "j", right_on=["id"], suffix="_right")
    assert got is not None
    assert got.schema == want.schema
    assert _rows(got) == _rows(want)


@settings(max_examples=100, deadline=None)
@given(data=sides())
def test_small_left_side_inner_joins_like_arrow(data: tuple[pa.Table, pa.Table, Any]) -> None:
    small, big, _ = data
    index = hashjoin.Index.build(small, "id")
    assert index is not None
    got = hashjoin.broadcast_join(big, index, ["k"], ["id"], "inner", "left", "j", "_right")
    want = join_tables(small, big, ["id"], "inner", "j", right_on=["k"], suffix="_right")
    assert got is not None
    assert got.schema == want.schema
    assert _rows(got) == _rows(want)


def test_what_the_index_declines() -> None:
    dup = pa.table({"id": [1, 2, 2], "x": [1, 2, 3]})
    assert hashjoin.Index.build(dup, "id") is None  # duplicate keys: every match is Arrow's
    sparse_dup = pa.table({"id": [1, 10**12, 10**12]})
    assert hashjoin.Index.build(sparse_dup, "id") is None
    assert hashjoin.Index.build(pa.table({"id": ["a", "b"]}), "id") is None  # strings
    index = hashjoin.Index.build(pa.table({"id": [1, 2]}), "id")
    assert index is not None and index.lut is not None  # dense: a direct table
    big = pa.table({"k": pa.array([1, 2], pa.int32())})  # another key type
    assert hashjoin.broadcast_join(big, index, ["k"], ["id"], "inner", "right", "j", "_r") is None
    big = pa.table({"k": [1, 2], "k2": [1, 2]})
    assert hashjoin.broadcast_join(big, index, ["k", "k2"], ["id", "id"], "inner", "right",
                                   "j", "_r") is None  # fmt: skip
    assert hashjoin.broadcast_join(big, index, ["k"], ["id"], "outer", "right", "j", "_r") is None
    sparse = hashjoin.Index.build(pa.table({"id": [0, 10**12]}), "id")
    assert sparse is not None and sparse.lut is None  # sparse: a hash table


def test_a_broadcast_stage_indexes_its_small_side_once_per_process(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight tasks of the big side in one process (the in-process executor): the small side
    is indexed once, and the next stage (another run) indexes it anew."""
    import pyarrow.parquet as pq

    n = 80_000
    path = tmp_path / "big.parquet"
    pq.write_table(pa.table({"k": np.arange(n) % 1000, "v": np.arange(n)}), path,
                   row_group_size=n // 8)  # fmt: skip
    builds: list[int] = []
    original = hashjoin.Index.build

    def counted(table: pa.Table, key: str) -> hashjoin.Index | None:
        builds.append(table.num_rows)
        return original(table, key)

    monkeypatch.setattr(hashjoin.Index, "build", staticmethod(counted))
    riera.init(workers=2, progress="off", provenance="off", executor="inprocess")
    try:
        small = riera.range(1000).with_columns(w=riera.col("id") * 2)
        joined = riera.read_parquet(str(path), partition_bytes=1024).join(
            small, left_on="k", right_on="id"
        )
        assert "(broadcast right)" in joined.explain(show=False)
        for _ in range(2):
            got = joined.to_arrow()
            assert got.num_rows == n
            assert pa.compute.sum(got["w"]).as_py() == int((np.arange(n) % 1000 * 2).sum())
        run = riera.get_runtime().last_run
        assert run is not None
        stage = next(s for s in run.stages if "broadcast" in s.label)
        assert stage.num_tasks == 8
        assert builds == [1000, 1000]  # once per run's stage, not once per task
    finally:
        riera.init(progress="off")


@pytest.mark.parametrize("how", ["inner", "left", "semi", "anti"])
def test_engine_broadcast_joins_match_pandas(how: str) -> None:
    import pandas as pd

    riera.init(workers=2, progress="off", provenance="off", inline_bytes=0)
    try:
        big = riera.from_items([{"k": i % 7, "v": i} for i in range(200)], partitions=4)
        small = riera.from_items([{"id": i, "name": f"x{i}"} for i in range(0, 7, 2)])
        joined = big.join(small, left_on="k", right_on="id", how=how)  # type: ignore[arg-type]
        assert "(broadcast right)" in joined.explain(show=False)
        got = joined.to_pandas()
        b = pd.DataFrame({"k": [i % 7 for i in range(200)], "v": range(200)})
        s = pd.DataFrame({"id": range(0, 7, 2), "name": [f"x{i}" for i in range(0, 7, 2)]})
        if how in ("semi", "anti"):
            mask = b["k"].isin(s["id"])
            want = b[mask if how == "semi" else ~mask]
            assert sorted(got["v"]) == sorted(want["v"])
        else:
            want = b.merge(s, left_on="k", right_on="id", how=how)
            assert len(got) == len(want)
            assert sorted(zip(got["v"], got["name"].fillna("-"), strict=True)) == sorted(
                zip(want["v"], want["name"].fillna("-"), strict=True)
            )
    finally:
        riera.init(progress="off")
