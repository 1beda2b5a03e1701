"""Column expressions: plan data that vectorized kernels execute, never Python per row.

``col("price") * (1 - col("discount"))`` builds a small immutable tree of :class:`Expr` nodes. It is
part of the plan like any other parameter: ``explain()`` prints it (``repr`` reads like the code
that built it), ``to_json()``/``from_json()`` round-trip it for provenance and the dashboard, and
``key()`` is a canonical string, so operator ids that include an expression are stable across
runs. Nothing here computes: :mod:`riera.exec.evaluate` runs a tree with Arrow compute kernels over
a partition, and turns the predicates Arrow's dataset scanner understands into pushed-down filters.

One generic node type keeps serialisation, printing and hashing in one place:

- ``op="col"``: a column (``value`` is its name);
- ``op="lit"``: a literal (``value``; ``options`` may pin its Arrow type);
- ``op="call"``: a function (``value`` is its name: ``add``, ``str.lower``, ``dt.year``…) of
  ``args`` with keyword ``options``;
- ``op="alias"``: ``args[0]`` renamed to ``value``;
- ``op="case"``: ``when(c1).then(v1).when(c2).then(v2).otherwise(v)`` as ``(c1, v1, c2, v2, v)``;
- ``op="agg"``: an aggregation ``value`` (``sum``, ``mean``…) of ``args[0]``, only valid in
  ``group_by().agg(...)``.

Python's ``and``/``or``/``not`` cannot be overloaded; an expression refuses ``bool()`` so that
``col("a") > 1 and col("b") < 2`` fails at once with a hint to write ``&`` instead.

>>> from riera import col, lit, when
>>> e = (col("price") * (1 - col("discount"))).alias("revenue")
>>> e
(col('price') * (lit(1) - col('discount'))).alias('revenue')
>>> e.output_name()
'revenue'
>>> sorted(e.columns())
['discount', 'price']
>>> when(col("x") > 0).then(lit("pos")).otherwise(lit("neg"))
when(col('x') > lit(0)).then(lit('pos')).otherwise(lit('neg'))
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from riera.errors import PlanError

# Binary operators: function name -> symbol shown by repr.
BINARY = {
    "add": "+",
    "sub": "-",
    "mul": "*",
    "truediv": "/",
    "floordiv": "//",
    "mod": "%",
    "pow": "**",
    "eq": "==",
    "ne": "!=",
    "lt": "<",
    "le": "<=",
    "gt": ">",
    "ge": ">=",
    "and": "&",
    "or": "|",
}
AGGREGATIONS = ("sum", "mean", "min", "max", "count", "first")


def _type_to_json(t: pa.DataType) -> str:
    """An Arrow type as text that :func:`_type_from_json` reads back exactly (IPC, base64)."""
    return base64.b64encode(pa.schema([("t", t)]).serialize().to_pybytes()).decode()


def _type_from_json(s: str) -> pa.DataType:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(s))).field("t").type


def to_type(value: Any, where: str) -> pa.DataType:
    """An Arrow type from a ``pa.DataType`` or a name (``"int64"``, ``"string"``, ``"date32"``,
    ``"decimal128(12, 2)"``, ``"timestamp[us, tz=UTC]"`` and anything ``pa.type_for_alias``
    knows)."""
    if isinstance(value, pa.DataType):
        return value
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            return pa.type_for_alias(text)
        except ValueError:
            pass
        for prefix, ctor in (("decimal128(", pa.decimal128), ("decimal256(", pa.decimal256),
                             ("decimal(", pa.decimal128)):  # fmt: skip
            if text.startswith(prefix) and text.endswith(")"):
                precision, _, scale = text[len(prefix) : -1].partition(",")
                return ctor(int(precision), int(scale or 0))
        if text.startswith("timestamp[") and text.endswith("]"):
            unit, _, tz = text[len("timestamp[") : -1].partition(",")
            return pa.timestamp(unit, tz.removeprefix("tz=") or None)
    raise PlanError(
        f"{where}: {value!r} is not an Arrow type; pass a pyarrow type (pa.int64()) or a name "
        f"such as 'int64', 'float64', 'string', 'date32', 'decimal128(12, 2)'"
    )


def _literal_json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, dt.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"time": value.isoformat()}
    if isinstance(value, dt.timedelta):
        return {"timedelta_us": value // dt.timedelta(microseconds=1)}
    if isinstance(value, bytes):
        return {"bytes": base64.b64encode(value).decode()}
    if isinstance(value, list | tuple):
        return {"list": [_literal_json(v) for v in value]}
    if isinstance(value, pa.DataType):
        return {"arrow_type": _type_to_json(value)}
    raise PlanError(f"expression: a literal {value!r} ({type(value).__name__}) is not supported")


def _literal_from_json(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    ((kind, v),) = data.items()
    readers: dict[str, Callable[[Any], Any]] = {
        "decimal": decimal.Decimal,
        "datetime": dt.datetime.fromisoformat,
        "date": dt.date.fromisoformat,
        "time": dt.time.fromisoformat,
        "timedelta_us": lambda us: dt.timedelta(microseconds=us),
        "bytes": base64.b64decode,
        "list": lambda items: [_literal_from_json(i) for i in items],
        "arrow_type": _type_from_json,
    }
    return readers[kind](v)


@dataclass(frozen=True, eq=False)
class Expr:
    """A column expression. Build with :func:`col`, :func:`lit`, :func:`when` and operators."""

    op: str
    value: Any = None
    args: tuple[Expr, ...] = ()
    options: tuple[tuple[str, Any], ...] = ()

    __hash__ = object.__hash__  # == builds an expression, so identity hashing stays

    # -- building ------------------------------------------------------------------------------
    def _call(self, name: str, *args: Any, **options: Any) -> Expr:
        return Expr("call", name, (self, *(wrap(a) for a in args)), tuple(sorted(options.items())))

    def _binary(self, name: str, other: Any, reflected: bool = False) -> Expr:
        a, b = (wrap(other), self) if reflected else (self, wrap(other))
        return Expr("call", name, (a, b))

    def __add__(self, o: Any) -> Expr:
        return self._binary("add", o)

    def __radd__(self, o: Any) -> Expr:
        return self._binary("add", o, True)

    def __sub__(self, o: Any) -> Expr:
        return self._binary("sub", o)

    def __rsub__(self, o: Any) -> Expr:
        return self._binary("sub", o, True)

    def __mul__(self, o: Any) -> Expr:
        return self._binary("mul", o)

    def __rmul__(self, o: Any) -> Expr:
        return self._binary("mul", o, True)

    def __truediv__(self, o: Any) -> Expr:
        return self._binary("truediv", o)

    def __rtruediv__(self, o: Any) -> Expr:
        return self._binary("truediv", o, True)

    def __floordiv__(self, o: Any) -> Expr:
        return self._binary("floordiv", o)

    def __rfloordiv__(self, o: Any) -> Expr:
        return self._binary("floordiv", o, True)

    def __mod__(self, o: Any) -> Expr:
        return self._binary("mod", o)

    def __rmod__(self, o: Any) -> Expr:
        return self._binary("mod", o, True)

    def __pow__(self, o: Any) -> Expr:
        return self._binary("pow", o)

    def __neg__(self) -> Expr:
        return self._call("neg")

    def __abs__(self) -> Expr:
        return self._call("abs")

    def __eq__(self, o: Any) -> Expr:  # type: ignore[override]
        return self._binary("eq", o)

    def __ne__(self, o: Any) -> Expr:  # type: ignore[override]
        return self._binary("ne", o)

    def __lt__(self, o: Any) -> Expr:
        return self._binary("lt", o)

    def __le__(self, o: Any) -> Expr:
        return self._binary("le", o)

    def __gt__(self, o: Any) -> Expr:
        return self._binary("gt", o)

    def __ge__(self, o: Any) -> Expr:
        return self._binary("ge", o)

    def __and__(self, o: Any) -> Expr:
        return self._binary("and", o)

    def __rand__(self, o: Any) -> Expr:
        return self._binary("and", o, True)

    def __or__(self, o: Any) -> Expr:
        return self._binary("or", o)

    def __ror__(self, o: Any) -> Expr:
        return self._binary("or", o, True)

    def __invert__(self) -> Expr:
        return self._call("not")

    def __bool__(self) -> bool:
        raise PlanError(
            f"an expression has no truth value ({self!r}); combine conditions with & | ~ "
            f"instead of and / or / not, and parenthesise each: (col('a') > 1) & (col('b') < 2)"
        )

    def __iter__(self) -> Iterator[Any]:
        raise PlanError(f"an expression is not iterable ({self!r})")

    # -- functions -----------------------------------------------------------------------------
    def alias(self, name: str) -> Expr:
        """The same values under another column name."""
        if not isinstance(name, str) or not name:
            raise PlanError(f"alias: expected a column name; got {name!r}")
        return Expr("alias", name, (self,))

    def is_null(self) -> Expr:
        return self._call("is_null")

    def is_not_null(self) -> Expr:
        return self._call("is_not_null")

    def is_in(self, values: Iterable[Any]) -> Expr:
        """True where the value is one of ``values`` (a null is never in them)."""
        if isinstance(values, str | bytes | Expr):
            raise PlanError(f"is_in: expected a list of values; got {values!r}")
        return self._call("is_in", values=tuple(values))

    def between(self, low: Any, high: Any, closed: str = "both") -> Expr:
        """``low <= x <= high``; ``closed`` is ``both``, ``left``, ``right`` or ``none``."""
        if closed not in ("both", "left", "right", "none"):
            raise PlanError(f"between: closed must be both, left, right or none; got {closed!r}")
        lo = self >= low if closed in ("both", "left") else self > low
        hi = self <= high if closed in ("both", "right") else self < high
        return lo & hi

    def fill_null(self, value: Any) -> Expr:
        return self._call("fill_null", value)

    def cast(self, dtype: pa.DataType | str) -> Expr:
        """Convert to ``dtype`` (safe: a value that does not fit raises, naming the operator)."""
        return self._call("cast", to=to_type(dtype, "cast"))

    def round(self, decimals: int = 0) -> Expr:
        return self._call("round", ndigits=int(decimals))

    def abs(self) -> Expr:
        return self._call("abs")

    # -- aggregations (inside group_by().agg) -------------------------------------------------
    def _agg(self, func: str) -> Expr:
        if self.op == "agg":
            raise PlanError(f"{func}: {self!r} is already an aggregation")
        return Expr("agg", func, (self,))

    def sum(self) -> Expr:
        return self._agg("sum")

    def mean(self) -> Expr:
        return self._agg("mean")

    def min(self) -> Expr:
        return self._agg("min")

    def max(self) -> Expr:
        return self._agg("max")

    def count(self) -> Expr:
        """The number of non-null values."""
        return self._agg("count")

    def first(self) -> Expr:
        """Some value of the group (the first one a partition saw)."""
        return self._agg("first")

    # -- inspection ----------------------------------------------------------------------------
    def columns(self) -> set[str]:
        """The input columns the expression reads."""
        if self.op == "col":
            return {self.value}
        out: set[str] = set()
        for a in self.args:
            out |= a.columns()
        for _, v in self.options:
            if isinstance(v, Expr):
                out |= v.columns()
        return out

    def output_name(self) -> str | None:
        """The column name this expression produces: its alias, or its first column's name."""
        if self.op == "alias":
            return str(self.value)
        if self.op == "col":
            return str(self.value)
        for a in self.args:
            name = a.output_name()
            if name is not None:
                return name
        return None

    def has_agg(self) -> bool:
        return self.op == "agg" or any(a.has_agg() for a in self.args)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op}
        if self.value is not None:
            out["value"] = _literal_json(self.value) if self.op == "lit" else self.value
        if self.args:
            out["args"] = [a.to_json() for a in self.args]
        if self.options:
            out["options"] = {k: _literal_json(v) for k, v in self.options}
        return out

    @staticmethod
    def from_json(data: dict[str, Any]) -> Expr:
        value = data.get("value")
        if data["op"] == "lit":
            value = _literal_from_json(value)
        opts = tuple((k, _literal_from_json(v)) for k, v in data.get("options", {}).items())
        opts = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in opts)
        args = tuple(Expr.from_json(a) for a in data.get("args", ()))
        return Expr(data["op"], value, args, opts)

    def key(self) -> str:
        """A canonical text of the tree: equal for equal expressions, in any process."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    def __repr__(self) -> str:
        if self.op == "col":
            return f"col({self.value!r})"
        if self.op == "lit":
            return f"lit({self.value!r})"
        if self.op == "alias":
            return f"{_paren(self.args[0])}.alias({self.value!r})"
        if self.op == "agg":
            return f"{_paren(self.args[0])}.{self.value}()"
        if self.op == "case":
            parts = [
                f"{'when' if i == 0 else '.when'}({c!r}).then({v!r})"
                for i, (c, v) in enumerate(zip(self.args[:-1:2], self.args[1::2], strict=False))
            ]
            return "".join(parts) + f".otherwise({self.args[-1]!r})"
        name = self.value
        if name in BINARY and len(self.args) == 2:
            a, b = self.args
            return f"{_paren(a)} {BINARY[name]} {_paren(b)}"
        if name == "not":
            return f"~{_paren(self.args[0])}"
        if name == "neg":
            return f"-{_paren(self.args[0])}"
        rest = ", ".join(repr(a) for a in self.args[1:])
        opts = ", ".join(f"{k}={_opt_repr(v)}" for k, v in self.options)
        inner = ", ".join(p for p in (rest, opts) if p)
        return f"{_paren(self.args[0])}.{name}({inner})"

    # Last in the class body: a method annotated ``-> str`` after this would name the property.
    @property
    def str(self) -> StringFunctions:
        """String functions: ``col("s").str.lower()``."""
        return StringFunctions(self)

    @property
    def dt(self) -> DateFunctions:
        """Date and time parts: ``col("d").dt.year()``."""
        return DateFunctions(self)


def _opt_repr(v: Any) -> str:
    return str(v) if isinstance(v, pa.DataType) else repr(v)


def _paren(e: Expr) -> str:
    text = repr(e)
    if e.op == "call" and (e.value in BINARY or e.value in ("not", "neg")):
        return f"({text})"
    return text


class StringFunctions:
    """``Expr.str``: vectorized string functions (UTF-8 aware)."""

    def __init__(self, e: Expr) -> None:
        self._e = e

    def contains(self, pattern: str, *, literal: bool = False) -> Expr:
        """True where ``pattern`` (a regular expression, or plain text with ``literal=True``)
        occurs."""
        return self._e._call("str.contains", pattern=_text("str.contains", pattern),
                             literal=bool(literal))  # fmt: skip

    def starts_with(self, prefix: str) -> Expr:
        return self._e._call("str.starts_with", pattern=_text("str.starts_with", prefix))

    def ends_with(self, suffix: str) -> Expr:
        return self._e._call("str.ends_with", pattern=_text("str.ends_with", suffix))

    def lower(self) -> Expr:
        return self._e._call("str.lower")

    def upper(self) -> Expr:
        return self._e._call("str.upper")

    def strip(self) -> Expr:
        return self._e._call("str.strip")

    def length(self) -> Expr:
        """Characters (code points) per value, as int64."""
        return self._e._call("str.length")

    def slice(self, offset: int, length: int | None = None) -> Expr:
        """Characters ``offset`` to ``offset + length`` (negative offsets count from the end)."""
        return self._e._call("str.slice", offset=int(offset),
                             length=None if length is None else int(length))  # fmt: skip

    def split(self, by: str) -> Expr:
        """A list of the parts between occurrences of ``by``."""
        return self._e._call("str.split", by=_text("str.split", by))

    def replace(self, pattern: str, value: str, *, literal: bool = False) -> Expr:
        """Every occurrence of ``pattern`` replaced by ``value``."""
        return self._e._call("str.replace", pattern=_text("str.replace", pattern),
                             value=_text("str.replace", value), literal=bool(literal))  # fmt: skip


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PlanError(f"{where}: expected a str; got {value!r}")
    return value


class DateFunctions:
    """``Expr.dt``: parts of dates and timestamps (``year``, ``month``…, ``weekday`` 1 = Monday)."""

    PARTS = ("year", "quarter", "month", "day", "hour", "minute", "second", "weekday",
             "day_of_year", "week")  # fmt: skip

    def __init__(self, e: Expr) -> None:
        self._e = e

    def __getattr__(self, part: str) -> Any:
        if part in DateFunctions.PARTS:
            return lambda: self._e._call(f"dt.{part}")
        raise AttributeError(
            f"dt.{part}: no such date part; use one of {', '.join(DateFunctions.PARTS)}, date()"
        )

    def date(self) -> Expr:
        """The calendar date of a timestamp (``date32``)."""
        return self._e._call("dt.date")


# -- constructors --------------------------------------------------------------------------------


def col(name: str) -> Expr:
    """The column ``name``.

    >>> col("price") > 10
    col('price') > lit(10)
    """
    if not isinstance(name, str) or not name:
        raise PlanError(f"col: expected a column name; got {name!r}")
    return Expr("col", name)


def lit(value: Any, dtype: pa.DataType | str | None = None) -> Expr:
    """A literal value, typed from Python (int → int64, float → float64, str, bool, date,
    datetime, timedelta, Decimal, None) or as ``dtype``."""
    if isinstance(value, Expr):
        return value
    _literal_json(value)  # refuses what cannot be plan data
    opts = (("type", to_type(dtype, "lit")),) if dtype is not None else ()
    return Expr("lit", value, (), opts)


def wrap(value: Any) -> Expr:
    """An expression as is; anything else as a literal."""
    return value if isinstance(value, Expr) else lit(value)


@dataclass(frozen=True)
class When:
    """``when(cond).then(value)``, waiting for more ``when`` or the ``otherwise``."""

    branches: tuple[Expr, ...]  # cond, value, cond, value, ...
    pending: Expr | None = None

    def then(self, value: Any) -> When:
        if self.pending is None:
            raise PlanError("then: call when(condition) first")
        return When((*self.branches, self.pending, wrap(value)))

    def when(self, condition: Expr) -> When:
        if self.pending is not None:
            raise PlanError("when: the previous when(...) needs its .then(value)")
        return When(self.branches, _condition(condition))

    def otherwise(self, value: Any) -> Expr:
        if self.pending is not None or not self.branches:
            raise PlanError("otherwise: every when(...) needs its .then(value) first")
        return Expr("case", None, (*self.branches, wrap(value)))


def _condition(c: Any) -> Expr:
    if not isinstance(c, Expr):
        raise PlanError(
            f"when: the condition must be an expression such as col('x') > 0; got {c!r}"
        )
    return c


def when(condition: Expr) -> When:
    """``when(c1).then(v1).when(c2).then(v2).otherwise(v)``: the value of the first true
    condition (a null condition counts as false)."""
    return When((), _condition(condition))


def named(
    op: str, exprs: Sequence[Any], named_exprs: dict[str, Any]
) -> tuple[tuple[str, Expr], ...]:
    """``(name, expr)`` pairs from positional expressions (named by their alias or column) and
    keyword ones (``name=expr``; plain values become literals); names must be unique."""
    out: list[tuple[str, Expr]] = []
    for e in exprs:
        if isinstance(e, str):
            e = col(e)
        if not isinstance(e, Expr):
            raise PlanError(f"{op}: expected a column name or an expression; got {e!r}")
        name = e.output_name()
        if name is None:
            raise PlanError(f"{op}: {e!r} has no column name; give it one with .alias('name')")
        out.append((name, e))
    for name, e in named_exprs.items():
        out.append((name, wrap(e)))
    seen: set[str] = set()
    for name, e in out:
        if name in seen:
            raise PlanError(f"{op}: column {name!r} is produced twice; alias one of them")
        seen.add(name)
        if e.has_agg():
            raise PlanError(f"{op}: {e!r} aggregates; aggregations go in group_by(...).agg(...)")
    return tuple(out)
