"""The logical plan: frozen nodes recorded by :class:`riera.Dataset` methods.

A plan is data. Each node names itself uniquely and readably (``map(parse)#3``), holds its inputs and
parameters, and is validated when created, so a wrong argument fails on the line that wrote it. Only
the planner (:mod:`riera.physical.planner`) turns nodes into stages; nothing here runs user code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

from riera.errors import PlanError
from riera.expr import Expr


def fn_fingerprint(fn: Any) -> str:
    """Text that identifies a function's code in any process: module, name, and its bytecode
    and constants (so two lambdas doing different things differ, the same one is the same)."""
    target = fn if hasattr(fn, "__code__") else type(fn).__dict__.get("__call__", fn)
    code = getattr(target, "__code__", None)
    parts = [str(getattr(fn, "__module__", "")), fn_label(fn)]
    if code is not None:
        parts += [code.co_code.hex(), repr(_stable(code.co_consts))]
    return "|".join(parts)


def _stable(value: Any) -> Any:
    """A process-independent rendering of a node parameter (no ids, no addresses)."""
    if isinstance(value, Expr):
        return value.key()
    if isinstance(value, Node):
        return value.name
    if isinstance(value, pa.Table):
        return f"table[{value.schema}; {value.num_rows} rows]"
    if isinstance(value, pa.Schema | pa.DataType):
        return str(value)
    if isinstance(value, tuple | list):
        return [_stable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if hasattr(value, "co_code"):  # a nested code object among constants
        return value.co_code.hex()
    if callable(value) and not isinstance(value, type):
        return fn_fingerprint(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _stable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def _holds_callable(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return any(_holds_callable(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_callable(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(_holds_callable(getattr(value, f.name)) for f in dataclasses.fields(value))
    return callable(value) and not isinstance(value, type | Expr)


def fn_label(fn: Callable[..., Any]) -> str:
    """A readable name for a user callable: ``parse`` or ``<lambda>`` or ``Mapper``."""
    name = getattr(fn, "__qualname__", None) or getattr(type(fn), "__qualname__", None) or "fn"
    return str(name).replace("<locals>.", "")


@dataclass(frozen=True, eq=False)
class Node:
    """Base of all plan nodes. Identity equality: two nodes are the same only if they are one
    object.

    The name is the operator's id: ``label#digest``, the digest taken over the node's kind, its
    parameters and its inputs' names — the plan's structure, never a counter — so the same
    pipeline gets the same ids in every run and provenance can compare runs. A user's
    ``name=`` replaces it. Two distinct nodes of one plan with the same structure are told apart
    by the planner (:func:`unique_names`)."""

    inputs: tuple[Node, ...]
    name: str = field(default="", kw_only=True)

    kind = "node"

    def __post_init__(self) -> None:
        if not self.name:
            digest = hashlib.sha1(
                json.dumps(self.identity(), sort_keys=True, default=str).encode()
            ).hexdigest()[:8]
            object.__setattr__(self, "name", f"{self.label()}#{digest}")

    def identity(self) -> Any:
        """What the id is derived from: kind, label, parameters and the inputs' names."""
        params = {
            f.name: _stable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("inputs", "name")
        }
        return [self.kind, self.label(), params, [i.name for i in self.inputs]]

    def label(self) -> str:
        return self.kind

    def params(self) -> dict[str, Any]:
        """Parameters shown by ``explain()`` and stored as prospective provenance."""
        return {}

    def source_bytes(self) -> int:
        """Bytes a source node holds (0 for operators): what the exchange policy sizes by."""
        return 0

    def user_code(self) -> bool:
        """Whether this operator calls code of the user's (a Python function among its
        parameters, an external program): such a run never goes to the driver's own thread."""
        return any(
            _holds_callable(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("inputs", "name")
        )


# -- sources ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class TableSource(Node):
    """In-memory data (from_items / from_pandas / from_arrow), split into ``partitions`` slices."""

    table: pa.Table
    partitions: int
    origin: str = "from_arrow"

    kind = "table"

    def label(self) -> str:
        return self.origin

    def source_bytes(self) -> int:
        return int(self.table.nbytes)

    def params(self) -> dict[str, Any]:
        return {"rows": self.table.num_rows, "partitions": self.partitions}


@dataclass(frozen=True, eq=False)
class RangeSource(Node):
    start: int
    stop: int
    step: int
    partitions: int
    column: str = "id"

    kind = "range"

    def source_bytes(self) -> int:
        return 8 * max(0, (self.stop - self.start) // self.step)

    def params(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "stop": self.stop,
            "step": self.step,
            "partitions": self.partitions,
        }


FileFormat = Literal["text", "csv", "json", "parquet", "files"]


@dataclass(frozen=True, eq=False)
class FileSource(Node):
    """Files read as one dataset; ``files`` is the expanded, sorted list (path, size)."""

    format: FileFormat
    files: tuple[tuple[str, int], ...]
    schema: pa.Schema | None
    options: tuple[tuple[str, Any], ...] = ()
    partition_bytes: int | None = None

    kind = "read"

    def label(self) -> str:
        return f"read_{self.format}"

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.options).get(key, default)

    def source_bytes(self) -> int:
        return sum(size for _, size in self.files)

    def identity(self) -> Any:  # the files' paths, not their sizes (data, not structure)
        return [self.kind, self.label(), [p for p, _ in self.files], _stable(self.options),
                str(self.schema), self.partition_bytes]  # fmt: skip

    def params(self) -> dict[str, Any]:
        total = sum(s for _, s in self.files)
        return {"files": len(self.files), "bytes": total, **dict(self.options)}


@dataclass(frozen=True, eq=False)
class Materialized(Node):
    """The finished output of a stage of the running plan, standing in for the sub-plan that
    computed it when the rest of the plan is planned again with its real size known (the
    planner's adaptive joins). ``partitions``: how many partitions each of its tasks wrote."""

    stage: str
    nbytes: int
    partitions: int
    schema: pa.Schema | None = None
    kind = "materialized"

    def label(self) -> str:
        return f"output of {self.stage}"

    def source_bytes(self) -> int:
        return self.nbytes

    def params(self) -> dict[str, Any]:
        return {"stage": self.stage, "bytes": self.nbytes, "partitions": self.partitions}


@dataclass(frozen=True, eq=False)
class FileGroupSource(Node):
    """File groups (``riera.read_file_groups``): ``groups`` are grouped and named by the driver."""

    groups: tuple[Any, ...]  # riera.blackbox.filegroups.GroupSpec
    partition_bytes: int | None = None

    kind = "read"

    def label(self) -> str:
        return "read_file_groups"

    def source_bytes(self) -> int:
        return sum(g.size for g in self.groups)

    def params(self) -> dict[str, Any]:
        files = sum(len(g.files) for g in self.groups)
        return {
            "groups": len(self.groups),
            "files": files,
            "bytes": sum(g.size for g in self.groups),
        }


# -- narrow operators ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MapRows(Node):
    fn: Callable[[dict[str, Any]], dict[str, Any]]
    schema: pa.Schema | None = None  # declared by the user: the output is conformed to it
    kind = "map"

    def label(self) -> str:
        return f"map({fn_label(self.fn)})"


@dataclass(frozen=True, eq=False)
class FlatMapRows(Node):
    fn: Callable[[dict[str, Any]], Any]
    schema: pa.Schema | None = None
    kind = "flat_map"

    def label(self) -> str:
        return f"flat_map({fn_label(self.fn)})"


@dataclass(frozen=True, eq=False)
class FilterRows(Node):
    fn: Callable[[dict[str, Any]], bool]
    kind = "filter"

    def label(self) -> str:
        return f"filter({fn_label(self.fn)})"


@dataclass(frozen=True, eq=False)
class MapBatches(Node):
    fn: Callable[..., Any]
    batch_format: Literal["pandas", "pyarrow"]
    fn_kwargs: tuple[tuple[str, Any], ...] = ()
    batch_size: int | None = None
    lineage: Literal["none", "one_to_one", "index"] = "none"
    schema: pa.Schema | None = None
    kind = "map_batches"

    def label(self) -> str:
        return f"map_batches({fn_label(self.fn)})"

    def params(self) -> dict[str, Any]:
        return {
            "batch_format": self.batch_format,
            "batch_size": self.batch_size,
            "lineage": self.lineage,
        }


@dataclass(frozen=True, eq=False)
class FilterExpr(Node):
    """``filter(expr)``: the rows where a column expression is true (null counts as false)."""

    predicate: Expr
    kind = "filter"

    def label(self) -> str:
        return "filter"

    def params(self) -> dict[str, Any]:
        return {"predicate": self.predicate}


@dataclass(frozen=True, eq=False)
class Project(Node):
    """``with_columns`` (``keep``: every input column stays, these replace or follow them) or
    ``select`` with expressions (only these columns, in this order)."""

    exprs: tuple[tuple[str, Expr], ...]
    keep: bool
    kind = "project"

    def label(self) -> str:
        return "with_columns" if self.keep else "select"

    def params(self) -> dict[str, Any]:
        return {name: e for name, e in self.exprs}


@dataclass(frozen=True, eq=False)
class Rename(Node):
    mapping: tuple[tuple[str, str], ...]
    kind = "rename"

    def params(self) -> dict[str, Any]:
        return dict(self.mapping)


@dataclass(frozen=True, eq=False)
class Drop(Node):
    columns: tuple[str, ...]
    kind = "drop"

    def params(self) -> dict[str, Any]:
        return {"columns": list(self.columns)}


@dataclass(frozen=True, eq=False)
class Explode(Node):
    """One row per element of a list column (other columns repeated; empty or null lists give a
    row with a null, as in Polars)."""

    column: str
    kind = "explode"

    def label(self) -> str:
        return f"explode({self.column})"


@dataclass(frozen=True, eq=False)
class Select(Node):
    columns: tuple[str, ...]
    kind = "select"

    def params(self) -> dict[str, Any]:
        return {"columns": list(self.columns)}


@dataclass(frozen=True, eq=False)
class RunProgram(Node):
    """A black-box program run once per file group (``Dataset.run_program``)."""

    spec: Any  # riera.blackbox.programs.ProgramSpec
    kind = "program"

    def label(self) -> str:
        return f"program({self.spec.step})"

    def user_code(self) -> bool:
        return True

    def params(self) -> dict[str, Any]:
        return {
            "command": self.spec.display(),
            "outputs": list(self.spec.outputs),
            "timeout": self.spec.timeout,
            "shell": self.spec.shell,
            "check": self.spec.check,
            "stdout": self.spec.stdout,
        }

    @property
    def fn(self) -> Any:  # prospective provenance hashes an argv function's source
        return self.spec.argv if callable(self.spec.argv) else None


@dataclass(frozen=True, eq=False)
class Domain(Node):
    """Domain attributes of a dataset (``Dataset.domain``): typed rows in ``domain_<dataset>``."""

    dataset: str
    columns: tuple[tuple[str, str], ...]  # attribute -> declared type
    fn: Callable[[dict[str, Any]], Any] | None = None
    kind = "domain"

    def label(self) -> str:
        return f"domain({self.dataset})"

    def params(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "attributes": dict(self.columns)}

    @property
    def dataset_name(self) -> str:
        return self.dataset


@dataclass(frozen=True, eq=False)
class ProvenanceMark(Node):
    """``Dataset.provenance(...)``: what is captured for the stage computing this dataset."""

    capture: Literal["off", "tasks", "records"]
    sample: float | None = None
    kind = "provenance"

    def label(self) -> str:
        return f"provenance({self.capture})"

    def params(self) -> dict[str, Any]:
        return {"capture": self.capture, "sample": self.sample}


# -- all-to-all operators -------------------------------------------------------------------------

AGG_FUNCS = ("count", "sum", "min", "max", "mean", "first", "list")


@dataclass(frozen=True)
class AggSpec:
    """One output column of ``group_by().agg``: ``out = func(column)``; func a name or a callable."""

    out: str
    column: str  # "*" for count of rows
    func: str | Callable[[list[Any]], Any]

    def describe(self) -> str:
        f = self.func if isinstance(self.func, str) else fn_label(self.func)
        return f"{self.out}={f}({self.column})"


@dataclass(frozen=True, eq=False)
class GroupByAgg(Node):
    keys: tuple[str, ...]
    aggs: tuple[AggSpec, ...]
    partitions: int | None = None
    kind = "group_by"

    def label(self) -> str:
        return f"group_by({','.join(self.keys)})"

    def params(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "aggs": [a.describe() for a in self.aggs]}


@dataclass(frozen=True, eq=False)
class ReduceByKey(Node):
    key: str
    fn: Callable[[Any, Any], Any]
    column: str
    partitions: int | None = None
    kind = "reduce_by_key"

    def label(self) -> str:
        return f"reduce_by_key({self.key},{fn_label(self.fn)})"

    def params(self) -> dict[str, Any]:
        return {"key": self.key, "column": self.column}


@dataclass(frozen=True, eq=False)
class Sort(Node):
    keys: tuple[str, ...]
    descending: tuple[bool, ...]
    partitions: int | None = None
    kind = "sort"

    def label(self) -> str:
        return f"sort({','.join(self.keys)})"

    def params(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "descending": list(self.descending)}


@dataclass(frozen=True, eq=False)
class Repartition(Node):
    partitions: int
    keys: tuple[str, ...] = ()
    kind = "repartition"

    def params(self) -> dict[str, Any]:
        return {"partitions": self.partitions, "by": list(self.keys)}


JOIN_TYPES = {
    "inner": "inner",
    "left": "left outer",
    "right": "right outer",
    "outer": "full outer",
    "semi": "left semi",
    "anti": "left anti",
    "cross": "cross",
}


@dataclass(frozen=True, eq=False)
class Join(Node):
    """``on``: the left keys; ``right_on``: the right side's (empty: the same names). A cross
    join has no keys."""

    on: tuple[str, ...]
    how: Literal["inner", "left", "right", "outer", "semi", "anti", "cross"]
    partitions: int | None = None
    right_on: tuple[str, ...] = ()
    suffix: str = "_right"
    kind = "join"

    @property
    def right_keys(self) -> tuple[str, ...]:
        return self.right_on or self.on

    def label(self) -> str:
        if self.how == "cross":
            return "join(cross)"
        keys = ",".join(self.on) + (f"={','.join(self.right_on)}" if self.right_on else "")
        return f"join({keys},{self.how})"

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"on": list(self.on), "how": self.how}
        if self.right_on:
            out["right_on"] = list(self.right_on)
        if self.suffix != "_right":
            out["suffix"] = self.suffix
        return out


@dataclass(frozen=True, eq=False)
class Cache(Node):
    """``Dataset.cache()``: computed by the first action that needs it, then kept by the session
    and read by later actions instead of being computed again (until ``unpersist()``)."""

    kind = "cache"


@dataclass(frozen=True, eq=False)
class Distinct(Node):
    partitions: int | None = None
    kind = "distinct"


@dataclass(frozen=True, eq=False)
class Union(Node):
    kind = "union"


@dataclass(frozen=True, eq=False)
class Limit(Node):
    n: int
    kind = "limit"

    def label(self) -> str:
        return f"limit({self.n})"


# -- sinks --------------------------------------------------------------------------------------

SinkFormat = Literal["csv", "parquet", "json", "text", "binary"]


@dataclass(frozen=True, eq=False)
class Write(Node):
    format: SinkFormat
    path: str
    mode: Literal["error", "overwrite"] = "error"
    options: tuple[tuple[str, Any], ...] = ()
    kind = "write"

    def label(self) -> str:
        return f"write_{self.format}"

    def params(self) -> dict[str, Any]:
        return {"path": self.path, "mode": self.mode, **dict(self.options)}


NARROW = (MapRows, FlatMapRows, FilterRows, MapBatches, Select, RunProgram, Domain, ProvenanceMark,
          FilterExpr, Project, Rename, Drop, Explode)  # fmt: skip
SOURCES = (TableSource, RangeSource, FileSource, FileGroupSource)


def unique_names(root: Node) -> Node:
    """``root`` itself when every node reachable from it has its own name; otherwise a copy of
    the plan in which the second, third… distinct node sharing a name (two identical sub-plans
    built separately) is called ``name~2``, ``name~3`` in walk order — deterministic for a
    given pipeline."""
    owners: dict[str, int] = {}
    clash = False
    for node in walk(root):
        if owners.setdefault(node.name, id(node)) != id(node):
            clash = True
    if not clash:
        return root
    copies: dict[int, Node] = {}
    seen: dict[str, int] = {}

    def copy(node: Node) -> Node:
        if id(node) in copies:
            return copies[id(node)]
        inputs = tuple(copy(i) for i in node.inputs)
        count = seen.get(node.name, 0) + 1
        seen[node.name] = count
        name = node.name if count == 1 else f"{node.name}~{count}"
        copies[id(node)] = dataclasses.replace(node, inputs=inputs, name=name)
        return copies[id(node)]

    return copy(root)


def substitute(root: Node, replace: Callable[[Node], Node | None]) -> Node:
    """A copy of the plan in which each node for which ``replace`` gives a node is that node
    (names kept; shared sub-plans stay shared); ``root`` itself when nothing changes."""
    done: dict[int, Node] = {}

    def visit(node: Node) -> Node:
        if id(node) in done:
            return done[id(node)]
        new = replace(node)
        if new is None:
            inputs = tuple(visit(i) for i in node.inputs)
            changed = any(a is not b for a, b in zip(inputs, node.inputs, strict=True))
            new = dataclasses.replace(node, inputs=inputs) if changed else node
        done[id(node)] = new
        return new

    return visit(root)


def source_bytes(root: Node) -> int:
    """Bytes the sources of a plan hold (a lower bound of what its stages exchange)."""
    return sum(node.source_bytes() for node in walk(root))


def user_code(root: Node) -> bool:
    """Whether any operator of the plan calls code of the user's (:meth:`Node.user_code`)."""
    return any(x.user_code() for x in walk(root))


def walk(node: Node) -> list[Node]:
    """All nodes reachable from ``node``, inputs before consumers, each once."""
    seen: dict[int, Node] = {}

    def visit(n: Node) -> None:
        if id(n) in seen:
            return
        for i in n.inputs:
            visit(i)
        seen[id(n)] = n

    visit(node)
    return list(seen.values())


def require_callable(op: str, fn: Any, hint: str) -> None:
    if not callable(fn):
        raise PlanError(
            f"{op}: expected a callable, got {type(fn).__name__} {fn!r} instead; {hint}"
        )
