"""Riera: parallel batch and streaming dataflows for Python, with zero-copy shared-memory exchange.

>>> import riera
>>> riera.range(1000).filter(lambda r: r["id"] % 2 == 0).count()
500
"""

from __future__ import annotations

from riera.dataset import Dataset, GroupedDataset
from riera.errors import (
    ConfigError,
    DomainError,
    ExchangeError,
    PlanError,
    ProgramError,
    ProvenanceError,
    RieraError,
    RunCancelled,
    SchemaError,
    SchemaMismatchError,
    ShmFullError,
    SinkError,
    SourceError,
    TaskError,
    WorkerLostError,
)
from riera.exec.hooks import Hooks, RunInfo, StageInfo, TaskInfo
from riera.expr import Expr, col, lit, when
from riera.runtime import get_runtime, init, shutdown
from riera.sources import (
    from_arrow,
    from_items,
    from_pandas,
    range,
    read_csv,
    read_file_groups,
    read_files,
    read_json,
    read_parquet,
    read_text,
)
from riera.streaming import read_stream
from riera.version import __version__


def __getattr__(name: str) -> object:
    """``riera.stream`` and ``riera.testing`` load when first used (a faster cold start)."""
    if name in ("stream", "testing"):
        import importlib

        return importlib.import_module(f"riera.{name}")
    raise AttributeError(f"module 'riera' has no attribute {name!r}")


def add_hooks(*hooks: Hooks) -> None:
    """Subscribe hooks to the session's runs (run/stage/task start and end)."""
    get_runtime().add_hooks(*hooks)


__all__ = [
    "ConfigError",
    "Dataset",
    "DomainError",
    "ExchangeError",
    "Expr",
    "GroupedDataset",
    "Hooks",
    "PlanError",
    "ProgramError",
    "ProvenanceError",
    "RieraError",
    "RunCancelled",
    "RunInfo",
    "SchemaError",
    "SchemaMismatchError",
    "ShmFullError",
    "SinkError",
    "SourceError",
    "StageInfo",
    "TaskError",
    "TaskInfo",
    "WorkerLostError",
    "__version__",
    "add_hooks",
    "col",
    "from_arrow",
    "from_items",
    "from_pandas",
    "get_runtime",
    "init",
    "lit",
    "range",
    "read_csv",
    "read_file_groups",
    "read_files",
    "read_json",
    "read_parquet",
    "read_stream",
    "read_text",
    "shutdown",
    "when",
]
