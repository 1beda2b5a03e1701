"""The exchange contract: how a stage hands its output to the next one.

A backend stores Arrow tables and returns a small picklable :class:`Ref`; a reader in any process turns
the ref back into a ``pyarrow.Table``. Backends are looked up by name in a registry
(:func:`register` / :func:`create`), never by probing attributes, so a new backend is one module that
registers itself.

Names follow one deterministic layout, ``<run>/<stage>/<task>/<attempt>``, so everything a run or a
failed task attempt left behind can be found and released by prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import pyarrow as pa

from riera.config import Settings
from riera.errors import ExchangeError


@dataclass(frozen=True, slots=True)
class SegmentKey:
    """Where a task attempt's output lives: ``owner`` is the driver's pid, ``run`` the run id."""

    owner: int
    run: str
    stage: str
    task: int
    attempt: int = 0

    @property
    def run_prefix(self) -> str:
        return f"riera-{self.owner}-{self.run}-"

    @property
    def task_prefix(self) -> str:
        return f"{self.run_prefix}{self.stage}-t{self.task}-a{self.attempt}"


@dataclass(frozen=True, slots=True)
class Ref:
    """A handle on one stored table (or one partition of a stored segment). Small and picklable."""

    backend: str
    location: str
    rows: int
    nbytes: int
    batches: tuple[int, int] | None = None  # [start, stop) record batches inside the segment


@runtime_checkable
class Exchange(Protocol):
    """Stores tables for other processes. Implementations must be safe to construct in any process."""

    name: str

    def put(self, table: pa.Table, key: SegmentKey) -> Ref:
        """Store ``table``; returns its ref."""
        ...

    def put_partitioned(self, tables: Sequence[pa.Table], key: SegmentKey) -> list[Ref]:
        """Store the partitions of one task's output (same schema); one ref per partition."""
        ...

    def get(self, ref: Ref) -> pa.Table:
        """The table behind ``ref``; zero-copy where the backend allows."""
        ...

    def release(self, refs: Sequence[Ref]) -> None:
        """Free the storage behind ``refs``. Idempotent; tables already read stay valid."""
        ...

    def release_prefix(self, prefix: str) -> int:
        """Free everything whose name starts with ``prefix`` (a run or a task attempt); returns count."""
        ...


_REGISTRY: dict[str, Callable[[Settings], Exchange]] = {}


def register(name: str, factory: Callable[[Settings], Exchange]) -> None:
    """Make a backend available as ``exchange=name``."""
    _REGISTRY[name] = factory


def available() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def create(name: str, settings: Settings) -> Exchange:
    """Instantiate the backend registered as ``name``."""
    _load_builtins()
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ExchangeError(
            f"unknown exchange {name!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None
    return factory(settings)


def _load_builtins() -> None:
    # Importing a backend module registers it.
    from riera.exchange import shm  # noqa: F401
