"""``Dataset.group_by(keys)``: aggregations as ``(column, func)`` pairs or as expressions.

An expression aggregation is lowered to what the engine runs: inputs that are not plain columns
become columns computed before the group-by (``with_columns``), every ``sum``/``mean``/… becomes
one mergeable partial/final aggregation, and arithmetic over aggregates (``col("a").sum() /
col("b").sum()``) becomes a projection after it. So ``agg(revenue=(col("price") * (1 -
col("discount"))).sum())`` runs as vectorized kernels on both sides of the shuffle.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any

from riera.errors import PlanError
from riera.expr import Expr, col
from riera.physical import schema as plan_schema
from riera.plan import nodes as n

if TYPE_CHECKING:
    from riera.dataset import Dataset


def _positive_partitions(partitions: Any) -> None:
    if partitions is None:
        return
    if not isinstance(partitions, int) or isinstance(partitions, bool) or partitions < 1:
        raise PlanError(
            f"group_by().agg: partitions must be a positive integer; got {partitions!r}"
        )


class _Lowering:
    """Collects the pre-projection, the aggregations and the post-projection of one ``agg``."""

    def __init__(self) -> None:
        self.pre: list[tuple[str, Expr]] = []
        self.specs: list[n.AggSpec] = []

    def agg_column(self, inner: Expr) -> str:
        if inner.op == "col":
            return str(inner.value)
        name = f"__agg_in{len(self.pre)}"
        self.pre.append((name, inner))
        return name

    def lower(self, e: Expr) -> Expr:
        """``e`` with each aggregation replaced by the column that will hold it."""
        if e.op == "agg":
            if e.args[0].has_agg():
                raise PlanError(f"group_by().agg: {e!r} nests an aggregation in another")
            out = f"__agg{len(self.specs)}"
            self.specs.append(n.AggSpec(out, self.agg_column(e.args[0]), str(e.value)))
            return col(out)
        if e.op == "col":
            raise PlanError(
                f"group_by().agg: {e!r} is not aggregated; use a key column or an aggregation "
                f"such as {e!r}.first()"
            )
        if e.op == "alias":
            return self.lower(e.args[0])
        return Expr(e.op, e.value, tuple(self.lower(a) for a in e.args), e.options)


class GroupedDataset:
    """``Dataset.group_by(keys)`` awaiting its aggregations."""

    def __init__(self, ds: Dataset, keys: tuple[str, ...], window: Any = None) -> None:
        self._ds, self._keys, self._window = ds, keys, window

    def agg(self, *exprs: Expr, partitions: int | None = None, **aggs: Any) -> Dataset:
        """Aggregations per group, each a column of the result after the keys.

        Give them as expressions (``total=col("v").sum()``, or positional
        ``col("v").sum().alias("total")``; ``sum``, ``mean``, ``min``, ``max``, ``count``,
        ``first``, and arithmetic over them) or as ``out=(column, func)`` with func one of
        count, sum, min, max, mean, first, list or a callable over the list of the group's values
        (``("*", "count")`` counts rows). Sums of decimals stay exact decimals.

        >>> import riera
        >>> from riera import col
        >>> ds = riera.from_items([{"k": "a", "v": 1, "w": 2}, {"k": "a", "v": 3, "w": 2}])
        >>> ds.group_by("k").agg(total=("v", "sum"), top=("v", max)).collect()
        [{'k': 'a', 'total': 4, 'top': 3}]
        >>> ds.group_by("k").agg(ratio=col("v").sum() / col("w").sum()).collect()
        [{'k': 'a', 'ratio': 1.0}]
        """
        from riera.dataset import Dataset

        named: list[tuple[str, Any]] = []
        for e in exprs:
            if not isinstance(e, Expr) or not e.has_agg():
                raise PlanError(
                    f"group_by().agg: positional arguments must be aggregations such as "
                    f"col('v').sum().alias('total'); got {e!r}"
                )
            name = e.output_name()
            assert name is not None
            named.append((name, e))
        named += list(aggs.items())
        if not named:
            raise PlanError(
                "group_by().agg: give at least one aggregation, e.g. agg(total=('amount', 'sum')) "
                "or agg(total=col('amount').sum())"
            )
        _positive_partitions(partitions)
        lowering = _Lowering()
        post: list[tuple[str, Expr]] = []
        seen: set[str] = set()
        for out, spec in named:
            if out in self._keys:
                raise PlanError(f"group_by().agg: output {out!r} clashes with a key column")
            if out in seen:
                raise PlanError(f"group_by().agg: output {out!r} is given twice")
            seen.add(out)
            if isinstance(spec, Expr):
                e = spec.args[0] if spec.op == "alias" else spec
                if not e.has_agg():
                    raise PlanError(f"group_by().agg: {out}={spec!r} aggregates nothing")
                if e.op == "agg":  # a plain aggregation: no projection after it
                    if e.args[0].has_agg():
                        raise PlanError(f"group_by().agg: {e!r} nests an aggregation in another")
                    column = lowering.agg_column(e.args[0])
                    lowering.specs.append(n.AggSpec(out, column, str(e.value)))
                    post.append((out, col(out)))
                else:
                    post.append((out, lowering.lower(e)))
            else:
                lowering.specs.append(self._pair(out, spec))
                post.append((out, col(out)))
        source = self._ds
        if lowering.pre:
            source = source.with_columns(**dict(lowering.pre))
        source._require_columns(
            "group_by().agg", [s.column for s in lowering.specs if s.column != "*"]
        )
        node: n.Node
        keys_out = self._keys
        if self._window is not None:
            from riera.plan.stream import WindowAgg

            node = WindowAgg((source.node,), self._keys, tuple(lowering.specs), self._window)
            keys_out = (*self._keys, "window_start", "window_end")
        else:
            node = n.GroupByAgg((source.node,), self._keys, tuple(lowering.specs), partitions)
        plan_schema.check(node, "group_by().agg")
        if any(e.op != "col" or e.value != out for out, e in post):
            exprs_out = tuple((k, col(k)) for k in keys_out) + tuple(post)
            node = n.Project((node,), exprs_out, keep=False)
            plan_schema.check(node, "group_by().agg")
        return Dataset(node)

    def _pair(self, out: str, spec: Any) -> n.AggSpec:
        if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
            raise PlanError(
                f"group_by().agg: {out}= must be an aggregation expression or a (column, func) "
                f"tuple; got {spec!r}; e.g. {out}=('amount', 'sum') or {out}=col('amount').sum()"
            )
        column, func = spec
        if isinstance(func, str):
            if func not in n.AGG_FUNCS:
                close = difflib.get_close_matches(func, n.AGG_FUNCS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PlanError(
                    f"group_by().agg: unknown aggregation {func!r} for {out}=; "
                    f"use one of {list(n.AGG_FUNCS)} or a callable{hint}"
                )
        elif not callable(func):
            raise PlanError(
                f"group_by().agg: {out}= needs a function name or a callable; got {func!r}"
            )
        if column == "*" and func != "count":
            raise PlanError(f"group_by().agg: '*' only works with 'count' ({out}=)")
        return n.AggSpec(out, column, func)

    def _one(self, out: str, column: str, func: str) -> Dataset:
        spec: dict[str, Any] = {out: (column, func)}
        return self.agg(**spec)

    def count(self) -> Dataset:
        """Rows per group, in column ``count``."""
        return self.agg(count=("*", "count"))

    def sum(self, column: str) -> Dataset:
        return self._one(f"sum_{column}", column, "sum")

    def mean(self, column: str) -> Dataset:
        return self._one(f"mean_{column}", column, "mean")

    def min(self, column: str) -> Dataset:
        return self._one(f"min_{column}", column, "min")

    def max(self, column: str) -> Dataset:
        return self._one(f"max_{column}", column, "max")
