"""Plain-text tables for ``Dataset.show()``: aligned columns, types under the names, long values cut.

Widths are counted in terminal cells (wide CJK characters and emoji take two), so columns stay
aligned whatever the text.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from rich.cells import cell_len

MAX_CELL = 32


def _cell(value: Any) -> str:
    text = "null" if value is None else str(value)
    text = text.replace("\n", "\\n").replace("\t", "\\t")
    if cell_len(text) <= MAX_CELL:
        return text
    out = ""
    for ch in text:
        if cell_len(out + ch) > MAX_CELL - 1:
            break
        out += ch
    return out + "…"


def _pad(text: str, width: int, right: bool) -> str:
    gap = " " * (width - cell_len(text))
    return gap + text if right else text + gap


def render_table(table: pa.Table) -> str:
    """``table`` as text: a header of names and types, a rule, one line per row, the shape.

    >>> import pyarrow as pa
    >>> print(render_table(pa.table({"word": ["añ", "b"], "n": [10, 2]})))
    word   | n
    string | int64
    -------+------
    añ     |    10
    b      |     2
    (2 rows × 2 columns)
    """
    names = table.column_names
    types = [str(t) for t in table.schema.types]
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    right = [
        pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)
        for t in table.schema.types
    ]
    widths = [
        max([cell_len(names[i]), cell_len(types[i]), *(cell_len(r[i]) for r in rows)])
        for i in range(len(names))
    ]
    lines = [
        " | ".join(_pad(names[i], widths[i], False) for i in range(len(names))).rstrip(),
        " | ".join(_pad(types[i], widths[i], False) for i in range(len(names))).rstrip(),
        "-+-".join("-" * w for w in widths),
    ]
    lines += [
        " | ".join(_pad(r[i], widths[i], right[i]) for i in range(len(names))).rstrip()
        for r in rows
    ]
    plural = "" if table.num_rows == 1 else "s"
    cols = "" if table.num_columns == 1 else "s"
    lines.append(f"({table.num_rows} row{plural} × {table.num_columns} column{cols})")
    return "\n".join(lines)
