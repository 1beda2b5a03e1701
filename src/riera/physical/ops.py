"""Physical operators: what a task applies to a partition (an Arrow table), in order.

Each op carries ``name``, the logical operator it came from, so an exception inside it is reported
against the operator the user wrote. Row operators convert to Python dicts and back; batch operators
hand the user a pandas frame with Arrow-backed dtypes (zero-copy where Arrow allows) or the Arrow table
itself. All-to-all operators are split into a map-side part (partial aggregation, partitioning) and
a reduce-side part (final aggregation, local sort, local join) that run on either side of an exchange.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riera import memory
from riera.kernels import arrowtypes
from riera.kernels.keyhash import _column_hash, hash_partition_ids  # noqa: F401 (public here too)
from riera.kernels.op import Op
from riera.plan.nodes import AggSpec

if TYPE_CHECKING:  # pandas loads lazily, in the tasks that need it
    import pandas as pd

# -- helpers --------------------------------------------------------------------------------------


def concat(tables: Sequence[pa.Table]) -> pa.Table:
    """Concatenate partitions, promoting types where partitions inferred different ones."""
    tables = [t for t in tables if t is not None]
    if not tables:
        return pa.table({})
    if len(tables) == 1:
        return tables[0]
    nonempty = [t for t in tables if t.num_rows] or tables[:1]
    if all(t.schema == nonempty[0].schema for t in nonempty):
        return pa.concat_tables(nonempty)
    try:
        return pa.concat_tables(nonempty, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        if not any(arrowtypes.has_views(t.schema) for t in nonempty):
            raise
        # Arrow does not promote a view with another string type: meet in the large_ type
        plain = [arrowtypes.plain_table(t) for t in nonempty]
        return pa.concat_tables(plain, promote_options="permissive")


def rows_to_table(rows: list[dict[str, Any]], like: pa.Schema | None = None) -> pa.Table:
    """Rows (dicts) as a table with the union of their keys; missing keys become nulls.

    (``pa.Table.from_pylist`` alone takes the columns of the first row and drops the others.)
    """
    if not rows:
        return like.empty_table() if like is not None else pa.table({})
    first = rows[0].keys()
    if all(r.keys() == first for r in rows):
        return pa.Table.from_pylist(rows)
    keys = dict.fromkeys(k for r in rows for k in r)
    return pa.table({k: [r.get(k) for r in rows] for k in keys})


def _fixed_width_view(arr: pa.Array) -> np.ndarray | None:
    """A zero-copy numpy view of a null-free fixed-width array: (n,) or (n, width) bytes."""
    t = arr.type
    if arr.null_count:
        return None
    if pa.types.is_fixed_size_binary(t):
        w = t.byte_width
        data = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        return data[arr.offset * w : (arr.offset + len(arr)) * w].reshape(-1, w)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return arr.to_numpy(zero_copy_only=True)
    return None


def _take_column(col: pa.ChunkedArray, indices: np.ndarray) -> pa.Array | pa.ChunkedArray:
    if arrowtypes.holds_views(col.type):  # Arrow has no take kernel for views
        return arrowtypes.take_view(col, indices)
    views = [_fixed_width_view(c) for c in col.chunks]
    if not views or any(v is None for v in views):
        return col.take(pa.array(indices))
    t = col.type
    first = views[0]
    assert first is not None
    # One sequential copy to join chunks beats gathering from each (random scattered writes).
    source = first if len(views) == 1 else np.concatenate(views)  # type: ignore[arg-type]
    out = memory.empty((len(indices), *first.shape[1:]), dtype=first.dtype)
    np.take(source, indices, axis=0, out=out, mode="wrap")
    if pa.types.is_fixed_size_binary(t):
        return pa.Array.from_buffers(t, len(indices), [None, pa.py_buffer(out)])
    return pa.array(out, type=t)


def take(table: pa.Table, indices: np.ndarray) -> pa.Table:
    """``table.take`` with numpy fast paths for fixed-width columns without nulls; view columns
    are taken through their plain form (:mod:`riera.kernels.arrowtypes`) and stay views."""
    indices = np.asarray(indices, dtype=np.int64)
    return pa.Table.from_arrays(
        [_take_column(c, indices) for c in table.columns], schema=table.schema
    )


def filter_table(table: pa.Table, mask: np.ndarray) -> pa.Table:
    """``table.filter(mask)`` for every column type: view columns (which Arrow filters with a
    ``take`` it lacks for them) go through :func:`take`."""
    if not arrowtypes.has_views(table.schema):
        return table.filter(pa.array(mask, pa.bool_()))
    # Batch by batch, so the output keeps the input's chunks (a row group each, from Parquet):
    # arrays of a few MB are recycled by the allocator, where one concatenated array of
    # hundreds of MB is mapped afresh, page by page, by every kernel that follows.
    batches = table.to_batches()
    if len(batches) <= 1:
        return take(table, np.flatnonzero(mask))
    out, start = [], 0
    for batch in batches:
        part = mask[start : start + batch.num_rows]
        start += batch.num_rows
        out.append(take(pa.Table.from_batches([batch], table.schema), np.flatnonzero(part)))
    return pa.concat_tables(out)


def to_pandas(table: pa.Table) -> pd.DataFrame:
    """The pandas view Riera hands to batch functions, zero-copy wherever Arrow allows.

    Numeric and boolean columns without nulls become numpy arrays *viewing* the Arrow buffers (so
    every numpy/pandas operation works on them); strings become pandas' Arrow-backed
    ``string[pyarrow]`` (no Python objects); columns numpy cannot hold without a copy or a change
    of type (integers with nulls, nested types, decimals) stay Arrow-backed (``pd.ArrowDtype``).
    """
    import pandas as pd

    columns: dict[str, Any] = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        t = col.type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
        if numeric and (col.null_count == 0 or pa.types.is_floating(t)):
            columns[name] = col.to_pandas(split_blocks=True)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            columns[name] = col.to_pandas(types_mapper={t: pd.StringDtype("pyarrow")}.get)
        elif pa.types.is_string_view(t):  # pandas' string dtype holds large_string, not views
            plain = col.cast(pa.large_string())
            columns[name] = plain.to_pandas(
                types_mapper={plain.type: pd.StringDtype("pyarrow")}.get
            )
        elif pa.types.is_temporal(t) and not pa.types.is_time(t):
            columns[name] = col.to_pandas()
        else:
            columns[name] = col.to_pandas(types_mapper=pd.ArrowDtype)
    return (
        pd.DataFrame(columns, copy=False) if columns else pd.DataFrame(index=range(table.num_rows))
    )


# -- row and batch operators ----------------------------------------------------------------------


@dataclass(frozen=True)
class MapOp(Op):
    fn: Callable[[dict[str, Any]], dict[str, Any]]

    def apply(self, table: pa.Table) -> pa.Table:
        out = []
        for row in table.to_pylist():
            r = self.fn(row)
            if not isinstance(r, dict):
                raise TypeError(
                    f"{self.name} must return a dict per row; got {type(r).__name__} {_short(r)}"
                )
            out.append(r)
        return arrowtypes.keep_types(rows_to_table(out), table.schema)


@dataclass(frozen=True)
class FlatMapOp(Op):
    fn: Callable[[dict[str, Any]], Iterable[dict[str, Any]]]

    def apply(self, table: pa.Table) -> pa.Table:
        return rows_to_table(self.expand(table.to_pylist())[0])

    def expand(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[int]]:
        """The output rows, and how many each input row produced (record lineage uses it)."""
        out: list[dict[str, Any]] = []
        counts: list[int] = []
        for row in rows:
            produced = self.fn(row)
            if isinstance(produced, dict | str | bytes) or produced is None:
                raise TypeError(
                    f"{self.name} must return an iterable of dicts per row; got "
                    f"{type(produced).__name__} {_short(produced)}"
                )
            before = len(out)
            for r in produced:
                if not isinstance(r, dict):
                    raise TypeError(
                        f"{self.name} must yield dicts; got {type(r).__name__} {_short(r)}"
                    )
                out.append(r)
            counts.append(len(out) - before)
        return out, counts


@dataclass(frozen=True)
class FilterOp(Op):
    batchwise = True
    fn: Callable[[dict[str, Any]], bool]

    def apply(self, table: pa.Table) -> pa.Table:
        return filter_table(table, np.asarray(self.mask(table), dtype=bool))

    def mask(self, table: pa.Table) -> list[bool]:
        return [bool(self.fn(row)) for row in table.to_pylist()]


@dataclass(frozen=True)
class MapBatchesOp(Op):
    fn: Callable[..., Any]
    batch_format: str
    kwargs: tuple[tuple[str, Any], ...] = ()
    batch_size: int | None = None
    lineage: str = "none"  # how output rows map to input rows: none | one_to_one | index

    def apply(self, table: pa.Table) -> pa.Table:
        return self._run(table)[0]

    def traced(self, table: Any) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
        """The output, and the input row of each output row as the function declared it with
        ``lineage`` (None: not declared, nothing is assumed)."""
        out, came_from = self._run(table)
        if came_from is None:
            return out, None
        return out, (np.arange(len(came_from), dtype=np.int64), came_from)

    def _run(self, table: pa.Table) -> tuple[pa.Table, np.ndarray | None]:
        if table.num_columns == 0:  # an empty partition whose producer emitted no rows
            return table, np.empty(0, np.int64)
        size = self.batch_size or max(1, table.num_rows)
        outs: list[pa.Table] = []
        sources: list[np.ndarray] | None = []
        for start in range(0, max(1, table.num_rows), size):
            out, rows = self._apply_one(table.slice(start, size))
            outs.append(out)
            if rows is None or sources is None:
                sources = None
            else:
                sources.append(rows + start)
        traced = None if sources is None else np.concatenate(sources)
        return (outs[0] if len(outs) == 1 else concat(outs)), traced

    def _apply_one(self, table: pa.Table) -> tuple[pa.Table, np.ndarray | None]:
        kw = dict(self.kwargs)
        if self.batch_format == "pandas":
            import pandas as pd

            out = self.fn(to_pandas(table), **kw)
            if not isinstance(out, pd.DataFrame):
                raise TypeError(
                    f"{self.name} must return a pandas DataFrame; got {type(out).__name__}"
                )
            rows = self._declared_rows(table.num_rows, len(out), out.index)
            kept = arrowtypes.keep_types(
                pa.Table.from_pandas(out, preserve_index=False), table.schema
            )
            return kept, rows
        out = self.fn(table, **kw)
        if isinstance(out, pa.RecordBatch):
            out = pa.Table.from_batches([out])
        elif isinstance(out, dict):
            out = pa.table(out)
        elif not isinstance(out, pa.Table):
            raise TypeError(
                f"{self.name} must return a pyarrow Table, RecordBatch or dict of "
                f"columns; got {type(out).__name__}"
            )
        return out, self._declared_rows(table.num_rows, out.num_rows, None)

    def _declared_rows(self, n_in: int, n_out: int, index: Any) -> np.ndarray | None:
        if self.lineage == "one_to_one":
            if n_out != n_in:
                raise ValueError(
                    f"{self.name} declared lineage='one_to_one' but returned {n_out} rows for "
                    f"{n_in}; declare lineage='none' (or 'index' for pandas) instead"
                )
            return np.arange(n_in, dtype=np.int64)
        if self.lineage == "index":
            values = np.asarray(index)
            if values.dtype.kind not in "iu" or (
                len(values) and (values.min() < 0 or values.max() >= n_in)
            ):
                raise ValueError(
                    f"{self.name} declared lineage='index', so the index of the frame it "
                    f"returns must hold input row positions (0..{n_in - 1}); keep the index "
                    f"pandas gives (no reset_index) or declare lineage='none'"
                )
            return values.astype(np.int64)
        return None


@dataclass(frozen=True)
class SelectOp(Op):
    batchwise = True
    columns: tuple[str, ...]

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table
        missing = [c for c in self.columns if c not in table.column_names]
        if missing:
            raise KeyError(
                f"{self.name}: no column(s) {missing}; the data has {table.column_names}"
            )
        return table.select(list(self.columns))


@dataclass(frozen=True)
class LimitOp(Op):
    n: int

    def apply(self, table: pa.Table) -> pa.Table:
        # min(): a table without columns reports any slice length as its row count.
        return table.slice(0, min(self.n, table.num_rows))


# -- aggregation ----------------------------------------------------------------------------------


def _check_columns(name: str, table: pa.Table, cols: Iterable[str]) -> None:
    missing = [c for c in cols if c != "*" and c not in table.column_names]
    if missing and table.num_columns:
        raise KeyError(f"{name}: no column(s) {missing}; the data has {table.column_names}")


def canonical_key(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """Key values as grouping should see them: ``-0.0`` is ``0.0`` (as in SQL and pandas)."""
    if pa.types.is_floating(col.type):
        return pc.add(col, pa.scalar(0.0, col.type))
    return col


def _aggregate(
    table: pa.Table, keys: Sequence[str], specs: Sequence[tuple[str, str]]
) -> tuple[list[pa.ChunkedArray], list[pa.ChunkedArray]]:
    """Group ``table`` by ``keys`` computing ``(column, func)`` specs; ``"*"`` counts rows.

    Columns are aliased so output names are unique whatever the version's naming and ordering.
    """
    arrowtypes.check_keys("group_by", table.schema, keys, "grouping")
    # Keys group in the type Acero hashes fastest (arrowtypes.hash_key), cast back below.
    cols: dict[str, Any] = {k: arrowtypes.hash_key(canonical_key(table.column(k))) for k in keys}
    agg_specs: list[tuple[Any, ...]] = []
    names: list[str] = []
    firsts: dict[int, str] = {}  # spec -> column: "first" takes the group's first row of it
    for j, (col, func) in enumerate(specs):
        if col == "*":
            if "count_all" not in names:
                agg_specs.append(([], "count_all"))
            names.append("count_all")
            continue
        if func == "first":  # by row number: Arrow's hash_first takes few types
            if "__row" not in cols:
                cols["__row"] = pa.array(np.arange(table.num_rows, dtype=np.int64))
                agg_specs.append(("__row", "min"))
            firsts[j] = col
            names.append("__row_min")
            continue
        alias = f"__a{j}"
        if func == "list" and arrowtypes.is_nested(table.schema.field(col).type):
            cols[alias] = pa.array(np.arange(table.num_rows))  # hash_list takes no nested input
        else:
            cols[alias] = arrowtypes.agg_input(table.column(col))
        agg_specs.append((alias, func))
        names.append(f"{alias}_{func}")
    grouped = pa.table(cols).group_by(list(keys), use_threads=False).aggregate(agg_specs)
    values = []
    for j, (nm, (col, func)) in enumerate(zip(names, specs, strict=True)):
        out = grouped.column(nm)
        if j in firsts:  # the group's first row number: gather its value (any type)
            values.append(arrowtypes.take_values(table.column(col), out.combine_chunks()))
            continue
        if col != "*" and func == "list" and arrowtypes.is_nested(table.schema.field(col).type):
            rows = out.combine_chunks()  # row numbers per group: gather the nested values
            out = pa.ListArray.from_arrays(
                rows.offsets, table.column(col).combine_chunks().take(rows.values)
            )
        values.append(out if col == "*" else arrowtypes.agg_output(out, func, table[col].type))
    return [arrowtypes.restore(grouped.column(k), table.schema.field(k).type) for k in keys], values


@dataclass(frozen=True)
class PartialAggOp(Op):
    """Map side of group_by: aggregate what this partition holds into partial states."""

    batchwise = True

    keys: tuple[str, ...]
    aggs: tuple[AggSpec, ...]

    def apply(self, table: pa.Table) -> pa.Table:
        _check_columns(self.name, table, [*self.keys, *(a.column for a in self.aggs)])
        if table.num_columns == 0:
            return table
        specs: list[tuple[str, str]] = []
        names: list[str] = []
        for i, a in enumerate(self.aggs):
            for state, spec in _partial_specs(a):
                specs.append(spec)
                names.append(f"__p{i}_{state}")
        key_cols, agg_cols = _aggregate(table, self.keys, specs)
        return pa.Table.from_arrays([*key_cols, *agg_cols], names=[*self.keys, *names])


def _partial_specs(a: AggSpec) -> list[tuple[str, tuple[str, str]]]:
    f = a.func
    if f == "count":
        return [("count", (a.column, "count"))]
    if f in ("sum", "min", "max", "first"):
        return [(str(f), (a.column, str(f)))]
    if f == "mean":
        return [("sum", (a.column, "sum")), ("count", (a.column, "count"))]
    return [("list", (a.column, "list"))]  # "list" and custom callables


_COMBINE = {"count": "sum", "sum": "sum", "min": "min", "max": "max", "first": "first",
            "list": "list"}  # fmt: skip


@dataclass(frozen=True)
class FinalAggOp(Op):
    """Reduce side of group_by: combine partial states into the requested columns."""

    keys: tuple[str, ...]
    aggs: tuple[AggSpec, ...]

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table
        specs: list[tuple[str, str]] = []
        list_states: list[str] = []
        for i, a in enumerate(self.aggs):
            for state, _ in _partial_specs(a):
                if state == "list":  # hash_list takes no nested input: gather row ids instead
                    list_states.append(f"__p{i}_{state}")
                else:
                    specs.append((f"__p{i}_{state}", _COMBINE[state]))
        if list_states:
            table = table.append_column("__row", pa.array(np.arange(table.num_rows)))
            specs.append(("__row", "list"))
        key_cols, agg_cols = _aggregate(table, self.keys, specs)
        states = {c: arr for (c, _), arr in zip(specs, agg_cols, strict=True)}
        if list_states:
            rows = states.pop("__row")
            rows = rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows
            for name in list_states:
                col = table.column(name).combine_chunks()
                values = arrowtypes.take_values(col, rows.values)
                nested = pa.ListArray.from_arrays(rows.offsets, values)
                states[name] = _flatten_one_level(nested)
        out_cols: list[Any] = list(key_cols)
        out_names = list(self.keys)
        for i, a in enumerate(self.aggs):
            out_names.append(a.out)
            out_cols.append(self._finish(a, i, states))
        return pa.Table.from_arrays(out_cols, names=out_names)

    def _finish(self, a: AggSpec, i: int, states: dict[str, Any]) -> pa.ChunkedArray | pa.Array:
        f = a.func
        if f in ("count", "sum", "min", "max", "first"):
            return states[f"__p{i}_{f}"]
        if f == "mean":
            s = pc.cast(states[f"__p{i}_sum"], pa.float64())
            c = pc.cast(states[f"__p{i}_count"], pa.float64())
            return pc.if_else(pc.equal(c, 0), pa.scalar(None, pa.float64()), pc.divide(s, c))
        lists = states[f"__p{i}_list"]
        if f == "list":
            return lists
        assert callable(f)
        return pa.array([f(v) for v in lists.to_pylist()])


def _flatten_one_level(arr: pa.ChunkedArray | pa.Array) -> pa.Array:
    """list<list<T>> → list<T>, per row."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    outer = np.asarray(arr.offsets)
    inner_arr = arr.values
    inner = np.asarray(inner_arr.offsets)
    offsets = inner[outer].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), inner_arr.values)


@dataclass(frozen=True)
class ReduceByKeyOp(Op):
    """``reduce_by_key``: fold ``column`` of rows sharing ``key`` with a binary function."""

    key: str
    column: str
    fn: Callable[[Any, Any], Any]

    def apply(self, table: pa.Table) -> pa.Table:
        _check_columns(self.name, table, [self.key, self.column])
        if table.num_columns == 0:
            return table
        if table.num_rows == 0:
            return table.select([self.key, self.column])
        acc: dict[Any, Any] = {}
        for k, v in zip(
            table.column(self.key).to_pylist(), table.column(self.column).to_pylist(), strict=True
        ):
            acc[k] = self.fn(acc[k], v) if k in acc else v
        out = pa.table({self.key: list(acc.keys()), self.column: list(acc.values())})
        return arrowtypes.keep_types(out, table.schema)


@dataclass(frozen=True)
class DistinctOp(Op):
    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0 or table.num_rows == 0:
            return table
        arrowtypes.check_keys(self.name, table.schema, table.column_names, "distinct")
        types = {f.name: f.type for f in table.schema}
        table = pa.Table.from_arrays(
            [arrowtypes.hash_key(canonical_key(c)) for c in table.columns], names=table.column_names
        )
        out = table.group_by(table.column_names, use_threads=False).aggregate([])
        return arrowtypes.restore_columns(out.select(table.column_names), types)


# -- sort -----------------------------------------------------------------------------------------


def sort_indices(table: pa.Table, keys: Sequence[str], descending: Sequence[bool]) -> np.ndarray:
    """Sort order of ``table`` by ``keys`` (nulls and NaN last), with numpy fast paths.

    Rows with equal keys come in no guaranteed order (as in pandas' default sort and Spark): the
    single-key paths use numpy's SIMD quicksort, 2-3x faster than a stable sort.
    """
    arrowtypes.check_keys("sort", table.schema, keys, "sort")
    if any(arrowtypes.sort_form(table.column(k)).type != table.schema.field(k).type for k in keys):
        # views and dictionaries: Arrow cannot sort them; sort their plain values (keys only)
        table = pa.table(
            {f"__k{j}": arrowtypes.sort_form(table.column(k)) for j, k in enumerate(keys)}
        )
        keys = [f"__k{j}" for j in range(len(keys))]
    if len(keys) == 1 and not descending[0]:
        col = table.column(keys[0])
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        if arr.null_count == 0:
            t = arr.type
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                return np.argsort(arr.to_numpy())
            if pa.types.is_fixed_size_binary(t) and t.byte_width <= 16:
                return _argsort_fixed_binary(arr)
            if (
                pa.types.is_string(t)
                or pa.types.is_large_string(t)
                or pa.types.is_binary(t)
                or pa.types.is_large_binary(t)
            ):
                by_prefix = _argsort_by_prefix(arr)
                if by_prefix is not None:
                    return by_prefix
    sort_keys = [
        (k, "descending" if d else "ascending", "at_end")
        for k, d in zip(keys, descending, strict=True)
    ]
    return pc.sort_indices(table, sort_keys=sort_keys).to_numpy()


def _be_u64(data: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Bytes [lo, hi) of each row as a big-endian uint64 (zero-padded), so numeric = byte order."""
    n, width = data.shape[0], hi - lo
    buf = memory.zeros((n, 8), dtype=np.uint8)
    buf[:, :width] = data[:, lo:hi]
    return buf.view(">u8").ravel().astype(np.uint64)


def _argsort_by_prefix(arr: pa.Array) -> np.ndarray | None:
    """Sort variable-length strings by their first 8 bytes with numpy's SIMD sort, then order
    the (rare) runs of equal prefixes by the whole value; ``None`` when ties are common."""
    n = len(arr)
    off_type = np.int64 if arr.type in (pa.large_string(), pa.large_binary()) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=off_type)[arr.offset : arr.offset + n + 1]
    data_buf = arr.buffers()[2]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(1, np.uint8)
    )
    starts = offsets[:-1].astype(np.int64)
    lengths = offsets[1:].astype(np.int64) - starts
    prefix = np.zeros(n, dtype=np.uint64)
    for j in range(8):  # byte j of every value (0 past its end), most significant first
        present = lengths > j
        byte = np.zeros(n, dtype=np.uint64)
        byte[present] = data[starts[present] + j]
        prefix |= byte << np.uint64(8 * (7 - j))
    order = np.argsort(prefix)
    sorted_prefix = prefix[order]
    tie = sorted_prefix[1:] == sorted_prefix[:-1]
    n_ties = int(tie.sum())
    if n_ties == 0:
        return order
    if n_ties > n // 100:
        return None  # many equal prefixes: Arrow's comparison sort does better
    values = arr.to_pylist() if n_ties else []
    edges = np.flatnonzero(np.diff(np.concatenate([[0], tie.view(np.int8), [0]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):  # runs [a, b] of equal prefixes
        group = order[a : b + 1]
        order[a : b + 1] = sorted(group.tolist(), key=values.__getitem__)
    return order


def _argsort_fixed_binary(arr: pa.Array) -> np.ndarray:
    width = arr.type.byte_width
    data = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
    data = data[arr.offset * width : (arr.offset + len(arr)) * width].reshape(-1, width)
    head = _be_u64(data, 0, min(8, width))
    if width <= 8:
        return np.argsort(head)
    order = np.argsort(head)
    sorted_head = head[order]
    if not np.any(sorted_head[1:] == sorted_head[:-1]):
        return order
    tail = _be_u64(data, 8, width)
    return np.lexsort((tail, head))


@dataclass(frozen=True)
class SortOp(Op):
    keys: tuple[str, ...]
    descending: tuple[bool, ...]

    def apply(self, table: pa.Table) -> pa.Table:
        _check_columns(self.name, table, self.keys)
        if table.num_rows <= 1:
            return table
        return take(table, sort_indices(table, self.keys, self.descending))


def _valid_prefix(col: pa.ChunkedArray) -> int:
    """Rows before the nulls and NaNs, which a sort puts at the end."""
    n = len(col) - col.null_count
    if pa.types.is_floating(col.type):
        n -= int(pc.sum(pc.is_nan(col)).as_py() or 0)
    return n


def range_slice(
    col: pa.ChunkedArray, lo: Any, hi: Any, descending: bool, last: bool
) -> tuple[int, int]:
    """Rows ``[start, end)`` of the range partition ``[lo, hi)`` in a column sorted by itself.

    Partition ``i`` takes keys ``k`` with ``lo <= k < hi`` (``hi < k <= lo`` descending); nulls
    and NaN go to the last partition. Two binary searches instead of comparing every row: a
    block sorted on the map side is sliced, not scanned, by each of the reducers."""
    valid = _valid_prefix(col)

    def first(pred: Callable[[Any], bool]) -> int:  # smallest i with pred(col[i]), monotone
        a, b = 0, valid
        while a < b:
            mid = (a + b) // 2
            if pred(col[mid].as_py()):
                b = mid
            else:
                a = mid + 1
        return a

    if descending:
        start = 0 if lo is None else first(lambda v: v <= lo)
        end = valid if hi is None else first(lambda v: v <= hi)
    else:
        start = 0 if lo is None else first(lambda v: v >= lo)
        end = valid if hi is None else first(lambda v: v >= hi)
    return start, len(col) if last else end


def key_span(col: pa.ChunkedArray) -> tuple[Any, Any, bool]:
    """``(first, last, tail)`` of a column sorted by itself: its first and last valid keys (None
    if it has none) and whether nulls or NaN follow them (they belong to the last partition)."""
    valid = _valid_prefix(col)
    if valid == 0:
        return None, None, len(col) > 0
    return col[0].as_py(), col[valid - 1].as_py(), valid < len(col)


def span_overlaps(
    span: tuple[Any, Any, bool], lo: Any, hi: Any, descending: bool, last: bool | None
) -> bool:
    """Whether a piece with key ``span`` (``key_span``) holds rows of range partition
    ``[lo, hi)`` — the partition ``range_slice`` cuts; ``last=None``: it receives no rows."""
    if last is None:
        return False
    first, final, tail = span
    if tail and last:
        return True
    if first is None:
        return False
    if descending:  # keys run from ``first`` down to ``final``; the range is hi < k <= lo
        return (hi is None or first > hi) and (lo is None or final <= lo)
    return (hi is None or first < hi) and (lo is None or final >= lo)


def sort_by_first_key(table: pa.Table, key: str, descending: bool) -> np.ndarray:
    """The order that sorts ``table`` by ``key`` alone (nulls and NaN last)."""
    return sort_indices(table, [key], [descending])


def sample_sorted(table: pa.Table, key: str, k: int = 256) -> list[Any]:
    """``k`` evenly spaced keys of a table sorted by ``key``: its quantiles, nulls and NaN left out."""
    col = table.column(key)
    valid = _valid_prefix(col)
    if valid == 0:
        return []
    idx = np.unique(np.linspace(0, valid - 1, min(k, valid)).astype(np.int64))
    return arrowtypes.take_values(col.combine_chunks(), pa.array(idx)).to_pylist()


def range_boundaries(samples: list[Any], n: int, descending: bool) -> list[Any]:
    """``n - 1`` split points from pooled samples."""
    if n <= 1 or not samples:
        return []
    s = sorted(samples, reverse=descending)
    return [s[min(len(s) - 1, (i * len(s)) // n)] for i in range(1, n)]


# -- partitioning ---------------------------------------------------------------------------------


def split_by_ids(table: pa.Table, ids: np.ndarray, n: int) -> list[pa.Table]:
    if table.num_rows == 0:
        return [table] * n
    # A stable sort of small integers is a radix sort in numpy (10x faster than on int64).
    small = np.uint8 if n <= 1 << 8 else np.uint16 if n <= 1 << 16 else ids.dtype
    order = np.argsort(ids.astype(small, copy=False), kind="stable")
    counts = np.bincount(ids, minlength=n)
    ordered = take(table, order)
    out, start = [], 0
    for c in counts:  # a slice of a view column drags the whole data buffer along: compact
        out.append(arrowtypes.compact(ordered.slice(start, int(c))))
        start += int(c)
    return out


def split_even(table: pa.Table, n: int) -> list[pa.Table]:
    """Contiguous, near-equal slices (zero-copy)."""
    bounds = np.linspace(0, table.num_rows, n + 1).astype(int)
    return [
        arrowtypes.compact(table.slice(int(a), int(b - a))) for a, b in itertools.pairwise(bounds)
    ]


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."
