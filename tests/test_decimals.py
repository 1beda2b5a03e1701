"""The 64-bit fast path of decimal arithmetic gives exactly what Arrow's kernels give."""

from __future__ import annotations

import decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riera import col
from riera.kernels import decimals
from riera.kernels.evaluate import Evaluator, ExprError

SMALL = st.integers(-(10**11) + 1, 10**11 - 1)  # fits decimal128(12, s): the fast path
HUGE = st.integers(-(10**29) + 1, 10**29 - 1)  # beyond 64 bits: the fallback


def _dec(values: list[int | None], precision: int, scale: int) -> pa.Array:
    return pa.array(
        [None if v is None else decimal.Decimal(v).scaleb(-scale) for v in values],
        pa.decimal128(precision, scale),
    )


@st.composite
def operands(
    draw: st.DrawFn, ints: st.SearchStrategy[int] = SMALL, precision: int = 12
) -> tuple[pa.Array, pa.Array]:
    n = draw(st.integers(0, 40))
    values = st.lists(st.none() | ints, min_size=n, max_size=n)
    sa, sb = draw(st.integers(0, 4)), draw(st.integers(0, 4))
    a = _dec(draw(values), precision, sa)
    b = _dec(draw(values), precision, sb)
    cut = draw(st.integers(0, n))  # sliced arrays: buffers with an offset
    return a.slice(cut), b.slice(cut)


def _table(a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray) -> pa.Table:
    return pa.table({"a": a, "b": b})


@settings(max_examples=200, deadline=None)
@given(operands())
def test_products_sums_and_differences_equal_arrows(ab: tuple[pa.Array, pa.Array]) -> None:
    a, b = ab
    ev = Evaluator(_table(a, b))
    for expr, kernel in (
        (col("a") * col("b"), "multiply_checked"),
        (col("a") + col("b"), "add_checked"),
        (col("a") - col("b"), "subtract_checked"),
    ):
        got = ev.array(expr)
        want = pc.call_function(kernel, [a, b])
        assert got.type == want.type, expr
        assert got.to_pylist() == want.to_pylist(), expr


@settings(max_examples=50, deadline=None)
@given(operands(HUGE, precision=30))
def test_values_beyond_64_bits_fall_back_to_arrow(ab: tuple[pa.Array, pa.Array]) -> None:
    a, b = ab
    for expr, kernel in (
        (col("a") + col("b"), "add_checked"),
        (col("a") - col("b"), "subtract_checked"),
    ):
        got = Evaluator(_table(a, b)).array(expr)
        assert got.to_pylist() == pc.call_function(kernel, [a, b]).to_pylist()


def test_the_fast_path_declines_what_does_not_fit_64_bits() -> None:
    a = _dec([2**62, 1], 30, 0)
    assert decimals.add(a, a, pa.decimal128(31, 0)) is None  # 2**63 overflows int64
    assert decimals.multiply(a, a, pa.decimal128(38, 0)) is None
    big = _dec([2**64, None], 30, 0)
    assert decimals.add(big, big, pa.decimal128(31, 0)) is None
    assert decimals.arrow(
        decimals.add(_dec([2**40], 30, 0), _dec([None], 30, 0), pa.decimal128(31, 0))
    ).to_pylist() == [None]


def test_intermediates_stay_unscaled_and_the_result_is_arrows() -> None:
    """``a * (1 - b) * (1 + c)``: each operation hands the next one int64 values; only the
    expression's result is built as decimal128, equal to Arrow's own kernels' answer."""
    a = pa.chunked_array([_dec([105_00, None, 7], 12, 2), _dec([1, 2], 12, 2)])
    b = pa.chunked_array([_dec([4, 5, 6], 12, 2), _dec([None, 9], 12, 2)])
    c = pa.chunked_array([_dec([1, 2, 3], 12, 2), _dec([4, 5], 12, 2)])
    one = pa.scalar(decimal.Decimal(1)).cast(pa.decimal128(12, 2))
    step = decimals.add(one, b, decimals.result_type("subtract_checked", one.type, b.type),
                        subtract=True)  # fmt: skip
    assert isinstance(step, decimals.Unscaled)
    product = decimals.multiply(a, step, pa.decimal128(25, 4))
    assert isinstance(product, decimals.Unscaled)
    table = pa.table({"a": a, "b": b, "c": c})
    got = Evaluator(table).array(col("a") * (1 - col("b")) * (1 + col("c")))
    want = [
        None if None in (x, y, z) else x * (1 - y) * (1 + z)
        for x, y, z in zip(a.to_pylist(), b.to_pylist(), c.to_pylist(), strict=True)
    ]
    assert isinstance(got, pa.ChunkedArray) and got.type == pa.decimal128(38, 6)
    assert got.to_pylist() == want


def test_chunked_columns_with_unaligned_chunks() -> None:
    a = pa.chunked_array([_dec([1, 2, 3], 12, 2), _dec([4, None], 12, 2)])
    b = pa.chunked_array([_dec([5], 12, 1), _dec([6, 7, 8, 9], 12, 1)])
    got = Evaluator(_table(a, b)).array(col("a") * col("b"))
    want = pc.multiply_checked(a.combine_chunks(), b.combine_chunks())
    assert got.type == want.type
    assert got.to_pylist() == want.to_pylist()


def test_a_literal_meets_a_decimal_column() -> None:
    a = _dec([105, -250, None, 0], 12, 2)
    t = pa.table({"a": a})
    assert Evaluator(t).array(1 - col("a")).to_pylist() == [
        decimal.Decimal("-0.05"),
        decimal.Decimal("3.50"),
        None,
        decimal.Decimal("1.00"),
    ]


def test_a_product_wider_than_38_digits_is_capped_as_duckdb_does() -> None:
    a = _dec([12345, -2], 26, 4)
    b = _dec([107, 3], 13, 2)
    got = Evaluator(_table(a, b)).array(col("a") * col("b"))
    assert got.type == pa.decimal128(38, 6)
    assert got.to_pylist() == [decimal.Decimal("1.320915"), decimal.Decimal("-0.000006")]


def test_an_overflowing_product_still_raises() -> None:
    a = _dec([10**19], 20, 0)  # 10**38 has 39 digits
    with pytest.raises(ExprError, match=r"precision|overflow"):
        Evaluator(_table(a, a)).array(col("a") * col("b"))
