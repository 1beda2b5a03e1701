"""One conformance suite for every exchange backend (the Dask/Quix parametrised-suite pattern).

Local backends are built here; remote ones (Redis, S3 through a local S3-compatible server) come
from the ``exchange_factory`` fixture in ``conftest.py``. Every backend must round-trip every Arrow
type exactly, empty and very wide tables, partitioned puts, release semantics and concurrent
readers.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from riera.config import load_settings
from riera.errors import ExchangeError
from riera.exchange import create
from riera.exchange.base import Exchange, SegmentKey

LOCAL = ["shm", "disk", "shm-pickle"]
REMOTE = ["redis", "s3-ipc", "s3-parquet", "s3fs-ipc", "s3fs-parquet"]


@pytest.fixture(params=LOCAL + REMOTE)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Exchange]]:
    name = request.param
    if name in LOCAL:
        ex = create(name, load_settings(spill_dir=tmp_path / "spill"))
    else:
        factory: Callable[[str], Exchange] = request.getfixturevalue("exchange_factory")
        ex = factory(name)
    global _RUN
    _RUN = f"conf{secrets.token_hex(4)}"  # each test writes under a run of its own
    yield name, ex
    ex.release_run(key())


_RUN = ""


def key(task: int = 0, attempt: int = 0, run: str | None = None, stage: str = "s") -> SegmentKey:
    return SegmentKey(os.getpid(), run or _RUN, stage, task, attempt)


def all_types_table() -> pa.Table:
    n = 5
    return pa.table(
        {
            "i8": pa.array([1, -2, None, 4, 5], pa.int8()),
            "u64": pa.array([0, 2**64 - 1, 3, None, 5], pa.uint64()),
            "f32": pa.array([1.5, None, -0.0, float("inf"), 2.25], pa.float32()),
            "f64": pa.array([1e-300, 1e300, None, -1.0, 0.5]),  # NaN != NaN in Table.equals
            "bool": pa.array([True, False, None, True, False]),
            "str": pa.array(["a", "", None, "ünïcødé", "x" * 1000]),
            "lstr": pa.array(["a", "b", None, "d", "e"], pa.large_string()),
            "bin": pa.array([b"\x00\x01", b"", None, b"z", b"\xff" * 10]),
            "fsb": pa.array([b"abcd", b"efgh", None, b"ijkl", b"mnop"], pa.binary(4)),
            "date": pa.array(
                [
                    dt.date(2020, 1, 1),
                    None,
                    dt.date(1970, 1, 1),
                    dt.date(2038, 1, 19),
                    dt.date(2000, 2, 29),
                ]
            ),
            "ts": pa.array(
                [dt.datetime(2024, 5, 1, 12, 0, 0, 123456)] * 4 + [None],
                pa.timestamp("us", tz="UTC"),
            ),
            "dur": pa.array([1, 2, None, 4, 5], pa.duration("ms")),
            "dec": pa.array(
                [
                    decimal.Decimal("1.23"),
                    None,
                    decimal.Decimal("-4.56"),
                    decimal.Decimal("0.00"),
                    decimal.Decimal("99.99"),
                ],
                pa.decimal128(5, 2),
            ),
            "list": pa.array([[1, 2], [], None, [3], [None, 4]], pa.list_(pa.int64())),
            "struct": pa.array(
                [
                    {"a": 1, "b": "x"},
                    None,
                    {"a": None, "b": "y"},
                    {"a": 3, "b": None},
                    {"a": 5, "b": "z"},
                ],
                pa.struct([("a", pa.int32()), ("b", pa.string())]),
            ),
            "map": pa.array(
                [[("k", 1)], [], None, [("a", 2), ("b", 3)], [("z", 0)]],
                pa.map_(pa.string(), pa.int64()),
            ),
            "dict": pa.array(["red", "green", None, "red", "blue"]).dictionary_encode(),
            "sview": pa.array(["a", "longer than twelve bytes", None, "", "ü"], pa.string_view()),
            "bview": pa.array([b"\x00", b"", None, b"\xff" * 13, b"z"], pa.binary_view()),
            "lbin": pa.array([b"a", None, b"", b"\xff", b"z"], pa.large_binary()),
            "dec256": pa.array(
                [decimal.Decimal("1e30"), None, decimal.Decimal("-0.001"), 0, 1],
                pa.decimal256(40, 3),
            ),
            "date64": pa.array([dt.date(2024, 2, 29), None, dt.date(1900, 1, 1)] * 2, pa.date64())[
                :5
            ],
            "ts_naive": pa.array([1, None, -(10**18), 0, 10**18], pa.timestamp("ns")),
            "ts_paris": pa.array([1, None, 0, 3, 4], pa.timestamp("s", tz="Europe/Paris")),
            "time32": pa.array([0, 86399, None, 1, 2], pa.time32("s")),
            "time64": pa.array([0, 86_399_999_999_999, None, 1, 2], pa.time64("ns")),
            "null": pa.nulls(5),
            "nested": pa.array(
                [[{"x": [1]}], None, [], [{"x": []}, {"x": None}], [{"x": [2, 3]}]],
                pa.list_(pa.struct([("x", pa.list_(pa.int16()))])),
            ),
        }
    ).slice(0, n)


def same(name: str, got: pa.Table, want: pa.Table) -> None:
    if name == "s3-parquet":  # Parquet may re-type a few columns; the values must survive
        got = got.cast(want.schema)
    assert got.schema.equals(want.schema, check_metadata=False), (got.schema, want.schema)
    assert got.equals(want), (got.to_pylist(), want.to_pylist())


def test_round_trips_every_arrow_type(backend: tuple[str, Exchange]) -> None:
    name, ex = backend
    table = all_types_table()
    ref = ex.put(table, key())
    assert ref.rows == table.num_rows and ref.backend == ex.name
    same(name, ex.get(ref), table)


def test_empty_tables(backend: tuple[str, Exchange]) -> None:
    name, ex = backend
    zero_rows = all_types_table().slice(0, 0)
    same(name, ex.get(ex.put(zero_rows, key(1))), zero_rows)
    no_columns = pa.table({})
    assert ex.get(ex.put(no_columns, key(2))).num_columns == 0


def test_wide_and_multi_batch_tables(backend: tuple[str, Exchange]) -> None:
    name, ex = backend
    wide = pa.table({f"c{i}": pa.array(np.arange(50) * i) for i in range(1000)})
    same(name, ex.get(ex.put(wide, key(3))), wide)
    batches = pa.Table.from_batches(
        [pa.record_batch({"x": pa.array(np.arange(i, i + 10))}) for i in range(0, 100, 10)]
    )
    same(name, ex.get(ex.put(batches, key(4))), batches.combine_chunks())


def test_partitioned_put_keeps_each_partition(backend: tuple[str, Exchange]) -> None:
    name, ex = backend
    t = pa.table({"k": pa.array(np.arange(100)), "s": pa.array([str(i) for i in range(100)])})
    parts = [t.slice(0, 30), t.slice(30, 0), t.slice(30, 70)]
    refs = ex.put_partitioned(parts, key(5))
    assert [r.rows for r in refs] == [30, 0, 70]
    for ref, part in zip(refs, parts, strict=True):
        same(name, ex.get(ref), part)


def test_release_semantics(backend: tuple[str, Exchange]) -> None:
    _name, ex = backend
    t = pa.table({"x": pa.array(np.arange(1000))})
    ref = ex.put(t, key(6))
    before = ex.get(ref)
    ex.release([ref])
    ex.release([ref])  # idempotent
    assert before.equals(t)  # a table read before the release stays valid
    with pytest.raises(ExchangeError):
        ex.get(ref)


def test_release_task_and_run_remove_only_their_own(backend: tuple[str, Exchange]) -> None:
    _name, ex = backend
    t = pa.table({"x": [1, 2, 3]})
    run_a, run_b = f"a{secrets.token_hex(3)}", f"b{secrets.token_hex(3)}"
    a0 = ex.put(t, key(0, 0, run_a))
    a1 = ex.put(t, key(0, 1, run_a))
    b0 = ex.put(t, key(0, 0, run_b))
    ex.release_task(key(0, 0, run_a))
    with pytest.raises(ExchangeError):
        ex.get(a0)
    assert ex.get(a1).equals(t)
    ex.release_run(key(run=run_a))
    with pytest.raises(ExchangeError):
        ex.get(a1)
    assert ex.get(b0).equals(t)  # another run is untouched
    ex.release_run(key(run=run_b))


def test_concurrent_readers(backend: tuple[str, Exchange]) -> None:
    _name, ex = backend
    t = pa.table({"x": pa.array(np.arange(200_000)), "y": pa.array(np.arange(200_000) * 2.0)})
    ref = ex.put(t, key(7))
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(5):
                assert ex.get(ref).equals(t)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=read) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
