"""Record lineage in blocks: the derivations between one output and one input element, as JSON.

A derivation says "row ``out_row`` of element ``out_no`` came from row ``in_row`` of element
``in_no``". Stored one row each, with the two indexes lineage queries need, SQLite spends most of
a run's records time maintaining those indexes (46 s for 3M derivations). Grouped instead by
element pair into blocks of at most :data:`~riera.provenance.schema.BLOCK_PAIRS` pairs sorted by
output row, a run writes a few rows per element pair; each block keeps its row ranges so a lineage
step reads only the blocks that can hold a row, and decodes them with numpy. JSON keeps the
blocks readable by SQL on both stores (the ``derivations`` view expands them).

>>> b = encode(np.array([0, 0, 1]), np.array([5, 2, 5]), np.array([1, 1, 1]), np.array([7, 3, 9]))
>>> [(x["out_key"], x["in_key"], x["n"], x["pairs"]) for x in b]
[(0, 1, 2, '[[2,3],[5,7]]'), (1, 1, 1, '[[5,9]]')]
>>> decode('[[5,7],[5,9]]').tolist()
[[5, 7], [5, 9]]
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from riera.provenance.schema import BLOCK_PAIRS


def encode(
    out_key: np.ndarray,
    out_row: np.ndarray,
    in_key: np.ndarray,
    in_row: np.ndarray,
    block: int = BLOCK_PAIRS,
) -> list[dict[str, Any]]:
    """Blocks of the derivations ``(out_key, out_row) ← (in_key, in_row)``, one group of rows per
    ``(out_key, in_key)`` cut every ``block`` pairs; keys are whatever identifies the elements
    (partition and slot numbers in a worker, element numbers in the store)."""
    n = len(out_row)
    if n == 0:
        return []
    out_key, in_key = np.asarray(out_key, np.int64), np.asarray(in_key, np.int64)
    out_row, in_row = np.asarray(out_row, np.int64), np.asarray(in_row, np.int64)
    order = np.lexsort((in_row, out_row, in_key, out_key))
    out_key, out_row, in_key, in_row = out_key[order], out_row[order], in_key[order], in_row[order]
    cuts = np.flatnonzero((out_key[1:] != out_key[:-1]) | (in_key[1:] != in_key[:-1])) + 1
    starts = np.concatenate(([0], cuts))
    ends = np.concatenate((cuts, [n]))
    blocks = []
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        for a in range(start, end, block):
            b = min(a + block, end)
            o, i = out_row[a:b], in_row[a:b]
            blocks.append(
                {
                    "out_key": int(out_key[a]),
                    "in_key": int(in_key[a]),
                    "n": b - a,
                    "out_lo": int(o[0]),
                    "out_hi": int(o[-1]),
                    "in_lo": int(i.min()),
                    "in_hi": int(i.max()),
                    "pairs": json.dumps(np.column_stack((o, i)).tolist(), separators=(",", ":")),
                }
            )
    return blocks


def decode(pairs: str) -> np.ndarray:
    """A block's ``pairs`` as an ``(n, 2)`` int64 array of ``(out_row, in_row)``."""
    return np.asarray(json.loads(pairs), dtype=np.int64).reshape(-1, 2)
