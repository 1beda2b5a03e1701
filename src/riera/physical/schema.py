"""The schema of every plan node, known before anything runs.

Types come from the operators' own kernels run over no rows: an expression is evaluated over an
empty table of its input's schema, an aggregation runs its partial and final steps over one, a join
joins two. The schema the planner reports is therefore the one the run produces, with no second
type system to keep in step. A Python function hides its output: its node has no schema unless the
function declared one (``map(fn, schema=...)``); then the run makes the output match it.

:func:`column_names` knows a little more than :func:`schema_of`: the names (without types) after
operators whose types depend on data, such as ``reduce_by_key`` or file groups.
"""

from __future__ import annotations

import weakref
from typing import Any

import pyarrow as pa

from riera.errors import PlanError, RieraError
from riera.plan import nodes as n
from riera.plan import stream as st

_memo: weakref.WeakKeyDictionary[n.Node, pa.Schema | None] = weakref.WeakKeyDictionary()

_PASSTHROUGH = (n.FilterRows, n.FilterExpr, n.Sort, n.Repartition, n.Distinct, n.Limit, n.Domain,
                n.ProvenanceMark, n.Cache)  # fmt: skip


def schema_of(node: n.Node) -> pa.Schema | None:
    """The Arrow schema ``node`` produces, or None when a Python function hides it."""
    if node not in _memo:
        try:
            _memo[node] = _infer(node)
        except Exception:  # a kernel refusing empty input must not break planning
            _memo[node] = None
    return _memo[node]


def check(node: n.Node, where: str) -> pa.Schema | None:
    """The schema of a node just defined, or a :class:`PlanError` saying why its operator cannot
    run on its input's types (``sum`` of strings, ``col("name") + 1``…) — where the user wrote
    it, not in a worker an hour later."""
    try:
        schema = _infer(node)
    except RieraError:  # already names the operator and the fix (a list as a key…)
        raise
    except Exception as err:
        raise PlanError(f"{where}: {err}") from err
    _memo[node] = schema
    return schema


def _infer(node: n.Node) -> pa.Schema | None:
    if isinstance(node, n.TableSource):
        return node.table.schema
    if isinstance(node, n.RangeSource):
        return pa.schema([(node.column, pa.int64())])
    if isinstance(node, n.Materialized):
        return node.schema
    if isinstance(node, n.FileSource):
        return _file_schema(node)
    if isinstance(node, _PASSTHROUGH):
        return schema_of(node.inputs[0])
    if isinstance(node, n.MapRows | n.FlatMapRows | n.MapBatches):
        return node.schema
    if isinstance(node, st.StreamSource | st.Watermark | st.WindowAgg):
        return _stream_schema(node)
    if isinstance(node, n.Union):
        schemas = [schema_of(i) for i in node.inputs]
        if any(s is None for s in schemas):
            return None
        return pa.unify_schemas(schemas, promote_options="permissive")
    return _by_kernel(node)


def _stream_schema(node: n.Node) -> pa.Schema | None:
    if isinstance(node, st.StreamSource):
        if node.format == "text":
            return pa.schema([("value", pa.string())])
        if node.format == "raw":
            return pa.schema([("key", pa.binary()), ("value", pa.binary()), ("ts", pa.float64())])
        return node.schema
    if isinstance(node, st.Watermark):
        return schema_of(node.inputs[0])
    assert isinstance(node, st.WindowAgg)
    from riera.physical import ops

    source = schema_of(node.inputs[0])
    if source is None or any(callable(a.func) for a in node.aggs):
        return None
    partial = ops.PartialAggOp(node.name, node.keys, node.aggs).apply(source.empty_table())
    out = ops.FinalAggOp(node.name, node.keys, node.aggs).apply(partial).schema
    ts = pa.timestamp("ms", tz="UTC")
    fields = list(out)
    k = len(node.keys)
    return pa.schema([*fields[:k], ("window_start", ts), ("window_end", ts), *fields[k:]])


def _file_schema(node: n.FileSource) -> pa.Schema | None:
    if node.format == "files":
        return pa.schema([("path", pa.string()), ("size", pa.int64()), ("bytes", pa.binary())])
    if node.format == "text":
        if node.option("whole_files") or node.option("include_paths"):
            return pa.schema([("path", pa.string()), ("text", pa.string())])
        return pa.schema([("text", pa.string())])
    if node.schema is None:
        return None
    columns = node.option("columns")
    if columns:
        return pa.schema([node.schema.field(c) for c in columns])
    return node.schema


def _by_kernel(node: n.Node) -> pa.Schema | None:
    """Run the node's operator over empty inputs of the known schemas."""
    from riera.physical import columnar, joins, ops

    inputs = [schema_of(i) for i in node.inputs]
    if any(s is None for s in inputs):
        return None
    empty = [s.empty_table() for s in inputs]  # type: ignore[union-attr]
    op: Any
    if isinstance(node, n.Select):
        return pa.schema([inputs[0].field(c) for c in node.columns])  # type: ignore[union-attr]
    if isinstance(node, n.Project):
        op = columnar.ProjectOp(node.name, node.exprs, node.keep)
    elif isinstance(node, n.Rename):
        op = columnar.RenameOp(node.name, node.mapping)
    elif isinstance(node, n.Drop):
        op = columnar.DropOp(node.name, node.columns)
    elif isinstance(node, n.Explode):
        op = columnar.ExplodeOp(node.name, node.column)
    elif isinstance(node, n.GroupByAgg):
        if any(callable(a.func) for a in node.aggs):
            return None  # a Python aggregate's result type is its own
        partial = ops.PartialAggOp(node.name, node.keys, node.aggs).apply(empty[0])
        return ops.FinalAggOp(node.name, node.keys, node.aggs).apply(partial).schema
    elif isinstance(node, n.Join):
        return joins.join_tables(
            empty[0], empty[1], node.on, node.how, node.name,
            right_on=node.right_keys, suffix=node.suffix,
        ).schema  # fmt: skip
    else:
        return None
    return op.apply(empty[0]).schema


def column_names(node: n.Node) -> tuple[str, ...] | None:
    """Column names when known without running; None when a Python function hides them."""
    schema = schema_of(node)
    if schema is not None:
        return tuple(schema.names)
    if isinstance(node, n.FileSource):
        return tuple(node.schema.names) if node.schema is not None else None
    if isinstance(node, n.Select):
        return node.columns
    if isinstance(node, n.GroupByAgg):
        return (*node.keys, *(a.out for a in node.aggs))
    if isinstance(node, n.ReduceByKey):
        return (node.key, node.column)
    if isinstance(node, n.FileGroupSource):
        meta = dict.fromkeys(k for g in node.groups for k, _ in g.meta)
        return ("group", "files", *meta)
    if isinstance(node, n.RunProgram):
        before = column_names(node.inputs[0])
        if before is None:
            return None
        added = ("files", "exit_code", "seconds", "stdout", "stderr")
        return (*(c for c in before if c not in added), *added)
    if isinstance(node, n.Project):
        before = column_names(node.inputs[0]) if node.keep else ()
        if before is None:
            return None
        return (*before, *(name for name, _ in node.exprs if name not in before))
    if isinstance(node, n.Rename):
        before = column_names(node.inputs[0])
        mapping = dict(node.mapping)
        return None if before is None else tuple(mapping.get(c, c) for c in before)
    if isinstance(node, n.Drop):
        before = column_names(node.inputs[0])
        return None if before is None else tuple(c for c in before if c not in node.columns)
    if isinstance(node, (*_PASSTHROUGH, n.Explode)):
        return column_names(node.inputs[0])
    return None
