"""Every Arrow type through every operator, checked against pyarrow and DuckDB on the same data.

Each case of :data:`TYPES` is a column ``x`` of 12 values with duplicates and nulls, beside an
int64 ``v`` (the row number) and a small int64 group ``g``. Narrow operators, writers and
exchanges must carry ``x`` unchanged (same type, same values); keyed operators (group_by, sort,
join, distinct, repartition by) key on it when it is scalar, and refuse a nested ``x`` by name.
Expected results of SQL-shaped queries come from DuckDB over the same Arrow table.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import riera
from riera.errors import ColumnTypeError

D = decimal.Decimal
_PICK = [0, 1, None, 2, 1, 3, 0, None, 2, 3, 1, 0]  # indices into four distinct values


def _column(values: list[Any], t: pa.DataType) -> pa.Array:
    return pa.array([None if i is None else values[i] for i in _PICK], t)


UTC = dt.UTC
TYPES: dict[str, pa.Array] = {
    "string_view": _column(["b", "a", "", "ü" * 20], pa.string_view()),
    "binary_view": _column([b"\x00b", b"a", b"", b"\xff" * 20], pa.binary_view()),
    "large_string": _column(["b", "a", "", "ü" * 20], pa.large_string()),
    "large_binary": _column([b"\x00b", b"a", b"", b"\xff" * 20], pa.large_binary()),
    "dictionary": _column(["red", "green", "blue", "a"], pa.string()).dictionary_encode(),
    "decimal128": _column([D("1.25"), D("-3.50"), D("0.00"), D("99999.99")], pa.decimal128(12, 2)),
    "decimal256": _column([D("1.250"), D("-3.5"), D("0"), D("1e30")], pa.decimal256(40, 3)),
    "date32": _column(
        [dt.date(2024, 2, 29), dt.date(1970, 1, 1), dt.date(1900, 5, 1), dt.date(2100, 1, 1)],
        pa.date32(),
    ),
    "date64": _column(
        [dt.date(2024, 2, 29), dt.date(1970, 1, 1), dt.date(1900, 5, 1), dt.date(2100, 1, 1)],
        pa.date64(),
    ),
    "timestamp": _column(
        [
            dt.datetime(2024, 1, 1, 12),
            dt.datetime(1999, 12, 31, 23, 59, 59),
            dt.datetime(2024, 1, 1, 12, 0, 1),
            dt.datetime(1970, 1, 1),
        ],
        pa.timestamp("ns"),
    ),
    "timestamp_tz": _column(
        [
            dt.datetime(2024, 1, 1, 12, tzinfo=UTC),
            dt.datetime(1999, 12, 31, 23, tzinfo=UTC),
            dt.datetime(2024, 6, 1, tzinfo=UTC),
            dt.datetime(1970, 1, 2, tzinfo=UTC),
        ],
        pa.timestamp("us", tz="Europe/Paris"),
    ),
    "time32": _column(
        [dt.time(12), dt.time(0, 0, 1), dt.time(23, 59, 59), dt.time(6)], pa.time32("s")
    ),
    "time64": _column(
        [dt.time(12, 0, 0, 5), dt.time(0), dt.time(23, 59, 59, 999999), dt.time(6)], pa.time64("us")
    ),
    "duration": _column(
        [
            dt.timedelta(seconds=5),
            dt.timedelta(0),
            dt.timedelta(days=-1),
            dt.timedelta(milliseconds=3),
        ],
        pa.duration("ms"),
    ),
    "bool": _column([True, False, True, False], pa.bool_()),
    "list": _column([[1, 2], [], [None], [3]], pa.list_(pa.int64())),
    "struct": _column(
        [{"a": 1, "b": "x"}, {"a": None, "b": "y"}, {"a": 2, "b": None}, {"a": 3, "b": "z"}],
        pa.struct([("a", pa.int64()), ("b", pa.string())]),
    ),
}
NESTED = {"list", "struct"}
SCALAR = [t for t in TYPES if t not in NESTED]
# DuckDB has no 256-bit decimal and reads a duration as an INTERVAL (other Python values).
DUCKDB = [t for t in SCALAR if t not in {"decimal256", "duration"}]


PARQUET_READS_BACK = {"date64": pa.date32(), "time32": pa.time32("ms")}


def table(type_name: str) -> pa.Table:
    x = TYPES[type_name]
    n = len(x)
    return pa.table(
        {"x": x, "v": pa.array(range(n), pa.int64()), "g": pa.array([i % 3 for i in range(n)])}
    )


def values(t: pa.Table, col: str = "x") -> list[Any]:
    return t.column(col).to_pylist()


def _order(v: Any) -> tuple[int, str]:
    return (1, "") if v is None else (0, repr(v))


def rows(t: pa.Table) -> list[tuple[Any, ...]]:
    """The rows of ``t`` as a canonical multiset (sorted tuples)."""
    out = [tuple(r.values()) for r in t.to_pylist()]
    return sorted(out, key=lambda r: [_order(v) for v in r])


def duck(sql: str, t: pa.Table, other: pa.Table | None = None) -> pa.Table:
    con = duckdb.connect()
    con.register("t", t)
    if other is not None:
        con.register("o", other)
    return con.sql(sql).to_arrow_table()


def same_type(got: pa.Table, want: pa.DataType, col: str = "x") -> None:
    assert got.schema.field(col).type == want, (got.schema.field(col).type, want)


@pytest.fixture
def ds(workers: int) -> Any:
    return lambda name, partitions=3: riera.from_arrow(table(name), partitions=partitions)


# -- narrow operators carry every type -----------------------------------------------------------


def keep_odd(r: dict[str, Any]) -> bool:
    return r["v"] % 2 == 1


def add_w(r: dict[str, Any]) -> dict[str, Any]:
    return {**r, "w": r["v"] * 10}


def pandas_identity(df: Any) -> Any:
    return df.assign(w=df["v"] * 10)


def arrow_identity(t: pa.Table) -> pa.Table:
    return t.append_column("w", pc.multiply(t["v"], 10))


@pytest.mark.parametrize("type_name", list(TYPES))
def test_narrow_operators_carry_the_type(ds: Any, type_name: str) -> None:
    src = table(type_name)
    t = src.schema.field("x").type
    odd = [x for x, v in zip(values(src), values(src, "v"), strict=True) if v % 2]
    cases = {
        "filter": (ds(type_name).filter(keep_odd), odd),
        "map": (ds(type_name).map(add_w), values(src)),
        "map_batches_pandas": (ds(type_name).map_batches(pandas_identity), values(src)),
        "map_batches_pyarrow": (
            ds(type_name).map_batches(arrow_identity, batch_format="pyarrow"),
            values(src),
        ),
        "select": (ds(type_name).select("x", "v"), values(src)),
        "limit": (ds(type_name, 1).limit(5), values(src)[:5]),
        "union": (ds(type_name).union(ds(type_name, 2)), values(src) * 2),
    }
    for op, (out_ds, want) in cases.items():
        out = out_ds.to_arrow()
        assert out.schema.field("x").type == t, (op, out.schema.field("x").type)
        assert values(out) == want, op
    shuffled = ds(type_name).repartition(4).to_arrow()
    same_type(shuffled, t)
    assert rows(shuffled) == rows(src)


# -- keyed operators --------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", SCALAR)
def test_group_by_key(ds: Any, type_name: str) -> None:
    src = table(type_name)
    out = ds(type_name).group_by("x").agg(n=("*", "count"), s=("v", "sum"), hi=("v", "max"))
    got = out.to_arrow()
    same_type(got, src.schema.field("x").type)
    want: dict[Any, list[int]] = {}
    for x, v in zip(values(src), values(src, "v"), strict=True):
        want.setdefault(x, []).append(v)
    assert rows(got) == rows(
        pa.table(
            {
                "x": pa.array(list(want), src.schema.field("x").type),
                "n": [len(v) for v in want.values()],
                "s": [sum(v) for v in want.values()],
                "hi": [max(v) for v in want.values()],
            }
        )
    )
    if type_name in DUCKDB:  # NULL is a group of its own in SQL too
        sql = "SELECT x, count(*) AS n, sum(v) AS s, max(v) AS hi FROM t GROUP BY x"
        assert sorted(r[1:] for r in rows(got)) == sorted(r[1:] for r in rows(duck(sql, src)))


@pytest.mark.parametrize("type_name", SCALAR)
def test_aggregated_value(ds: Any, type_name: str) -> None:
    src = table(type_name)
    t = src.schema.field("x").type
    aggs: dict[str, Any] = {"cnt": ("x", "count"), "vals": ("x", "list")}
    if type_name != "bool":
        aggs |= {"lo": ("x", "min"), "hi": ("x", "max")}
    got = ds(type_name).group_by("g").agg(**aggs).sort("g").to_arrow()
    assert got.schema.field("vals").type == pa.list_(t)
    groups = [
        [x for x, g in zip(values(src), values(src, "g"), strict=True) if g == k] for k in range(3)
    ]
    present = [[x for x in grp if x is not None] for grp in groups]
    assert values(got, "cnt") == [len(p) for p in present]
    assert [sorted(v, key=_order) for v in values(got, "vals")] == [
        sorted(grp, key=_order) for grp in groups
    ]
    if type_name == "bool":
        return
    same_type(got, t, "lo")
    same_type(got, t, "hi")
    assert values(got, "lo") == [min(p) for p in present]
    assert values(got, "hi") == [max(p) for p in present]
    if type_name in DUCKDB:
        sql = "SELECT g, count(x), min(x), max(x) FROM t GROUP BY g ORDER BY g"
        want = duck(sql, src)
        assert values(got, "cnt") == want.column(1).to_pylist()
        assert values(got, "lo") == want.column(2).to_pylist()
        assert values(got, "hi") == want.column(3).to_pylist()


@pytest.mark.parametrize("type_name", SCALAR)
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_sort_key(ds: Any, type_name: str, descending: bool) -> None:
    src = table(type_name)
    got = ds(type_name).sort("x", descending=descending, partitions=2).to_arrow()
    same_type(got, src.schema.field("x").type)
    order = "DESC" if descending else "ASC"
    want = (
        duck(f"SELECT x FROM t ORDER BY x {order} NULLS LAST", src)
        if (type_name in DUCKDB)
        else src.sort_by([("x", "descending" if descending else "ascending")])
    )
    assert values(got) == want.column("x").to_pylist()
    assert rows(got) == rows(src)
    multi = ds(type_name).sort(["x", "v"], descending=[descending, True]).to_arrow()
    keyed = [(x, v) for x, v in zip(values(multi), values(multi, "v"), strict=True)]
    if type_name in DUCKDB:
        sql = f"SELECT x, v FROM t ORDER BY x {order} NULLS LAST, v DESC"
        assert keyed == [tuple(r.values()) for r in duck(sql, src).to_pylist()]


@pytest.mark.parametrize("type_name", SCALAR)
@pytest.mark.parametrize("how", ["inner", "left"])
def test_join_key(ds: Any, type_name: str, how: str) -> None:
    src = table(type_name)
    right = src.select(["x", "g"]).rename_columns(["x", "h"]).slice(2, 6)
    got = ds(type_name).join(riera.from_arrow(right, partitions=2), on="x", how=how).to_arrow()
    same_type(got, src.schema.field("x").type)
    if type_name in DUCKDB:
        sql = f"SELECT t.x, t.v, t.g, o.h FROM t {how.upper()} JOIN o ON t.x = o.x"
        assert rows(got.select(["x", "v", "g", "h"])) == rows(duck(sql, src, right))
    else:
        assert (
            got.num_rows
            == src.join(
                right, "x", join_type=f"{how} outer".replace("inner outer", "inner")
            ).num_rows
        )


@pytest.mark.parametrize("type_name", SCALAR)
def test_distinct_and_repartition_by(ds: Any, type_name: str) -> None:
    src = table(type_name)
    got = ds(type_name).select("x", "g").distinct(partitions=2).to_arrow()
    same_type(got, src.schema.field("x").type)
    if type_name in DUCKDB:
        assert rows(got) == rows(duck("SELECT DISTINCT x, g FROM t", src))
    parts = ds(type_name).repartition(3, by="x")
    seen = parts.map_batches(_keys_here, batch_format="pyarrow").to_arrow()
    assert rows(parts.to_arrow()) == rows(src)
    per_key = {}
    for x, p in zip(values(seen), values(seen, "part"), strict=True):
        assert per_key.setdefault(repr(x), p) == p  # every key in exactly one partition


def _keys_here(t: pa.Table) -> pa.Table:
    x = pc.unique(t["x"].combine_chunks())
    marker = pc.min(t["v"]).as_py() if t.num_rows else -1
    return pa.table({"x": x, "part": pa.array([marker] * len(x), pa.int64())})


@pytest.mark.parametrize("type_name", sorted(NESTED))
def test_nested_columns_are_carried_by_keyed_operators(ds: Any, type_name: str) -> None:
    src = table(type_name)
    t = src.schema.field("x").type
    by_v = ds(type_name).sort("v", descending=True).to_arrow()
    same_type(by_v, t)
    assert values(by_v) == values(src)[::-1]
    other = riera.from_arrow(src.select(["v", "x"]).slice(3, 5), partitions=2)
    joined = ds(type_name).join(other, on="v", how="left").sort("v").to_arrow()
    assert values(joined) == values(src)
    assert values(joined, "x_right") == [None] * 3 + values(src)[3:8] + [None] * 4
    same_type(joined, t, "x_right")
    grouped = ds(type_name).group_by("g").agg(n=("x", "count"), vals=("x", "list"))
    grouped = grouped.sort("g").to_arrow()
    assert grouped.schema.field("vals").type == pa.list_(t)
    assert [sorted(v, key=repr) for v in values(grouped, "vals")] == [
        sorted((x for x, g in zip(values(src), values(src, "g"), strict=True) if g == k), key=repr)
        for k in range(3)
    ]
    assert values(grouped, "n") == [
        sum(
            1
            for x, g in zip(values(src), values(src, "g"), strict=True)
            if g == k and x is not None
        )
        for k in range(3)
    ]


@pytest.mark.parametrize("type_name", sorted(NESTED))
@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda d: d.sort("x"), id="sort"),
        pytest.param(lambda d: d.group_by("x").count(), id="group_by"),
        pytest.param(lambda d: d.join(d, on="x"), id="join"),
        pytest.param(lambda d: d.distinct(), id="distinct"),
        pytest.param(lambda d: d.repartition(2, by="x"), id="repartition"),
    ],
)
def test_nested_key_is_refused_naming_operator_and_column(
    ds: Any, type_name: str, build: Any
) -> None:
    with pytest.raises(ColumnTypeError, match=r"column 'x' has type .*cannot be a \w+ key"):
        build(ds(type_name)).to_arrow()


# -- decimal aggregates: exact, with DuckDB's result types --------------------------------------


@pytest.mark.parametrize(("precision", "scale"), [(5, 2), (12, 2), (18, 4), (38, 6)])
def test_decimal_aggregates_match_duckdb(workers: int, precision: int, scale: int) -> None:
    t = pa.decimal128(precision, scale)
    q = D(1).scaleb(-scale)
    raw = ["1.5", "-2.25", None, "3.125", "0.01", "1.5"]
    x = pa.array([None if v is None else D(v).quantize(q) for v in raw], t)
    src = pa.table({"g": [1, 1, 1, 2, 2, 2], "x": x})
    got = (
        riera.from_arrow(src, partitions=2)
        .group_by("g")
        .agg(s=("x", "sum"), m=("x", "mean"), lo=("x", "min"), hi=("x", "max"), c=("x", "count"))
        .sort("g")
        .to_arrow()
    )
    want = duck(
        "SELECT g, sum(x) AS s, avg(x) AS m, min(x) AS lo, max(x) AS hi, count(x) AS c "
        "FROM t GROUP BY g ORDER BY g",
        src,
    )
    types = duck("SELECT typeof(sum(x)), typeof(avg(x)), typeof(count(x)) FROM t", src)
    assert types.to_pylist()[0] == {
        "typeof(sum(x))": f"DECIMAL(38,{scale})",
        "typeof(avg(x))": "DOUBLE",
        "typeof(count(x))": "BIGINT",
    }
    assert got.schema.field("s").type == pa.decimal128(38, scale) == want.schema.field("s").type
    assert got.schema.field("m").type == pa.float64() == want.schema.field("m").type
    assert got.schema.field("lo").type == t == got.schema.field("hi").type
    assert got.schema.field("c").type == pa.int64() == want.schema.field("c").type
    assert values(got, "s") == values(want, "s")  # exact
    assert values(got, "lo") == values(want, "lo") and values(got, "hi") == values(want, "hi")
    assert values(got, "m") == pytest.approx(values(want, "m"), rel=1e-15)


def test_decimal256_sum_stays_exact(workers: int) -> None:
    big, half = D("123456789012345678901234567890.124"), D("-61728394506172839450617283945.062")
    src = pa.table({"g": [1, 1, 1], "x": pa.array([big, big, half], pa.decimal256(45, 3))})
    got = riera.from_arrow(src, partitions=3).group_by("g").sum("x").to_arrow()
    assert got.schema.field("sum_x").type == pa.decimal256(76, 3)
    assert values(got, "sum_x") == [D("185185183518518518351851851835.186")]


# -- writers ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", list(TYPES))
def test_writers(ds: Any, type_name: str, out_dir: Path) -> None:
    src = table(type_name)
    t = src.schema.field("x").type
    ds(type_name).write_parquet(str(out_dir / "pq"))
    back = pa.concat_tables(
        pq.read_table(p) for p in sorted((out_dir / "pq").glob("part-*.parquet"))
    )
    # Parquet has no date64 and no time in seconds: they come back as date32 and time32[ms]
    same_type(back, PARQUET_READS_BACK.get(type_name, t))
    assert values(back) == values(src)
    ds(type_name).write_json(str(out_dir / "json"))
    lines = [
        json.loads(line)
        for p in sorted((out_dir / "json").glob("part-*"))
        for line in p.read_text().splitlines()
    ]
    assert [r["v"] for r in lines] == values(src, "v")
    assert [r["x"] is None for r in lines] == [x is None for x in values(src)]
    ds(type_name).select("x").write_text(str(out_dir / "txt"))
    text = [
        line
        for p in sorted((out_dir / "txt").glob("part-*"))
        for line in p.read_text().splitlines()
    ]
    assert len(text) == src.num_rows
    if type_name in NESTED:
        with pytest.raises(ColumnTypeError, match=r"column 'x' has type .* CSV cannot hold"):
            ds(type_name).write_csv(str(out_dir / "csv"))
        return
    if "binary" in type_name:  # b"\xff..." is not text
        with pytest.raises(ColumnTypeError, match=r"binary column\(s\) \['x'\] .* not UTF-8"):
            ds(type_name).write_csv(str(out_dir / "csv"))
        return
    ds(type_name).write_csv(str(out_dir / "csv"))
    parts = sorted((out_dir / "csv").glob("part-*.csv"))
    csv = pa.concat_tables([pacsv.read_csv(p) for p in parts])
    assert csv.column("v").to_pylist() == values(src, "v")
    text_x = [None if x is None else str(x) for x in values(src)]
    assert len(csv.column("x")) == len(text_x)


# -- Parquet written by DuckDB and by pyarrow with view types ------------------------------------


def test_parquet_from_duckdb_and_with_views(workers: int, tmp_path: Path) -> None:
    path = tmp_path / "duck.parquet"
    con = duckdb.connect()
    con.sql(
        "CREATE TABLE t AS SELECT 'k' || (i % 7)::VARCHAR AS s, (i * 1.25)::DECIMAL(12, 2) AS d, "
        "i AS n FROM range(500) r(i)"
    )
    con.sql(f"COPY t TO '{path}' (FORMAT parquet)")
    # DuckDB 2 writes plain BYTE_ARRAY strings; pyarrow keeps a view type in the Arrow schema it
    # stores, which is what files written by Polars and DataFusion-based tools read back as.
    duck_table = pq.read_table(path)
    view_path = tmp_path / "views.parquet"
    pq.write_table(duck_table.set_column(0, "s", duck_table["s"].cast(pa.string_view())), view_path)
    assert pq.read_table(view_path).schema.field("s").type == pa.string_view()
    for p in (path, view_path):
        ds = riera.read_parquet(str(p))
        stype = pq.read_table(p).schema.field("s").type
        got = ds.group_by("s").agg(total=("d", "sum"), n=("*", "count")).sort("s").to_arrow()
        want = con.sql(
            "SELECT s, sum(d) AS total, count(*) AS n FROM t GROUP BY s ORDER BY s"
        ).to_arrow_table()
        same_type(got, stype, "s")
        assert got.schema.field("total").type == want.schema.field("total").type
        assert got.select(["s", "total", "n"]).cast(want.schema).equals(want)
        top = ds.sort(["s", "n"], descending=[True, False]).take(3)
        assert [r["n"] for r in top] == [6, 13, 20]
        names = riera.from_arrow(pa.table({"s": ["k1", "k3"], "label": ["one", "three"]}))
        joined = ds.join(names, on="s").to_arrow()
        assert (
            joined.num_rows
            == con.sql("SELECT count(*) FROM t WHERE s IN ('k1', 'k3')").fetchall()[0][0]
        )  # type: ignore[index]
        same_type(joined, stype, "s")


# -- view columns stay compact in the exchange ---------------------------------------------------


def test_shuffle_pieces_of_a_view_column_carry_only_their_own_bytes() -> None:
    """A slice of a view array keeps the parent's data buffers, and IPC writes them whole;
    each shuffle piece must hold only its rows' bytes, or a shuffle writes the data n times."""
    from riera.exchange.base import to_ipc
    from riera.physical import ops

    strings = [f"a value longer than twelve bytes, number {i}" for i in range(20_000)]
    t = pa.table({"s": pa.array(strings, pa.string_view()), "i": range(20_000)})
    whole = to_ipc(t).size
    pieces = ops.split_by_ids(t, ops.hash_partition_ids(t, ["s"], 8), 8)
    pieces += ops.split_even(t, 8)
    assert sum(p.num_rows for p in pieces) == 2 * t.num_rows
    assert all(p.schema == t.schema for p in pieces)
    assert sum(to_ipc(p).size for p in pieces) < 2.5 * whole
    assert sorted(v for p in pieces[:8] for v in p.column("s").to_pylist()) == sorted(strings)


def test_duration_sum_is_a_duration(workers: int) -> None:
    src = table("duration")
    got = riera.from_arrow(src, partitions=3).group_by("g").sum("x").sort("g").to_arrow()
    assert got.schema.field("sum_x").type == pa.duration("ms")
    groups = [
        [x for x, g in zip(values(src), values(src, "g"), strict=True) if g == k and x is not None]
        for k in range(3)
    ]
    assert values(got, "sum_x") == [sum(grp, dt.timedelta(0)) for grp in groups]


def test_union_of_view_and_plain_strings_meets_in_large_string(workers: int) -> None:
    views = riera.from_arrow(pa.table({"k": pa.array(["a", None], pa.string_view())}))
    plain = riera.from_arrow(pa.table({"k": pa.array(["b"], pa.string())}))
    out = views.union(plain).to_arrow()
    assert out.schema.field("k").type == pa.large_string()
    assert values(out, "k") == ["a", None, "b"]


@pytest.mark.parametrize("type_name", ["string_view", "dictionary", "decimal128", "date64"])
def test_reduce_by_key_keeps_the_key_type(ds: Any, type_name: str) -> None:
    src = table(type_name)
    got = ds(type_name).reduce_by_key("x", _add, "v").to_arrow()
    same_type(got, src.schema.field("x").type)
    want: dict[Any, int] = {}
    for x, v in zip(values(src), values(src, "v"), strict=True):
        want[x] = want.get(x, 0) + v
    assert sorted(zip(values(got), values(got, "v"), strict=True), key=repr) == sorted(
        want.items(), key=repr
    )


def _add(a: int, b: int) -> int:
    return a + b
