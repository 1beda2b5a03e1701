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
import pyarrow.ipc as ipc

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

    # The ``<run>/<stage>/<task>/<partition>`` layout of object stores and key-value stores; the
    # owner (driver pid) rides with the run id so concurrent drivers never share a name.
    @property
    def run_path(self) -> str:
        return f"{self.run}.{self.owner}/"

    @property
    def task_path(self) -> str:
        return f"{self.run_path}{self.stage}/t{self.task}/a{self.attempt}/"

    def object_path(self, partition: int) -> str:
        return f"{self.task_path}p{partition}"


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

    def release_task(self, key: SegmentKey) -> int:
        """Free everything one task attempt stored (its retry starts clean); returns a count."""
        ...

    def release_run(self, key: SegmentKey) -> int:
        """Free everything stored under ``key``'s run (owner and run id); returns a count."""
        ...


def to_ipc(table: pa.Table) -> pa.Buffer:
    """``table`` as Arrow IPC stream bytes (one copy), dictionaries unified across batches."""
    sink = pa.BufferOutputStream()
    options = ipc.IpcWriteOptions(unify_dictionaries=True)
    with ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return sink.getvalue()


def from_ipc(data: pa.Buffer | bytes | memoryview) -> pa.Table:
    """The table in Arrow IPC stream bytes; its buffers point into ``data`` (no copy)."""
    return ipc.open_stream(pa.BufferReader(data)).read_all()


class PerPartitionObjects:
    """``put_partitioned`` for stores that keep one object per partition (S3, Redis, disk…)."""

    def put_partitioned(self, tables: Sequence[pa.Table], key: SegmentKey) -> list[Ref]:
        return [self.put_partition(t, key, i) for i, t in enumerate(tables)]  # type: ignore[attr-defined]

    def put(self, table: pa.Table, key: SegmentKey) -> Ref:
        return self.put_partition(table, key, 0)  # type: ignore[attr-defined]


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
    import importlib

    # Importing a backend module registers it.
    from riera.exchange import disk, pickle_shm, shm  # noqa: F401

    # Remote backends import their client library (redis, boto3) only when constructed, so a
    # missing extra surfaces as an ImportError naming it when that backend is chosen. Should the
    # module itself fail to import, ``import riera`` still works and the name raises on use.
    for name, module in (("redis", "redis_store"), ("s3", "s3")):
        try:
            importlib.import_module(f"riera.exchange.{module}")
        except ImportError as err:

            def unavailable(settings: Settings, _err: ImportError = err) -> Exchange:
                raise _err

            register(name, unavailable)
