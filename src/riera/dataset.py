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

import dataclasses
import difflib
import os
import re
import string
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import pyarrow as pa

from riera.actions import Actions
from riera.errors import PlanError
from riera.expr import Expr, col, to_type
from riera.expr import named as named_exprs
from riera.grouped import GroupedDataset
from riera.kernels import arrowtypes
from riera.physical import schema as plan_schema
from riera.physical.schema import column_names, schema_of
from riera.plan import nodes as n
from riera.streaming import StreamMethods

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


SchemaLike: TypeAlias = pa.Schema | Mapping[str, Any]


def _schema(op: str, schema: SchemaLike | None) -> pa.Schema | None:
    """A declared output schema: a ``pa.Schema`` or ``{name: type}`` (types as for cast)."""
    if schema is None or isinstance(schema, pa.Schema):
        return schema
    if isinstance(schema, Mapping) and schema:
        return pa.schema([(str(k), to_type(v, f"{op}: schema")) for k, v in schema.items()])
    raise PlanError(
        f"{op}: schema must be a pyarrow Schema or a dict of name -> type; got {schema!r}"
    )


def _accepts(t: pa.DataType, value: Any) -> bool:
    """Whether a column of type ``t`` takes ``value`` as a fill (numbers for numbers…)."""
    if isinstance(value, bool):
        return pa.types.is_boolean(t)
    if isinstance(value, int | float):
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
    if isinstance(value, str):
        return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
    return False


def _positive(op: str, name: str, value: Any, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise PlanError(f"{op}: {name} must be a positive integer; got {value!r}")


class Dataset(Actions, StreamMethods):
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
    @property
    def schema(self) -> pa.Schema | None:
        """Column names and Arrow types, known through the plan without running it; None after
        a Python function that did not declare its output (``map(fn, schema=...)``).

        >>> import riera
        >>> from riera import col
        >>> riera.range(3).with_columns(half=col("id") / 2).schema
        id: int64
        half: double
        """
        return schema_of(self._node)

    def columns(self) -> tuple[str, ...] | None:
        """Column names when known without running (sources, select, group_by…); else None."""
        return column_names(self._node)

    def _require_columns(self, op: str, cols: Iterable[str]) -> None:
        known = self.columns()
        if known is None:
            return
        for c in cols:
            if c not in known:
                close = difflib.get_close_matches(c, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise PlanError(f"{op}: no column {c!r}; the dataset has {list(known)}{hint}")

    def _checked(self, node: n.Node, op: str, exprs: Iterable[Expr] = ()) -> Dataset:
        """``node`` as a dataset, once its columns exist and its kernels accept the types."""
        for e in exprs:
            self._require_columns(op, sorted(e.columns()))
        plan_schema.check(node, op)
        return Dataset(node)

    def named(self, name: str) -> Dataset:
        """The same dataset, its last operator called ``name`` (instead of the id derived from
        the plan's structure) in ``explain()``, errors, progress and provenance.

        >>> import riera
        >>> riera.range(3).map(lambda r: r).named("identity").name
        'identity'
        """
        if not isinstance(name, str) or not re.fullmatch(r"[^\s#~][^#~]*", name):
            raise PlanError(f"named: expected a non-empty name without '#' or '~'; got {name!r}")
        return Dataset(dataclasses.replace(self._node, name=name))

    def _maybe_named(self, name: str | None) -> Dataset:
        return self if name is None else self.named(name)

    # -- row and batch operators --------------------------------------------------------------
    def map(
        self,
        fn: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        schema: SchemaLike | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Apply ``fn`` to every row (a dict); it returns the new row (a dict).

        ``schema`` declares the output (names and types): the plan knows it, and each row's
        result is made to match (a missing column or a value that does not convert fails,
        naming the operator)."""
        n.require_callable("map", fn, "pass a function taking a row dict and returning a dict")
        return Dataset(n.MapRows((self._node,), fn, _schema("map", schema)))._maybe_named(name)

    def flat_map(
        self,
        fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]],
        *,
        schema: SchemaLike | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Apply ``fn`` to every row; it returns an iterable of zero or more rows."""
        n.require_callable(
            "flat_map", fn, "pass a function taking a row dict and returning a list of dicts"
        )
        node = n.FlatMapRows((self._node,), fn, _schema("flat_map", schema))
        return Dataset(node)._maybe_named(name)

    def filter(
        self, predicate: Expr | Callable[[dict[str, Any]], bool], *, name: str | None = None
    ) -> Dataset:
        """Keep the rows where ``predicate`` holds: a column expression (vectorized; a null
        counts as false), or a Python function of a row dict (the escape hatch).

        >>> import riera
        >>> from riera import col
        >>> riera.range(10).filter((col("id") % 3 == 0) & (col("id") > 0)).count()
        3
        """
        if isinstance(predicate, Expr):
            node: n.Node = n.FilterExpr((self._node,), predicate)
            return self._checked(node, "filter", [predicate])._maybe_named(name)
        n.require_callable(
            "filter", predicate, "pass an expression such as col('x') > 0, or a function of a row"
        )
        return Dataset(n.FilterRows((self._node,), predicate))._maybe_named(name)

    def with_columns(self, *exprs: Expr | str, **named: Any) -> Dataset:
        """Add or replace columns computed by expressions (``name=expr``, or positional
        expressions named by their alias); the other columns stay as they are.

        >>> import riera
        >>> from riera import col, when
        >>> riera.range(3).with_columns(
        ...     sign=when(col("id") > 0).then("pos").otherwise("zero"), twice=col("id") * 2
        ... ).take(2)
        [{'id': 0, 'sign': 'zero', 'twice': 0}, {'id': 1, 'sign': 'pos', 'twice': 2}]
        """
        pairs = named_exprs("with_columns", exprs, named)
        if not pairs:
            return self
        node = n.Project((self._node,), pairs, keep=True)
        return self._checked(node, "with_columns", [e for _, e in pairs])

    def select(self, *columns: str | Expr, **named: Any) -> Dataset:
        """Keep only these columns, in this order: names, or expressions (``total=col("a") +
        col("b")`` or aliased positionals)."""
        if not named and columns and all(isinstance(c, str) for c in columns):
            cols = _names("select", list(columns))  # type: ignore[arg-type]
            self._require_columns("select", cols)
            return Dataset(n.Select((self._node,), cols))
        pairs = named_exprs("select", columns, named)
        if not pairs:
            raise PlanError("select: name at least one column or expression")
        node = n.Project((self._node,), pairs, keep=False)
        return self._checked(node, "select", [e for _, e in pairs])

    def rename(self, mapping: Mapping[str, str] | None = None, **names: str) -> Dataset:
        """Rename columns: ``rename({"old": "new"})`` or ``rename(old="new")``."""
        pairs = {**(mapping or {}), **names}
        if not pairs or not all(isinstance(k, str) and isinstance(v, str) and v
                                for k, v in pairs.items()):  # fmt: skip
            raise PlanError(f"rename: expected old -> new column names; got {pairs!r}")
        self._require_columns("rename", pairs)
        known = self.columns()
        if known is not None:
            after = [pairs.get(c, c) for c in known]
            dupes = sorted({c for c in after if after.count(c) > 1})
            if dupes:
                raise PlanError(f"rename: the result would have column(s) {dupes} twice")
        return Dataset(n.Rename((self._node,), tuple(pairs.items())))

    def drop(self, *columns: str) -> Dataset:
        """Every column but ``columns``."""
        cols = _names("drop", list(columns))
        self._require_columns("drop", cols)
        return Dataset(n.Drop((self._node,), cols))

    def cast(self, dtypes: Mapping[str, Any] | None = None, **named: Any) -> Dataset:
        """Convert columns to Arrow types: ``cast({"price": "decimal128(12, 2)"})`` or
        ``cast(n="int32")``; a value that does not fit fails, naming the operator."""
        pairs = {**(dtypes or {}), **named}
        if not pairs:
            raise PlanError("cast: name the columns and their types, e.g. cast(n='int32')")
        return self.with_columns(**{c: col(c).cast(to_type(t, "cast")) for c, t in pairs.items()})

    def fill_null(self, value: Any = None, *, subset: Sequence[str] | None = None,
                  **per_column: Any) -> Dataset:  # fmt: skip
        """Replace nulls: ``fill_null(0, subset=["a", "b"])``, ``fill_null(a=0, s="?")``, or
        ``fill_null(0)`` for every column whose type takes the value."""
        fills: dict[str, Any] = dict(per_column)
        if value is not None:
            if subset is not None:
                cols = _names("fill_null", list(subset))
            else:
                schema = self.schema
                if schema is None:
                    raise PlanError(
                        "fill_null: the columns are not known before running (a Python function "
                        "without schema=); name them with subset=[...]"
                    )
                cols = tuple(f.name for f in schema if _accepts(f.type, value))
            fills.update(dict.fromkeys(cols, value))
        if not fills:
            raise PlanError("fill_null: give a value (and subset=) or column=value pairs")
        return self.with_columns(**{c: col(c).fill_null(v) for c, v in fills.items()})

    def explode(self, column: str) -> Dataset:
        """One row per element of the list column ``column``, other columns repeated (an empty
        or null list gives one row with a null).

        >>> import riera
        >>> riera.from_items([{"k": 1, "xs": [1, 2]}, {"k": 2, "xs": []}]).explode("xs").collect()
        [{'k': 1, 'xs': 1}, {'k': 1, 'xs': 2}, {'k': 2, 'xs': None}]
        """
        (c,) = _names("explode", column)
        self._require_columns("explode", [c])
        return self._checked(n.Explode((self._node,), c), "explode")

    def map_batches(
        self,
        fn: Callable[..., Any],
        *,
        batch_format: Literal["pandas", "pyarrow"] = "pandas",
        batch_size: int | None = None,
        lineage: Literal["none", "one_to_one", "index"] = "none",
        schema: SchemaLike | None = None,
        name: str | None = None,
        **fn_kwargs: Any,
    ) -> Dataset:
        """Apply ``fn`` to batches of each partition: a pandas DataFrame (numeric columns are
        zero-copy numpy views, strings Arrow-backed) or a pyarrow Table.

        ``batch_size`` caps the rows per call (default: the whole partition); extra keyword
        arguments are passed to ``fn``. ``schema`` declares the output, as for :meth:`map`.

        ``lineage`` tells record-level provenance how output rows relate to input rows, which
        Riera cannot see inside ``fn``: ``"none"`` (the default: nothing is assumed, the stage's
        row derivations are not recorded), ``"one_to_one"`` (output row *i* comes from input row
        *i*; checked: the row count must not change) or, for pandas, ``"index"`` (the returned
        frame's index holds input row positions, as pandas keeps it through filters, sorts and
        ``assign``; checked to be in range).

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
        if lineage not in ("none", "one_to_one", "index"):
            raise PlanError(
                f"map_batches: lineage must be 'none', 'one_to_one' or 'index'; got {lineage!r}"
            )
        if lineage == "index" and batch_format != "pandas":
            raise PlanError(
                "map_batches: lineage='index' reads the pandas index, so it needs "
                "batch_format='pandas'; a pyarrow function can declare 'one_to_one' or 'none'"
            )
        return Dataset(
            n.MapBatches(
                (self._node,),
                fn,
                batch_format,
                tuple(sorted(fn_kwargs.items())),
                batch_size,
                lineage,
                _schema("map_batches", schema),
            )
        )._maybe_named(name)

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
        from riera.blackbox.programs import RESERVED, ProgramSpec

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
        from riera.physical.domain import check_declaration

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
    def agg(self, *exprs: Expr, **aggs: Any) -> Dataset:
        """Aggregations over all rows: one row, as SQL's aggregates without ``GROUP BY`` (over
        no rows, ``count`` is 0 and the others are null). Same arguments as
        ``group_by(...).agg``.

        >>> import riera
        >>> from riera import col
        >>> riera.range(10).agg(total=col("id").sum(), big=(col("id") > 6).cast("int64").sum()).collect()
        [{'total': 45, 'big': 3}]
        """
        return GroupedDataset(self, ()).agg(*exprs, **aggs)

    def group_by(self, *keys: str | Expr | Sequence[str], window: Any = None) -> GroupedDataset:
        """Group rows by ``keys`` (names, or expressions such as
        ``col("day").dt.year().alias("year")``); finish with ``.agg(...)``, ``.count()``…

        ``window=`` (``riera.stream.tumbling/sliding/session``) aggregates per key *and* window
        on a stream; the result gains ``window_start`` and ``window_end`` after the keys."""
        ds, names = self._key_columns("group_by", keys)
        if window is not None:
            from riera.streaming import check_window

            check_window(ds, window)
        return GroupedDataset(ds, names, window)

    def _key_columns(self, op: str, keys: Sequence[Any]) -> tuple[Dataset, tuple[str, ...]]:
        """Key names, with expression keys computed into columns first."""
        flat: list[Any] = []
        for k in keys:
            flat.extend(k if isinstance(k, list | tuple) else [k])
        if not flat:
            raise PlanError(f"{op}: expected a column name, an expression or a list of them")
        names: list[str] = []
        computed: list[Expr] = []
        for k in flat:
            if isinstance(k, Expr) and k.op != "col":
                name = k.output_name()
                if name is None or k.op != "alias":
                    raise PlanError(f"{op}: name the key expression {k!r} with .alias('name')")
                computed.append(k)
                names.append(name)
            else:
                (name,) = _names(op, k.value if isinstance(k, Expr) else k)
                names.append(name)
        ds = self.with_columns(*computed) if computed else self
        ds._require_columns(op, names)
        if ds.schema is not None:
            arrowtypes.check_keys(op, ds.schema, names, "grouping")
        return ds, tuple(names)

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
        by: str | Expr | Sequence[str | Expr],
        descending: bool | Sequence[bool] = False,
        *,
        partitions: int | None = None,
    ) -> Dataset:
        """Globally sort by ``by``: column names or expressions (``col("price") * col("qty")``),
        by sampled range partitioning, then a local sort per partition; nulls come last."""
        self._bounded_only("sort", "a live view sink, which keeps a top-N sorted as it changes")
        keys_in = list(by) if isinstance(by, list | tuple) else [by]
        computed = {
            f"__sort{i}": k for i, k in enumerate(keys_in) if isinstance(k, Expr) and k.op != "col"
        }
        keys = tuple(
            f"__sort{i}" if f"__sort{i}" in computed else (k.value if isinstance(k, Expr) else k)
            for i, k in enumerate(keys_in)
        )
        keys = _names("sort", [str(k) for k in keys])
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
        source = self.with_columns(**computed) if computed else self
        source._require_columns("sort", keys)
        if source.schema is not None:  # a list or struct key fails here, not in a worker
            arrowtypes.check_keys("sort", source.schema, keys, "sort")
        ordered = Dataset(n.Sort((source.node,), keys, desc, partitions))
        return ordered.drop(*computed) if computed else ordered

    def repartition(self, partitions: int, by: str | Sequence[str] | None = None) -> Dataset:
        """Redistribute rows into ``partitions`` partitions, by hash of ``by`` or evenly."""
        _positive("repartition", "partitions", partitions, allow_none=False)
        keys = _names("repartition", by) if by is not None else ()
        self._require_columns("repartition", keys)
        return Dataset(n.Repartition((self._node,), partitions, keys))

    def join(
        self,
        other: Dataset,
        on: str | Sequence[str] | None = None,
        how: Literal["inner", "left", "right", "outer", "semi", "anti", "cross"] = "inner",
        *,
        left_on: str | Sequence[str] | None = None,
        right_on: str | Sequence[str] | None = None,
        suffix: str = "_right",
        partitions: int | None = None,
        window: Any = None,
    ) -> Dataset:
        """Hash join with ``other`` on equal keys (SQL semantics: null keys never match).

        Two streams join per window (``window=riera.stream.tumbling("10s")``, on each side's
        watermark column; ``inner`` or ``left``); a stream joins a bounded Dataset without one.

        Keys: ``on`` (same names on both sides) or ``left_on``/``right_on``; the result keeps the
        left keys. ``how``: ``inner``, ``left``, ``right``, ``outer`` (full outer), ``semi`` (rows
        of this dataset with a match, its columns only), ``anti`` (rows without a match) or
        ``cross`` (every pair; no keys). Other columns present on both sides get ``suffix`` on
        the right side.

        >>> import riera
        >>> a = riera.from_items([{"id": 1, "x": "a"}, {"id": 2, "x": "b"}])
        >>> b = riera.from_items([{"key": 2, "x": "B"}])
        >>> a.join(b, left_on="id", right_on="key").collect()
        [{'id': 2, 'x': 'b', 'x_right': 'B'}]
        """
        if not isinstance(other, Dataset):
            raise PlanError(
                f"join: other must be a `Dataset`; got {type(other).__name__} instead;"
                f" did you mean riera.from_pandas(...) / riera.from_items(...)?"
            )
        if how not in n.JOIN_TYPES:
            raise PlanError(f"join: how must be one of {list(n.JOIN_TYPES)}; got {how!r}")
        if not isinstance(suffix, str) or not suffix:
            raise PlanError(f"join: suffix must be a non-empty string; got {suffix!r}")
        _positive("join", "partitions", partitions)
        if how == "cross":
            if on is not None or left_on is not None or right_on is not None:
                raise PlanError("join: a cross join pairs every row; it takes no keys")
            node = n.Join((self._node, other._node), (), "cross", partitions, (), suffix)
            return self._checked(node, "join")
        if on is not None:
            if left_on is not None or right_on is not None:
                raise PlanError("join: give either on= or left_on= and right_on=, not both")
            keys = _names("join", on)
            rkeys: tuple[str, ...] = ()
        elif left_on is not None and right_on is not None:
            keys, rkeys = _names("join", left_on), _names("join", right_on)
            if len(keys) != len(rkeys):
                raise PlanError(
                    f"join: left_on has {len(keys)} key(s) and right_on {len(rkeys)}; "
                    f"they pair up one to one"
                )
        else:
            raise PlanError("join: name the keys with on= (or left_on= and right_on=)")
        self._require_columns("join (left side)", keys)
        other._require_columns("join (right side)", rkeys or keys)
        if (self.is_streaming() and other.is_streaming()) or window is not None:
            from riera.streaming import stream_join

            return stream_join(self, other, keys, rkeys, how, suffix, window)
        node = n.Join((self._node, other._node), keys, how, partitions, rkeys, suffix)
        return self._checked(node, "join")

    def distinct(self, *, partitions: int | None = None) -> Dataset:
        """Unique rows (all columns)."""
        self._bounded_only("distinct", "group_by(..., window=...) to deduplicate per window")
        _positive("distinct", "partitions", partitions)
        return Dataset(n.Distinct((self._node,), partitions))

    def unique(
        self, subset: str | Sequence[str] | None = None, *, partitions: int | None = None
    ) -> Dataset:
        """One row per distinct value of ``subset`` (some row of each, with the columns in
        their order); without ``subset``, as :meth:`distinct`."""
        self._bounded_only("unique", "group_by(..., window=...) to deduplicate per window")
        if subset is None:
            return self.distinct(partitions=partitions)
        keys = _names("unique", subset)
        known = self.columns()
        if known is None:
            raise PlanError(
                "unique: the columns are not known before running (a Python function without "
                "schema=); declare the function's schema, or use distinct()"
            )
        self._require_columns("unique", keys)
        rest = {c: (c, "first") for c in known if c not in keys}
        if not rest:
            return self.distinct(partitions=partitions)
        grouped = self.group_by(list(keys)).agg(partitions=partitions, **rest)
        return grouped.select(*known)

    def union(self, *others: Dataset) -> Dataset:
        """Rows of this dataset followed by those of ``others`` (like SQL UNION ALL)."""
        for o in others:
            if not isinstance(o, Dataset):
                raise PlanError(f"union: arguments must be `Dataset`s; got {type(o).__name__}")
        if not others:
            return self
        return Dataset(n.Union((self._node, *(o._node for o in others))))

    def cache(self) -> Dataset:
        """This dataset, kept by the session once an action has computed it: later actions on
        it (or on datasets built from it) read the kept result instead of running its plan
        again. The result lives in memory (Arrow, zero-copy from the run's shared memory) until
        :meth:`unpersist` or the end of the session.

        >>> import riera
        >>> squares = riera.range(5).map(lambda r: {"sq": r["id"] ** 2}).cache()
        >>> squares.count(), squares.filter(lambda r: r["sq"] > 4).count()
        (5, 2)
        >>> squares.unpersist()
        True
        """
        return Dataset(n.Cache((self._node,)))

    def unpersist(self) -> bool:
        """Drop the result :meth:`cache` kept (True if there was one); the next action computes
        it again."""
        from riera.runtime import get_runtime

        if not isinstance(self._node, n.Cache):
            raise PlanError("unpersist: this dataset is not a cache(); call it on ds.cache()")
        return get_runtime().unpersist(self._node.name)

    def limit(self, count: int) -> Dataset:
        """The first ``count`` rows (in partition order)."""
        self._bounded_only("limit", "a live view sink (top-N per key) or take() on a batch Dataset")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise PlanError(f"limit: count must be a non-negative integer; got {count!r}")
        return Dataset(n.Limit((self._node,), count))
