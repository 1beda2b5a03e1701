"""Content hashes: computed from the table in the worker's memory, they must equal the hash of
the same table read back from a segment, whatever Arrow drops or keeps on the way."""

from __future__ import annotations

import decimal
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from riera.exchange.base import SegmentKey
from riera.exchange.disk import DiskExchange
from riera.exchange.shm import ShmExchange
from riera.provenance.hashing import HashingExchange, table_hash


def tables() -> dict[str, pa.Table]:
    n = 1000
    ints = pa.array(np.arange(n))
    all_valid = pa.Array.from_buffers(  # a validity bitmap with every bit set: IPC drops it
        pa.int64(), n, [pa.py_buffer(np.full((n + 7) // 8, 255, np.uint8)), ints.buffers()[1]]
    )
    return {
        "plain": pa.table({"i": ints, "s": [f"v{i}" for i in range(n)]}),
        "all-valid bitmap": pa.table({"i": all_valid}),
        "nulls": pa.table({"i": pa.array([None if i % 7 == 0 else i for i in range(n)])}),
        "slice": pa.table({"i": ints, "s": [f"v{i}" for i in range(n)]}).slice(100, 300),
        "dictionary": pa.table({"d": pa.array(["a", "b", "a"] * 100).dictionary_encode()}),
        "nested": pa.table({"l": [[1, 2], None, [3]] * 50, "st": [{"x": 1}, {"x": None}] * 75}),
        "chunks": pa.concat_tables([pa.table({"i": [1, 2]}), pa.table({"i": [3]})]),
        "empty": pa.table({"i": pa.array([], pa.int64())}),
        "views": pa.table({"s": _VIEWS, "b": _VIEWS.cast(pa.binary_view())}),
        "view slice": pa.table({"s": _VIEWS}).slice(10, 500),
        "types": pa.table(
            {
                "dec": pa.array([decimal.Decimal("1.25"), None] * 50, pa.decimal256(40, 2)),
                "ts": pa.array([1, None] * 50, pa.timestamp("ns", tz="Europe/Paris")),
                "t32": pa.array([1, None] * 50, pa.time32("s")),
                "d64": pa.array([86_400_000, None] * 50, pa.date64()),
                "dur": pa.array([-1, None] * 50, pa.duration("us")),
                "lbin": pa.array([b"\xff", None] * 50, pa.large_binary()),
            }
        ),
    }


_VIEWS = pa.array(
    [None if i % 9 == 0 else f"value {i} " * (i % 4) for i in range(1000)], pa.string_view()
)


def test_a_view_column_hashes_by_its_values_whatever_its_layout() -> None:
    """Views point into data buffers in any layout; equal values must hash alike."""
    strings = [f"value {i} " * (i % 4) for i in range(300)]
    direct = pa.table({"s": pa.array(strings, pa.string_view())})
    via_cast = pa.table({"s": pa.array(strings, pa.large_string()).cast(pa.string_view())})
    sliced = pa.table({"s": pa.array(["x" * 40, *strings], pa.string_view())}).slice(1)
    assert via_cast.column(0).chunk(0).buffers()[2:] != direct.column(0).chunk(0).buffers()[2:]
    assert table_hash(direct) == table_hash(via_cast) == table_hash(sliced)
    changed = pa.table({"s": pa.array([*strings[:-1], "other"], pa.string_view())})
    assert table_hash(changed) != table_hash(direct)


@pytest.mark.parametrize("backend", ["shm", "disk"])
@pytest.mark.parametrize("name", list(tables()))
def test_hash_in_memory_equals_hash_of_the_stored_segment(
    tmp_path: Path, backend: str, name: str
) -> None:
    directory = Path("/dev/shm") / f"riera-hash-test-{os.getpid()}"
    directory.mkdir(exist_ok=True)
    try:
        inner = ShmExchange(directory) if backend == "shm" else DiskExchange(tmp_path / "spill")
        ex = HashingExchange(inner)
        table = tables()[name]
        ref = ex.put(table, SegmentKey(os.getpid(), "r", "s", 0))
        stored = inner.get(ref)
        assert stored.equals(table)
        assert ex.hashes == [table_hash(stored)]
        inner.release([ref])
    finally:
        for p in directory.iterdir():
            p.unlink()
        directory.rmdir()


def test_different_content_hashes_differently() -> None:
    t = tables()
    assert table_hash(t["plain"]) != table_hash(t["slice"])
    assert table_hash(t["nulls"]) != table_hash(t["all-valid bitmap"])
    assert table_hash(t["all-valid bitmap"]) == table_hash(pa.table({"i": np.arange(1000)}))
