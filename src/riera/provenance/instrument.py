"""Provenance's instruments for tasks (see :mod:`riera.exec.instrument`).

- :class:`Hashes` (capture ``tasks``): each table a task stores is hashed while still in the
  worker's memory, so a data element's content hash costs no second read;
- :class:`Records` (capture ``records``): hashes, plus record-level lineage — the reader says
  where each row came from, every operator says how its rows relate (``Op.traced``), and after the
  write the task's derivations go to :mod:`riera.taskctx` in blocks.

:func:`for_stage` is the one place that picks an instrument for a stage's capture mode.
"""

from __future__ import annotations

from typing import Any, cast

from riera import taskctx
from riera.exchange.base import Exchange, Ref
from riera.exchange.policy import Exchanges
from riera.exec.instrument import Plain
from riera.kernels.op import Op
from riera.physical.stage import Reader, Writer, WriteResult
from riera.provenance import records
from riera.provenance.hashing import HashingExchange, ref_hashes


class Hashes(Plain):
    def observe(self, exchange: Exchange) -> Exchange:
        return cast(Exchange, HashingExchange(exchange))

    def hashes(self, observed: Exchange, refs: list[Ref], exchanges: Exchanges) -> list[Any]:
        hashing = cast(HashingExchange, observed)
        if len(hashing.hashes) == len(refs):
            return list(hashing.hashes)
        return ref_hashes(refs, exchanges)  # the writer stored more than its refs: read back


class Records(Hashes):
    batchwise = False  # row numbers are relative to the whole partition

    def __init__(self, sample: float | None) -> None:
        self.sample = sample

    def read(self, reader: Reader, task_input: Any, exchange: Exchange) -> tuple[Any, Any]:
        return records.read_traced(reader, task_input, exchange)

    def apply(self, op: Op, table: Any, state: Any) -> tuple[Any, Any]:
        out, step = records.apply_traced(op, table)
        return out, None if state is None or step is None else records.compose(state, step)

    def finish(self, state: Any, writer: Writer, table: Any, out: WriteResult, index: int) -> None:
        if state is None:
            return
        derived = records.finish(state, writer, table, self.sample, index, max(1, len(out.refs)))
        ctx = taskctx.current()
        if derived is not None and ctx is not None:
            ctx.record("derivations", derived)


def for_stage(capture: str, sample: float | None) -> Hashes | None:
    """The instrument of a stage whose capture is ``capture`` (None: nothing to observe)."""
    if capture == "records":
        return Records(sample)
    if capture == "tasks":
        return Hashes()
    return None
