"""Column expressions on the real engine (2 workers), checked against DuckDB and pandas.

Each case pairs a Riera expression with the SQL DuckDB runs over the same Arrow table; hypothesis
draws the tables (nulls in every column, negative numbers, decimals, accented strings), so the
kernels' null handling, integer division, decimal arithmetic and string functions are compared
row by row, not on one hand-picked example.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import riera
from riera import Expr, col, lit, when


@pytest.fixture(autouse=True, scope="module")
def runtime() -> None:
    riera.init(workers=2, progress="off", provenance="off")


def tables() -> st.SearchStrategy[pa.Table]:
    ints = st.one_of(st.none(), st.integers(-50, 50))
    texts = st.one_of(st.none(), st.text(alphabet="abcAÉé ñx", max_size=6))
    prices = st.one_of(
        st.none(), st.decimals(min_value=-100, max_value=100, places=2, allow_nan=False)
    )
    days = st.one_of(st.none(), st.dates(dt.date(1990, 1, 1), dt.date(2030, 12, 31)))
    row = st.tuples(ints, ints, texts, prices, prices, days)

    def build(rows: list[tuple[Any, ...]]) -> pa.Table:
        cols = list(zip(*rows, strict=True)) if rows else [[]] * 6
        return pa.table(
            {
                "a": pa.array(cols[0], pa.int64()),
                "b": pa.array(cols[1], pa.int64()),
                "s": pa.array(cols[2], pa.string()),
                "p": pa.array(cols[3], pa.decimal128(12, 2)),
                "q": pa.array(cols[4], pa.decimal128(12, 2)),
                "d": pa.array(cols[5], pa.date32()),
            }
        )

    return st.lists(row, min_size=0, max_size=40).map(build)


# (Riera expression, the same in DuckDB's SQL)
PROJECTIONS: list[tuple[Expr, str]] = [
    (col("a") + col("b") * 2, "a + b * 2"),
    (col("a") - 3, "a - 3"),
    (col("a") / 4, "a / 4"),
    (col("p") * (1 - col("q")), "p * (1 - q)"),
    (col("p") + col("q"), "p + q"),
    (col("a") > col("b"), "a > b"),
    (col("p") >= 10, "p >= 10"),
    ((col("a") > 0) & (col("b") < 0), "a > 0 AND b < 0"),
    ((col("a") > 0) | col("s").is_null(), "a > 0 OR s IS NULL"),
    (~(col("a") == col("b")), "NOT (a = b)"),
    (col("a").is_in([1, 2, 3, -4]), "coalesce(a IN (1, 2, 3, -4), false)"),
    (col("a").between(-10, 10), "a BETWEEN -10 AND 10"),
    (col("a").fill_null(0) + 1, "coalesce(a, 0) + 1"),
    (col("s").fill_null("?"), "coalesce(s, '?')"),
    (col("a").is_null(), "a IS NULL"),
    (col("s").str.lower(), "lower(s)"),
    (col("s").str.upper(), "upper(s)"),
    (col("s").str.length(), "length(s)"),
    (col("s").str.starts_with("a"), "starts_with(s, 'a')"),
    (col("s").str.contains("é", literal=True), "contains(s, 'é')"),
    (col("s").str.slice(1, 2), "substring(s, 2, 2)"),
    (col("d").dt.year(), "year(d)"),
    (col("d").dt.month(), "month(d)"),
    (col("d").dt.weekday(), "isodow(d)"),
    (col("d") < dt.date(2010, 1, 1), "d < DATE '2010-01-01'"),
    (
        when(col("a") > 0).then(lit("pos")).when(col("a") < 0).then(lit("neg")).otherwise("zero"),
        "CASE WHEN a > 0 THEN 'pos' WHEN a < 0 THEN 'neg' ELSE 'zero' END",
    ),
    (col("a").cast("float64") * 0.5, "CAST(a AS DOUBLE) * 0.5"),
    (abs(col("a")), "abs(a)"),
]


def duck(sql: str, table: pa.Table) -> list[tuple[Any, ...]]:
    con = duckdb.connect()
    try:
        con.register("t", table)
        return [tuple(r) for r in con.execute(sql).fetchall()]
    finally:
        con.close()


def same(x: Any, y: Any) -> bool:
    if isinstance(x, float) or isinstance(y, float):
        if x is None or y is None:
            return x is y
        return math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y))
    if isinstance(x, decimal.Decimal) and isinstance(y, decimal.Decimal):
        return x == y
    return bool(x == y)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_projections_equal_duckdb(table: pa.Table) -> None:
    exprs = {f"e{i}": e for i, (e, _) in enumerate(PROJECTIONS)}
    got = (
        riera.from_arrow(
            table.append_column("rid", pa.array(range(table.num_rows), pa.int64())), partitions=3
        )
        .select("rid", **exprs)
        .sort("rid")
        .to_arrow()
    )
    sql = ", ".join(f"{s} AS e{i}" for i, (_, s) in enumerate(PROJECTIONS))
    want = duck(f"SELECT {sql} FROM t", table)
    assert got.num_rows == len(want)
    for i, (e, s) in enumerate(PROJECTIONS):
        column = got.column(f"e{i}").to_pylist()
        for r, (g, w) in enumerate(zip(column, [row[i] for row in want], strict=True)):
            assert same(g, w), (
                f"{e!r} vs {s}, row {r} {table.slice(r, 1).to_pylist()}: {g!r} != {w!r}"
            )


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_filters_equal_duckdb(table: pa.Table) -> None:
    cases = [
        ((col("a") > 0) & (col("s").str.starts_with("a") | (col("b") % 2 == 0)),
         "a > 0 AND (starts_with(s, 'a') OR b % 2 = 0)"),
        (col("p") > col("q"), "p > q"),
        (~col("a").is_in([1, 2]) & col("d").is_not_null(), "NOT coalesce(a IN (1, 2), false) AND d IS NOT NULL"),
    ]  # fmt: skip
    ds = riera.from_arrow(table, partitions=2)
    for e, sql in cases:
        got = sorted(ds.filter(e).collect(), key=repr)
        want = duck(f"SELECT * FROM t WHERE {sql}", table)
        assert got == sorted(
            (dict(zip(table.column_names, w, strict=True)) for w in want), key=repr
        )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables())
def test_aggregations_over_expressions_equal_duckdb(table: pa.Table) -> None:
    ds = (
        riera.from_arrow(table, partitions=3)
        .group_by((abs(col("a").fill_null(0)) % 3).alias("g"), "s")
        .agg(
            revenue=(col("p") * (1 - col("q"))).sum(),
            n=col("b").count(),
            top=col("p").max(),
            low=col("d").min(),
            avg_b=col("b").mean(),
            ratio=col("b").sum() / (col("a").count() + 1),
        )
    )
    rows = sorted((tuple(r.values()) for r in ds.collect()), key=repr)
    want = sorted(
        duck(
            "SELECT abs(coalesce(a, 0)) % 3 AS g, s, sum(p * (1 - q)), count(b), max(p), "
            "min(d), avg(b), sum(b) / (count(a) + 1) FROM t GROUP BY ALL",
            table,
        ),
        key=repr,
    )
    assert len(rows) == len(want)
    for g, w in zip(rows, want, strict=True):
        assert all(same(x, y) for x, y in zip(g, w, strict=True)), (g, w)


def test_a_key_expression_needs_a_name() -> None:
    with pytest.raises(riera.PlanError, match=r"alias\('name'\)"):
        riera.range(3).group_by(col("id") % 2)


def test_decimal_sums_stay_exact_decimals() -> None:
    values = [decimal.Decimal("0.10")] * 10 + [decimal.Decimal("0.20")]
    ds = riera.from_arrow(pa.table({"p": pa.array(values, pa.decimal128(12, 2))}), partitions=3)
    out = ds.group_by(lit(1).alias("k")).agg(total=col("p").sum(), twice=(col("p") * 2).sum())
    assert out.schema is not None and pa.types.is_decimal(out.schema.field("total").type)
    (row,) = out.collect()
    assert row["total"] == decimal.Decimal("1.20") and row["twice"] == decimal.Decimal("2.40")


def test_floor_division_and_modulo_follow_python() -> None:
    pairs = [(a, b) for a in (-7, -1, 0, 5, 7) for b in (-3, 2, 3)]
    ds = riera.from_items([{"a": a, "b": b} for a, b in pairs]).with_columns(
        q=col("a") // col("b"), r=col("a") % col("b"), z=col("a") // 0
    )
    for row in ds.collect():
        assert row["q"] == row["a"] // row["b"] and row["r"] == row["a"] % row["b"]
        assert row["z"] is None  # an integer divided by zero is null, as in Polars


def test_integer_overflow_is_an_error_naming_the_operator() -> None:
    ds = riera.from_items([{"a": 2**62}]).with_columns(b=col("a") * 4)
    with pytest.raises(riera.TaskError, match=r"with_columns.*overflow"):
        ds.collect()


def test_expressions_are_plan_data() -> None:
    e = (
        when((col("price") * (1 - col("discount"))).is_in([1, 2]) & col("d").is_not_null())
        .then(col("s").str.slice(0, 3))
        .otherwise(lit(dt.date(2024, 1, 31)))
    )
    again = Expr.from_json(e.to_json())
    assert again.key() == e.key() and repr(again) == repr(e)
    assert (col("a") + 1).key() != (col("a") + 2).key()
    text = riera.range(5).filter(col("id") > 2).with_columns(x=col("id") * 2).explain(show=False)
    assert text is not None and "col('id') > lit(2)" in text and "x=col('id') * lit(2)" in text


def test_python_boolean_operators_are_refused_with_the_fix() -> None:
    with pytest.raises(riera.PlanError, match=r"& \| ~"):
        _ = (col("a") > 1) and (col("b") < 2)


def test_type_errors_and_unknown_columns_fail_at_definition() -> None:
    ds = riera.from_items([{"name": "x", "n": 1}])
    with pytest.raises(riera.PlanError, match=r"with_columns.*add_checked.*string"):
        ds.with_columns(y=col("name") + 1)
    with pytest.raises(riera.PlanError, match="did you mean 'name'"):
        ds.filter(col("nmae") == "x")
    with pytest.raises(riera.PlanError, match="hash_sum"):
        ds.group_by("n").agg(total=col("name").sum())
    with pytest.raises(riera.PlanError, match="aggregations go in group_by"):
        ds.with_columns(total=col("n").sum())


def test_schema_is_known_through_the_plan() -> None:
    ds = riera.from_arrow(
        pa.table({"k": ["a"], "p": pa.array([decimal.Decimal("1.5")], pa.decimal128(10, 2))})
    )
    out = (
        ds.with_columns(big=col("p") * 100, day=lit(dt.date(2024, 1, 1)))
        .rename(k="key")
        .group_by("key")
        .agg(total=col("big").sum(), first_day=col("day").min())
    )
    assert out.schema is not None
    assert out.schema.names == ["key", "total", "first_day"]
    assert pa.types.is_decimal(out.schema.field("total").type)
    assert out.schema.field("first_day").type == pa.date32()
    assert out.to_arrow().schema == out.schema
    assert riera.range(3).map(lambda r: r).schema is None  # a function hides its output


def test_a_declared_udf_schema_is_enforced() -> None:
    good = riera.range(3).map(lambda r: {"b": str(r["id"]), "a": r["id"]}, schema={"a": "int32",
                                                                                   "b": "string"})  # fmt: skip
    assert good.schema == pa.schema([("a", pa.int32()), ("b", pa.string())])
    assert good.to_arrow().schema == good.schema
    bad = riera.range(3).map(lambda r: {"a": r["id"]}, schema={"a": "int64", "b": "string"})
    with pytest.raises(riera.SchemaError, match=r"declared columns \['a', 'b'\].*missing \['b'\]"):
        bad.collect()


def test_sort_by_an_expression_and_nulls_last() -> None:
    ds = riera.from_items([{"a": a} for a in (3, None, -5, 1)], partitions=2)
    assert [r["a"] for r in ds.sort(col("a") * col("a")).collect()] == [1, 3, -5, None]
    assert ds.sort(col("a") * -1).columns() == ("a",)


def test_rename_drop_cast_fill_null_explode_unique() -> None:
    ds = riera.from_items(
        [{"k": "a", "v": 1, "xs": [1, 2]}, {"k": "a", "v": None, "xs": []},
         {"k": "b", "v": 3, "xs": None}], partitions=2,
    )  # fmt: skip
    assert ds.rename({"k": "key"}).drop("xs").columns() == ("key", "v")
    assert ds.cast(v="float32").schema.field("v").type == pa.float32()  # type: ignore[union-attr]
    assert sorted(r["v"] for r in ds.fill_null(0).collect()) == [0, 1, 3]
    exploded = ds.explode("xs").select("k", "xs").collect()
    assert sorted(exploded, key=repr) == sorted(
        [{"k": "a", "xs": 1}, {"k": "a", "xs": 2}, {"k": "a", "xs": None}, {"k": "b", "xs": None}],
        key=repr,
    )
    unique = ds.unique(subset="k").collect()
    assert sorted(r["k"] for r in unique) == ["a", "b"] and list(unique[0]) == ["k", "v", "xs"]
    with pytest.raises(riera.PlanError, match="twice"):
        ds.rename(k="v")


def test_joins_with_different_key_names_suffixes_and_cross() -> None:
    left = riera.from_items([{"id": i, "x": f"l{i}"} for i in range(4)], partitions=2)
    right = riera.from_items([{"key": i, "x": f"r{i}"} for i in range(2, 6)], partitions=3)
    inner = left.join(right, left_on="id", right_on="key", suffix="_r").collect()
    assert sorted(inner, key=lambda r: r["id"]) == [
        {"id": 2, "x": "l2", "x_r": "r2"},
        {"id": 3, "x": "l3", "x_r": "r3"},
    ]
    outer = left.join(right, left_on="id", right_on="key", how="outer").collect()
    assert sorted(r["id"] for r in outer) == list(range(6))
    cross = left.join(right, how="cross")
    assert cross.count() == 16 and cross.columns() == ("id", "x", "key", "x_right")
    with pytest.raises(riera.PlanError, match="pair up one to one"):
        left.join(right, left_on=["id", "x"], right_on="key")


def test_head_and_show_run_only_what_the_preview_needs(tmp_path: Path, capsys: Any) -> None:
    tasks: list[int] = []

    class Count(riera.Hooks):
        def on_task_end(self, task: riera.TaskInfo) -> None:
            if task.stage_id == "stage-1":
                tasks.append(task.index)

    riera.add_hooks(Count())
    try:
        head = riera.range(1_000_000, partitions=40).filter(col("id") % 2 == 0).head(3)
        assert head.column("id").to_pylist() == [0, 2, 4]
        assert len(tasks) <= 4  # one wave per worker, not 40 tasks
        tasks.clear()
        riera.range(100, partitions=10).with_columns(word=lit("añ😀")).show(2)
        out = capsys.readouterr().out
        assert "añ😀" in out and "(2 rows × 2 columns)" in out and len(tasks) <= 4
    finally:
        riera.get_runtime().hooks.hooks.pop()


def test_parquet_pushdown_skips_row_groups_and_columns(tmp_path: Path) -> None:
    n = 200_000
    table = pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "s": pa.array([f"w{i % 7}" for i in range(n)], pa.string_view()),
            "wide": pa.array(["x" * 50] * n),
        }
    )
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=20_000)
    read: list[int] = []

    class Rows(riera.Hooks):
        def on_task_end(self, task: riera.TaskInfo) -> None:
            if task.stage_id == "stage-1":
                read.append(task.rows_in)

    riera.add_hooks(Rows())
    try:
        ds = riera.read_parquet(str(tmp_path), partition_bytes=1 << 20)
        query = ds.filter((col("id") >= 150_000) & (col("s") == "w3")).select("id")
        plan = query.explain(show=False)
        assert plan is not None and "2 of 3 columns" in plan and "row groups pruned" in plan
        got = query.to_arrow().column("id").to_pylist()
        assert sorted(got) == [i for i in range(150_000, n) if i % 7 == 3]
        assert sum(read) <= 60_000  # only the row groups whose statistics can match
    finally:
        riera.get_runtime().hooks.hooks.pop()


def test_csv_and_json_read_only_the_columns_used(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("k,v,junk\na,1,not-a-number\nb,2,x\n")
    ds = riera.read_csv(str(tmp_path / "a.csv"), schema={"v": pa.int64(), "junk": pa.int64()})
    # "junk" would fail to convert to int64; pruned, it is never decoded.
    assert ds.select("k", "v").collect() == [{"k": "a", "v": 1}, {"k": "b", "v": 2}]
    with pytest.raises(riera.SourceError, match=r"line 2.*conversion"):
        ds.collect()
    (tmp_path / "b.json").write_text('{"k": "a", "v": 1, "w": 2}\n{"k": "b", "v": 3, "w": 4}\n')
    assert riera.read_json(str(tmp_path / "b.json")).select("v").collect() == [{"v": 1}, {"v": 3}]


def test_cache_computes_once_and_unpersist_forgets() -> None:
    calls: list[int] = []

    class Runs(riera.Hooks):
        def on_run_start(self, run: riera.RunInfo) -> None:
            calls.append(1)

    riera.add_hooks(Runs())
    try:
        base = riera.range(1000, partitions=4).with_columns(k=col("id") % 10).cache()
        assert base.count() == 1000 and len(calls) == 2  # the cache's own run, then the count
        out = base.group_by("k").agg(n=col("id").count()).sort("k").collect()
        assert [r["n"] for r in out] == [100] * 10 and len(calls) == 3  # no recomputation
        assert base.filter(col("k") == 3).count() == 100 and len(calls) == 4
        assert base.unpersist() and not base.unpersist()
        assert base.count() == 1000 and len(calls) == 6  # computed again
    finally:
        riera.get_runtime().hooks.hooks.pop()
        base.unpersist()


def test_decimal_products_wider_than_38_digits_are_capped_as_in_duckdb() -> None:
    d = pa.decimal128(12, 2)
    table = pa.table({"p": pa.array([decimal.Decimal("10.50")], d),
                      "q": pa.array([decimal.Decimal("0.05")], d)})  # fmt: skip
    e = col("p") * (1 - col("q")) * (1 + col("q"))  # (12,2)·(13,2)·(13,2): 40 digits in Arrow
    out = riera.from_arrow(table).select(v=e)
    assert out.schema is not None and out.schema.field("v").type == pa.decimal128(38, 6)
    (row,) = out.collect()
    assert row["v"] == duck("SELECT p * (1 - q) * (1 + q) FROM t", table)[0][0]
