"""Column-expression operators: filter, projections, rename, drop, explode, declared schemas.

Each evaluates whole columns with :mod:`riera.kernels.evaluate` — no Python per row — and says,
through :meth:`~riera.physical.ops.Op.traced`, how its output rows relate to its input rows, so record
lineage follows them without knowing the operator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from riera.errors import SchemaError
from riera.expr import Expr
from riera.kernels.evaluate import Evaluator
from riera.physical.ops import Op, filter_table
from riera.physical.ops import _check_columns as check_columns

Relation = tuple[np.ndarray, np.ndarray]


def _same_rows(n: int) -> Relation:
    rows = np.arange(n, dtype=np.int64)
    return rows, rows


def _mask(table: pa.Table, predicate: Expr, where: str) -> np.ndarray:
    mask = Evaluator(table, where).array(predicate)
    if not pa.types.is_boolean(mask.type):
        raise TypeError(f"{where}: the predicate {predicate!r} gives {mask.type}, not booleans")
    # null is not true: the row goes
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


@dataclass(frozen=True)
class FilterExprOp(Op):
    batchwise = True
    predicate: Expr

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table
        return filter_table(table, _mask(table, self.predicate, self.name))

    def traced(self, table: pa.Table) -> tuple[pa.Table, Relation | None]:
        if table.num_columns == 0:
            return table, _same_rows(0)
        mask = _mask(table, self.predicate, self.name)
        kept = np.flatnonzero(mask)
        out = filter_table(table, mask)
        return out, (np.arange(len(kept), dtype=np.int64), kept.astype(np.int64))


@dataclass(frozen=True)
class ProjectOp(Op):
    """``with_columns`` (``keep``) or ``select`` with expressions."""

    batchwise = True

    exprs: tuple[tuple[str, Expr], ...]
    keep: bool

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table
        ev = Evaluator(table, self.name)
        computed = {name: ev.array(e) for name, e in self.exprs}
        if not self.keep:
            return pa.table(computed) if computed else table.select([])
        out = table
        for name, values in computed.items():
            i = out.schema.get_field_index(name)
            out = out.set_column(i, name, values) if i >= 0 else out.append_column(name, values)
        return out

    def traced(self, table: pa.Table) -> tuple[pa.Table, Relation | None]:
        return self.apply(table), _same_rows(table.num_rows)


@dataclass(frozen=True)
class RenameOp(Op):
    batchwise = True
    mapping: tuple[tuple[str, str], ...]

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table
        names = dict(self.mapping)
        check_columns(self.name, table, names)
        return table.rename_columns([names.get(c, c) for c in table.column_names])

    def traced(self, table: pa.Table) -> tuple[pa.Table, Relation | None]:
        return self.apply(table), _same_rows(table.num_rows)


@dataclass(frozen=True)
class DropOp(Op):
    batchwise = True
    columns: tuple[str, ...]

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0:
            return table
        check_columns(self.name, table, self.columns)
        return table.drop_columns(list(self.columns))

    def traced(self, table: pa.Table) -> tuple[pa.Table, Relation | None]:
        return self.apply(table), _same_rows(table.num_rows)


@dataclass(frozen=True)
class ExplodeOp(Op):
    column: str

    def traced(self, table: pa.Table) -> tuple[pa.Table, Relation | None]:
        if table.num_columns == 0:
            return table, _same_rows(0)
        if self.column not in table.column_names:
            raise KeyError(
                f"{self.name}: no column {self.column!r}; the data has {table.column_names}"
            )
        values = table.column(self.column).combine_chunks()
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)
                or pa.types.is_fixed_size_list(values.type)):  # fmt: skip
            raise TypeError(f"{self.name}: column {self.column!r} is {values.type}, not a list")
        # An empty or null list keeps its row, with a null element (Polars' explode).
        lengths = pc.fill_null(pc.list_value_length(values), 0).to_numpy().astype(np.int64)
        per_row = np.maximum(lengths, 1)
        parents = np.repeat(np.arange(len(values), dtype=np.int64), per_row)
        starts = np.repeat(np.cumsum(per_row) - per_row, per_row)
        inside = np.arange(len(parents), dtype=np.int64) - starts  # element number in its list
        has = inside < np.repeat(lengths, per_row)
        offsets = np.asarray(values.offsets)[: len(values)].astype(np.int64)
        flat = values.values
        element = np.repeat(offsets, per_row) + inside
        taken = flat.take(pa.array(np.where(has, element, 0))) if len(flat) else None
        items = (
            pc.if_else(pa.array(has), taken, pa.scalar(None, flat.type))
            if taken is not None
            else pa.nulls(len(parents), flat.type)
        )
        out = table.take(pa.array(parents))
        i = out.schema.get_field_index(self.column)
        out = out.set_column(i, pa.field(self.column, flat.type), items)
        return out, (np.arange(len(parents), dtype=np.int64), parents)

    def apply(self, table: pa.Table) -> pa.Table:
        return self.traced(table)[0]


@dataclass(frozen=True)
class ConformOp(Op):
    """A Python function's output made to match the schema it declared: the same column names
    (reordered as declared), each cast safely to its declared type."""

    schema: pa.Schema

    def apply(self, table: pa.Table) -> pa.Table:
        if table.num_columns == 0 and table.num_rows == 0:
            return self.schema.empty_table()
        got, want = set(table.column_names), set(self.schema.names)
        if got != want:
            raise SchemaError(
                f"{self.name}: the function declared columns {self.schema.names} but returned "
                f"{table.column_names} (missing {sorted(want - got)}, extra {sorted(got - want)})"
            )
        arrays: list[Any] = []
        for f in self.schema:
            column = table.column(f.name)
            if column.type != f.type:
                try:
                    column = column.cast(f.type)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                    raise SchemaError(
                        f"{self.name}: column {f.name!r} is {column.type}, declared {f.type}, "
                        f"and does not convert: {err}"
                    ) from err
            arrays.append(column)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def traced(self, table: pa.Table) -> tuple[pa.Table, Relation | None]:
        return self.apply(table), _same_rows(table.num_rows)
