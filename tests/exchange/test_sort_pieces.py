"""Sorts over exchanges that cannot slice in place: the map side stores each sorted block in
pieces with key spans, and each reducer fetches only the pieces overlapping its range.

``shm-pickle`` runs everywhere; Redis and S3 use the real servers of ``tests/exchange/conftest.py``.
``sort_piece_bytes`` is set tiny so small tables are cut into as many pieces as there are reducers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import riera
import riera.provenance as prov
from riera.config import load_settings
from riera.physical import ops

ROWS = 6000


def frame(kind: str, seed: int = 7) -> pd.DataFrame:
    """Keys with duplicates, nulls and NaN — the cases piece selection must not lose."""
    rng = np.random.default_rng(seed)
    if kind == "int-dups":
        k = pd.Series(rng.integers(0, 40, ROWS), dtype="int64")
    elif kind == "float-nan-null":
        vals = rng.normal(size=ROWS)
        vals[rng.random(ROWS) < 0.05] = np.nan
        k = pd.Series(vals, dtype="float64")  # NaN: missing for pandas, null or NaN in Arrow
    elif kind == "str-null":
        k = pd.Series([f"w{x:03d}" for x in rng.integers(0, 500, ROWS)], dtype="object")
        k[rng.random(ROWS) < 0.03] = None
    elif kind == "one-key":
        k = pd.Series(np.full(ROWS, 5), dtype="int64")
    else:
        raise ValueError(kind)
    return pd.DataFrame({"k": k, "row": np.arange(ROWS)})


def sort_rows(df: pd.DataFrame, descending: bool, parts: int) -> pa.Table:
    return (
        riera.from_pandas(df, partitions=4).sort("k", descending=descending, partitions=parts)
    ).to_arrow()


def expected_keys(df: pd.DataFrame, descending: bool) -> list[Any]:
    s = df.sort_values("k", ascending=not descending, na_position="last", kind="stable")["k"]
    return [None if pd.isna(v) else v for v in s]


def keys_of(t: pa.Table) -> list[Any]:
    return [None if v is None or v != v else v for v in t.column("k").to_pylist()]


@pytest.fixture
def pieces_runtime(tmp_path: Path) -> Iterator[Callable[..., None]]:
    def start(**overrides: Any) -> None:
        riera.init(
            workers=2,
            progress="off",
            home=str(tmp_path / "home"),
            sort_piece_bytes=1,
            **overrides,
        )

    yield start
    riera.shutdown()


@pytest.mark.parametrize("kind", ["int-dups", "float-nan-null", "str-null", "one-key"])
@pytest.mark.parametrize("descending", [False, True])
def test_pieces_sort_like_pandas(
    pieces_runtime: Callable[..., None], kind: str, descending: bool
) -> None:
    pieces_runtime(exchange="shm-pickle")
    df = frame(kind)
    out = sort_rows(df, descending, parts=5)
    assert keys_of(out) == expected_keys(df, descending)
    assert sorted(out.column("row").to_pylist()) == list(range(ROWS))  # each row once


def test_each_reducer_reads_only_its_pieces(pieces_runtime: Callable[..., None]) -> None:
    """The provenance store shows what each reduce task used: a few pieces, not every block."""
    pieces_runtime(exchange="shm-pickle")
    df = pd.DataFrame({"k": np.random.default_rng(1).permutation(ROWS), "row": np.arange(ROWS)})
    out = sort_rows(df, False, parts=8)
    assert out.column("k").to_pylist() == list(range(ROWS))
    settings = load_settings(home=str(riera.get_runtime().settings.home))
    stages = prov.sql(
        "SELECT stage_id, num_tasks FROM stages WHERE run_id = "
        "(SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1) ORDER BY stage_id",
        settings=settings,
    ).to_dicts()
    map_stage, reduce_stage = stages[-2]["stage_id"], stages[-1]["stage_id"]
    pieces = prov.sql(
        "SELECT count(*) AS n FROM generated g JOIN tasks t "
        "ON t.run_id = g.run_id AND t.task_id = g.task_id WHERE t.stage_id = :s",
        {"s": map_stage},
        settings=settings,
    ).to_dicts()[0]["n"]
    used = prov.sql(
        "SELECT t.task_id, count(*) AS n FROM used u JOIN tasks t "
        "ON t.run_id = u.run_id AND t.task_id = u.task_id WHERE t.stage_id = :s "
        "GROUP BY t.task_id",
        {"s": reduce_stage},
        settings=settings,
    ).to_dicts()
    assert pieces == 4 * 8  # 4 map blocks in 8 pieces each
    assert len(used) == 8
    # Each reducer's range spans about one piece of each block, two where it straddles a cut.
    assert all(4 <= u["n"] <= 3 * 4 for u in used), used
    assert sum(u["n"] for u in used) < pieces * 2


def test_zero_copy_backends_keep_one_ref_per_block(pieces_runtime: Callable[..., None]) -> None:
    pieces_runtime(exchange="shm")
    df = frame("int-dups")
    out = sort_rows(df, False, parts=5)
    assert keys_of(out) == expected_keys(df, False)
    run = riera.get_runtime().last_run
    assert run is not None
    settings = load_settings(home=str(riera.get_runtime().settings.home))
    (row,) = prov.sql(
        "SELECT count(*) AS n FROM generated g JOIN tasks t ON t.run_id = g.run_id "
        "AND t.task_id = g.task_id WHERE t.run_id = :r AND t.stage_id = "
        "(SELECT max(stage_id) FROM stages WHERE run_id = :r AND stage_id < "
        " (SELECT max(stage_id) FROM stages WHERE run_id = :r))",
        {"r": run.run_id},
        settings=settings,
    ).to_dicts()
    assert row["n"] == 4


@pytest.mark.parametrize("backend", ["redis", "s3-ipc"])
def test_remote_sort_in_pieces_matches_shared_memory(
    pieces_runtime: Callable[..., None],
    remote_settings: Callable[[str], dict[str, Any]],
    backend: str,
) -> None:
    df = frame("str-null")
    pieces_runtime(**remote_settings(backend))
    remote = sort_rows(df, True, parts=6)
    riera.shutdown()
    pieces_runtime(exchange="shm")
    local = sort_rows(df, True, parts=6)
    assert keys_of(remote) == keys_of(local) == expected_keys(df, True)
    assert sorted(remote.column("row").to_pylist()) == list(range(ROWS))


@pytest.mark.parametrize(
    ("span", "lo", "hi", "descending", "last", "want"),
    [
        ((3, 7, False), None, 3, False, False, False),  # hi is exclusive
        ((3, 7, False), None, 4, False, False, True),
        ((3, 7, False), 7, None, False, True, True),  # lo is inclusive
        ((3, 7, False), 8, None, False, True, False),
        ((None, None, True), 8, None, False, True, True),  # nulls go to the last partition
        ((None, None, True), None, 8, False, False, False),
        ((3, 7, True), 9, None, False, True, True),
        ((9, 4, False), None, 9, True, False, False),  # descending: hi < k <= lo
        ((9, 4, False), None, 8, True, False, True),
        ((9, 4, False), 4, None, True, True, True),
        ((9, 4, False), 3, None, True, True, False),
        ((3, 7, False), None, None, False, None, False),  # a partition that receives no rows
    ],
)
def test_span_overlaps(
    span: tuple[Any, Any, bool], lo: Any, hi: Any, descending: bool, last: Any, want: bool
) -> None:
    assert ops.span_overlaps(span, lo, hi, descending, last) is want


def test_shm_pickle_stores_a_slice_without_its_parents_buffers(tmp_path: Path) -> None:
    from riera.exchange.base import SegmentKey
    from riera.exchange.pickle_shm import PickleShmExchange

    big = pa.table({"s": [f"row-{i:08d}" for i in range(200_000)], "i": np.arange(200_000)})
    piece = big.slice(1000, 2000)
    ex = PickleShmExchange(tmp_path)
    ref = ex.put(piece, SegmentKey(1, "r", "s", 0))
    assert ex.get(ref).equals(piece)
    assert Path(ref.location).stat().st_size < 2 * piece.nbytes + 4096  # not big's 3.6 MB
