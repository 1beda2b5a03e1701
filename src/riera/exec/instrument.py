"""The narrow interface through which observers (provenance) see inside a task.

A worker runs reader → operators → writer; it knows nothing of provenance. A stage may carry an
:class:`Instrument` (attached by the runtime from the stage's capture mode), and the worker calls it
at four points: around the exchange the task writes to (to hash what it stores while it is in
memory), at the read, after each operator (to follow rows), and after the write (to report what it
saw). :class:`Plain` — what a stage without an instrument gets — does nothing, at no cost.
Instruments travel pickled with their stage, so the worker imports no observer's module itself.
"""

from __future__ import annotations

from typing import Any, Protocol

from riera.exchange.base import Exchange, Ref
from riera.exchange.policy import Exchanges
from riera.kernels.op import Op
from riera.physical.stage import Reader, Writer, WriteResult


class Instrument(Protocol):
    #: False when the instrument follows rows through the operators (record lineage): the
    #: task then applies them to its whole input at once, never a row group at a time.
    batchwise: bool

    def observe(self, exchange: Exchange) -> Exchange:
        """The exchange the task writes through (may wrap ``exchange``)."""

    def read(self, reader: Reader, task_input: Any, exchange: Exchange) -> tuple[Any, Any]:
        """The reader's table and the instrument's state for it."""

    def apply(self, op: Op, table: Any, state: Any) -> tuple[Any, Any]:
        """``op`` over ``table`` and the new state."""

    def finish(self, state: Any, writer: Writer, table: Any, out: WriteResult, index: int) -> None:
        """After the write (may record what it learned in :mod:`riera.taskctx`)."""

    def hashes(self, observed: Exchange, refs: list[Ref], exchanges: Exchanges) -> list[Any]:
        """Content hashes of the task's outputs (empty: none)."""


class Plain:
    """No instrumentation."""

    batchwise = True

    def observe(self, exchange: Exchange) -> Exchange:
        return exchange

    def read(self, reader: Reader, task_input: Any, exchange: Exchange) -> tuple[Any, Any]:
        return reader.read(task_input, exchange), None

    def apply(self, op: Op, table: Any, state: Any) -> tuple[Any, Any]:
        return op.apply(table), None

    def finish(self, state: Any, writer: Writer, table: Any, out: WriteResult, index: int) -> None:
        return None

    def hashes(self, observed: Exchange, refs: list[Ref], exchanges: Exchanges) -> list[Any]:
        return []


PLAIN = Plain()
