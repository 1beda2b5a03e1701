"""The provenance schema: twelve tables and a view in SQLAlchemy Core, one definition for SQLite and PostgreSQL.

Riera records what every run did in the W3C PROV vocabulary, the way SAMbA does for Spark: a run
and its tasks are *activities*, the data they read and wrote are *entities*, the user is the
*agent*, and the operators of the logical plan are *plans* (prospective provenance). Every table
starts with ``run_id TEXT NOT NULL`` so one run's records are found, exported or deleted by one
key; the exceptions are ``domain_datasets`` (declarations outlive runs) and ``schema_version``.

========================  =====================================  ==========================================
table                     key                                    W3C PROV
========================  =====================================  ==========================================
``runs``                  ``run_id``                             ``prov:Activity`` (the run);
                                                                 ``wasAssociatedWith`` the user
                                                                 (``prov:Agent``, ``user_name``)
``operators``             ``(run_id, op_id)``                    ``prov:Plan`` entities the run followed
``stages``                ``(run_id, stage_id)``                 a group of task activities
``tasks``                 ``(run_id, task_id)``                  ``prov:Activity``; ``wasInformedBy`` follows
                                                                 stage order
``elements``              ``(run_id, element_id)``               ``prov:Entity`` (a split, partition, file,
                                                                 output); ``element_no`` unique per run
``used``                  ``(run_id, task_id, element_id)``      ``prov:used``
``generated``             ``(run_id, element_id)``               ``prov:wasGeneratedBy`` (one task per element)
``derivation_blocks``     none (append only)                     ``prov:wasDerivedFrom`` per record, as
                                                                 ``(element_no, row)`` integer pairs, up
                                                                 to :data:`BLOCK_PAIRS` per row (JSON)
``derivations`` (view)    —                                      the blocks, one row per derivation
``domain_datasets``       ``dataset``                            declarations of the ``domain_<dataset>``
                                                                 tables (user attributes of entities)
``programs``              ``(run_id, task_id, program_no)``      black-box ``prov:Activity`` inside a task
``file_versions``         ``(run_id, stage_id, path)``           ``prov:Entity`` revisions committed to Git
``schema_version``        none (one row)                         —
========================  =====================================  ==========================================

Types are chosen to be portable and cheap to write in bulk:

- timestamps (``started_at``, ``ended_at``) are :class:`UtcDateTime`: ``TIMESTAMP WITH TIME ZONE``
  on PostgreSQL, and on SQLite a ``TIMESTAMP`` column holding ISO 8601 text in UTC
  (``2024-05-01 10:00:00.000000+00:00``), which sorts and compares correctly as text and works with
  SQLite's ``julianday()``/``datetime()``;
- durations are ``seconds`` (float); counts and sizes are ``BIGINT``;
- settings, parameters and lists are :class:`JsonText`: ``TEXT`` holding JSON (portable; query it
  with ``json_extract`` on SQLite, ``::jsonb`` on PostgreSQL). Strings pass through untouched,
  other values are serialised with :func:`json.dumps`.

Indexes cover the joins the CLI and the dashboard make (task to stage, element to the tasks that
used or generated it, record lineage both ways). Nothing here has a foreign key: events arrive from
a collector in batches and a task's row may precede its stage's, so referential integrity would
only turn ordering accidents into lost provenance.

:func:`domain_table` builds the typed ``domain_<dataset>`` tables that hold a dataset's
user-declared attributes; :data:`DOMAIN_TYPES` maps the declared type names to column types.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.types import TypeEngine, UserDefinedType

__all__ = [
    "BLOCK_PAIRS",
    "DERIVATIONS_VIEW",
    "DOMAIN_COLUMNS",
    "DOMAIN_TYPES",
    "SCHEMA_VERSION",
    "JsonText",
    "UtcDateTime",
    "domain_table",
    "metadata",
    "sqlite_timestamp",
    "to_utc",
]

SCHEMA_VERSION = (
    7  # 4: runs.executor; 5: stream_epochs; 6: stream_window_lineage; 7: ix_elements_kind
)


def to_utc(value: datetime) -> datetime:
    """``value`` as an aware datetime in UTC; a naive value is taken to be UTC already."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def sqlite_timestamp(value: Any) -> str | None:
    """``value`` as SQLite stores timestamps: ``YYYY-MM-DD HH:MM:SS.ffffff+00:00`` in UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise TypeError(f"expected a datetime, got {type(value).__name__} {value!r}")
    if value.tzinfo is not UTC:
        value = to_utc(value)
    return (
        f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:"
        f"{value.minute:02d}:{value.second:02d}.{value.microsecond:06d}+00:00"
    )


class _SqliteTimestamp(UserDefinedType[str]):
    """The ``TIMESTAMP`` column type on SQLite; values are already text (see :class:`UtcDateTime`)."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "TIMESTAMP"


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC timestamp: ``TIMESTAMPTZ`` on PostgreSQL, ISO 8601 UTC text on SQLite.

    Writers pass :class:`datetime.datetime` objects (naive ones are taken to be UTC); typed reads
    return aware datetimes in UTC on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(_SqliteTimestamp())
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__} {value!r}")
        if dialect.name == "sqlite":
            return sqlite_timestamp(value)
        return to_utc(value)

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)
        return sqlite_timestamp  # bulk writes format millions of these: one plain function

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return to_utc(value)


class JsonText(TypeDecorator[Any]):
    """JSON kept as ``TEXT``: a ``str`` is stored as given (already JSON), anything else is dumped."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None or isinstance(value, str):
            return value
        return json.dumps(value)


metadata = MetaData()


def _run_id() -> Column[str]:
    return Column("run_id", Text, nullable=False, primary_key=True)


runs = Table(
    "runs",
    metadata,
    _run_id(),
    Column("status", Text),  # running | ok | failed | cancelled
    Column("action", Text),
    Column("user_name", Text),
    Column("host", Text),
    Column("pid", Integer),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("seconds", Float),
    Column("workers", Integer),
    Column("exchange", Text),
    Column("executor", Text),  # what ran the tasks: local | inprocess (a small run) | …
    Column("capture", Text),  # tasks | records
    Column("settings", JsonText),
    Column("riera_version", Text),
    Column("python_version", Text),
    Column("script", Text),
    Column("script_hash", Text),
    Column("argv", JsonText),
    Column("error", Text),
    Column("plan", JsonText),
    Index("ix_runs_started_at", "started_at"),
)

operators = Table(
    "operators",
    metadata,
    _run_id(),
    Column("op_id", Text, primary_key=True),
    Column("kind", Text),
    Column("label", Text),
    Column("function", Text),
    Column("source_hash", Text),
    Column("params", JsonText),
    Column("inputs", JsonText),
    Column("dataset", Text),
    Column("position", Integer),
)

stages = Table(
    "stages",
    metadata,
    _run_id(),
    Column("stage_id", Text, primary_key=True),
    Column("label", Text),
    Column("ops", JsonText),
    Column("num_tasks", Integer),
    Column("status", Text),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("seconds", Float),
    Column("rows_out", BigInteger),
    Column("bytes_out", BigInteger),
    Column("retries", Integer),
    Column("spilled_bytes", BigInteger),
)

tasks = Table(
    "tasks",
    metadata,
    _run_id(),
    Column("task_id", Text, primary_key=True),
    Column("stage_id", Text),
    Column("task_index", Integer),
    Column("attempt", Integer),
    Column("worker_pid", Integer),
    Column("host", Text),
    Column("status", Text),
    Column("started_at", UtcDateTime),
    Column("ended_at", UtcDateTime),
    Column("seconds", Float),
    Column("rows_in", BigInteger),
    Column("rows_out", BigInteger),
    Column("bytes_in", BigInteger),
    Column("bytes_out", BigInteger),
    Column("error", Text),
    Column("read_seconds", Float),
    Column("ops_seconds", Float),
    Column("write_seconds", Float),
    Index("ix_tasks_stage", "run_id", "stage_id"),
)

elements = Table(
    "elements",
    metadata,
    _run_id(),
    Column("element_id", Text, primary_key=True),
    Column("element_no", BigInteger),
    Column("stage_id", Text),
    Column("task_index", Integer),
    Column("partition", Integer),
    Column("kind", Text),  # split | partition | file | output
    Column("rows", BigInteger),
    Column("bytes", BigInteger),
    Column("content_hash", Text),
    Column("location", Text),
    Column("backend", Text),
    Column("git_commit", Text),
    Index("ux_elements_no", "run_id", "element_no", unique=True),
    # the explorer pages one kind of element (a run's outputs) without walking the others
    Index("ix_elements_kind", "run_id", "kind", "element_no"),
)

used = Table(
    "used",
    metadata,
    _run_id(),
    Column("task_id", Text, primary_key=True),
    Column("element_id", Text, primary_key=True),
    Index("ix_used_element", "run_id", "element_id"),
)

generated = Table(
    "generated",
    metadata,
    _run_id(),
    Column("element_id", Text, primary_key=True),
    Column("task_id", Text),
    Index("ix_generated_task", "run_id", "task_id"),
)

derivation_blocks = Table(
    "derivation_blocks",
    metadata,
    Column("run_id", Text, nullable=False),
    Column("out_no", BigInteger),  # the output element (elements.element_no)
    Column("in_no", BigInteger),  # the input element it derives from
    Column("n", BigInteger),  # derivations in the block
    Column("out_lo", BigInteger),  # least and greatest output row and input row in the block
    Column("out_hi", BigInteger),
    Column("in_lo", BigInteger),
    Column("in_hi", BigInteger),
    Column("pairs", Text),  # JSON [[out_row, in_row], …] sorted by out_row, then in_row
    Index("ix_derivation_blocks_out", "run_id", "out_no", "out_lo"),
    Index("ix_derivation_blocks_in", "run_id", "in_no", "in_lo"),
)

BLOCK_PAIRS = 16_384
"""Most derivations per ``derivation_blocks`` row: small enough that a lineage step decodes a
block in a few milliseconds, large enough that a run's lineage is a few rows per element pair."""

# ``derivations``: the blocks as one row per derivation, for plain SQL. A view, so writing lineage
# costs one row per block instead of one indexed row per derivation (the difference between 46 s
# and well under a second for 3M derivations on SQLite).
DERIVATIONS_VIEW = {
    "sqlite": (
        "CREATE VIEW IF NOT EXISTS derivations AS "
        "SELECT b.run_id AS run_id, b.out_no AS out_no, "
        "json_extract(p.value, '$[0]') AS out_row, b.in_no AS in_no, "
        "json_extract(p.value, '$[1]') AS in_row "
        "FROM derivation_blocks b, json_each(b.pairs) p"
    ),
    "postgresql": (
        "CREATE OR REPLACE VIEW derivations AS "
        "SELECT b.run_id, b.out_no, (p.value ->> 0)::bigint AS out_row, b.in_no, "
        "(p.value ->> 1)::bigint AS in_row "
        "FROM derivation_blocks b CROSS JOIN LATERAL jsonb_array_elements(b.pairs::jsonb) AS p(value)"
    ),
}

domain_datasets = Table(
    "domain_datasets",
    metadata,
    Column("dataset", Text, primary_key=True),
    Column("table_name", Text, nullable=False),
    Column("columns", JsonText, nullable=False),
)

programs = Table(
    "programs",
    metadata,
    _run_id(),
    Column("task_id", Text, primary_key=True),
    Column("program_no", Integer, primary_key=True),
    Column("op_id", Text),
    Column("step", Text),
    Column("group_key", Text),
    Column("command", Text),
    Column("started_at", UtcDateTime),
    Column("argv", JsonText),
    Column("exit_code", Integer),
    Column("seconds", Float),
    Column("stdout_tail", Text),
    Column("stderr_tail", Text),
    Column("files_read", JsonText),
    Column("files_written", JsonText),
    Column("workdir", Text),
)

file_versions = Table(
    "file_versions",
    metadata,
    _run_id(),
    Column("stage_id", Text, primary_key=True),
    Column("path", Text, primary_key=True),
    Column("element_id", Text),
    Column("blob", Text),
    Column("commit_sha", Text),
    Column("branch", Text),
    Column("bytes", BigInteger),
    Column("op_id", Text),
    Column("step", Text),
    Column("group_key", Text),
    Column("name", Text),
)

# A streaming query is one run; each epoch is an activity of it, recorded once its commit point
# passed (status committed) or when it was given up (aborted). What it used: the source positions
# it read after and up to (JSON per source and partition); what it generated: the sink writes,
# the state it left (a hash of its changes) and how many records it took in and sent out.
stream_epochs = Table(
    "stream_epochs",
    metadata,
    _run_id(),
    Column("epoch", BigInteger, primary_key=True),
    Column("status", Text),  # committed | aborted | replayed
    Column("started_at", UtcDateTime),
    Column("committed_at", UtcDateTime),
    Column("seconds", Float),
    Column("source", Text),
    Column("positions_from", JsonText),
    Column("positions_to", JsonText),
    Column("watermark", BigInteger),
    Column("records_in", BigInteger),
    Column("records_out", BigInteger),
    Column("late_records", BigInteger),
    Column("dead_letters", BigInteger),
    Column("sinks", JsonText),  # [{"url": …, "epoch": e, "seq": s, "rows": n, "applied": bool}]
    Column("state_keys", BigInteger),
    Column("state_hash", Text),
    Column("checkpoint_seconds", Float),
)

# Per-window lineage of a streaming query (opt-in, write_stream(lineage=True)): each window row
# the epoch emitted, with the ranges of epochs whose records reached that window. Those epochs'
# positions_from → positions_to in stream_epochs (of the query's runs: epochs number on across
# restarts) hold every record of the window (per epoch, so other keys' records too).
stream_window_lineage = Table(
    "stream_window_lineage",
    metadata,
    _run_id(),
    Column("epoch", BigInteger, primary_key=True),  # the epoch that emitted the row
    Column("operator", Text, primary_key=True),
    Column("key", Text, primary_key=True),  # JSON list of the group keys
    Column("window_start", BigInteger, primary_key=True),  # Unix ms
    Column("window_end", BigInteger),
    Column("from_epochs", JsonText),  # [[first, last], …]: epochs whose records reached it
)

schema_version = Table(
    "schema_version",
    metadata,
    Column("version", Integer, nullable=False),
)

DOMAIN_TYPES: Mapping[str, type[TypeEngine[Any]]] = {
    "int": BigInteger,
    "float": Float,
    "str": Text,
    "bool": Boolean,
    "bytes": LargeBinary,
    "timestamp": UtcDateTime,
}
"""Declared attribute type -> column type of a ``domain_<dataset>`` table."""

DOMAIN_COLUMNS = ("run_id", "element_id", "row_no")
"""The fixed leading columns of every domain table (reserved attribute names)."""


def domain_table(table_name: str, columns: Mapping[str, str]) -> Table:
    """The ``Table`` for a dataset's domain attributes, in a :class:`MetaData` of its own.

    ``columns`` maps attribute name -> a key of :data:`DOMAIN_TYPES`; names and types must already
    be validated. The table has no key (rows are appended with ``add``) and one index for joining
    with ``elements``/``derivations`` on ``(run_id, element_id, row_no)``.

    >>> domain_table("domain_reads", {"score": "float"}).c.keys()
    ['run_id', 'element_id', 'row_no', 'score']
    """
    return Table(
        table_name,
        MetaData(),
        Column("run_id", Text, nullable=False),
        Column("element_id", Text),
        Column("row_no", BigInteger),
        *(Column(name, DOMAIN_TYPES[kind]()) for name, kind in columns.items()),
        Index(f"ix_{table_name}", "run_id", "element_id", "row_no"),
    )
