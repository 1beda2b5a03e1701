"""Evaluating column expressions over a partition with Arrow compute kernels.

Why Arrow compute and not a per-partition DuckDB or Polars: the partition already is an Arrow table
(zero-copy out of shared memory), the kernels run without Python per row, and no extra engine has to
be installed or started in every worker. A tree is walked once per partition; each node is one
kernel call over whole columns. Semantics follow SQL and Polars where they agree:

- nulls propagate through arithmetic and comparisons; ``&``/``|`` use three-valued (Kleene) logic;
  a filter keeps rows whose condition is true (not null);
- ``/`` is true division (integers give float64; decimals stay decimal), ``//`` and ``%`` floor
  like Python; integer ``+ - *`` raise on overflow instead of wrapping;
- a literal takes the type of the column it meets where that is lossless (``col("d") > 1`` on a
  decimal compares decimals).

Arrow has no kernels for the view types (``string_view``/``binary_view``) that Polars, DuckDB and
DataFusion write: their columns are cast to the plain types before a kernel and string results
cast back, so a ``string_view`` column stays one.

:func:`to_arrow_filter` turns the predicates Arrow's dataset scanner understands into a
``pyarrow.compute.Expression`` for ``read_parquet`` pushdown (row groups skipped by statistics);
anything else stays a filter after the read.
"""

from __future__ import annotations

import datetime as dt
import decimal
import operator
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riera.expr import Expr
from riera.kernels import decimals

Value: TypeAlias = pa.Array | pa.ChunkedArray | pa.Scalar


class ExprError(ValueError):
    """An expression could not be evaluated over this partition's data."""


def _is_view(t: pa.DataType) -> bool:
    return pa.types.is_string_view(t) or pa.types.is_binary_view(t)


def _plain(v: Value) -> Value:
    """View types as the plain types Arrow's kernels take (dictionaries decoded for strings)."""
    t = v.type
    if _is_view(t):
        return v.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary())
    if pa.types.is_dictionary(t) and not isinstance(v, pa.Scalar):
        return _plain(v.cast(t.value_type))
    return v


def _like(out: Value, inputs: tuple[Value, ...]) -> Value:
    """A string result of a kernel over view-typed input, back as the view type."""
    if any(_is_view(i.type) for i in inputs):
        if pa.types.is_large_string(out.type) or pa.types.is_string(out.type):
            return out.cast(pa.string_view())
        if pa.types.is_large_binary(out.type) or pa.types.is_binary(out.type):
            return out.cast(pa.binary_view())
    return out


def _literal(e: Expr, like: pa.DataType | None) -> pa.Scalar:
    """A literal as an Arrow scalar, in the type of the column it meets when lossless."""
    opts = dict(e.options)
    if "type" in opts:
        return pa.scalar(e.value, opts["type"])
    v = e.value
    if like is not None and v is not None and not isinstance(v, bool):
        like = _plain_type(like)
        try:
            if pa.types.is_decimal(like) and isinstance(v, int | decimal.Decimal):
                s = pa.scalar(decimal.Decimal(v))
                return s.cast(_decimal_for(s.type, like))
            if pa.types.is_floating(like) and isinstance(v, int | float):
                return pa.scalar(float(v), like)
            if pa.types.is_integer(like) and isinstance(v, int):
                return pa.scalar(v, like)
            if (pa.types.is_large_string(like) or pa.types.is_string(like)) and isinstance(v, str):
                return pa.scalar(v, like)
            if pa.types.is_date(like) and type(v) is dt.date:
                return pa.scalar(v, like)
            if (
                pa.types.is_timestamp(like)
                and isinstance(v, dt.datetime)
                and (v.tzinfo is None) == (like.tz is None)
            ):
                return pa.scalar(v, like)
        except (pa.ArrowInvalid, OverflowError):
            pass
    return pa.scalar(v)


def _plain_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string_view(t):
        return pa.large_string()
    if pa.types.is_binary_view(t):
        return pa.large_binary()
    return t


def _decimal_for(lit_type: pa.DataType, col_type: pa.DataType) -> pa.DataType:
    scale = max(lit_type.scale, col_type.scale)
    precision = min(38, max(lit_type.precision - lit_type.scale, 1) + scale)
    return pa.decimal128(max(precision, 1), scale)


def _kernel(name: str, *args: Value, **options: Any) -> Value:
    plain = [_plain(a) for a in args]
    return _like(pc.call_function(name, plain, options=_options(name, options)), args)


def _options(name: str, options: dict[str, Any]) -> Any:
    if not options:
        return None
    factory: dict[str, Callable[..., Any]] = {
        "match_substring": pc.MatchSubstringOptions,
        "match_substring_regex": pc.MatchSubstringOptions,
        "starts_with": pc.MatchSubstringOptions,
        "ends_with": pc.MatchSubstringOptions,
        "utf8_slice_codeunits": pc.SliceOptions,
        "split_pattern": pc.SplitPatternOptions,
        "replace_substring": pc.ReplaceSubstringOptions,
        "replace_substring_regex": pc.ReplaceSubstringOptions,
        "round": pc.RoundOptions,
        "is_in": pc.SetLookupOptions,
        "cast": pc.CastOptions,
    }
    return factory[name](**options)


_ARITH = {"add": "add_checked", "sub": "subtract_checked", "mul": "multiply_checked"}
_COMPARE = {"eq": "equal", "ne": "not_equal", "lt": "less", "le": "less_equal",
            "gt": "greater", "ge": "greater_equal"}  # fmt: skip
_DATE_PARTS = {"year": "year", "quarter": "quarter", "month": "month", "day": "day",
               "hour": "hour", "minute": "minute", "second": "second",
               "day_of_year": "day_of_year", "week": "iso_week"}  # fmt: skip


def _is_int(t: pa.DataType) -> bool:
    return pa.types.is_integer(t)


def _floor_div(a: Value, b: Value) -> Value:
    if _is_int(a.type) and _is_int(b.type):
        b = _null_if_zero(b)  # an integer divided by zero is null, as in Polars and DuckDB
        q = pc.divide(a, b)  # truncates toward zero; Python floors
        r = pc.subtract(a, pc.multiply(q, b))
        adjust = pc.and_(pc.not_equal(r, 0), pc.not_equal(pc.less(r, 0), pc.less(b, 0)))
        return pc.subtract(q, pc.cast(adjust, q.type))
    return pc.floor(pc.divide(_float(a), _float(b)))


def _null_if_zero(b: Value) -> Value:
    if isinstance(b, pa.Scalar):
        return pa.scalar(None, b.type) if b.is_valid and b.as_py() == 0 else b
    return pc.if_else(pc.equal(b, 0), pa.scalar(None, b.type), b)


def _modulo(a: Value, b: Value) -> Value:
    if _is_int(a.type) and _is_int(b.type):
        b = _null_if_zero(b)
        return pc.subtract(a, pc.multiply(_floor_div(a, b), b))
    fa, fb = _float(a), _float(b)
    return pc.subtract(fa, pc.multiply(pc.floor(pc.divide(fa, fb)), fb))


def _float(v: Value) -> Value:
    t = v.type
    if pa.types.is_floating(t):
        return v
    return pc.cast(v, pa.float64())


def _decimal_product(a: Any, b: Any) -> Any:
    """Decimals multiplied exactly; a result wider than 38 digits (Arrow's decimal128 would
    refuse ``(p1 + p2 + 1)``) is computed in decimal256 and brought back to 38 digits, as
    DuckDB caps it — a value that does not fit raises. On the 64-bit fast path the result is
    :class:`~riera.kernels.decimals.Unscaled`."""
    ta, tb = a.type, b.type
    if pa.types.is_decimal128(ta) and pa.types.is_decimal128(tb):
        exact = ta.precision + tb.precision + 1 <= 38
        want = pa.decimal128(
            ta.precision + tb.precision + 1 if exact else 38, min(ta.scale + tb.scale, 38)
        )
        fast = decimals.multiply(a, b, want)
        if fast is not None:
            return fast
    a, b = decimals.arrow(a), decimals.arrow(b)
    if ta.precision + tb.precision + 1 <= 38 or pa.types.is_decimal256(ta):
        return pc.multiply_checked(a, b)
    wide = pc.multiply_checked(a.cast(pa.decimal256(ta.precision, ta.scale)),
                               b.cast(pa.decimal256(tb.precision, tb.scale)))  # fmt: skip
    return wide.cast(pa.decimal128(38, min(ta.scale + tb.scale, 38)))


def _decimal_sum(name: str, a: Any, b: Any) -> Any:
    """A decimal128 ``+``/``-`` on 64-bit integers when exact; None to use Arrow's kernel."""
    kernel = _ARITH[name]
    want = decimals.result_type(kernel, a.type, b.type)
    if want is None or not pa.types.is_decimal128(want):
        return None
    return decimals.add(a, b, want, subtract=name == "sub")


def _true_div(a: Value, b: Value) -> Value:
    decimal_only = pa.types.is_decimal(a.type) or pa.types.is_decimal(b.type)
    if decimal_only and not (pa.types.is_floating(a.type) or pa.types.is_floating(b.type)):
        return pc.divide(a, b)  # exact, as DuckDB divides decimals
    return pc.divide(_float(a), _float(b))


class Evaluator:
    """Evaluates expressions over one table (a partition)."""

    def __init__(self, table: pa.Table, where: str = "expression") -> None:
        self.table = table
        self.where = where
        # Common subexpressions are computed once per partition: q1's ``price`` appears in two
        # aggregates, as DuckDB and Polars also notice.
        self._memo: dict[str, Value] = {}

    def column(self, name: str) -> Value:
        if name not in self.table.column_names:
            raise ExprError(
                f"{self.where}: no column {name!r}; the data has {self.table.column_names}"
            )
        return self.table.column(name)

    def __call__(self, e: Expr) -> Value:
        try:
            return decimals.arrow(self._eval(e))
        except ExprError:
            raise
        except (pa.ArrowException, TypeError, ValueError, OverflowError) as err:
            raise ExprError(f"{self.where}: cannot evaluate {e!r}: {err}") from err

    def array(self, e: Expr) -> pa.ChunkedArray | pa.Array:
        """The expression as a column as long as the table (a literal is repeated)."""
        v = self(e)
        if isinstance(v, pa.Scalar):
            return pa.repeat(v, self.table.num_rows)
        return v

    def _value(self, e: Expr, like: pa.DataType | None = None) -> Value:
        """``e`` as Arrow data (never :class:`~riera.kernels.decimals.Unscaled`)."""
        return decimals.arrow(self._eval(e, like))

    def _eval(self, e: Expr, like: pa.DataType | None = None) -> Value:
        """``e``'s value; decimal arithmetic may leave it unscaled for the next operation."""
        if e.op == "col":
            return self.column(e.value)
        if e.op == "lit":
            return _literal(e, like)
        if e.op == "alias":
            return self._eval(e.args[0], like)
        if e.op == "agg":
            raise ExprError(
                f"{self.where}: {e!r} aggregates; use it in group_by(...).agg(...), or in "
                f"agg(...) over all rows"
            )
        key = e.key()
        got = self._memo.get(key)
        if got is None:
            got = self._case(e) if e.op == "case" else self._call(e)
            self._memo[key] = got
        return got

    def _operands(self, e: Expr) -> tuple[Value, ...]:
        """Arguments, literals typed after the column they meet."""
        first_col = next((a for a in e.args if a.op != "lit"), None)
        like_value = self._eval(first_col) if first_col is not None else None
        out = []
        for a in e.args:
            if a is first_col:
                out.append(like_value)
            else:
                out.append(self._eval(a, like_value.type if like_value is not None else None))
        return tuple(out)

    def _call(self, e: Expr) -> Value:
        name = e.value
        opts = dict(e.options)
        if name in ("and", "or"):
            a, b = (self._value(x) for x in e.args)
            return pc.and_kleene(a, b) if name == "and" else pc.or_kleene(a, b)
        if name == "not":
            return pc.invert(self._value(e.args[0]))
        if name == "is_in":
            v = self._value(e.args[0])
            values = pa.array(list(opts["values"]))
            target = _plain_type(v.type)
            if values.type != target and len(values):
                values = values.cast(target)
            return pc.is_in(_plain(v), value_set=values, skip_nulls=True)
        if name == "cast":
            v = self._value(e.args[0])
            to = opts["to"]
            return _plain(v).cast(to) if _is_view(v.type) and not _is_view(to) else v.cast(to)
        if name == "fill_null":
            v, fill = (decimals.arrow(x) for x in self._operands(e))
            if isinstance(v, pa.Scalar):
                return v if v.is_valid else fill
            out = pc.coalesce(_plain(v), _plain(fill))
            return _like(out, (v,))
        ops = self._operands(e)
        if name in _ARITH:
            if name == "mul" and all(pa.types.is_decimal(a.type) for a in ops):
                return _decimal_product(*ops)
            if name != "mul" and all(pa.types.is_decimal128(a.type) for a in ops):
                fast = _decimal_sum(name, *ops)
                if fast is not None:
                    return fast
        args = tuple(decimals.arrow(a) for a in ops)
        if name in _COMPARE:
            return _kernel(_COMPARE[name], *args)
        if name in _ARITH:
            return _kernel(_ARITH[name], *args)
        if name == "truediv":
            return _true_div(*args)
        if name == "floordiv":
            return _floor_div(*args)
        if name == "mod":
            return _modulo(*args)
        if name == "pow":
            a, b = args
            return pc.power(_float(a), _float(b))
        if name == "neg":
            return pc.negate_checked(args[0])
        if name == "abs":
            return pc.abs_checked(args[0])
        if name == "is_null":
            return pc.is_null(args[0], nan_is_null=False)
        if name == "is_not_null":
            return pc.is_valid(args[0])
        if name == "round":
            # Halves away from zero, as SQL (DuckDB, PostgreSQL) rounds.
            return _kernel("round", args[0], ndigits=opts["ndigits"],
                           round_mode="half_towards_infinity")  # fmt: skip
        if name.startswith("str."):
            return self._string(name[4:], args[0], opts)
        if name.startswith("dt."):
            return self._date(name[3:], args[0])
        raise ExprError(f"{self.where}: unknown function {name!r} in {e!r}")

    def _string(self, fn: str, v: Value, o: dict[str, Any]) -> Value:
        if fn == "contains":
            kernel = "match_substring" if o["literal"] else "match_substring_regex"
            return _kernel(kernel, v, pattern=o["pattern"])
        if fn in ("starts_with", "ends_with"):
            return _kernel(fn, v, pattern=o["pattern"])
        if fn == "lower":
            return _kernel("utf8_lower", v)
        if fn == "upper":
            return _kernel("utf8_upper", v)
        if fn == "strip":
            return _kernel("utf8_trim_whitespace", v)
        if fn == "length":
            return pc.cast(_kernel("utf8_length", v), pa.int64())
        if fn == "slice":
            start, length = o["offset"], o["length"]
            end = None if length is None else start + length
            if end is None or (start < 0 <= end):  # to the end of the string
                end = np.iinfo(np.int64).max
            return _kernel("utf8_slice_codeunits", v, start=start, stop=end)
        if fn == "split":
            return pc.split_pattern(_plain(v), pattern=o["by"])
        if fn == "replace":
            kernel = "replace_substring" if o["literal"] else "replace_substring_regex"
            return _kernel(kernel, v, pattern=o["pattern"], replacement=o["value"])
        raise ExprError(f"{self.where}: unknown string function str.{fn}")

    def _date(self, part: str, v: Value) -> Value:
        if part == "date":
            return v.cast(pa.date32()) if not pa.types.is_date32(v.type) else v
        if part == "weekday":  # ISO: Monday = 1 … Sunday = 7, as Polars and DuckDB's isodow
            return pc.cast(pc.add(pc.day_of_week(v), 1), pa.int64())
        return pc.cast(pc.call_function(_DATE_PARTS[part], [v]), pa.int64())

    def _case(self, e: Expr) -> Value:
        conds = [self.array(c) for c in e.args[:-1:2]]
        values = [self._value(v) for v in (*e.args[1::2], e.args[-1])]
        arrays = [v for v in values if not isinstance(v, pa.Scalar)]
        target = (
            arrays[0].type
            if arrays
            else next((v.type for v in values if v.type != pa.null()), pa.null())
        )
        target = _plain_type(target)
        cast = []
        for v in values:
            v = _plain(v)
            if v.type != target:
                v = v.cast(target)
            cast.append(v)
        names = [f"c{i}" for i in range(len(conds))]
        chunked = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in conds]
        cond = pa.StructArray.from_arrays(chunked, names=names)
        out = pc.case_when(cond, *cast)
        return _like(out, tuple(values))


def evaluate(e: Expr, table: pa.Table, where: str = "expression") -> pa.ChunkedArray | pa.Array:
    """``e`` over ``table`` as a column of ``table.num_rows`` values."""
    return Evaluator(table, where).array(e)


def output_type(e: Expr, schema: pa.Schema) -> pa.DataType:
    """The type ``e`` produces over data of ``schema`` (evaluated over no rows)."""
    return evaluate(e, schema.empty_table()).type


# -- pushdown into Arrow's dataset scanner ------------------------------------------------------


_OPERATORS: dict[str, Callable[[Any, Any], pc.Expression]] = {
    "eq": operator.eq, "ne": operator.ne, "lt": operator.lt,
    "le": operator.le, "gt": operator.gt, "ge": operator.ge,
}  # fmt: skip


class NotPushable(Exception):
    """This expression has no exact equivalent the Arrow scanner evaluates."""


def to_arrow_filter(e: Expr, schema: pa.Schema) -> pc.Expression:
    """``e`` as a ``pyarrow.compute.Expression`` with the same meaning, or :class:`NotPushable`.

    Only comparisons of columns with literals, ``& | ~``, ``is_in``, ``is_null`` and string
    prefix tests are translated — what row-group statistics can prune on — and only over
    columns whose types Arrow's kernels take directly (no view types)."""

    def field(c: Expr) -> tuple[pc.Expression, pa.DataType]:
        if c.op != "col" or c.value not in schema.names:
            raise NotPushable(repr(c))
        t = schema.field(c.value).type
        if _is_view(t) or pa.types.is_dictionary(t):
            raise NotPushable(f"{c.value}: {t}")
        return pc.field(c.value), t

    def side(c: Expr, like: pa.DataType | None) -> Any:
        if c.op == "col":
            return field(c)[0]
        if c.op == "lit":
            return pc.scalar(_literal(c, like))
        raise NotPushable(repr(c))

    def go(x: Expr) -> pc.Expression:
        if x.op == "alias":
            return go(x.args[0])
        if x.op != "call":
            raise NotPushable(repr(x))
        name = x.value
        if name in ("and", "or"):
            a, b = (go(y) for y in x.args)
            return a & b if name == "and" else a | b
        if name == "not":
            return ~go(x.args[0])
        if name in _COMPARE:
            a, b = x.args
            if a.op == "col" and b.op == "lit" and b.value is not None:
                fa, t = field(a)
                return _OPERATORS[name](fa, side(b, t))
            if b.op == "col" and a.op == "lit" and a.value is not None:
                fb, t = field(b)
                return _OPERATORS[name](side(a, t), fb)
            raise NotPushable(repr(x))
        if name in ("is_null", "is_not_null"):
            f, _ = field(x.args[0])
            return f.is_null() if name == "is_null" else f.is_valid()
        if name == "is_in":
            f, t = field(x.args[0])
            if any(v is None for v in dict(x.options)["values"]):
                raise NotPushable(repr(x))
            values = pa.array(list(dict(x.options)["values"]))
            return f.isin(values.cast(t) if len(values) and values.type != t else values)
        if name == "str.starts_with":
            f, t = field(x.args[0])
            if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
                raise NotPushable(repr(x))
            return pc.starts_with(f, pattern=dict(x.options)["pattern"])
        raise NotPushable(repr(x))

    return go(e)


def conjuncts(e: Expr) -> list[Expr]:
    """``a & b & c`` as ``[a, b, c]``."""
    if e.op == "call" and e.value == "and":
        return [*conjuncts(e.args[0]), *conjuncts(e.args[1])]
    if e.op == "alias":
        return conjuncts(e.args[0])
    return [e]


def pushable_conjuncts(e: Expr, schema: pa.Schema) -> pc.Expression | None:
    """The conjunction of those conjuncts of ``e`` that :func:`to_arrow_filter` translates (a
    filter implied by ``e``, so skipping what it rules out loses nothing), or None."""
    out = None
    for c in conjuncts(e):
        try:
            arrow = to_arrow_filter(c, schema)
        except NotPushable:
            continue
        out = arrow if out is None else out & arrow
    return out
