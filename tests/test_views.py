"""The view kernels (riera.kernels.views) against Arrow's own answers through plain strings:
chunked arrays whose long values live in different data buffers, nulls, sliced chunks, and
dictionary arrays with nulls in their indices or their dictionary."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riera.io import readers
from riera.kernels import arrowtypes, views

# Short (inline), exactly 12 bytes, long (out of line), multi-byte, empty, and null values.
VALUE = st.one_of(
    st.none(),
    st.sampled_from(["", "a", "b", "twelve bytes", "thirteen byte", "üüüüüüüüüüüüüüüüüüü"]),
    st.text(max_size=20),
)


@st.composite
def view_columns(draw: st.DrawFn, binary: bool = False) -> pa.ChunkedArray:
    """A chunked view column; some chunks sliced, so their views start at an offset."""
    t = pa.binary_view() if binary else pa.string_view()
    chunks = []
    for values in draw(st.lists(st.lists(VALUE, max_size=12), min_size=1, max_size=4)):
        plain = pa.array(
            [v.encode() if binary and v is not None else v for v in values],
            pa.binary() if binary else pa.string(),
        )
        arr = plain.cast(t)
        cut = draw(st.integers(0, min(2, len(arr))))
        chunks.append(arr.slice(cut))
    return pa.chunked_array(chunks, t)


def _plain(col: pa.ChunkedArray | pa.Array) -> list[object]:
    return col.cast(arrowtypes.plain_type(col.type)).to_pylist()


@settings(max_examples=200, deadline=None)
@given(col=st.one_of(view_columns(), view_columns(binary=True)), data=st.data())
def test_take_gathers_the_rows_arrow_would(col: pa.ChunkedArray, data: st.DataObject) -> None:
    n = len(col)
    idx = np.array(
        data.draw(st.lists(st.integers(0, max(0, n - 1)), max_size=30)) if n else [],
        dtype=np.int64,
    )
    out = views.take(col, idx)
    out.validate(full=True)
    assert out.type == col.type
    expected = col.cast(arrowtypes.plain_type(col.type)).take(pa.array(idx, pa.int64()))
    assert _plain(out) == expected.to_pylist()


@settings(max_examples=200, deadline=None)
@given(col=view_columns())
def test_inline_keys_round_trip_and_group_like_the_values(col: pa.ChunkedArray) -> None:
    key = views.key(col)
    if not views.all_inline(col):
        assert key is None
        return
    assert key is not None and key.type == views.KEY_TYPE
    back = views.from_key(key, col.type)
    back.validate(full=True)
    assert back.to_pylist() == col.to_pylist()
    # Equal values have equal keys and different values different keys; nulls are one group.
    pairs = {}
    for k, v in zip(key.to_pylist(), col.to_pylist(), strict=True):
        assert pairs.setdefault(k, v) == v
    assert len(pairs) == len(set(col.to_pylist()))


def test_grouping_by_a_view_column_keeps_its_type_and_values() -> None:
    x = pa.chunked_array(
        [pa.array(["b", None, "a"], pa.string_view()), pa.array(["a", "", None], pa.string_view())]
    )
    t = pa.table({"x": arrowtypes.hash_key(x), "v": [1, 2, 3, 4, 5, 6]})
    assert t.schema.field("x").type == views.KEY_TYPE
    grouped = t.group_by("x", use_threads=False).aggregate([("v", "sum")])
    keys = arrowtypes.restore(grouped.column("x"), pa.string_view())
    assert keys.type == pa.string_view()
    got = dict(zip(keys.to_pylist(), grouped.column("v_sum").to_pylist(), strict=True))
    assert got == {"b": 1, None: 8, "a": 7, "": 5}


@settings(max_examples=150, deadline=None)
@given(values=st.lists(VALUE, max_size=40), cut=st.integers(0, 3))
def test_from_dictionary_equals_decoding(values: list[str | None], cut: int) -> None:
    encoded = pa.array(values, pa.string()).dictionary_encode().slice(min(cut, len(values)))
    out = views.from_dictionary(encoded, pa.string_view())
    out.validate(full=True)
    assert out.type == pa.string_view()
    assert out.to_pylist() == encoded.cast(pa.string()).to_pylist()


def test_a_null_inside_the_dictionary_reads_as_null() -> None:
    encoded = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, None, 1], pa.int32()), pa.array(["long value, out of line", None])
    )
    out = views.from_dictionary(encoded, pa.string_view())
    assert out.to_pylist() == ["long value, out of line", None, None, None]


@pytest.mark.parametrize("row_groups", [1, 3])
def test_parquet_view_columns_read_through_their_dictionary(
    tmp_path: object, row_groups: int
) -> None:
    """A dictionary-encoded string_view column is read as a dictionary and gathered into views;
    the table equals pyarrow's own read, type included; a high-cardinality one reads as usual."""
    n = 3000
    table = pa.table(
        {
            "flag": pa.array(
                [["A", "N", None, "a long value, stored out of line"][i % 4] for i in range(n)]
            ).cast(pa.string_view()),
            "unique": pa.array([f"value number {i}" for i in range(n)]).cast(pa.string_view()),
            "n": np.arange(n),
        }
    )
    path = f"{tmp_path}/t.parquet"
    pq.write_table(table, path, row_group_size=n // row_groups, dictionary_pagesize_limit=2048)
    split = readers.parquet_splits(((path, 0),), 1 << 30)[0]
    groups = list(range(row_groups))
    assert readers._dictionary_views(pq.ParquetFile(path), groups, None) == ["flag"]
    got = readers.read_parquet_split(split, None)
    assert got.schema == pq.read_schema(path)
    assert got.equals(pq.read_table(path))
    batches = list(readers.iter_parquet_split(split, ["flag", "n"]))
    assert pa.concat_tables(batches).equals(pq.read_table(path, columns=["flag", "n"]))
