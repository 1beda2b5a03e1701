"""Domain provenance: attributes a scientist declares for a dataset, stored in a typed table.

``ds.domain("alignments", {"score": "float", "gene": "str"}, extract=fn)`` declares the table
``domain_alignments``; while the run goes on, every row of the dataset (or every file group, for a
program's outputs) passes through ``fn``, and the attributes it returns become rows of that table
beside ``run_id``, ``element_id`` and ``row_no``. Because the columns are typed, SQL filters them
numerically (``WHERE score > 0.9``) — the point of SAMbA's domain data.

Without ``extract``, the attributes are the dataset's columns of the same names (taken from Arrow
without a Python loop). The extractor runs in the workers; its values are checked against the
declared types there, so a wrong value fails the task naming the dataset, the attribute and the row.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from riera import taskctx
from riera.errors import DomainError, PlanError
from riera.physical.ops import Op

TYPES = ("int", "float", "str", "bool", "bytes", "timestamp")
FIXED = ("run_id", "element_id", "row_no")
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_DATASET = 63 - len("ix_domain_")


def check_declaration(dataset: Any, attributes: Any) -> tuple[tuple[str, str], ...]:
    """Validate ``Dataset.domain``'s arguments where the user wrote them."""
    if not isinstance(dataset, str) or not _NAME.match(dataset) or len(dataset) > MAX_DATASET:
        raise PlanError(
            f"domain: the dataset name {dataset!r} must be lowercase letters, digits and "
            f"underscores, starting with a letter or underscore, at most {MAX_DATASET} characters "
            f"(it names the SQL table domain_<name>)"
        )
    if not isinstance(attributes, Mapping) or not attributes:
        raise PlanError(
            f"domain({dataset!r}): attributes must be a non-empty dict of name -> type, e.g. "
            f"{{'score': 'float'}}; got {attributes!r}"
        )
    out = []
    for name, kind in attributes.items():
        if not isinstance(name, str) or not _NAME.match(name) or len(name) > 63:
            raise PlanError(
                f"domain({dataset!r}): attribute {name!r} must be a lowercase SQL identifier"
            )
        if name in FIXED:
            raise PlanError(
                f"domain({dataset!r}): attribute {name!r} clashes with a fixed column "
                f"({', '.join(FIXED)})"
            )
        if kind not in TYPES:
            raise PlanError(
                f"domain({dataset!r}): attribute {name!r} has type {kind!r}; use one of "
                f"{', '.join(TYPES)}"
            )
        out.append((name, kind))
    return tuple(out)


def _coerce(value: Any, kind: str) -> Any:
    """``value`` as the declared type, or ValueError."""
    if value is None:
        return None
    if hasattr(value, "item") and not isinstance(value, bytes | str):  # numpy scalars
        value = value.item()
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError("a bool is not an int")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            return int(value.strip())
    elif kind == "float":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            return float(value.strip())
    elif kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int | float):
            return str(value)
    elif kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "bytes":
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value)
    elif kind == "timestamp":
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return datetime.fromtimestamp(value, UTC)
    raise ValueError(f"{type(value).__name__} {value!r:.60} is not a {kind}")


@dataclass(frozen=True)
class DomainOp(Op):
    dataset: str
    columns: tuple[tuple[str, str], ...]
    fn: Callable[[dict[str, Any]], Any] | None = None

    def apply(self, table: pa.Table) -> pa.Table:
        ctx = taskctx.current()
        if ctx is None or not ctx.captures or table.num_columns == 0:
            return table
        if self.fn is None:
            missing = [c for c, _ in self.columns if c not in table.column_names]
            if missing:
                raise DomainError(
                    f"{self.name}: no column(s) {missing} for the attributes of "
                    f"{self.dataset!r}; the data has {table.column_names} (or give extract=)"
                )
            names = [c for c, _ in self.columns]
            values = table.select(names).to_pylist()
            for i, row in enumerate(values):
                self._emit(ctx, i, row)
            return table
        for i, row in enumerate(table.to_pylist()):
            got = self.fn(row)
            if got is None:
                continue
            items = [got] if isinstance(got, Mapping) else got
            if not isinstance(items, list | tuple):
                raise DomainError(
                    f"{self.name}: the extractor must return a dict, a list of dicts or None for "
                    f"row {i}; got {type(got).__name__}"
                )
            for item in items:
                if not isinstance(item, Mapping):
                    raise DomainError(
                        f"{self.name}: the extractor returned {type(item).__name__} for row {i}; "
                        f"expected dicts of attribute -> value"
                    )
                self._emit(ctx, i, item)
        return table

    def _emit(self, ctx: taskctx.TaskContext, i: int, item: Mapping[str, Any]) -> None:
        declared = dict(self.columns)
        unknown = [k for k in item if k not in declared]
        if unknown:
            raise DomainError(
                f"{self.name}: row {i} has attribute(s) {unknown} not declared for "
                f"{self.dataset!r}; declared: {list(declared)}"
            )
        row: dict[str, Any] = {"dataset": self.dataset, "row_no": i}
        for name, kind in self.columns:
            try:
                row[name] = _coerce(item.get(name), kind)
            except (ValueError, TypeError, OverflowError) as err:
                raise DomainError(
                    f"{self.name}: attribute {name!r} of row {i} of {self.dataset!r}: {err}"
                ) from None
        ctx.record("domain", row)
