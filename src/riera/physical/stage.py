"""Physical stages: what each task of a stage reads, the fused operators it applies, where it writes.

A :class:`Stage` is a reader, a chain of :mod:`~riera.physical.ops`, and a writer. The driver asks
the reader for one small input per task (``reader.task_inputs``: a file split, a list of refs); the
worker calls ``reader.read`` → ops → ``writer.write``. Readers and writers are frozen dataclasses, picklable, so a stage is shipped to each
worker once and tasks only carry their small input.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np
import pyarrow as pa

from riera import taskctx
from riera.errors import SourceError
from riera.exchange.base import Exchange, Ref, SegmentKey
from riera.io import readers, sinks
from riera.physical import hashjoin, joins, ops

# -- readers --------------------------------------------------------------------------------------


class Upstream(Protocol):
    """What a reader needs of a finished upstream task (``riera.exec.worker.TaskResult``)."""

    refs: list[Ref]
    sample: list[Any]
    spans: list[Any] | None


TaskInputs = tuple[list[Any], list[Ref]]
"""One input per task, and the refs the driver stored for them (released after the stage)."""


@dataclass(frozen=True)
class InputContext:
    """What the driver offers a reader computing its stage's task inputs."""

    results: Mapping[str, Sequence[Upstream]]  # finished stages' task results, by stage id
    exchange: Exchange  # where the driver stores inputs of its own (in-memory tables)
    key: SegmentKey  # under which it stores them
    node: Callable[[str], Any]  # a logical plan node by name


@dataclass(frozen=True)
class Element:
    """A piece of data a task reads, as provenance names it: a stored table (``ref``), or
    data from outside the run (a file split, a file of a group, a range of numbers) with a
    stable ``id`` and what is known of it."""

    id: str = ""
    kind: str = ""  # split | file | range (data from outside the run)
    rows: int | None = None
    nbytes: int | None = None
    where: str = ""
    backend: str = ""
    ref: Ref | None = None


def _stored(refs: Sequence[Ref]) -> list[Element]:
    return [Element(ref=r) for r in refs]


@dataclass(frozen=True)
class Reader:
    def describe(self) -> str:
        return type(self).__name__

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        """The input of each task of the stage, computed in the driver once the stages it reads
        have finished."""
        raise NotImplementedError

    def elements(self, task_input: Any) -> list[Element]:
        """What one task's input (as :meth:`task_inputs` made it) reads, side inputs included."""
        if isinstance(task_input, WithSides):
            sides = [ref for _, refs in task_input.sides for ref in refs]
            return self._elements(task_input.input) + _stored(sides)
        return self._elements(task_input)

    def _elements(self, task_input: Any) -> list[Element]:
        raise NotImplementedError

    def read(self, task_input: Any, exchange: Exchange) -> pa.Table:
        raise NotImplementedError

    def batches(self, task_input: Any, exchange: Exchange) -> Iterator[pa.Table] | None:
        """The task's input as consecutive tables whose concatenation is what :meth:`read`
        returns, or None when the reader reads it in one piece."""
        return None


@dataclass(frozen=True)
class FileReader(Reader):
    """``columns``: only these are decoded (the plan reads no others); ``predicate``: a filter
    that follows the read, whose Arrow form lets a Parquet reader skip row groups by their
    statistics (the filter itself still runs after the read, exactly)."""

    format: str
    splits: tuple[readers.Split, ...]
    schema: pa.Schema | None
    options: tuple[tuple[str, Any], ...] = ()
    columns: tuple[str, ...] | None = None
    predicate: Any = None  # riera.expr.Expr

    def describe(self) -> str:
        extra = ""
        if self.columns is not None and self.schema is not None:
            extra += f", {len(self.columns)} of {len(self.schema)} columns"
        if self.predicate is not None:
            extra += f", row groups pruned by {self.predicate!r}"
        return f"read {self.format} ({len(self.splits)} splits{extra})"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        return list(self.splits), []

    def _elements(self, task_input: readers.Split) -> list[Element]:
        size = task_input.end - task_input.start if task_input.end >= 0 else None
        return [Element(f"split:{task_input.describe()}", "split", None, size, task_input.path,
                        "file")]  # fmt: skip

    def read(self, task_input: readers.Split, exchange: Exchange) -> pa.Table:
        with self._naming(task_input):
            return self._read(task_input)

    def batches(self, task_input: readers.Split, exchange: Exchange) -> Iterator[pa.Table] | None:
        if self.format != "parquet":
            return None
        columns = list(self.columns) if self.columns is not None else None
        return self._guarded(
            task_input, readers.iter_parquet_split(task_input, columns, self._arrow_filter())
        )

    def _guarded(self, task_input: readers.Split, it: Iterator[pa.Table]) -> Iterator[pa.Table]:
        with self._naming(task_input):
            yield from it

    @contextlib.contextmanager
    def _naming(self, task_input: readers.Split) -> Iterator[None]:
        """A read error as a SourceError naming the reader and the split."""
        try:
            yield
        except SourceError:
            raise
        except (OSError, pa.ArrowException, UnicodeError, ValueError) as err:
            raise SourceError(
                f"read_{self.format}: cannot read {task_input.describe()}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _read(self, task_input: readers.Split) -> pa.Table:
        opts = dict(self.options)
        if self.format == "text":
            return readers.read_text_split(
                task_input, opts.get("whole_files", False), opts.get("include_paths", False)
            )
        columns = list(self.columns) if self.columns is not None else None
        if self.format == "csv":
            return readers.read_csv_split(
                task_input, list(opts["column_names"]), self.schema, opts, columns
            )
        if self.format == "json":
            table = readers.read_json_split(task_input, self.schema)
            if columns is not None and table.num_columns:
                return table.select([c for c in columns if c in table.column_names])
            return table
        if self.format == "parquet":
            return readers.read_parquet_split(task_input, columns, self._arrow_filter())
        if self.format == "files":
            return readers.read_files_split(task_input)
        raise ValueError(f"unknown format {self.format}")

    def _arrow_filter(self) -> Any:
        """The conjuncts of ``predicate`` Arrow's Parquet scanner can evaluate, or None."""
        if self.predicate is None or self.schema is None:
            return None
        from riera.kernels.evaluate import pushable_conjuncts

        return pushable_conjuncts(self.predicate, self.schema)


@dataclass(frozen=True)
class FileGroupReader(Reader):
    """Whole file groups per task (``riera.read_file_groups``)."""

    tasks: tuple[tuple[Any, ...], ...]  # GroupSpecs per task

    def describe(self) -> str:
        return f"read file groups ({sum(len(t) for t in self.tasks)} groups)"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        return list(self.tasks), []

    def _elements(self, task_input: tuple[Any, ...]) -> list[Element]:
        return [
            Element(f"file:{path}", "file", None, size, path, "file")
            for group in task_input
            for _, path, size in group.files
        ]

    def read(self, task_input: tuple[Any, ...], exchange: Exchange) -> pa.Table:
        from riera.blackbox.filegroups import read_groups

        return read_groups(task_input)


@dataclass(frozen=True)
class RangeReader(Reader):
    ranges: tuple[tuple[int, int], ...]
    step: int
    column: str

    def describe(self) -> str:
        return f"range ({len(self.ranges)} partitions)"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        return list(self.ranges), []

    def _elements(self, task_input: tuple[int, int]) -> list[Element]:
        start, stop = task_input
        return [Element(f"range:{start}-{stop}", "range", stop - start, None, "", "range")]

    def read(self, task_input: tuple[int, int], exchange: Exchange) -> pa.Table:
        start, stop = task_input
        return pa.Table.from_arrays(
            [_int64(np.arange(start, stop, self.step))], names=[self.column]
        )


@dataclass(frozen=True)
class TableReader(Reader):
    """In-memory data the driver placed in the exchange (one ref per partition)."""

    node_name: str
    partitions: int

    def describe(self) -> str:
        return f"in-memory table ({self.partitions} partitions)"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        """The driver stores the table's slices in the exchange: one ref per task."""
        table = ctx.node(self.node_name).table
        refs = ctx.exchange.put_partitioned(ops.split_even(table, self.partitions), ctx.key)
        return list(refs), refs

    def _elements(self, task_input: Ref) -> list[Element]:
        return _stored([task_input])

    def read(self, task_input: Ref, exchange: Exchange) -> pa.Table:
        return exchange.get(task_input)


def coalesced(sizes: Sequence[int], target: int) -> list[list[int]]:
    """Consecutive partition numbers grouped so that each group holds about ``target`` bytes
    (Spark's adaptive coalescing of shuffle partitions): a shuffle planned with one partition
    per upstream task, that turns out to carry little, is read by few tasks. Every partition is
    in exactly one group; ``target <= 0`` keeps one group per partition.

    >>> coalesced([10, 10, 50, 0, 5], 20)
    [[0, 1], [2], [3, 4]]
    """
    if target <= 0:
        return [[i] for i in range(len(sizes))]
    groups: list[list[int]] = []
    held = 0
    for i, size in enumerate(sizes):
        if groups and held + size <= target:
            groups[-1].append(i)
            held += size
        else:
            groups.append([i])
            held = size
    return groups


@dataclass(frozen=True)
class ShuffleReader(Reader):
    """Task ``i`` reads partition ``i`` of every upstream task's output; with ``coalesce`` (bytes,
    for shuffles whose partition count was not asked for), a task reads several consecutive
    partitions when they are small."""

    upstream: str
    partitions: int
    coalesce: int = 0

    def describe(self) -> str:
        extra = ", coalesced when small" if self.coalesce else ""
        return f"exchange read of {self.upstream} ({self.partitions} partitions{extra})"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        up = ctx.results[self.upstream]
        sizes = [sum(res.refs[i].nbytes for res in up) for i in range(self.partitions)]
        return [
            [res.refs[i] for i in group for res in up] for group in coalesced(sizes, self.coalesce)
        ], []

    def _elements(self, task_input: list[Ref]) -> list[Element]:
        return _stored(task_input)

    def read(self, task_input: list[Ref], exchange: Exchange) -> pa.Table:
        return ops.concat([exchange.get(r) for r in task_input])


@dataclass(frozen=True)
class RangeShuffleReader(Reader):
    """Task ``i`` keeps rows of all upstream outputs whose first sort key lies in range ``i``."""

    upstream: str
    partitions: int
    key: str
    descending: bool
    coalesce: int = 0  # bytes per reducer, when the partition count was not asked for

    def describe(self) -> str:
        return f"range-partitioned read of {self.upstream} by {self.key} ({self.partitions})"

    def _reducers(self, up: Sequence[Upstream]) -> int:
        """As many ranges as planned, fewer when the data is small (``coalesce``)."""
        if self.coalesce <= 0:
            return self.partitions
        total = sum(ref.nbytes for res in up for ref in res.refs)
        return max(1, min(self.partitions, -(-total // self.coalesce)))

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        """Range boundaries from the pooled samples of the map side; each reducer gets its
        range and the blocks (or, for a backend that cannot slice in place, only the pieces)
        that overlap it."""
        up = ctx.results[self.upstream]
        partitions = self._reducers(up)
        samples = [s for res in up for s in res.sample]
        bounds = ops.range_boundaries(samples, partitions, self.descending)
        refs = [ref for res in up for ref in res.refs]
        spans = [s for res in up for s in (res.spans or [None] * len(res.refs))]

        def task(lo: Any, hi: Any, last: bool | None) -> tuple[list[Ref], Any, Any, Any]:
            mine = [
                ref
                for ref, span in zip(refs, spans, strict=True)
                if span is None or ops.span_overlaps(span, lo, hi, self.descending, last)
            ]
            return (mine or refs[:1], lo, hi, last)  # one ref at least: the schema

        if not bounds:  # no non-null key sampled: one partition takes every row
            return [task(None, None, True)] + [task(None, None, None)] * (partitions - 1), []
        inputs = []
        for i in range(partitions):
            lo = bounds[i - 1] if i > 0 else None
            hi = bounds[i] if i < partitions - 1 else None
            inputs.append(task(lo, hi, i == partitions - 1))
        return inputs, []

    def _elements(self, task_input: tuple[list[Ref], Any, Any, Any]) -> list[Element]:
        return _stored(task_input[0])

    def read(self, task_input: tuple[list[Ref], Any, Any, bool], exchange: Exchange) -> pa.Table:
        tables, empty = [], None
        for _, t, start, end in self.slices(task_input, exchange):
            if t.num_columns and empty is None:
                empty = t.slice(0, 0)
            if end > start:
                tables.append(t.slice(start, end - start))  # zero-copy
        if not tables:
            return empty if empty is not None else pa.table({})
        return ops.concat(tables)

    def slices(
        self, task_input: tuple[list[Ref], Any, Any, bool], exchange: Exchange
    ) -> list[tuple[int, pa.Table, int, int]]:
        """``(block number, block, start, end)``: the rows of each upstream block in this range
        (blocks are sorted by the key on the map side, so the rows are one slice)."""
        refs, lo, hi, last = task_input  # last=None: this partition receives no rows
        out = []
        for i, r in enumerate(refs):
            t = exchange.get(r)
            if t.num_rows == 0 or self.key not in t.column_names or last is None:
                out.append((i, t, 0, 0))
                continue
            start, end = ops.range_slice(t.column(self.key), lo, hi, self.descending, last)
            out.append((i, t, start, end))
        return out


@dataclass(frozen=True)
class JoinReader(Reader):
    """Both sides of a join partition; ``broadcast_right``: every task reads the whole right
    side beside its own left partition (a cross join)."""

    left: str
    right: str
    partitions: int
    broadcast_right: bool = False
    coalesce: int = 0  # bytes per task, when the partition count was not asked for

    def describe(self) -> str:
        if self.broadcast_right:
            return f"read of {self.left} × all of {self.right} ({self.partitions})"
        return f"co-partitioned read of {self.left} ⋈ {self.right} ({self.partitions})"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        left, right = ctx.results[self.left], ctx.results[self.right]
        if self.broadcast_right:
            everything = [ref for x in right for ref in x.refs]
            return [(list(x.refs), everything) for x in left], []
        sizes = [
            sum(x.refs[i].nbytes for x in left) + sum(x.refs[i].nbytes for x in right)
            for i in range(self.partitions)
        ]
        return [
            ([x.refs[i] for i in group for x in left], [x.refs[i] for i in group for x in right])
            for group in coalesced(sizes, self.coalesce)
        ], []

    def _elements(self, task_input: tuple[list[Ref], list[Ref]]) -> list[Element]:
        return _stored([*task_input[0], *task_input[1]])

    def read(self, task_input: tuple[list[Ref], list[Ref]], exchange: Exchange) -> pa.Table:
        # The join op needs both sides; it receives them through a 2-column wrapper table.
        left = ops.concat([exchange.get(r) for r in task_input[0]])
        right = ops.concat([exchange.get(r) for r in task_input[1]])
        return _Pair(left, right)  # consumed by JoinOp only


class _Pair:
    """Both sides of a join partition, passed from JoinReader to JoinOp."""

    def __init__(self, left: pa.Table, right: pa.Table) -> None:
        self.left, self.right = left, right
        self.num_rows = left.num_rows + right.num_rows
        self.nbytes = left.nbytes + right.nbytes


@dataclass(frozen=True)
class JoinOp(ops.Op):
    on: tuple[str, ...]
    how: str
    right_on: tuple[str, ...] = ()
    suffix: str = "_right"

    def apply(self, table: Any) -> pa.Table:
        return joins.join_tables(
            table.left, table.right, self.on, self.how, self.name,
            right_on=self.right_on or None, suffix=self.suffix,
        )  # fmt: skip


class WithSides(NamedTuple):
    """A task's input and the side inputs every task of its stage reads whole (the refs of a
    broadcast join's small side). A tuple, so observers walking inputs find the side refs."""

    input: Any
    sides: tuple[tuple[str, tuple[Ref, ...]], ...]


@dataclass(frozen=True)
class BroadcastJoinOp(ops.Op):
    """A join against the whole output of stage ``side`` (``broadcast``: the logical side it
    is), applied to each partition of the other side where it stands: that side is never
    shuffled. The small side lives once in shared memory; each worker loads it once and, for
    a unique integer key, indexes it once (:mod:`riera.physical.hashjoin`) for all its tasks."""

    side: str
    broadcast: str  # "left" | "right"
    on: tuple[str, ...]
    how: str
    right_on: tuple[str, ...] = ()
    suffix: str = "_right"

    def apply(self, table: pa.Table) -> pa.Table:
        ctx = taskctx.current_task()
        other = ctx.side(self.side)
        right_on = self.right_on or self.on
        small_keys, big_keys = (
            (self.on, right_on) if self.broadcast == "left" else (right_on, self.on)
        )
        if len(small_keys) == 1 and other.num_columns:
            index = ctx.shared(
                ("join-index", self.name), lambda: hashjoin.Index.build(other, small_keys[0])
            )
            if index is not None:
                out = hashjoin.broadcast_join(
                    table, index, big_keys, small_keys, self.how, self.broadcast, self.name,
                    self.suffix,
                )  # fmt: skip
                if out is not None:
                    return out
        left, right = (other, table) if self.broadcast == "left" else (table, other)
        return joins.join_tables(
            left, right, self.on, self.how, self.name,
            right_on=self.right_on or None, suffix=self.suffix,
        )  # fmt: skip


@dataclass(frozen=True)
class UnionReader(Reader):
    upstreams: tuple[str, ...]

    def describe(self) -> str:
        return f"union of {', '.join(self.upstreams)}"

    def task_inputs(self, ctx: InputContext) -> TaskInputs:
        return [res.refs[0] for up in self.upstreams for res in ctx.results[up]], []

    def _elements(self, task_input: Ref) -> list[Element]:
        return _stored([task_input])

    def read(self, task_input: Ref, exchange: Exchange) -> pa.Table:
        return exchange.get(task_input)


# -- writers --------------------------------------------------------------------------------------


@dataclass
class WriteResult:
    refs: list[Ref] = field(default_factory=list)
    sample: list[Any] = field(default_factory=list)
    part: dict[str, Any] | None = None
    # SampleWriter into a backend that cannot slice in place: per ref (piece of the sorted block),
    # its key span — see ``ops.key_span``.
    spans: list[tuple[Any, Any, bool]] | None = None


@dataclass(frozen=True)
class Writer:
    def describe(self) -> str:
        return type(self).__name__

    def write(
        self, table: pa.Table, exchange: Exchange, key: SegmentKey, index: int
    ) -> WriteResult:
        raise NotImplementedError


@dataclass(frozen=True)
class OneWriter(Writer):
    """The task's whole output as one ref (collect, union inputs, gathers)."""

    def describe(self) -> str:
        return "exchange write"

    def write(
        self, table: pa.Table, exchange: Exchange, key: SegmentKey, index: int
    ) -> WriteResult:
        return WriteResult(refs=[exchange.put(ops.arrowtypes.compact(table), key)])


@dataclass(frozen=True)
class SampleWriter(Writer):
    """The map side of a sort: the block sorted by the first sort key, and its quantiles.

    The driver turns pooled quantiles into range boundaries; because each block is sorted, every
    reducer then takes its range of a block with two binary searches (``ops.range_slice``) instead
    of comparing all of the block's rows — the read stays linear in the data as reducers grow.

    Backends that slice a stored table in place (``zero_copy``: shm, disk) get the block as one
    ref. Others (S3, Redis, pickle) would make every reducer fetch and decode whole blocks — the
    data times the number of reducers — so the sorted block is stored in ``pieces`` contiguous
    pieces with their key spans, and the driver hands each reducer only the pieces overlapping
    its range: about twice the data in all, whatever the number of reducers."""

    key: str
    descending: bool = False
    pieces: int = 1  # at most: the number of reducers
    piece_bytes: int = 1 << 20  # at least (setting sort_piece_bytes): smaller pieces cost more
    # in requests than they save in bytes

    def describe(self) -> str:
        return f"sort by {self.key} + exchange write + quantiles"

    def write(
        self, table: pa.Table, exchange: Exchange, key: SegmentKey, index: int
    ) -> WriteResult:
        if not table.num_columns or self.key not in table.column_names:
            return WriteResult(refs=[exchange.put(table, key)])
        n = self.pieces_for(table, exchange)
        if table.num_rows > 1:
            order = ops.sort_by_first_key(table, self.key, self.descending)
            # Each piece is its own compact table (a slice would drag the whole block's buffers
            # into a pickle); the pieces cut the sorted order as ``ops.split_even`` would.
            bounds = np.linspace(0, table.num_rows, n + 1).astype(np.int64)
            pieces = [ops.take(table, order[a:b]) for a, b in itertools.pairwise(bounds)]
        else:
            pieces = [table]
        sample = ops.sample_sorted(pieces[0] if n == 1 else pa.concat_tables(pieces), self.key)
        if n == 1:
            return WriteResult(refs=[exchange.put(pieces[0], key)], sample=sample)
        return WriteResult(
            refs=exchange.put_partitioned(pieces, key),
            sample=sample,
            spans=[ops.key_span(p.column(self.key)) for p in pieces],
        )

    def pieces_for(self, table: pa.Table, exchange: Exchange) -> int:
        """How many pieces ``table`` is stored in (1 for backends that slice in place)."""
        if getattr(exchange, "zero_copy", False) or table.num_rows < 2:
            return 1
        return max(1, min(self.pieces, table.num_rows, table.nbytes // self.piece_bytes))


@dataclass(frozen=True)
class HashWriter(Writer):
    keys: tuple[str, ...]
    partitions: int

    def describe(self) -> str:
        return f"hash-partition by {','.join(self.keys)} into {self.partitions}"

    def write(
        self, table: pa.Table, exchange: Exchange, key: SegmentKey, index: int
    ) -> WriteResult:
        if table.num_columns == 0:
            return WriteResult(refs=exchange.put_partitioned([table] * self.partitions, key))
        keys = self.keys or tuple(table.column_names)
        ids = ops.hash_partition_ids(table, keys, self.partitions, self.describe())
        return WriteResult(
            refs=exchange.put_partitioned(ops.split_by_ids(table, ids, self.partitions), key)
        )


@dataclass(frozen=True)
class EvenWriter(Writer):
    partitions: int

    def describe(self) -> str:
        return f"split evenly into {self.partitions}"

    def write(
        self, table: pa.Table, exchange: Exchange, key: SegmentKey, index: int
    ) -> WriteResult:
        return WriteResult(
            refs=exchange.put_partitioned(ops.split_even(table, self.partitions), key)
        )


@dataclass(frozen=True)
class FileWriter(Writer):
    format: str
    temp_dir: str
    options: tuple[tuple[str, Any], ...] = ()

    def describe(self) -> str:
        return f"write {self.format} part files (committed at the end)"

    def write(
        self, table: pa.Table, exchange: Exchange, key: SegmentKey, index: int
    ) -> WriteResult:
        if table.num_columns == 0:  # a partition whose producer emitted no rows: no part file
            return WriteResult()
        return WriteResult(
            part=sinks.write_part(table, self.format, self.temp_dir, index, dict(self.options))
        )


# -- stage ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    id: str
    reader: Reader
    ops: tuple[ops.Op, ...]
    writer: Writer
    num_tasks: int
    upstream: tuple[str, ...]
    nodes: tuple[str, ...]
    exchange: str = "shm"  # the backend this run writes to (reads follow each ref's backend)
    capture: str = "tasks"  # provenance of this stage: off | tasks | records
    sample: float | None = None  # records: the fraction of rows whose lineage is kept
    # What observes the tasks (riera.exec.instrument.Instrument; attached by the runtime from
    # ``capture``); None: nothing does.
    instrument: Any = None
    # Stages whose whole output every task reads beside its input (WithSides).
    sides: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return " → ".join(self.nodes) or self.reader.describe()


class Count(ops.Op):
    """Replaces a partition by its row count (for ``Dataset.count``)."""

    def apply(self, table: pa.Table) -> pa.Table:
        return pa.Table.from_arrays([_int64(np.array([table.num_rows]))], names=["count"])


def _int64(values: np.ndarray) -> pa.Array:
    """An int64 array over ``values``' memory. ``pa.array`` would import pandas on first use
    (a fifth of a second): a driver running a small plan in process never needs it."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
