"""The planner: cuts a logical plan into stages at all-to-all boundaries and fuses narrow operators.

Walking from the sources, consecutive narrow operators (map, filter, flat_map, map_batches, select)
are appended to the open stage's chain — one task applies them all to its partition without
touching the exchange. Each all-to-all operator closes the open stage with a writer and opens a new
one with a matching reader:

- ``group_by().agg``: map-side partial aggregation, hash-partition, final aggregation;
- ``reduce_by_key`` and ``distinct``: local combine, hash-partition, combine again;
- ``sort``: each map block sorted by the first key and written with its quantiles, range boundaries
  from the pooled quantiles (driver), each reducer slices its range out of every block by binary
  search, local sort (the TeraSort recipe);
- ``join``: a small side (by its sources' bytes) is broadcast: written once, read whole by every
  task of the other side, which is never shuffled; otherwise both sides are hash-partitioned on the
  keys into the same number of partitions and joined locally. Such a join is *adaptive* when one
  side may turn out small (its sources are large, but filters and joins shrink data): that side
  runs first, and when its output holds at most ``broadcast_bytes`` the runtime plans the rest
  again with the output as a :class:`~riera.plan.nodes.Materialized` source, which is broadcast
  (:meth:`PhysicalPlan.adapt`) — Spark's adaptive switch to a broadcast join, made before the
  other side is shuffled rather than after;
- ``repartition``: hash (``by=``) or even split; ``union``: materialize each side, concatenate;
- ``limit``: per-partition limit, gather to one partition, limit again.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from riera.config import Settings
from riera.errors import PlanError
from riera.io import readers
from riera.physical import columnar, ops, topk
from riera.physical import stage as ph
from riera.physical.columns import needed_columns
from riera.physical.schema import column_names
from riera.plan import nodes as n


@dataclass
class _Open:
    reader: ph.Reader
    num_tasks: int
    upstream: tuple[str, ...]
    ops: list[ops.Op] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    capture: str | None = None  # set by Dataset.provenance(...) on a node of this stage
    sample: float | None = None
    sides: tuple[str, ...] = ()  # stages every task reads whole (broadcast joins)
    materialized: str | None = None  # reads only the finished output of this stage


@dataclass(frozen=True)
class AdaptiveJoin:
    """A shuffled join one side of which may be broadcast once its real size is known: the
    stage writing that side runs before the other side's."""

    node: str  # the name of the join input that stage computes
    join: str  # the join's name


@dataclass(frozen=True)
class PhysicalPlan:
    stages: tuple[ph.Stage, ...]
    root: n.Node
    # The stage whose partitions, from 0 on, hold the first rows of the answer: a preview
    # (head/take) may stop it early. None: no stage does (a top-k, a sort, an aggregate).
    prefix_stage: str | None = None
    # Stages writing a join side that may be broadcast once finished (by stage id).
    adaptive: dict[str, AdaptiveJoin] = field(default_factory=dict)

    @property
    def final(self) -> ph.Stage:
        return self.stages[-1]

    def adapt(
        self,
        stage: str,
        nbytes: int,
        partitions: int,
        schema: pa.Schema | None,
        settings: Settings,
        **build: Any,
    ) -> PhysicalPlan | None:
        """The plan for what remains once ``stage`` finished with ``nbytes`` of ``schema`` in
        ``partitions`` partitions per task, when that makes one of its adaptive joins a
        broadcast join (else None). The new plan's stages are all still to run; it reads the
        finished stage's output (a :class:`~riera.plan.nodes.Materialized` node), never runs its
        sub-plan again."""
        a = self.adaptive.get(stage)
        if a is None or nbytes > settings.broadcast_bytes:
            return None
        if not any(x.name == a.node for x in n.walk(self.root)):
            return None
        done = n.Materialized((), stage, nbytes, partitions, schema, name=a.node)
        root = n.substitute(self.root, lambda x: done if x.name == a.node else None)
        first = 1 + max(int(s.id.rsplit("-", 1)[1]) for s in self.stages)
        plan = Planner(settings, first_stage=first, **build).build(root)
        return plan if any(stage in s.sides for s in plan.stages) else None


class Planner:
    def __init__(
        self,
        settings: Settings,
        temp_dir: str | None = None,
        exchange: str = "shm",
        final_op: ops.Op | None = None,
        first_stage: int = 1,
    ) -> None:
        self.settings = settings
        self.temp_dir = temp_dir
        self.exchange = exchange
        self.final_op = final_op
        self.first_stage = first_stage
        self.stages: list[ph.Stage] = []
        self._steps: dict[str, int] = {}  # program step names, made unique within the plan
        self._adaptive: dict[str, AdaptiveJoin] = {}

    def build(self, root: n.Node) -> PhysicalPlan:
        final_op = self.final_op
        root = n.unique_names(root)
        self._needed = needed_columns(root)
        self._prefix: dict[int, str] = {}  # Limit node -> the stage its rows come from in order
        if isinstance(root, n.Write):
            if self.temp_dir is None:
                raise PlanError("internal: a write plan needs its temporary directory")
            op = self._open(root.inputs[0])
            op.nodes.append(root.name)
            self._close(op, ph.FileWriter(root.format, self.temp_dir, root.options))
        else:
            op = self._open(root)
            if final_op is not None:
                op.ops.append(final_op)
            self._close(op, ph.OneWriter())
        return PhysicalPlan(
            tuple(self.stages), root, self._prefix.get(id(root)), dict(self._adaptive)
        )

    # -- helpers ---------------------------------------------------------------------------------
    def _close(self, op: _Open, writer: ph.Writer) -> str:
        sid = f"stage-{self.first_stage + len(self.stages)}"
        default = self.settings.provenance
        capture = "off" if default == "off" else (op.capture or default)
        self.stages.append(
            ph.Stage(
                sid,
                op.reader,
                tuple(op.ops),
                writer,
                op.num_tasks,
                op.upstream,
                tuple(op.nodes),
                self.exchange,
                capture,
                op.sample,
                sides=op.sides,
            )
        )
        return sid

    def _partitions(self, requested: int | None, *upstream_tasks: int) -> int:
        return requested or max(self.settings.workers, *upstream_tasks)

    def _coalesce(self, requested: int | None) -> int:
        """Bytes per task a shuffle's readers aim at when its partition count was not asked for
        (small partitions are read together: ``stage.coalesced``); 0 keeps the count."""
        return 0 if requested else self.settings.partition_bytes

    # -- the recursion ---------------------------------------------------------------------------
    def _open(self, node: n.Node) -> _Open:
        method = getattr(self, f"_plan_{type(node).__name__}", None)
        if method is None:
            raise PlanError(f"{node.name}: no planner rule for {type(node).__name__}")
        result: _Open = method(node)
        return result

    def _narrow(self, node: n.Node, op: ops.Op) -> _Open:
        o = self._open(node.inputs[0])
        o.ops.append(op)
        o.nodes.append(node.name)
        return o

    # sources
    def _plan_TableSource(self, node: n.TableSource) -> _Open:
        return _Open(
            ph.TableReader(node.name, node.partitions), node.partitions, (), nodes=[node.name]
        )

    def _plan_Materialized(self, node: n.Materialized) -> _Open:
        reader = ph.ShuffleReader(node.stage, node.partitions, self.settings.partition_bytes)
        return _Open(
            reader, node.partitions, (node.stage,), nodes=[node.name], materialized=node.stage
        )

    def _plan_RangeSource(self, node: n.RangeSource) -> _Open:
        count = max(0, -(-(node.stop - node.start) // node.step))
        parts = max(1, min(node.partitions, count or 1))
        bounds = [node.start + node.step * ((count * i) // parts) for i in range(parts + 1)]
        ranges = tuple(itertools.pairwise(bounds))
        return _Open(ph.RangeReader(ranges, node.step, node.column), parts, (), nodes=[node.name])

    def _plan_FileSource(self, node: n.FileSource) -> _Open:
        # Like Spark's maxSplitBytes: at most partition_bytes, but small inputs still give every
        # worker a share (never below 1 MiB, where task overhead would dominate); and a whole
        # number of waves, so 5 partitions on 2 workers do not leave one idle in the last wave.
        total = sum(size for _, size in node.files)
        workers = self.settings.workers
        target = node.partition_bytes
        if target is None:
            target = max(2**20, min(self.settings.partition_bytes, _ceil_div(total, workers)))
            waves = _ceil_div(_ceil_div(total, target), workers)
            target = max(2**20, _ceil_div(total, waves * workers))
        opts = dict(node.options)
        if node.format == "parquet":
            splits = readers.parquet_splits(node.files, target)
        elif node.format == "files" or opts.get("whole_files") or opts.get("split") is False:
            splits = readers.file_groups(node.files, target)
        else:
            splits = readers.byte_splits(node.files, target)
        columns = None
        needed = self._needed.get(id(node))
        if needed is not None and node.schema is not None and node.format != "text":
            available = node.option("columns") or node.schema.names
            columns = tuple(c for c in available if c in needed)
        elif node.option("columns"):
            columns = tuple(node.option("columns"))
        return _Open(
            ph.FileReader(node.format, tuple(splits), node.schema, node.options, columns),
            len(splits),
            (),
            nodes=[node.name],
        )

    def _plan_FileGroupSource(self, node: n.FileGroupSource) -> _Open:
        from riera.blackbox import filegroups

        total = sum(g.size for g in node.groups)
        target = node.partition_bytes or max(
            2**20, min(self.settings.partition_bytes, _ceil_div(total, self.settings.workers))
        )
        tasks = filegroups.split_groups(node.groups, target, self.settings.workers)
        return _Open(ph.FileGroupReader(tuple(tasks)), len(tasks), (), nodes=[node.name])

    # narrow
    def _plan_RunProgram(self, node: n.RunProgram) -> _Open:
        from riera.blackbox.programs import RunProgramOp, default_staging_dir

        step = node.spec.step
        seen = self._steps.get(step, 0)
        self._steps[step] = seen + 1
        spec = dataclasses.replace(node.spec, step=f"{step}-{seen + 1}" if seen else step)
        staging = str(self.settings.staging_dir or default_staging_dir())
        return self._narrow(node, RunProgramOp(node.name, spec, staging))

    def _plan_Domain(self, node: n.Domain) -> _Open:
        from riera.physical.domain import DomainOp

        return self._narrow(node, DomainOp(node.name, node.dataset, node.columns, node.fn))

    def _plan_Cache(self, node: n.Cache) -> _Open:  # not yet computed (explain): its input
        o = self._open(node.inputs[0])
        o.nodes.append(node.name)
        return o

    def _plan_ProvenanceMark(self, node: n.ProvenanceMark) -> _Open:
        o = self._open(node.inputs[0])
        o.capture, o.sample = node.capture, node.sample
        o.nodes.append(node.name)
        return o

    def _conformed(self, node: n.Node, op: ops.Op, schema: pa.Schema | None) -> _Open:
        o = self._narrow(node, op)
        if schema is not None:  # a declared output schema: names and types made to match
            o.ops.append(columnar.ConformOp(node.name, schema))
        return o

    def _plan_MapRows(self, node: n.MapRows) -> _Open:
        return self._conformed(node, ops.MapOp(node.name, node.fn), node.schema)

    def _plan_FlatMapRows(self, node: n.FlatMapRows) -> _Open:
        return self._conformed(node, ops.FlatMapOp(node.name, node.fn), node.schema)

    def _plan_FilterExpr(self, node: n.FilterExpr) -> _Open:
        o = self._narrow(node, columnar.FilterExprOp(node.name, node.predicate))
        # Filters straight after a Parquet read also tell the reader which row groups their
        # statistics rule out (the filters still run, exactly, after the read).
        r = o.reader
        filters = [op for op in o.ops if isinstance(op, columnar.FilterExprOp)]
        if isinstance(r, ph.FileReader) and r.format == "parquet" and len(filters) == len(o.ops):
            predicate = filters[0].predicate
            for f in filters[1:]:
                predicate = predicate & f.predicate
            o.reader = dataclasses.replace(r, predicate=predicate)
        return o

    def _plan_Project(self, node: n.Project) -> _Open:
        return self._narrow(node, columnar.ProjectOp(node.name, node.exprs, node.keep))

    def _plan_Rename(self, node: n.Rename) -> _Open:
        return self._narrow(node, columnar.RenameOp(node.name, node.mapping))

    def _plan_Drop(self, node: n.Drop) -> _Open:
        return self._narrow(node, columnar.DropOp(node.name, node.columns))

    def _plan_Explode(self, node: n.Explode) -> _Open:
        return self._narrow(node, columnar.ExplodeOp(node.name, node.column))

    def _plan_FilterRows(self, node: n.FilterRows) -> _Open:
        return self._narrow(node, ops.FilterOp(node.name, node.fn))

    def _plan_MapBatches(self, node: n.MapBatches) -> _Open:
        return self._conformed(
            node,
            ops.MapBatchesOp(
                node.name,
                node.fn,
                node.batch_format,
                node.fn_kwargs,
                node.batch_size,
                node.lineage,
            ),
            node.schema,
        )

    def _plan_Select(self, node: n.Select) -> _Open:
        return self._narrow(node, ops.SelectOp(node.name, node.columns))

    # all-to-all
    def _plan_GroupByAgg(self, node: n.GroupByAgg) -> _Open:
        up = self._open(node.inputs[0])
        up.ops.append(ops.PartialAggOp(f"{node.name} (partial)", node.keys, node.aggs))
        up.nodes.append(f"{node.name} (partial)")
        parts = self._partitions(node.partitions, up.num_tasks)
        sid = self._close(up, ph.HashWriter(node.keys, parts))
        return _Open(
            ph.ShuffleReader(sid, parts, self._coalesce(node.partitions)),
            parts,
            (sid,),
            [ops.FinalAggOp(node.name, node.keys, node.aggs)],
            [node.name],
        )

    def _plan_ReduceByKey(self, node: n.ReduceByKey) -> _Open:
        up = self._open(node.inputs[0])
        up.ops.append(ops.ReduceByKeyOp(f"{node.name} (combine)", node.key, node.column, node.fn))
        up.nodes.append(f"{node.name} (combine)")
        parts = self._partitions(node.partitions, up.num_tasks)
        sid = self._close(up, ph.HashWriter((node.key,), parts))
        return _Open(
            ph.ShuffleReader(sid, parts, self._coalesce(node.partitions)),
            parts,
            (sid,),
            [ops.ReduceByKeyOp(node.name, node.key, node.column, node.fn)],
            [node.name],
        )

    def _plan_Distinct(self, node: n.Distinct) -> _Open:
        up = self._open(node.inputs[0])
        up.ops.append(ops.DistinctOp(f"{node.name} (local)"))
        up.nodes.append(f"{node.name} (local)")
        parts = self._partitions(node.partitions, up.num_tasks)
        sid = self._close(up, ph.HashWriter((), parts))
        return _Open(
            ph.ShuffleReader(sid, parts, self._coalesce(node.partitions)),
            parts,
            (sid,),
            [ops.DistinctOp(node.name)],
            [node.name],
        )

    def _plan_Sort(self, node: n.Sort) -> _Open:
        up = self._open(node.inputs[0])
        parts = self._partitions(node.partitions, up.num_tasks)
        sid = self._close(
            up,
            ph.SampleWriter(
                node.keys[0], node.descending[0], parts, self.settings.sort_piece_bytes
            ),
        )
        reader = ph.RangeShuffleReader(
            sid, parts, node.keys[0], node.descending[0], self._coalesce(node.partitions)
        )
        return _Open(
            reader, parts, (sid,), [ops.SortOp(node.name, node.keys, node.descending)], [node.name]
        )

    def _plan_Repartition(self, node: n.Repartition) -> _Open:
        up = self._open(node.inputs[0])
        writer: ph.Writer = (
            ph.HashWriter(node.keys, node.partitions)
            if node.keys
            else ph.EvenWriter(node.partitions)
        )
        sid = self._close(up, writer)
        return _Open(
            ph.ShuffleReader(sid, node.partitions), node.partitions, (sid,), nodes=[node.name]
        )

    def _pruned(self, node: n.Node) -> _Open:
        """``node`` opened, its output cut down to the columns its consumers read: a filter's
        or an earlier join's columns are not written to the exchange (or broadcast) for
        nothing."""
        o = self._open(node)
        if o.materialized is not None:
            return o  # a finished stage's output holds what was used already
        needed = self._needed.get(id(node))
        names = column_names(node)
        if needed is not None and names is not None and not set(names) <= needed:
            keep = tuple(c for c in names if c in needed)
            o.ops.append(ops.SelectOp(f"{node.name} (columns used)", keep))
        return o

    def _plan_Join(self, node: n.Join) -> _Open:
        left = self._pruned(node.inputs[0])
        right = self._pruned(node.inputs[1])
        op = ph.JoinOp(node.name, node.on, node.how, node.right_keys, node.suffix)
        if node.how == "cross":  # each left partition meets the whole right side
            lid = self._close(left, ph.OneWriter())
            rid = self._close(right, ph.OneWriter())
            reader = ph.JoinReader(lid, rid, left.num_tasks, broadcast_right=True)
            return _Open(reader, left.num_tasks, (lid, rid), [op], [node.name])
        small = None if node.partitions else self._broadcast_side(node, left, right)
        if small is not None:
            stream, side = (right, left) if small == "left" else (left, right)
            if side.materialized is not None and not side.ops:
                sid = side.materialized  # a finished stage's output: read it where it is
            else:
                sid = self._close(side, ph.OneWriter())
            label = f"{node.name} (broadcast {small})"
            stream.ops.append(
                ph.BroadcastJoinOp(
                    label, sid, small, node.on, node.how, node.right_keys, node.suffix
                )
            )
            stream.nodes.append(label)
            stream.upstream = (*stream.upstream, sid)
            stream.sides = (*stream.sides, sid)
            return stream
        parts = self._partitions(node.partitions, left.num_tasks, right.num_tasks)
        maybe = None if node.partitions else self._adaptive_side(node)
        if maybe == "right":  # the side that may turn out small runs first
            rid = self._close(right, ph.HashWriter(node.right_keys, parts))
            lid = self._close(left, ph.HashWriter(node.on, parts))
            self._adaptive[rid] = AdaptiveJoin(node.inputs[1].name, node.name)
        else:
            lid = self._close(left, ph.HashWriter(node.on, parts))
            rid = self._close(right, ph.HashWriter(node.right_keys, parts))
            if maybe == "left":
                self._adaptive[lid] = AdaptiveJoin(node.inputs[0].name, node.name)
        reader = ph.JoinReader(lid, rid, parts, coalesce=self._coalesce(node.partitions))
        return _Open(reader, parts, (lid, rid), [op], [node.name])

    def _adaptive_side(self, node: n.Join) -> str | None:
        """The side of a shuffled join to size before the other runs (the one whose sources
        hold fewer bytes, among those a broadcast may replace), or None."""
        if not self._may_broadcast():
            return None
        allowed = _BROADCASTABLE.get(node.how, ())
        sizes = {"left": n.source_bytes(node.inputs[0]), "right": n.source_bytes(node.inputs[1])}
        return min(allowed, key=lambda side: sizes[side], default=None)

    def _may_broadcast(self) -> bool:
        """Broadcasting is on (``broadcast_bytes``), and the run records no row lineage, which
        follows shuffled joins only."""
        return self.settings.broadcast_bytes > 0 and self.settings.provenance != "records"

    def _broadcast_side(self, node: n.Join, left: _Open, right: _Open) -> str | None:
        """Which side to broadcast, if any: a side whose sources hold at most
        ``broadcast_bytes``, at most half the other, and so much smaller that every worker of the
        other side loading it costs less than shuffling both (Spark's broadcast hash join, sized by
        source bytes: the planner knows no row counts, until a side is materialized)."""
        if not self._may_broadcast():
            return None
        cap = self.settings.broadcast_bytes
        sizes = {"left": n.source_bytes(node.inputs[0]), "right": n.source_bytes(node.inputs[1])}
        tasks = {"left": left.num_tasks, "right": right.num_tasks}
        allowed = _BROADCASTABLE.get(node.how, ())
        best = None
        for small in allowed:
            big = "right" if small == "left" else "left"
            # Each worker loads (and for a unique integer key, indexes) the small side once.
            per = max(2, min(tasks[big] - 1, self.settings.workers))
            fits = sizes[small] <= cap and sizes[small] * per <= sizes[big]  # at most half
            if fits and (best is None or sizes[small] < sizes[best]):
                best = small
        return best

    def _plan_Union(self, node: n.Union) -> _Open:
        ids, total = [], 0
        for child in node.inputs:
            o = self._open(child)
            total += o.num_tasks
            ids.append(self._close(o, ph.OneWriter()))
        return _Open(ph.UnionReader(tuple(ids)), total, tuple(ids), nodes=[node.name])

    def _plan_Limit(self, node: n.Limit) -> _Open:
        child = node.inputs[0]
        if isinstance(child, n.Sort) and node.n <= 1_000_000:  # top-k: no global sort
            up = self._open(child.inputs[0])
            local = f"{child.name} (top {node.n}, local)"
            up.ops.append(topk.TopKOp(local, child.keys, child.descending, node.n))
            up.nodes.append(local)
            sid = self._close(up, ph.OneWriter())
            final = topk.TopKOp(
                f"{child.name} (top {node.n})", child.keys, child.descending, node.n
            )
            return _Open(
                ph.ShuffleReader(sid, 1), 1, (sid,), [final, ops.LimitOp(node.name, node.n)],
                [final.name, node.name],
            )  # fmt: skip
        up = self._open(node.inputs[0])
        up.ops.append(ops.LimitOp(f"{node.name} (local)", node.n))
        up.nodes.append(f"{node.name} (local)")
        sid = self._close(up, ph.OneWriter())
        self._prefix[id(node)] = sid
        return _Open(
            ph.ShuffleReader(sid, 1), 1, (sid,), [ops.LimitOp(node.name, node.n)], [node.name]
        )


# The sides a join of each kind may broadcast (the other side keeps all its rows or is streamed).
_BROADCASTABLE = {"inner": ("left", "right"), "left": ("right",), "semi": ("right",),
                  "anti": ("right",), "right": ("left",)}  # fmt: skip


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def build(
    root: n.Node,
    settings: Settings,
    *,
    temp_dir: str | None = None,
    final_op: ops.Op | None = None,
    exchange: str = "shm",
) -> PhysicalPlan:
    """Stages for ``root`` in execution order (every stage after the stages it reads)."""
    return Planner(settings, temp_dir, exchange, final_op).build(root)


def explain(root: n.Node, settings: Settings) -> str:
    """The logical plan as a tree, then the stages it becomes."""
    lines = ["Logical plan:"]

    def tree(node: n.Node, depth: int) -> None:
        params = ", ".join(f"{k}={_short(v)}" for k, v in node.params().items())
        lines.append(f"{'  ' * (depth + 1)}{node.name}" + (f"  [{params}]" if params else ""))
        for child in node.inputs:
            tree(child, depth + 1)

    tree(root, 0)
    temp = "<output>/_temporary/<run>" if isinstance(root, n.Write) else None
    plan = build(root, settings, temp_dir=temp)
    lines.append("")
    lines.append(f"Physical plan: {len(plan.stages)} stage(s)")
    for s in plan.stages:
        up = f" (after {', '.join(s.upstream)})" if s.upstream else ""
        lines.append(f"  {s.id}: {s.num_tasks} task(s){up}")
        lines.append(f"    read:  {s.reader.describe()}")
        for o in s.ops:
            lines.append(f"    apply: {o.name}")
        lines.append(f"    write: {s.writer.describe()}")
        if s.id in plan.adaptive:
            lines.append(
                f"    then:  if it holds at most broadcast_bytes, broadcast it to the other "
                f"side of {plan.adaptive[s.id].join} (planned again, adaptively)"
            )
    return "\n".join(lines)


def plan_json(root: n.Node) -> dict[str, Any]:
    """The logical plan as JSON-able data (for provenance and the dashboard)."""
    return {
        "root": root.name,
        "nodes": [
            {
                "name": node.name,
                "kind": node.kind,
                "inputs": [i.name for i in node.inputs],
                "params": {k: _short(v) for k, v in node.params().items()},
            }
            for node in n.walk(root)
        ],
    }


def _short(v: Any) -> Any:
    if isinstance(v, int | float | bool | str) or v is None:
        return v
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."
