"""The operator interface: what a task applies to a partition, one step after another.

Each operator carries ``name``, the logical operator it came from, so an exception inside it is
reported against the operator the user wrote. ``traced`` is the narrow interface record-level
provenance uses: the operator itself says how its output rows relate to its input rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa


@dataclass(frozen=True)
class Op:
    name: str

    #: True when applying the operator to consecutive slices of a partition and concatenating
    #: the outputs gives the same result as applying it to the whole partition (filters,
    #: projections, partial aggregates, whose partial states the final step merges anyway).
    #: A task then streams its input through such operators a row group at a time.
    batchwise = False

    def apply(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError

    def traced(self, table: Any) -> tuple[Any, tuple[np.ndarray, np.ndarray] | None]:
        """``apply`` and the relation ``(out_rows, in_rows)`` between output and input rows,
        for record lineage; None: this operator cannot say (the stage is then opaque)."""
        return self.apply(table), None
