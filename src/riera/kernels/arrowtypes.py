"""How operators handle Arrow types that Arrow's own kernels do not cover.

Parquet written by Polars, DuckDB or DataFusion-based tools reads back with ``string_view`` and
``binary_view`` columns, and Arrow (up to at least 26) has no ``take``, sort, hash-join or
``hash_min_max``/``hash_list`` kernels for them; it has none for ``duration`` or dictionary values
in min/max/list either, and its hash join cannot carry ``list``/``struct`` payload columns.

Rather than fail, each operator works on a *plain* equivalent and gives the original type back:

- view types become their ``large_`` counterparts (one vectorised cast, offsets + one data
  buffer), and the result is cast back (a cast to a view type only writes the 16-byte views,
  pointing into the compact data);
- aggregated dictionary columns are decoded, durations aggregate as their int64 counts;
- nested payload columns of a join are replaced by row numbers and gathered after the join.

Where an operation has no meaning (a ``list`` or ``struct`` as a sort, group, join, distinct or
partitioning key) the operator raises :class:`~riera.errors.ColumnTypeError` naming itself and the
column, instead of Arrow's "no kernel matching input types".

A view array's values may point into data buffers far larger than its own rows (a slice, a
partition of a shuffle): Arrow IPC writes those buffers whole, so :func:`compact` rewrites such
columns before a table goes into the exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from riera.errors import ColumnTypeError
from riera.kernels import views

_PLAIN = {pa.string_view(): pa.large_string(), pa.binary_view(): pa.large_binary()}


def is_view(t: pa.DataType) -> bool:
    """``string_view`` or ``binary_view``."""
    return pa.types.is_string_view(t) or pa.types.is_binary_view(t)


def is_nested(t: pa.DataType) -> bool:
    """List-like, struct, map or union: a value that is not one comparable scalar."""
    return pa.types.is_nested(t) or pa.types.is_union(t)


def plain_type(t: pa.DataType) -> pa.DataType:
    """The type Arrow's kernels accept for ``t``: the ``large_`` counterpart of a view type."""
    return _PLAIN.get(t, t)


def plain(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """``col`` with view types cast to their ``large_`` counterparts (else ``col`` itself)."""
    t = col.type
    return col.cast(_PLAIN[t]) if t in _PLAIN else col


_NARROW = {
    pa.string_view(): pa.string(),
    pa.binary_view(): pa.binary(),
    pa.large_string(): pa.string(),
    pa.large_binary(): pa.binary(),
}


def hash_key(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A grouping key in the type Acero hashes fastest (:func:`restore` gives the original back):

    - a view column whose values are all inline: its views as ``fixed_size_binary(16)``
      (:mod:`riera.kernels.views`; no cast at all);
    - another view or ``large_`` column whose bytes fit: 32-bit-offset ``string``/``binary``
      (measured on pyarrow 26, 4M rows, 2 keys: ``string`` 37 ms, ``string_view`` 97 ms,
      ``large_string`` 189 ms);
    - a dictionary column: its dictionaries unified across chunks (Acero refuses chunks whose
      dictionaries differ), still dictionary-encoded;
    - anything else: :func:`plain`."""
    t = col.type
    if is_view(t):
        inline = views.key(col)
        if inline is not None:
            return inline
    if pa.types.is_dictionary(t) and isinstance(col, pa.ChunkedArray) and col.num_chunks > 1:
        return col.unify_dictionaries()
    return _narrow(col)


def _narrow(col: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """A view or ``large_`` string/binary column as 32-bit-offset ``string``/``binary`` when its
    bytes fit (what Acero hashes fastest), else :func:`plain`."""
    if col.type in _NARROW and col.nbytes < 2**31 - 1:
        return col.cast(_NARROW[col.type])
    return plain(col)


def restore(col: pa.ChunkedArray | pa.Array, t: pa.DataType) -> pa.ChunkedArray | pa.Array:
    """``col`` cast back to ``t`` when an operator worked on a plain equivalent (or on the views
    of a view column: :func:`hash_key`)."""
    if col.type == t:
        return col
    if col.type == views.KEY_TYPE and is_view(t):
        return views.from_key(col, t)
    return col.cast(t)


def has_views(schema: pa.Schema) -> bool:
    return any(is_view(f.type) for f in schema)


def plain_table(table: pa.Table) -> pa.Table:
    """``table`` with every view column made plain (see :func:`plain`)."""
    if not has_views(table.schema):
        return table
    return pa.Table.from_arrays([plain(c) for c in table.columns], names=table.column_names)


def restore_columns(table: pa.Table, types: dict[str, pa.DataType]) -> pa.Table:
    """Give the columns named in ``types`` those types back (where they differ: :func:`restore`)."""
    for i, name in enumerate(table.column_names):
        t = types.get(name)
        if t is not None and table.schema.field(i).type != t:
            table = table.set_column(i, pa.field(name, t), restore(table.column(i), t))
    return table


def holds_views(t: pa.DataType) -> bool:
    """A view type, or a list of one (a ``list`` aggregate of a view column)."""
    return is_view(t) or (pa.types.is_list(t) and is_view(t.value_type))


def take_view(col: pa.ChunkedArray | pa.Array, indices: np.ndarray) -> pa.ChunkedArray:
    """``take`` for a column that :func:`holds_views`: a view column gathers its views (the
    data buffers are shared; :func:`compact` rewrites a column that keeps too little of them),
    a list of views goes through its plain form."""
    if is_view(col.type):
        return pa.chunked_array([views.take(col, np.asarray(indices, dtype=np.int64))], col.type)
    out = take_values(col, pa.array(indices, pa.int64()))
    return out if isinstance(out, pa.ChunkedArray) else pa.chunked_array([out], col.type)


def compact(table: pa.Table) -> pa.Table:
    """``table`` with view columns rewritten where their data buffers hold mostly other rows'
    bytes (a slice or a shuffle partition of a larger array), so the exchange stores only this
    table's values. Other tables are returned as they are."""
    if not has_views(table.schema):
        return table
    for i, col in enumerate(table.columns):
        if is_view(col.type) and _wasteful(col):
            table = table.set_column(i, table.field(i), plain(col).cast(col.type))
    return table


def _wasteful(col: pa.ChunkedArray) -> bool:
    held = sum(b.size for c in col.chunks for b in c.buffers()[2:] if b is not None)
    if held <= 1 << 16:
        return False
    used = 0
    for chunk in col.chunks:  # a view is 16 bytes: int32 length first; > 12 bytes live outside
        views = np.frombuffer(chunk.buffers()[1], dtype=np.int32).reshape(-1, 4)
        lengths = views[chunk.offset : chunk.offset + len(chunk), 0]
        used += int(lengths[lengths > 12].sum())
    return held > 2 * used


# -- aggregation over types Arrow's hash aggregates lack ---------------------------------------


def agg_input(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """The form of an aggregated column Arrow's hash aggregates accept."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
        t = t.value_type
    if is_view(t):
        return col.cast(_PLAIN[t])
    if pa.types.is_duration(t):
        return col.cast(pa.int64())
    return col


def agg_output(
    out: pa.ChunkedArray | pa.Array, func: str, t: pa.DataType
) -> pa.ChunkedArray | pa.Array:
    """An aggregate of a column of type ``t`` (computed over :func:`agg_input`) in the type
    the user sees: min/max keep ``t``, ``list`` holds ``t``, a duration sum is a duration;
    decimal sums are Arrow's (and DuckDB's) ``decimal128(38, s)`` / ``decimal256(76, s)``."""
    if func in ("min", "max"):
        return restore(out, t)
    if func == "list" and out.type.value_type != t:
        return out.cast(pa.list_(t))
    if func == "sum" and pa.types.is_duration(t):
        return out.cast(t)
    return out


# -- keys ---------------------------------------------------------------------------------------


def check_keys(operator: str, schema: pa.Schema, keys: Iterable[str], role: str) -> None:
    """Raise :class:`ColumnTypeError` when a key column's type cannot be a ``role`` key."""
    for k in keys:
        if k not in schema.names:
            continue
        t = schema.field(k).type
        if is_nested(t):
            raise ColumnTypeError(
                f"{operator}: column {k!r} has type {t}, which cannot be a {role} key (its values "
                f"are not single comparable scalars); key on a scalar column, or flatten or "
                f"explode {k!r} first"
            )


def sort_form(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """The column a sort compares: views made plain, dictionaries decoded (Arrow sorts
    neither), both by value so the order is the one of the values."""
    t = col.type
    if pa.types.is_dictionary(t):
        col = col.cast(t.value_type)
    return plain(col)


# -- row and pandas round trips -----------------------------------------------------------------


def _family(t: pa.DataType) -> str | None:
    if pa.types.is_dictionary(t):
        return _family(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.tz}]"  # never re-interpret a wall clock in another zone
    for name, test in (
        ("decimal", pa.types.is_decimal),
        ("date", pa.types.is_date),
        ("time", pa.types.is_time),
        ("duration", pa.types.is_duration),
    ):
        if test(t):
            return name
    return None


def keep_types(out: pa.Table, like: pa.Schema) -> pa.Table:
    """Give columns of ``out`` that a Python or pandas round trip re-typed their input type back.

    Rows as dicts and pandas frames lose what Python values do not carry: a ``string_view``
    or dictionary column comes back as ``string``, ``decimal128(12, 2)`` as the precision of the
    values seen, ``date64`` as ``date32``, ``time32``/``duration[s]`` in microseconds. A column
    of ``out`` with an input column's name and the same family of type is cast back when the
    cast is exact; anything else (a new column, a changed kind, a value that does not fit) keeps
    the type the function produced.
    """
    for i, field in enumerate(out.schema):
        if field.name not in like.names or like.get_field_index(field.name) < 0:
            continue
        t = like.field(field.name).type
        family = _family(t)
        if field.type == t or family is None or _family(field.type) != family:
            continue
        try:
            out = out.set_column(i, pa.field(field.name, t), out.column(i).cast(t, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            continue
    return out


def take_values(arr: Any, indices: pa.Array) -> Any:
    """``arr.take(indices)`` for arrays whose type, or list value type, is a view."""
    t = arr.type
    if is_view(t):
        return arr.cast(_PLAIN[t]).take(indices).cast(t)
    if pa.types.is_list(t) and is_view(t.value_type):
        via = pa.list_(_PLAIN[t.value_type])
        return arr.cast(via).take(indices).cast(t)
    return arr.take(indices)


# -- join ---------------------------------------------------------------------------------------


def _hidden(t: pa.DataType) -> bool:
    """Types a join decodes: views (no kernels) and dictionaries (Arrow's join refuses chunks or
    sides whose dictionaries differ: "Unifying differing dictionaries")."""
    return is_view(t) or pa.types.is_dictionary(t)


def _carried(t: pa.DataType) -> bool:
    """Payload types a join gathers by row number after Arrow's join instead of passing them
    through it: nested (Arrow refuses them), views and dictionaries (no kernel, or chunks
    whose dictionaries differ), and 64-bit-offset strings and binaries (Acero carries them
    ~6x slower than 32-bit ones: 267 ms against 43 ms for one 1M-row side)."""
    return is_nested(t) or _hidden(t) or pa.types.is_large_string(t) or pa.types.is_large_binary(t)


def take_rows(col: pa.ChunkedArray, rows: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``col`` gathered by row numbers that may be null (a null gathers a null), any type."""
    if isinstance(rows, pa.ChunkedArray):
        rows = rows.combine_chunks()
    if rows.null_count == len(rows):  # nothing to gather (an outer join against an empty side)
        return pa.nulls(len(rows), col.type)
    if is_view(col.type):
        present = None
        if rows.null_count:
            present = np.asarray(rows.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
            rows = rows.fill_null(0)
        idx = np.asarray(rows.to_numpy(zero_copy_only=False), dtype=np.int64)
        return views.take(col, idx, present)
    return col.combine_chunks().take(rows)


def join_key(col: pa.ChunkedArray) -> pa.ChunkedArray:
    """A key column as Arrow's join hashes it: dictionaries decoded, views (and their decoded
    values) as 32-bit-offset strings or binaries when they fit, else the ``large_`` types."""
    if pa.types.is_dictionary(col.type):
        col = col.cast(col.type.value_type)
    return _narrow(col)


class JoinCarry:
    """What :func:`riera.physical.joins.join_tables` hides from Arrow's hash join and puts back.

    Payload columns Arrow's join refuses or carries slowly (:func:`_carried`) are replaced by
    their row numbers under a private name and gathered from the original after the join (a
    row number of null, an unmatched outer row, gathers a null): they keep their exact type.
    View and dictionary keys join in a plain form (:func:`join_key`) and are cast back; a key
    that is a view on either side keeps the left side's type when both hold the same kind of
    values. Output names follow the join's own rule: a right column whose name the left side
    also has gets the suffix ``_right``.
    """

    def __init__(self) -> None:
        self.types: dict[str, pa.DataType] = {}  # output name -> type to cast back to
        self.gathered: dict[str, tuple[str, pa.ChunkedArray]] = {}  # placeholder -> (name, col)

    @classmethod
    def prepare(
        cls,
        left: pa.Table,
        right: pa.Table,
        on: Sequence[str],
        right_on: Sequence[str] | None = None,
        suffix: str = "_right",
    ) -> tuple[pa.Table, pa.Table, JoinCarry]:
        carry = cls()
        left_names = set(left.column_names)
        right_keys = list(right_on) if right_on is not None else list(on)
        for k, rk in zip(on, right_keys, strict=True):
            lt, rt = left.schema.field(k).type, right.schema.field(rk).type
            if (_hidden(lt) or _hidden(rt)) and _family(lt) == _family(rt):
                carry.types[k] = lt  # the coalesced key keeps the left side's type
        rkeys = set(right_keys)
        left = carry._hide(left, "l", set(on), lambda c: c)
        right = carry._hide(
            right, "r", rkeys, lambda c: f"{c}{suffix}" if c in left_names and c not in rkeys else c
        )
        return left, right, carry

    def _hide(
        self, table: pa.Table, side: str, keys: set[str], out_name: Callable[[str], str]
    ) -> pa.Table:
        for i, field in enumerate(table.schema):
            t = field.type
            if field.name not in keys and _carried(t):
                placeholder = f"__riera_{side}{i}"
                self.gathered[placeholder] = (out_name(field.name), table.column(i))
                rows = pa.array(np.arange(table.num_rows, dtype=np.int64))
                table = table.set_column(i, placeholder, rows)
            elif field.name in keys and _hidden(t):  # cast back only when both sides agree
                table = table.set_column(i, field.name, join_key(table.column(i)))
        return table

    def finish(self, out: pa.Table) -> pa.Table:
        for i, name in enumerate(out.column_names):
            if name in self.gathered:
                final, original = self.gathered[name]
                col = take_rows(original, out.column(i))
                out = out.set_column(i, pa.field(final, original.type), col)
        return restore_columns(out, self.types)
