"""The lazy ``Dataset`` API.

Every method returns a new :class:`Dataset` holding one more frozen plan node; nothing runs until an
action (``collect``, ``count``, ``to_pandas``, ``write_parquet``…). Arguments are checked where you
write them: a wrong type, an unknown column (when the schema is known from the source), or a bad
option raises :class:`~riera.errors.PlanError` naming the operator and the likely fix.

>>> import riera
>>> ds = riera.from_items([{"word": w} for w in "a b a c a".split()])
>>> ds.group_by("word").count().sort("count", descending=True).take(1)
[{'word': 'a', 'count': 3}]
"""

from __future__ import annotations

import difflib
import os
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from riera.errors import PlanError
from riera.exec import ops
from riera.exec import physical as ph
from riera.io import readers
from riera.plan import nodes as n
from riera.plan import stages as planner

if TYPE_CHECKING:  # pandas loads lazily: `import riera` stays fast
    import pandas as pd

PathLike = str | os.PathLike[str]
Paths = PathLike | Sequence[PathLike]


def _default_partitions() -> int:
    from riera import runtime

    rt = runtime._runtime
    if rt is not None:
        return rt.settings.workers
    from riera.config import load_settings

    return load_settings().workers


def _names(op: str, value: str | Sequence[str], what: str = "column") -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PlanError(f"{op}: expected a {what} name or a non-empty list of names; got {value!r}")


def _check_template(op: str, template: str, *, whole_list_ok: bool) -> None:
    """Placeholders of an argv template: balanced braces, plain names, ``{inputs}`` alone."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise PlanError(
            f"{op}: bad placeholder in {template!r}: {err}; write a literal brace as {{{{ or }}}}"
        ) from err
    for f in fields:
        if not f.isidentifier():
            raise PlanError(
                f"{op}: placeholder {{{f}}} in {template!r} must be a plain name such as "
                f"{{input}}, {{inputs}}, {{group}}, {{workdir}} or a column; if the braces are "
                f"the program's own (an awk or jq script), double them: {{{{ and }}}}"
            )
        if f == "inputs" and not whole_list_ok:
            raise PlanError(
                f"{op}: {{inputs}} expands to one argument per file, so it must be an argv "
                f"element of its own, not part of {template!r}"
            )


def _positive(op: str, name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PlanError(f"{op}: {name} must be a positive integer; got {value!r}")


class Dataset:
    """A lazy, immutable description of a distributed table. See the module docstring."""

    __slots__ = ("_node",)

    def __init__(self, node: n.Node) -> None:
        self._node = node

    @property
    def node(self) -> n.Node:
        """The plan node this dataset ends with."""
        return self._node

    @property
    def name(self) -> str:
        return self._node.name

    def __repr__(self) -> str:
        cols = self.columns()
        return f"Dataset({self._node.name}" + (f", columns={list(cols)})" if cols else ")")

    # -- schema knowledge (for validation) ----------------------------------------------------
    def columns(self) -> tuple[str, ...] | None:
        """Column names when known without running (sources, select, group_by…); else None."""
        return _known_columns(self._node)

    def _require_columns(self, op: str, cols: Iterable[str]) -> None:
        known = self.columns()
        if known is None:
            return
        for c in cols:
            if c not in known:
                close = difflib.get_close_matches(c, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PlanError(f"{op}: no column {c!r}; the dataset has {list(known)}{hint}")

    # -- row and batch operators --------------------------------------------------------------
    def map(self, fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Dataset:
        """Apply ``fn`` to every row (a dict); it returns the new row (a dict)."""
        n.require_callable("map", fn, "pass a function taking a row dict and returning a dict")
        return Dataset(n.MapRows((self._node,), fn))

    def flat_map(self, fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]]) -> Dataset:
        """Apply ``fn`` to every row; it returns an iterable of zero or more rows."""
        n.require_callable(
            "flat_map", fn, "pass a function taking a row dict and returning a list of dicts"
        )
        return Dataset(n.FlatMapRows((self._node,), fn))

    def filter(self, fn: Callable[[dict[str, Any]], bool]) -> Dataset:
        """Keep the rows for which ``fn(row)`` is true."""
        n.require_callable("filter", fn, "pass a predicate taking a row dict")
        return Dataset(n.FilterRows((self._node,), fn))

    def map_batches(
        self,
        fn: Callable[..., Any],
        *,
        batch_format: Literal["pandas", "pyarrow"] = "pandas",
        batch_size: int | None = None,
        **fn_kwargs: Any,
    ) -> Dataset:
        """Apply ``fn`` to batches of each partition: a pandas DataFrame (numeric columns are
        zero-copy numpy views, strings Arrow-backed) or a pyarrow Table.

        ``batch_size`` caps the rows per call (default: the whole partition); extra keyword
        arguments are passed to ``fn``.

        >>> import riera
        >>> riera.range(4).map_batches(lambda df: df.assign(sq=df["id"] ** 2)).take(2)
        [{'id': 0, 'sq': 0}, {'id': 1, 'sq': 1}]
        """
        n.require_callable("map_batches", fn, "pass a function taking a batch")
        if batch_format not in ("pandas", "pyarrow"):
            raise PlanError(
                f"map_batches: batch_format must be 'pandas' or 'pyarrow'; got {batch_format!r}"
            )
        _positive("map_batches", "batch_size", batch_size)
        return Dataset(
            n.MapBatches(
                (self._node,), fn, batch_format, tuple(sorted(fn_kwargs.items())), batch_size
            )
        )

    def select(self, *columns: str) -> Dataset:
        """Keep only ``columns``, in this order."""
        cols = _names("select", list(columns))
        self._require_columns("select", cols)
        return Dataset(n.Select((self._node,), cols))

    # -- black-box programs and provenance -----------------------------------------------------
    def run_program(
        self,
        argv: Sequence[str] | str | Callable[[dict[str, Any]], Sequence[str]],
        *,
        outputs: str | Sequence[str] = "*",
        timeout: float | None = None,
        shell: bool = False,
        env: Mapping[str, str] | None = None,
        check: bool = True,
        keep_inputs: bool = False,
        stdout: str | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Run an external program once per file group (a row with a ``files`` column).

        Each group's files are staged in a fresh working directory in memory; ``argv`` is the
        command as a list, with placeholders ``{input}`` (the one staged file), ``{inputs}`` (all
        of them, as separate arguments), ``{group}``, ``{workdir}`` or any metadata column —
        never run through a shell unless ``shell=True`` (then ``argv`` is one string and every
        value is quoted). ``argv`` may also be a function of those fields returning the list.

        The files the program creates or changes that match ``outputs`` (glob patterns relative
        to the working directory) become the new group's ``files``; ``stdout="name"`` sends its
        standard output to such a file. The new rows keep the metadata and add ``exit_code``,
        ``seconds``, ``stdout`` and ``stderr``. A non-zero exit fails the task with the command
        and the tail of stderr (``check=False`` keeps the row instead); ``timeout`` (seconds)
        kills the program's process group. ``name`` is the step name files are versioned under
        (default: the program's name). See ``docs/provenance.md``.

        >>> import riera, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (d / "a.txt").write_text("b\\na\\n")
        >>> out = riera.read_file_groups(str(d / "*.txt")).run_program(
        ...     ["sort", "{input}"], stdout="sorted.txt")
        >>> [(r["group"], r["files"][0]["data"]) for r in out.collect()]
        [('a.txt', b'a\\nb\\n')]
        """
        from riera.exec.programs import RESERVED, ProgramSpec

        op = "run_program"
        spec_argv: Any
        if callable(argv) and not isinstance(argv, str):
            if shell:
                raise PlanError(f"{op}: shell=True needs argv as one command string")
            spec_argv = argv
            default_name = n.fn_label(argv)
        elif isinstance(argv, str):
            if not shell:
                raise PlanError(
                    f"{op}: argv is a string ({argv!r}); give a list such as ['sort', '{{input}}'] "
                    f"to run the program directly, or pass shell=True to run the string with "
                    f"/bin/sh (every substituted value is quoted)"
                )
            _check_template(op, argv, whole_list_ok=True)
            spec_argv = argv
            default_name = "sh"
        elif isinstance(argv, Sequence) and argv and all(isinstance(a, str) for a in argv):
            if shell:
                raise PlanError(f"{op}: shell=True needs argv as one string, not a list")
            for token in argv:
                _check_template(op, token, whole_list_ok=token == "{inputs}")
            spec_argv = tuple(argv)
            default_name = os.path.basename(argv[0])
        else:
            raise PlanError(
                f"{op}: argv must be a non-empty list of strings (e.g. ['sort', '{{input}}']), a "
                f"command string with shell=True, or a function; got {argv!r}"
            )
        pats = (outputs,) if isinstance(outputs, str) else tuple(outputs)
        if not pats or not all(isinstance(p, str) and p for p in pats):
            raise PlanError(f"{op}: outputs must be a glob or a list of globs; got {outputs!r}")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0
        ):
            raise PlanError(f"{op}: timeout must be a positive number of seconds; got {timeout!r}")
        env_items: tuple[tuple[str, str], ...] = ()
        if env is not None:
            if not isinstance(env, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()
            ):
                raise PlanError(f"{op}: env must be a dict of str -> str; got {env!r}")
            env_items = tuple(sorted(env.items()))
        if stdout is not None:
            if not isinstance(stdout, str) or not stdout:
                raise PlanError(f"{op}: stdout must be a file name; got {stdout!r}")
            _check_template(op, stdout, whole_list_ok=False)
        step = name if name is not None else re.sub(r"[^A-Za-z0-9._-]+", "_", default_name)
        if not isinstance(step, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", step):
            raise PlanError(
                f"{op}: name must be letters, digits, '.', '_' or '-' (it names a directory of "
                f"versioned files); got {name!r}"
            )
        known = self.columns()
        if known is not None:
            if "files" not in known:
                raise PlanError(
                    f"{op}: the dataset has no 'files' column (it has {list(known)}); start from "
                    f"riera.read_file_groups(...) or a previous run_program"
                )
            clash = [c for c in known if c in RESERVED]
            if clash:
                raise PlanError(f"{op}: column(s) {clash} shadow placeholders; rename them")
        spec = ProgramSpec(spec_argv, pats, timeout, shell, env_items, check, keep_inputs,
                           stdout, step)  # fmt: skip
        return Dataset(n.RunProgram((self._node,), spec))

    def domain(
        self,
        dataset: str,
        attributes: Mapping[str, str],
        extract: Callable[[dict[str, Any]], Any] | None = None,
    ) -> Dataset:
        """Declare domain attributes of this dataset, stored while the run goes on.

        ``attributes`` maps names to ``"int"``, ``"float"``, ``"str"``, ``"bool"``, ``"bytes"`` or
        ``"timestamp"``; they land in the SQL table ``domain_<dataset>`` (with ``run_id``,
        ``element_id``, ``row_no``). ``extract(row)`` returns a dict of attributes, a list of them
        or None; without it the attributes are the columns of the same names. The rows pass
        through unchanged.

        >>> import riera
        >>> ds = riera.from_items([{"k": "a", "v": 0.5}]).domain("scores", {"v": "float"})
        >>> ds.count()
        1
        """
        from riera.provenance.domain import check_declaration

        columns = check_declaration(dataset, attributes)
        if extract is None:
            self._require_columns(f"domain({dataset!r})", [c for c, _ in columns])
        else:
            n.require_callable("domain", extract, "pass a function of a row returning a dict")
        return Dataset(n.Domain((self._node,), dataset, columns, extract))

    def provenance(
        self, enabled: bool = True, *, records: bool = False, sample: float | None = None
    ) -> Dataset:
        """What provenance keeps for the operators computing this dataset (its stage).

        ``provenance(False)``: no data elements, hashes, file versions or domain rows for them
        (runs, stages and tasks are still recorded). ``provenance(records=True)``: also record-level
        lineage — which input rows each output row came from — for a ``sample`` fraction of the
        rows (default all). The ``provenance`` setting ``off`` overrides both.
        """
        if not isinstance(enabled, bool) or not isinstance(records, bool):
            raise PlanError("provenance: enabled and records must be True or False")
        if records and not enabled:
            raise PlanError("provenance: records=True needs enabled=True")
        if sample is not None:
            if not records:
                raise PlanError("provenance: sample applies to records=True")
            if (
                not isinstance(sample, int | float)
                or isinstance(sample, bool)
                or not 0 < sample <= 1
            ):
                raise PlanError(f"provenance: sample must be in (0, 1]; got {sample!r}")
        capture = "off" if not enabled else ("records" if records else "tasks")
        return Dataset(n.ProvenanceMark((self._node,), capture, sample))  # type: ignore[arg-type]

    # -- all-to-all operators -----------------------------------------------------------------
    def group_by(self, keys: str | Sequence[str]) -> GroupedDataset:
        """Group rows by ``keys``; finish with ``.agg(...)``, ``.count()``, ``.sum(col)``…"""
        ks = _names("group_by", keys)
        self._require_columns("group_by", ks)
        return GroupedDataset(self, ks)

    def reduce_by_key(
        self,
        key: str,
        fn: Callable[[Any, Any], Any],
        column: str = "value",
        *,
        partitions: int | None = None,
    ) -> Dataset:
        """Fold ``column`` of rows sharing ``key`` with the associative binary ``fn``."""
        if not isinstance(key, str):
            raise PlanError(
                f"reduce_by_key: key must be one column name (a str); got {key!r}; "
                f"for several keys use group_by(keys).agg(...)"
            )
        n.require_callable("reduce_by_key", fn, "pass an associative function of two values")
        _positive("reduce_by_key", "partitions", partitions)
        self._require_columns("reduce_by_key", [key, column])
        return Dataset(n.ReduceByKey((self._node,), key, fn, column, partitions))

    def sort(
        self,
        by: str | Sequence[str],
        descending: bool | Sequence[bool] = False,
        *,
        partitions: int | None = None,
    ) -> Dataset:
        """Globally sort by ``by`` (sampled range partitioning, then a local sort per partition)."""
        keys = _names("sort", by)
        if isinstance(descending, bool):
            desc = (descending,) * len(keys)
        else:
            desc = tuple(descending)
            if len(desc) != len(keys) or not all(isinstance(d, bool) for d in desc):
                raise PlanError(
                    f"sort: descending must be a bool or one bool per key "
                    f"({len(keys)}); got {descending!r}"
                )
        _positive("sort", "partitions", partitions)
        self._require_columns("sort", keys)
        return Dataset(n.Sort((self._node,), keys, desc, partitions))

    def repartition(self, partitions: int, by: str | Sequence[str] | None = None) -> Dataset:
        """Redistribute rows into ``partitions`` partitions, by hash of ``by`` or evenly."""
        _positive("repartition", "partitions", partitions, allow_none=False)
        keys = _names("repartition", by) if by is not None else ()
        self._require_columns("repartition", keys)
        return Dataset(n.Repartition((self._node,), partitions, keys))

    def join(
        self,
        other: Dataset,
        on: str | Sequence[str],
        how: Literal["inner", "left", "right", "outer", "semi", "anti"] = "inner",
        *,
        partitions: int | None = None,
    ) -> Dataset:
        """Hash join with ``other`` on equal ``on`` columns (SQL semantics: null keys never match).

        ``how``: ``inner``, ``left``, ``right``, ``outer`` (full outer), ``semi`` (rows of this
        dataset with a match, this dataset's columns only) or ``anti`` (rows without a match).
        Non-key columns present on both sides get the suffix ``_right`` on the right side.
        """
        if not isinstance(other, Dataset):
            raise PlanError(
                f"join: other must be a `Dataset`; got {type(other).__name__} instead;"
                f" did you mean riera.from_pandas(...) / riera.from_items(...)?"
            )
        keys = _names("join", on)
        if how not in n.JOIN_TYPES:
            raise PlanError(f"join: how must be one of {list(n.JOIN_TYPES)}; got {how!r}")
        _positive("join", "partitions", partitions)
        self._require_columns("join (left side)", keys)
        other._require_columns("join (right side)", keys)
        return Dataset(n.Join((self._node, other._node), keys, how, partitions))

    def distinct(self, *, partitions: int | None = None) -> Dataset:
        """Unique rows (all columns)."""
        _positive("distinct", "partitions", partitions)
        return Dataset(n.Distinct((self._node,), partitions))

    def union(self, *others: Dataset) -> Dataset:
        """Rows of this dataset followed by those of ``others`` (like SQL UNION ALL)."""
        for o in others:
            if not isinstance(o, Dataset):
                raise PlanError(f"union: arguments must be `Dataset`s; got {type(o).__name__}")
        if not others:
            return self
        return Dataset(n.Union((self._node, *(o._node for o in others))))

    def limit(self, count: int) -> Dataset:
        """The first ``count`` rows (in partition order)."""
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise PlanError(f"limit: count must be a non-negative integer; got {count!r}")
        return Dataset(n.Limit((self._node,), count))

    # -- actions ------------------------------------------------------------------------------
    def _run(self, action: str, root: n.Node | None = None, final_op: Any = None) -> Any:
        from riera.runtime import get_runtime

        return get_runtime().execute(root or self._node, action, final_op)

    def to_arrow(self) -> pa.Table:
        """Run and return the result as one Arrow table.

        Its buffers are zero-copy views of the run's shared-memory segments: the segments'
        names are already released (``riera shm ls`` does not list them), and the memory is
        freed when the table is."""
        table = self._run("to_arrow").table
        assert table is not None
        return table

    def to_pandas(self, *, arrow_dtypes: bool = False) -> pd.DataFrame:
        """Run and return a pandas DataFrame (pandas' default dtypes).

        ``arrow_dtypes=True`` makes every column ``pd.ArrowDtype`` (zero-copy over the result).
        """
        import pandas as pd

        table = self.to_arrow()
        if arrow_dtypes:
            return table.to_pandas(types_mapper=pd.ArrowDtype)
        return table.to_pandas()

    def collect(self) -> list[dict[str, Any]]:
        """Run and return every row as a dict."""
        return self.to_arrow().to_pylist()

    def take(self, count: int = 20) -> list[dict[str, Any]]:
        """Run and return the first ``count`` rows."""
        return self.limit(count).collect()

    def count(self) -> int:
        """Run and return the number of rows."""
        out = self._run("count", final_op=ph.Count(f"count({self._node.name})")).table
        assert out is not None
        return int(sum(out.column("count").to_pylist())) if out.num_rows else 0

    def iter_batches(self, batch_size: int | None = None) -> Iterator[pa.RecordBatch]:
        """Run, then yield the result as record batches of at most ``batch_size`` rows.

        The whole result is computed (and held, zero-copy, in shared memory) before the first
        batch is yielded."""
        yield from self.to_arrow().to_batches(max_chunksize=batch_size)

    def _write(
        self, fmt: n.SinkFormat, path: PathLike, mode: str, **options: Any
    ) -> dict[str, Any]:
        if mode not in ("error", "overwrite"):
            raise PlanError(f"write_{fmt}: mode must be 'error' or 'overwrite'; got {mode!r}")
        node = n.Write(
            (self._node,),
            fmt,
            os.fspath(path),
            mode,  # type: ignore[arg-type]
            tuple(sorted((k, v) for k, v in options.items() if v is not None)),
        )
        manifest: dict[str, Any] = self._run(f"write_{fmt}", root=node).manifest
        return manifest

    def write_csv(self, path: PathLike, *, mode: str = "error") -> dict[str, Any]:
        """Write one CSV file per partition into directory ``path``, committed atomically."""
        return self._write("csv", path, mode)

    def write_parquet(
        self, path: PathLike, *, mode: str = "error", compression: str = "snappy"
    ) -> dict[str, Any]:
        """Write one Parquet file per partition into ``path``, committed atomically."""
        return self._write("parquet", path, mode, compression=compression)

    def write_json(self, path: PathLike, *, mode: str = "error") -> dict[str, Any]:
        """Write JSON lines, one file per partition, committed atomically."""
        return self._write("json", path, mode)

    def write_text(
        self, path: PathLike, *, column: str | None = None, mode: str = "error"
    ) -> dict[str, Any]:
        """Write one line per row of a string column (the only column, or ``column``)."""
        return self._write("text", path, mode, column=column)

    def write_binary(
        self, path: PathLike, *, column: str | None = None, mode: str = "error"
    ) -> dict[str, Any]:
        """Write the raw bytes of a binary column, concatenated, one file per partition."""
        return self._write("binary", path, mode, column=column)

    def explain(self, *, show: bool = True) -> str | None:
        """Print the logical plan and the stages it becomes; ``show=False`` returns the text.

        >>> import riera
        >>> print(riera.range(10).filter(lambda r: r["id"] > 4).explain(show=False))
        ... # doctest: +ELLIPSIS
        Logical plan:
        ...
        """
        from riera.config import load_settings
        from riera.runtime import _runtime

        settings = _runtime.settings if _runtime is not None else load_settings()
        text = planner.explain(self._node, settings)
        if not show:
            return text
        print(text)
        return None


class GroupedDataset:
    """``Dataset.group_by(keys)`` awaiting its aggregations."""

    def __init__(self, ds: Dataset, keys: tuple[str, ...]) -> None:
        self._ds, self._keys = ds, keys

    def agg(self, *, partitions: int | None = None, **aggs: Any) -> Dataset:
        """Named aggregations: ``out=(column, func)``, func one of count, sum, min, max, mean,
        list, or a callable over the list of the group's values.

        Result types follow DuckDB: ``count`` is int64; ``min``/``max`` keep the column's type
        and ``list`` holds it; ``sum`` of ``decimal128(p, s)`` is the exact ``decimal128(38, s)``
        (``decimal256(76, s)`` for decimal256, which DuckDB lacks); ``mean`` of a decimal is a
        float64 (DuckDB's DOUBLE). See ``docs/types.md`` for every type.

        >>> import riera
        >>> ds = riera.from_items([{"k": "a", "v": 1}, {"k": "a", "v": 3}])
        >>> ds.group_by("k").agg(total=("v", "sum"), top=("v", max)).collect()
        [{'k': 'a', 'total': 4, 'top': 3}]
        """
        if not aggs:
            raise PlanError(
                "group_by().agg: give at least one aggregation, e.g. agg(total=('amount', 'sum'))"
            )
        _positive("group_by().agg", "partitions", partitions)
        specs = []
        for out, spec in aggs.items():
            if not (isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str)):
                raise PlanError(
                    f"group_by().agg: {out}= must be a (column, func) tuple; got "
                    f"{spec!r}; e.g. {out}=('amount', 'sum')"
                )
            col, func = spec
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
            if col == "*" and func != "count":
                raise PlanError(f"group_by().agg: '*' only works with 'count' ({out}=)")
            if out in self._keys:
                raise PlanError(f"group_by().agg: output {out!r} clashes with a key column")
            specs.append(n.AggSpec(out, col, func))
        self._ds._require_columns("group_by().agg", [s.column for s in specs if s.column != "*"])
        return Dataset(n.GroupByAgg((self._ds.node,), self._keys, tuple(specs), partitions))

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


def _known_columns(node: n.Node) -> tuple[str, ...] | None:
    if isinstance(node, n.TableSource):
        return tuple(node.table.column_names)
    if isinstance(node, n.RangeSource):
        return (node.column,)
    if isinstance(node, n.FileSource):
        if node.format == "files":
            return ("path", "size", "bytes")
        if node.format == "text":
            if node.option("whole_files") or node.option("include_paths"):
                return ("path", "text")
            return ("text",)
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
        before = _known_columns(node.inputs[0])
        if before is None:
            return None
        added = ("files", "exit_code", "seconds", "stdout", "stderr")
        return (*(c for c in before if c not in added), *added)
    passthrough = (n.FilterRows, n.Sort, n.Repartition, n.Distinct, n.Limit, n.Domain)
    if isinstance(node, (*passthrough, n.ProvenanceMark)):
        return _known_columns(node.inputs[0])
    return None


# -- sources ----------------------------------------------------------------------------------------


def from_arrow(table: pa.Table | pa.RecordBatch, *, partitions: int | None = None) -> Dataset:
    """A dataset over an Arrow table, split into ``partitions`` slices."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise PlanError(f"from_arrow: expected a pyarrow Table; got {type(table).__name__}")
    _positive("from_arrow", "partitions", partitions)
    return Dataset(n.TableSource((), table, partitions or _default_partitions(), "from_arrow"))


def from_pandas(df: pd.DataFrame, *, partitions: int | None = None) -> Dataset:
    """A dataset over a pandas DataFrame (the index is dropped)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise PlanError(f"from_pandas: expected a pandas DataFrame; got {type(df).__name__}")
    _positive("from_pandas", "partitions", partitions)
    table = pa.Table.from_pandas(df, preserve_index=False)
    return Dataset(n.TableSource((), table, partitions or _default_partitions(), "from_pandas"))


def from_items(items: Iterable[Any], *, partitions: int | None = None) -> Dataset:
    """A dataset over Python objects: dicts become rows; other values become ``{"item": value}``."""
    rows = list(items)
    _positive("from_items", "partitions", partitions)
    if rows and not all(isinstance(r, dict) for r in rows):
        if any(isinstance(r, dict) for r in rows):
            raise PlanError("from_items: mix of dicts and non-dicts; give all rows as dicts")
        rows = [{"item": r} for r in rows]
    try:
        table = ops.rows_to_table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise PlanError(f"from_items: the rows cannot form one table: {err}") from err
    return Dataset(n.TableSource((), table, partitions or _default_partitions(), "from_items"))


def range(
    start: int, stop: int | None = None, step: int = 1, *, partitions: int | None = None
) -> Dataset:
    """Integers in column ``id``, like Python's ``range``: ``range(10)`` is 0…9,
    ``range(5, 10)`` is 5…9, ``range(0, 10, 3)`` is 0, 3, 6, 9."""
    if stop is None:
        start, stop = 0, start
    for name, v in (("stop", stop), ("start", start), ("step", step)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise PlanError(f"range: {name} must be an integer; got {v!r}")
    if step < 1:
        raise PlanError(f"range: step must be >= 1; got {step}")
    _positive("range", "partitions", partitions)
    return Dataset(n.RangeSource((), start, stop, step, partitions or _default_partitions()))


def read_text(
    paths: Paths,
    *,
    whole_files: bool = False,
    include_paths: bool = False,
    partition_bytes: int | None = None,
) -> Dataset:
    """Lines of text files (column ``text``), or one row per file (``path``, ``text``).

    Files are split into partitions of about ``partition_bytes`` at line boundaries.
    """
    files = readers.expand_paths(paths, "read_text")
    _positive("read_text", "partition_bytes", partition_bytes)
    opts = (("include_paths", include_paths), ("whole_files", whole_files))
    return Dataset(n.FileSource((), "text", files, None, opts, partition_bytes))


def read_csv(
    paths: Paths,
    *,
    schema: pa.Schema | dict[str, Any] | None = None,
    delimiter: str = ",",
    header: bool = True,
    split: bool = True,
    partition_bytes: int | None = None,
) -> Dataset:
    """CSV files with a header row; column types inferred from the first file unless ``schema``.

    ``split=False`` reads whole files per partition (needed when quoted fields contain newlines).
    """
    files = readers.expand_paths(paths, "read_csv")
    _positive("read_csv", "partition_bytes", partition_bytes)
    opts: dict[str, Any] = {"delimiter": delimiter, "header": header, "split": split}
    names = readers.check_csv_headers(files, opts)
    if schema is not None:
        given: pa.Schema = pa.schema(schema) if isinstance(schema, dict) else schema
        missing = [c for c in given.names if c not in names]
        if missing:
            raise PlanError(
                f"read_csv: schema names columns {missing} that the header "
                f"{names} of {files[0][0]} lacks"
            )
        types = {f.name: f.type for f in given}
        full = pa.schema([(c, types.get(c, pa.string())) for c in names])
    else:
        first = next((p for p, s in files if s > 0), files[0][0])
        full = readers.infer_csv_schema(first, names, opts)
    opts["column_names"] = tuple(names)
    return Dataset(
        n.FileSource((), "csv", files, full, tuple(sorted(opts.items())), partition_bytes)
    )


def read_json(
    paths: Paths, *, schema: pa.Schema | None = None, partition_bytes: int | None = None
) -> Dataset:
    """JSON-lines files (one object per line); types inferred from the first file unless given."""
    files = readers.expand_paths(paths, "read_json")
    _positive("read_json", "partition_bytes", partition_bytes)
    if schema is None:
        first = next((p for p, s in files if s > 0), files[0][0])
        schema = readers.infer_json_schema(first)
    return Dataset(n.FileSource((), "json", files, schema, (), partition_bytes))


def read_parquet(
    paths: Paths, *, columns: Sequence[str] | None = None, partition_bytes: int | None = None
) -> Dataset:
    """Parquet files (same schema), split into partitions by row groups."""
    files = readers.expand_paths(paths, "read_parquet")
    _positive("read_parquet", "partition_bytes", partition_bytes)
    schema = readers.parquet_schema(files)
    if columns is not None:
        cols = _names("read_parquet", list(columns))
        missing = [c for c in cols if c not in schema.names]
        if missing:
            raise PlanError(f"read_parquet: no column(s) {missing}; the files have {schema.names}")
        schema = pa.schema([schema.field(c) for c in cols])
    opts = (("columns", tuple(columns) if columns is not None else None),)
    return Dataset(n.FileSource((), "parquet", files, schema, opts, partition_bytes))


def read_file_groups(
    paths: Paths,
    *,
    by: str | re.Pattern[str] | Callable[[str], str] | None = None,
    names: Literal["basename", "relative"] = "basename",
    metadata: Callable[[str, list[str]], Mapping[str, Any]] | None = None,
    partition_bytes: int | None = None,
) -> Dataset:
    """File groups for :meth:`Dataset.run_program`: one row per group, ``group`` (its key),
    ``files`` (a list of ``{name, data}``) and metadata columns.

    ``by`` chooses the groups: ``None`` (one per file), ``"dir"`` (one per directory),
    ``"stem"`` (files sharing the name up to the first dot: ``s1.R1.fq`` and ``s1.R2.fq``), a
    compiled regular expression over the file name (its ``group`` or first group), or a function
    of the path. File names inside a group are base names (``names="relative"``: paths relative to
    the group's directory). ``metadata(key, paths)`` returns extra columns per group. Whole groups
    go to tasks, at least one task per worker when there are enough groups.

    >>> import riera, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for f in ("s1.R1.fq", "s1.R2.fq", "s2.R1.fq"): _ = (d / f).write_text(f)
    >>> ds = riera.read_file_groups(str(d / "*.fq"), by="stem")
    >>> [(r["group"], [f["name"] for f in r["files"]]) for r in ds.collect()]
    [('s1', ['s1.R1.fq', 's1.R2.fq']), ('s2', ['s2.R1.fq'])]
    """
    from riera.io import filegroups

    files = readers.expand_paths(paths, "read_file_groups")
    _positive("read_file_groups", "partition_bytes", partition_bytes)
    if metadata is not None:
        n.require_callable("read_file_groups", metadata, "pass a function (key, paths) -> dict")
    groups = filegroups.make_groups(files, by, names, metadata)
    return Dataset(n.FileGroupSource((), groups, partition_bytes))


def read_files(paths: Paths, *, partition_bytes: int | None = None) -> Dataset:
    """One row per file: ``path``, ``size``, ``bytes`` (raw content)."""
    files = readers.expand_paths(paths, "read_files")
    _positive("read_files", "partition_bytes", partition_bytes)
    return Dataset(n.FileSource((), "files", files, None, (), partition_bytes))
