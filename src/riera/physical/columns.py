"""Which columns each plan node's consumers read: the basis of column pruning at the sources.

Walking from the root (which needs all of its columns) towards the sources, each node turns the
columns asked of it into the columns it asks of its inputs: a ``select`` needs only what it keeps, a
filter adds its predicate's columns, an aggregation its keys and inputs, a join splits the request
between its sides. A Python function may read any column, so it asks for all of them (None). A node
read by several consumers gets the union of their requests. Readers of Parquet, CSV and JSON then
decode only the columns in their source's set.
"""

from __future__ import annotations

from collections.abc import Iterable

from riera.physical.schema import column_names
from riera.plan import nodes as n

Needed = frozenset[str] | None  # None: every column


def _union(a: Needed, b: Needed) -> Needed:
    if a is None or b is None:
        return None
    return a | b


def _plus(needed: Needed, extra: Iterable[str]) -> Needed:
    return None if needed is None else needed | frozenset(extra)


def _asks(node: n.Node, needed: Needed) -> list[Needed]:
    """What ``node`` needs of each of its inputs when ``needed`` of its output is read."""
    if isinstance(node, n.Select):
        return [frozenset(node.columns)]
    if isinstance(node, n.Project):
        used = frozenset(c for _, e in node.exprs for c in e.columns())
        if not node.keep:
            return [used]
        produced = {name for name, _ in node.exprs}
        return [None if needed is None else (needed - produced) | used]
    if isinstance(node, n.FilterExpr):
        return [_plus(needed, node.predicate.columns())]
    if isinstance(node, n.Rename):
        back = {new: old for old, new in node.mapping}
        return [None if needed is None else frozenset(back.get(c, c) for c in needed)]
    if isinstance(node, n.Drop):
        return [needed]
    if isinstance(node, n.Explode):
        return [_plus(needed, [node.column])]
    if isinstance(node, n.Sort):
        return [_plus(needed, node.keys)]
    if isinstance(node, n.Repartition):
        return [_plus(needed, node.keys) if node.keys else needed]
    if isinstance(node, n.Limit | n.Union):
        return [needed] * len(node.inputs)
    if isinstance(node, n.GroupByAgg):
        return [frozenset([*node.keys, *(a.column for a in node.aggs if a.column != "*")])]
    if isinstance(node, n.Join):
        return _join_asks(node, needed)
    return [None] * len(node.inputs)  # a function, distinct, a program, a cache: everything


def _join_asks(node: n.Join, needed: Needed) -> list[Needed]:
    if needed is None:
        return [None, None]
    left_cols = column_names(node.inputs[0])
    right_cols = column_names(node.inputs[1])
    if left_cols is None or right_cols is None:
        return [None, None]
    left = frozenset(c for c in left_cols if c in needed) | frozenset(node.on)
    taken = set(left_cols)
    right = frozenset(
        c for c in right_cols if (f"{c}{node.suffix}" if c in taken else c) in needed
    ) | frozenset(node.right_keys)
    if node.how in ("semi", "anti"):
        right = frozenset(node.right_keys)
    return [left, right]


def needed_columns(root: n.Node) -> dict[int, Needed]:
    """For every node reachable from ``root`` (by ``id``): the columns its consumers read."""
    order = n.walk(root)  # inputs before consumers
    needed: dict[int, Needed] = {id(root): None}
    for node in reversed(order):  # consumers before their inputs
        asks = _asks(node, needed.get(id(node)))
        for child, ask in zip(node.inputs, asks, strict=True):
            key = id(child)
            needed[key] = _union(needed[key], ask) if key in needed else ask
    return needed
