"""From a streaming plan to what the engine runs: decoding, narrow operators, one stateful
operator, narrow operators after it.

The narrow operators are the batch planner's own (:class:`~riera.physical.planner.Planner` rules
applied to one node at a time), so an expression, a ``map`` or a ``filter`` runs the same kernels
on a stream as on a table. A join with a bounded :class:`~riera.Dataset` (enrichment) is narrow too:
the table side is computed once, when the query starts, and every batch joins against it.

What a stream cannot do is refused when the pipeline is defined (``riera.dataset``) or here,
when it starts, with the fix in the message.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.json as pajson

from riera.config import Settings
from riera.errors import PlanError
from riera.physical import ops, planner
from riera.plan import nodes as n
from riera.plan import stream as s
from riera.stream.connectors.base import RawBatch
from riera.stream.operators import RunningAgg, SessionAgg, WindowedAgg


@dataclass(frozen=True)
class TableJoinOp(ops.Op):
    """A stream batch joined with a table computed once (``stream_left``: the stream is the
    join's left input)."""

    table: pa.Table
    on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: str
    suffix: str
    stream_left: bool

    def apply(self, table: pa.Table) -> pa.Table:
        from riera.physical.joins import join_tables

        if self.stream_left:
            return join_tables(table, self.table, self.on, self.how, self.name,
                               right_on=self.right_on, suffix=self.suffix)  # fmt: skip
        return join_tables(self.table, table, self.on, self.how, self.name,
                           right_on=self.right_on, suffix=self.suffix)  # fmt: skip


@dataclass
class StreamPlan:
    source: s.StreamSource
    pre: list[ops.Op]  # up to the watermark (run per source partition when there is one)
    post: list[ops.Op]  # the rest of the narrow chain before the stateful operator
    watermark: s.WatermarkSpec | None
    stateful: n.Node | None  # GroupByAgg or WindowAgg
    after: list[ops.Op] = field(default_factory=list)  # narrow ops after the stateful one
    # what an upsert sink keys by; None: the output has no key (rows are appended)
    output_key: tuple[str, ...] | None = None
    # a join of two streams: one plan per input (each with its source, operators, watermark)
    inputs: list[StreamPlan] = field(default_factory=list)

    @property
    def sources(self) -> list[StreamPlan]:
        """The plan of each input stream (this plan itself when it has one)."""
        return self.inputs or [self]

    def make_stateful(self, key_groups: int) -> Any:
        node = self.stateful
        if isinstance(node, s.WindowJoin):
            from riera.physical.schema import schema_of
            from riera.stream.joins import WindowJoinOp

            times = tuple(
                node.window.on or (p.watermark.column if p.watermark else None) for p in self.inputs
            )
            schemas = tuple(schema_of(i) for i in node.inputs)
            return WindowJoinOp(node, key_groups, times, schemas)  # type: ignore[arg-type]
        if isinstance(node, n.GroupByAgg):
            return RunningAgg(node.name, key_groups, node.keys, node.aggs)
        if isinstance(node, s.WindowAgg):
            if node.window.kind == "session":
                return SessionAgg(node.name, key_groups, node.keys, node.aggs, node.window)
            return WindowedAgg(node.name, key_groups, node.keys, node.aggs, node.window)
        return None

    def describe(self) -> str:
        """A fingerprint of the plan's structure (the checkpoint refuses another plan's state)."""
        import hashlib

        names = [self.source.url, *(o.name for o in self.pre + self.post + self.after)]
        names += [p.describe() for p in self.inputs]
        if self.stateful is not None:
            names.append(self.stateful.name)
        return hashlib.sha1(json.dumps(names).encode()).hexdigest()[:16]


def _narrow_ops(node: n.Node, settings: Settings) -> list[ops.Op]:
    """The batch planner's operators for one narrow node (its input a placeholder table)."""
    placeholder = n.TableSource((), pa.table({}), 1, name="__stream_input")
    p = planner.Planner(settings)
    p._needed = {}
    p._prefix = {}
    opened = p._open(dataclasses.replace(node, inputs=(placeholder,)))
    return list(opened.ops)


def compile_plan(root: n.Node, settings: Settings) -> StreamPlan:
    """Split a streaming plan into the parts the engine runs."""
    chain: list[n.Node] = []
    node = root
    while not isinstance(node, s.StreamSource):
        if isinstance(node, s.WindowJoin):
            return _join_plan(node, chain, settings)
        chain.append(node)
        streams = [i for i in node.inputs if s.unbounded(i)]
        if len(streams) != 1:
            raise PlanError(
                f"{node.name}: joins of two streams are not supported yet; join a stream with a "
                f"bounded Dataset (enrichment), or aggregate each stream on its own"
            )
        node = streams[0]
    chain.reverse()
    plan = StreamPlan(node, [], [], None, None)
    current = plan.pre
    for x in chain:
        if isinstance(x, s.Watermark):
            if plan.watermark is not None:
                raise PlanError(f"{x.name}: a stream has one watermark; remove the second")
            plan.watermark = x.spec
            current = plan.post
        elif isinstance(x, n.GroupByAgg | s.WindowAgg):
            if plan.stateful is not None:
                raise PlanError(
                    f"{x.name}: one aggregation per streaming query: an aggregate of an aggregate "
                    f"needs retractions Riera does not emit yet; write the first to a sink and "
                    f"read it as a stream in a second query"
                )
            if isinstance(x, s.WindowAgg) and x.window.on is not None and plan.watermark is None:
                raise PlanError(
                    f"{x.name}: an event-time window needs a watermark: call "
                    f".with_watermark({x.window.on!r}, delay='5s') before group_by"
                )
            plan.stateful = x
            current = plan.after
        elif isinstance(x, n.Join):
            current.append(_table_join(x, settings))
        elif isinstance(x, n.NARROW):
            current.extend(_narrow_ops(x, settings))
        else:
            raise PlanError(f"{x.name}: {type(x).__name__} cannot run on a stream")
    if plan.stateful is not None:
        keys = plan.stateful.keys  # type: ignore[attr-defined]
        if isinstance(plan.stateful, s.WindowAgg):
            keys = (*keys, "window_start")
        plan.output_key = tuple(keys)
    return plan


def _join_plan(join: s.WindowJoin, above: list[n.Node], settings: Settings) -> StreamPlan:
    """A windowed join of two streams: each input compiled on its own, the join their stateful
    operator, the nodes ``above`` it narrow operators after it."""
    inputs = []
    for side in join.inputs:
        sub = compile_plan(side, settings)
        if sub.stateful is not None or sub.inputs:
            raise PlanError(
                f"{join.name}: join streams before aggregating them (an input of the join "
                f"aggregates: {sub.stateful.name if sub.stateful else 'a join'})"
            )
        sub.stateful = join  # its workers hand over rows, not partial aggregates
        inputs.append(sub)
    plan = StreamPlan(inputs[0].source, [], [], inputs[0].watermark, join, inputs=inputs)
    for x in reversed(above):
        if not isinstance(x, n.NARROW):
            raise PlanError(f"{x.name}: only row-by-row operators may follow a join of two streams")
        plan.after.extend(_narrow_ops(x, settings))
    return plan


def _table_join(node: n.Join, settings: Settings) -> ops.Op:
    from riera.runtime import get_runtime

    left_stream = s.unbounded(node.inputs[0])
    table_side = node.inputs[1] if left_stream else node.inputs[0]
    allowed = ("inner", "left", "semi", "anti") if left_stream else ("inner", "right")
    if node.how not in allowed:
        raise PlanError(
            f"{node.name}: a {node.how} join would emit the table's unmatched rows again for every "
            f"batch of the stream; use one of {list(allowed)} with the stream on the "
            f"{'left' if left_stream else 'right'}"
        )
    table = get_runtime().execute(table_side, "to_arrow", None).table
    return TableJoinOp(node.name, table, node.on, node.right_keys, node.how, node.suffix,
                       left_stream)  # fmt: skip


# -- decoding ------------------------------------------------------------------------------------


SMALL_BATCH = 256


def decode(source: s.StreamSource, raw: RawBatch) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Messages as one Arrow table, and the indices of those that could not be decoded (with
    why); the table holds the others, in order."""
    if source.format == "raw":
        return pa.table({
            "key": pa.array(raw.keys, pa.binary()),
            "value": pa.array(raw.values, pa.binary()),
            "ts": pa.array(raw.ts, pa.float64()),
        }), []  # fmt: skip
    if source.format == "text":
        bad, good = [], []
        for i, v in enumerate(raw.values):
            try:
                good.append(v.decode())
            except UnicodeDecodeError as err:
                bad.append((i, f"{source.name}: not UTF-8 text: {err}"))
        return pa.table({"value": pa.array(good, pa.string())}), bad
    return _decode_json(source, raw.values)


def _decode_json(source: s.StreamSource, values: list[bytes]
                 ) -> tuple[pa.Table, list[tuple[int, str]]]:  # fmt: skip
    if not values:
        return _empty(source.schema), []
    options = pajson.ParseOptions(
        explicit_schema=source.schema,
        unexpected_field_behavior="ignore" if source.schema else "infer",
    )
    # Arrow's JSON reader costs ~1 ms to start (blocks, threads): small batches — what the
    # continuous trigger sees at a few thousand events/s — parse faster with json.loads.
    blob = b"\n".join(values) if len(values) >= SMALL_BATCH else b""
    if blob and blob.count(b"\n") == len(values) - 1:  # one message, one line
        try:
            return pajson.read_json(io.BytesIO(blob), parse_options=options), []
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass  # find the bad messages one by one below
    rows: list[dict[str, Any]] = []
    bad: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        try:
            row = json.loads(v)
            if not isinstance(row, dict):
                raise ValueError(f"expected a JSON object, got {type(row).__name__}")
            rows.append(row)
        except ValueError as err:
            bad.append((i, f"{source.name}: undecodable message: {err}"))
    if not rows:
        return _empty(source.schema), bad
    if source.schema is None:
        return ops.rows_to_table(rows), bad
    try:  # all at once; one by one only when some row does not fit the schema
        return pa.Table.from_pylist(rows, schema=source.schema), bad
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    good_idx = [i for i in range(len(values)) if i not in {b for b, _ in bad}]
    fitting = []
    for i, row in zip(good_idx, rows, strict=True):
        try:
            pa.Table.from_pylist([row], schema=source.schema)
            fitting.append(row)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            bad.append(
                (i, f"{source.name}: undecodable message (it does not fit the schema): {err}")
            )
    bad.sort()
    return pa.Table.from_pylist(fitting, schema=source.schema), bad


def _empty(schema: pa.Schema | None) -> pa.Table:
    return schema.empty_table() if schema is not None else pa.table({})
