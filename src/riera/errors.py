"""Riera's exception hierarchy.

Every error Riera raises on purpose derives from :class:`RieraError`, so callers can catch the whole
family with one ``except``. Subclasses carry the context a user needs to act: the operator, the
partition, the file, the fix.
"""

from __future__ import annotations


class RieraError(Exception):
    """Root of every error raised by Riera."""


class PlanError(RieraError, ValueError):
    """A dataset was built with invalid arguments; raised where the user wrote the call."""


class ColumnTypeError(RieraError, TypeError):
    """An operator was given a column whose type it cannot work with in that role (a ``list`` as
    a sort key, a nested column in a CSV file); names the operator, the column and its type."""


class SourceError(RieraError):
    """An input path, file or record could not be read (names the file and, where known, the row)."""


class SchemaMismatchError(SourceError):
    """Files read as one dataset disagree on their columns or types."""


class SchemaError(RieraError):
    """Data does not match the schema the plan declared for it (a function's ``schema=``)."""


class SinkError(RieraError):
    """Output could not be written or committed; nothing that looks complete is left behind."""


class StreamError(RieraError):
    """A streaming query failed: its source, state, checkpoint or commit (names which)."""


class SourceTrimmedError(StreamError):
    """A source no longer holds the position a query must resume from (trimmed or deleted):
    resuming would silently skip records, so the query refuses to start."""


class FencedError(SinkError, StreamError):
    """A sink refused a commit from a driver whose fencing token is older than the newest one
    seen for the job: another driver took the job over, so this one must stop.
    ``held_token``: the newer token, where the refusing side knows it."""

    def __init__(self, message: str, held_token: int | None = None) -> None:
        super().__init__(message)
        self.held_token = held_token


class CheckpointError(StreamError):
    """A checkpoint directory cannot be used: locked by a running query, written by another
    query, or damaged (names the directory and the fix)."""


class ExchangeError(RieraError):
    """Intermediate data could not be stored in, or read from, the exchange."""


class ShmFullError(ExchangeError):
    """Shared memory cannot hold a segment; says how much is needed, how much is free and how to fix it."""

    def __init__(self, path: str, needed: int, free: int, where: str) -> None:
        self.path = path
        self.needed = needed
        self.free = free
        self.where = where
        super().__init__(
            f"shared memory is full: segment {path!r} needs {_mib(needed)} but {where} has "
            f"{_mib(free)} free. Fixes: use fewer/smaller partitions at once "
            f"(repartition into more partitions), free space in {where} "
            f"(`riera shm sweep`), enlarge it (`mount -o remount,size=16G {where}`), "
            f"or pick another exchange with RIERA_SHM_DIR / exchange=..."
        )

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (type(self), (self.path, self.needed, self.free, self.where))


class TaskError(RieraError):
    """A user function raised inside a task.

    Attributes name the operator and partition; ``remote_traceback`` holds the traceback as printed in
    the worker, and ``__cause__`` is the original exception when it could be sent back.
    """

    def __init__(
        self,
        operator: str,
        stage: str,
        partition: int,
        error_type: str,
        error_message: str,
        remote_traceback: str,
    ) -> None:
        self.operator = operator
        self.stage = stage
        self.partition = partition
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback
        super().__init__(
            f"operator {operator!r} failed on partition {partition} (stage {stage}): "
            f"{error_type}: {error_message}\n\n--- traceback in the worker ---\n{remote_traceback}"
        )

    def __reduce__(self) -> tuple[type, tuple[object, ...]]:
        return (
            type(self),
            (
                self.operator,
                self.stage,
                self.partition,
                self.error_type,
                self.error_message,
                self.remote_traceback,
            ),
        )


class MissingExtraError(ExchangeError, ImportError):
    """An exchange backend's optional dependency is not installed; the message names the extra."""


class WorkerLostError(RieraError):
    """A worker process died (killed, out of memory, segfault) more times than the retry limit allows."""


class RunCancelled(RieraError, KeyboardInterrupt):
    """The run was cancelled (Ctrl-C); workers were stopped and intermediate data released."""


class ConfigError(RieraError, ValueError):
    """A setting has an invalid value (names the setting and where it came from)."""


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


class ProvenanceError(RieraError):
    """The provenance store cannot be opened, written or queried (names the store and the fix)."""


class ReadOnlyError(ProvenanceError):
    """A provenance query tried to change the store; queries are read-only."""


class ProgramError(RieraError):
    """A black-box program of ``run_program`` could not run, failed, timed out, or its files were
    unsafe (names the operator, the file group, the command line and the tail of its stderr)."""


class DomainError(RieraError):
    """A domain extractor returned attributes that do not fit the declared schema (names the
    dataset, the attribute and the row)."""


class Terminated(SystemExit):
    """Raised in the main thread on SIGTERM, so a run releases its data like on Ctrl-C and the
    process then exits with status 143 (128 + SIGTERM) after its ``atexit`` shutdown. A
    ``SystemExit``, not a :class:`RieraError`: it ends the program."""
