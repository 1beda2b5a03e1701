"""Adaptive joins: a join side whose sources are too large to broadcast, but whose output turns
out small (a selective filter, an earlier join), is broadcast once it is known — the other side
is never shuffled — and the answer is the shuffled join's, under every executor."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import riera
from riera import col

N_FACT = 60_000
N_DIM = 20_000
SMALL = 256 << 10  # broadcast_bytes in these tests: the dimension's sources hold more


def _rows(ds: riera.Dataset) -> Counter[tuple[Any, ...]]:
    return Counter(tuple(r.values()) for r in ds.collect())


@pytest.fixture
def tables(tmp_path: Path) -> tuple[str, str]:
    rng = np.random.default_rng(5)
    fact = pa.table(
        {
            "dim_id": rng.integers(0, N_DIM, N_FACT),
            "amount": rng.integers(1, 1000, N_FACT),
            "note": pa.array([f"n{i % 97}" for i in range(N_FACT)]).cast(pa.string_view()),
        }
    )
    dim = pa.table(
        {
            "id": np.arange(N_DIM),
            "kind": pa.array([f"k{i % 50}" for i in range(N_DIM)]).cast(pa.string_view()),
            "padding": pa.array([f"{i:0>40}" for i in range(N_DIM)]),
        }
    )
    fact_path, dim_path = tmp_path / "fact.parquet", tmp_path / "dim.parquet"
    pq.write_table(fact, fact_path, row_group_size=N_FACT // 6)
    pq.write_table(dim, dim_path, row_group_size=N_DIM // 2)
    return str(fact_path), str(dim_path)


@pytest.fixture
def adaptive(workers: int) -> Iterator[riera.Runtime]:
    """The executor under test, with a broadcast threshold below the dimension's sources."""
    executor = riera.get_runtime().settings.executor
    rt = riera.init(
        workers=workers, executor=executor, progress="off", broadcast_bytes=SMALL,
        partition_bytes=64 << 10, inline_bytes=0,
    )  # fmt: skip
    yield rt
    riera.init(progress="off")


def _query(fact: str, dim: str, kinds: int, partitions: int | None = None) -> riera.Dataset:
    wanted = [f"k{i}" for i in range(kinds)]
    dims = riera.read_parquet(dim).filter(col("kind").is_in(wanted))
    return (
        riera.read_parquet(fact)
        .join(dims, left_on="dim_id", right_on="id", partitions=partitions)
        .group_by("kind")
        .agg(total=col("amount").sum(), n=col("amount").count())
    )


def test_a_side_that_turns_out_small_is_broadcast(
    adaptive: riera.Runtime, tables: tuple[str, str]
) -> None:
    fact, dim = tables
    query = _query(fact, dim, kinds=2)
    plan = query.explain(show=False)
    assert "(broadcast" not in plan and "planned again, adaptively" in plan
    got = _rows(query)
    run = adaptive.last_run
    assert run is not None
    labels = [s.label for s in run.stages]
    assert any("(broadcast right)" in label for label in labels), labels
    # the fact table is joined where it is read: never hash-partitioned on the join key
    fact_stage = next(s for s in run.stages if "(broadcast right)" in s.label)
    assert fact_stage.label.startswith("read_parquet")
    assert got == _rows(_query(fact, dim, kinds=2, partitions=3))  # the shuffled join
    f, d = pq.read_table(fact).to_pandas(), pq.read_table(dim).to_pandas()
    d = d[d["kind"].isin(["k0", "k1"])]
    want = (
        f.merge(d, left_on="dim_id", right_on="id").groupby("kind")["amount"].agg(["sum", "count"])
    )
    assert got == Counter((k, int(r["sum"]), int(r["count"])) for k, r in want.iterrows())


def test_a_side_that_stays_large_is_shuffled(
    adaptive: riera.Runtime, tables: tuple[str, str]
) -> None:
    fact, dim = tables
    got = _rows(_query(fact, dim, kinds=50))  # every dimension row: far above the threshold
    run = adaptive.last_run
    assert run is not None
    assert not any("(broadcast" in s.label for s in run.stages)
    f, d = pq.read_table(fact).to_pandas(), pq.read_table(dim).to_pandas()
    want = (
        f.merge(d, left_on="dim_id", right_on="id").groupby("kind")["amount"].agg(["sum", "count"])
    )
    assert got == Counter((k, int(r["sum"]), int(r["count"])) for k, r in want.iterrows())


@pytest.mark.parametrize("how", ["left", "semi", "anti"])
def test_outer_semi_and_anti_joins_adapt_too(
    adaptive: riera.Runtime, tables: tuple[str, str], how: str
) -> None:
    fact, dim = tables
    dims = riera.read_parquet(dim).filter(col("kind").is_in(["k3"]))
    joined = riera.read_parquet(fact).join(dims, left_on="dim_id", right_on="id", how=how)  # type: ignore[arg-type]
    got = joined.select("dim_id", "amount").to_pandas()
    run = adaptive.last_run
    assert run is not None and any("(broadcast right)" in s.label for s in run.stages)
    f, d = pq.read_table(fact).to_pandas(), pq.read_table(dim).to_pandas()
    ids = set(d[d["kind"] == "k3"]["id"])
    if how == "left":
        assert len(got) == N_FACT
    else:
        keep = f["dim_id"].isin(ids)
        want = f[keep if how == "semi" else ~keep]
        assert sorted(got["amount"]) == sorted(want["amount"])


def test_a_preview_and_a_write_of_an_adaptive_join(
    adaptive: riera.Runtime, tables: tuple[str, str], tmp_path: Path
) -> None:
    fact, dim = tables
    dims = riera.read_parquet(dim).filter(col("kind") == "k7").select("id", "kind")
    joined = riera.read_parquet(fact).join(dims, left_on="dim_id", right_on="id")
    assert joined.head(5).num_rows == 5
    joined.write_parquet(str(tmp_path / "out"))
    written = pq.read_table(tmp_path / "out")
    assert written.num_rows == joined.count()
    assert set(written.column("kind").to_pylist()) == {"k7"}


def test_runs_recording_lineage_never_adapt(tables: tuple[str, str]) -> None:
    fact, dim = tables
    riera.init(workers=2, progress="off", broadcast_bytes=SMALL, provenance="records",
               partition_bytes=64 << 10)  # fmt: skip
    try:
        query = _query(fact, dim, kinds=2)
        assert "adaptively" not in query.explain(show=False)
        query.collect()
        run = riera.get_runtime().last_run
        assert run is not None and not any("(broadcast" in s.label for s in run.stages)
    finally:
        riera.init(progress="off")
