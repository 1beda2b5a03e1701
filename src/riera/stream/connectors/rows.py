"""How rows travel through brokers: one JSON object per message, keyed by its key columns.

JSON is what the document's producers and consumers exchange (``{"chave": "1", "valorA":
"Freezer", "valorB": "1"}``) and what any other tool can read back. Values JSON cannot hold
(timestamps, decimals, bytes) are written as text.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":"))


def encode_rows(rows: pa.Table, key: Sequence[str]) -> Iterator[tuple[str, str]]:
    """``(key, row)`` JSON texts per row; the key is ``""`` when ``key`` is empty."""
    for row in rows.to_pylist():
        k = dumps([row[c] for c in key]) if key else ""
        yield k, dumps({c: v for c, v in row.items() if not c.startswith("__")})
