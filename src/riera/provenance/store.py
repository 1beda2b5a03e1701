"""Provenance stores: one interface over SQLite (the default, a file under ``home``) and PostgreSQL.

The collector thread calls :meth:`ProvenanceStore.write` with batches of *events* and the CLI calls
:meth:`ProvenanceStore.sql`; both work the same on both databases, and one conformance suite
(``tests/provenance/test_store_conformance.py``) runs every test against each.

Design choices, and why:

- **One transaction per batch.** ``write(events)`` applies a batch in order inside one
  transaction: a bad event (unknown table or column, a missing key, a value the database refuses)
  rolls the whole batch back, so a run's provenance is never half of a batch.
- **Bulk writes bypass SQLAlchemy's per-row work.** Consecutive events with the same verb, table
  and set of columns form one group. SQLAlchemy Core builds and compiles the group's statement
  once (``INSERT … ON CONFLICT …`` from the dialect's ``insert`` construct); the rows then go
  straight to the driver's ``executemany`` as tuples, with SQLAlchemy's bind processors applied
  only to the columns that have one (timestamps, JSON). Measured on SQLite, 100k ``elements`` rows
  take ~0.3 s this way against ~0.8 s through ``Connection.execute(stmt, rows)`` (whose
  per-row parameter processing is the cost). On PostgreSQL, psycopg 3 pipelines ``executemany``;
  appends to tables without a key (``derivation_blocks``, domain tables) use ``COPY … FROM STDIN``,
  about 15 times faster than ``executemany`` for the same rows.
- **"put" and "add".** ``put`` inserts a row or, on a primary-key conflict, updates only the
  columns the event gives (``ON CONFLICT (pk) DO UPDATE SET c = excluded.c``), so a task written
  as ``running`` and later as ``ok`` keeps the columns only the first event knew. ``add`` is a
  plain insert; on keyed tables duplicates are ignored (``ON CONFLICT DO NOTHING``).
- **Queries are read-only, enforced by the database.** SQLite queries run on a second connection
  opened with ``mode=ro``, ``PRAGMA query_only`` and an authorizer that denies every statement
  that would change anything (writes, DDL, ``ATTACH`` — hence ``VACUUM INTO`` — and ``PRAGMA``
  assignments). PostgreSQL queries run in ``BEGIN READ ONLY`` transactions
  (``default_transaction_read_only`` too) and always through the extended protocol
  (``prepare=True``), which accepts a single statement, so ``COMMIT; DROP …`` cannot escape the
  read-only transaction. In front of that, statements whose first keyword is not a query's
  (``INSERT``, ``DROP``, ``COPY``, ``DO``, ``CALL``, ``BEGIN``, …) are refused before they reach
  the database: a clearer message, and it stops what a read-only transaction still allows
  (PostgreSQL's ``COPY … TO`` a server file). Either way :class:`~riera.errors.ReadOnlyError`.
- **SQLite in WAL mode** (``synchronous=NORMAL``, 5 s busy timeout): readers never block the
  writer and the writer never blocks readers; write transactions start with ``BEGIN IMMEDIATE`` so
  concurrent writers queue on the lock instead of failing half way.
- **Tables are created if missing**, idempotently and safely when several processes open the same
  store at once (``CREATE … IF NOT EXISTS`` under ``BEGIN IMMEDIATE`` on SQLite, under a
  transaction-scoped advisory lock on PostgreSQL). ``schema_version`` records the layout.

Query parameters: ``sql(query, params)`` takes named parameters written ``:name`` on both databases
(SQLAlchemy's ``text()`` rules: write ``\\:`` for a literal colon followed by a word character).
Without ``params`` the query is sent to the database exactly as written. Timestamps come back as
aware datetimes from PostgreSQL and as ISO 8601 UTC text from SQLite (which compares and sorts
correctly, and parses with :meth:`datetime.datetime.fromisoformat`); ``datetime`` parameters are
converted to that text on SQLite.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from operator import itemgetter
from pathlib import Path
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.schema import CreateIndex, CreateTable

from riera.errors import ProvenanceError, ReadOnlyError
from riera.exchange.policy import redact_url
from riera.provenance import connect, migrate
from riera.provenance import schema as s
from riera.provenance.connect import MAX_IDENT, check_name, message
from riera.provenance.sqlguard import NOT_QUERIES, first_keyword, is_read_only_violation

__all__ = ["Columns", "Event", "ProvenanceStore", "QueryResult", "open_store"]

log = logging.getLogger(__name__)

Event = tuple[str, str, dict[str, Any]]
"""``(verb, table, row)``: verb ``"put"`` (upsert the given columns) or ``"add"`` (insert)."""

VERBS = ("put", "add")
BULK_ROWS = 200_000  # rows of a bulk (Columns) event sent to the database per statement
_DDL_LOCK = 0x52494552  # "RIER": the advisory lock serialising table creation on PostgreSQL
_MAX_DATASET = MAX_IDENT - len("ix_domain_")  # the domain table's index name must fit too
_INTERNAL_TABLES = ("schema_version", "domain_datasets")  # written by the store itself
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class QueryResult:
    """What :meth:`ProvenanceStore.sql` returns: column names and rows (tuples) in query order."""

    columns: list[str]
    rows: list[tuple[Any, ...]]

    def to_dicts(self) -> list[dict[str, Any]]:
        """The rows as ``{column: value}`` dicts.

        >>> QueryResult(["a", "b"], [(1, "x")]).to_dicts()
        [{'a': 1, 'b': 'x'}]
        """
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class Columns(dict[str, Any]):
    """Many rows of one event, column by column: ``{column: list or array of values}``, all the
    same length. Bulk rows (a run's elements) travel this way, with no dict per row.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d, open_store(pathlib.Path(d) / "p.db") as st:
    ...     st.write([("put", "elements", Columns(run_id=["r"] * 2, element_id=["a", "b"],
    ...                rows=[5, 7]))])
    ...     st.sql("SELECT element_id, rows FROM elements ORDER BY element_id").rows
    [('a', 5), ('b', 7)]
    """

    @property
    def num_rows(self) -> int:
        return len(next(iter(self.values()))) if self else 0


@dataclass(frozen=True)
class _Insert:
    """One compiled insert for a (verb, table, columns) group; rows go to the driver as tuples."""

    verb: str
    table: str
    sql: str
    keys: tuple[str, ...]  # column of each positional parameter
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, bind processor)
    copy: bool  # PostgreSQL COPY FROM STDIN (appends to tables without a key)

    def params(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """The rows as positional tuples, bind-processed; column-wise so the loops stay in C."""
        keys = self.keys
        if rows and isinstance(rows[0], Columns):
            return self._column_params(rows[0])
        if not self.processors and len(keys) > 1:
            return list(map(itemgetter(*keys), rows))
        processors = dict(self.processors)
        columns: list[list[Any]] = []
        for i, key in enumerate(keys):
            values = map(itemgetter(key), rows)
            process = processors.get(i)
            columns.append(list(map(process, values) if process else values))
        return list(zip(*columns, strict=True))

    def _column_params(self, cols: Columns) -> list[tuple[Any, ...]]:
        processors = dict(self.processors)
        columns: list[Any] = []
        for i, key in enumerate(self.keys):
            values = cols[key]
            values = values.tolist() if hasattr(values, "tolist") else list(values)
            process = processors.get(i)
            columns.append(list(map(process, values)) if process else values)
        return list(zip(*columns, strict=True))

    def chunks(self, rows: list[Mapping[str, Any]]) -> Iterator[list[Mapping[str, Any]]]:
        """``rows`` in pieces that bound memory: a bulk :class:`Columns` event is cut into
        slices of :data:`BULK_ROWS` (its tuples would otherwise all exist at once)."""
        if not (rows and isinstance(rows[0], Columns)):
            yield rows
            return
        cols = rows[0]
        for start in range(0, cols.num_rows, BULK_ROWS):
            yield [Columns({k: v[start : start + BULK_ROWS] for k, v in cols.items()})]


class ProvenanceStore:
    """A provenance database (SQLite or PostgreSQL) with the tables of :mod:`riera.provenance.schema`.

    Open one with :func:`open_store`. Thread-safe: every call checks a connection out of a pool.
    ``url`` names the store for display (password redacted); ``dialect`` is ``"sqlite"`` or
    ``"postgresql"``.
    """

    url: str
    dialect: str

    def __init__(self, url: str, engine: Engine, reader: Engine) -> None:
        self.url = url
        self.dialect = engine.dialect.name
        self._engine = engine
        self._reader = reader
        dbapi_error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self._dbapi_error = dbapi_error
        self._errors: tuple[type[Exception], ...] = (
            dbapi_error,
            sa.exc.SQLAlchemyError,
            TypeError,
            ValueError,
            OverflowError,
        )
        self._plans: dict[tuple[str, sa.Table, frozenset[str]], _Insert] = {}
        self._domain: dict[str, sa.Table] = {}
        self._closed = False

    def __repr__(self) -> str:
        return f"ProvenanceStore({self.url!r})"

    def __enter__(self) -> ProvenanceStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writing -----------------------------------------------------------------------------

    def write(self, events: Sequence[Event]) -> None:
        """Apply ``events`` in order, all in one transaction (all or nothing).

        Each event is ``(verb, table, row)``: ``"put"`` inserts the row or, when its primary key
        exists, updates only the columns given; ``"add"`` inserts (ignoring duplicates on tables
        with a key). Consecutive events with the same verb, table and columns go to the database
        as one bulk statement. Raises :class:`~riera.errors.ProvenanceError` (and writes nothing)
        for an unknown verb, table or column, a ``put`` without the key columns, or any error
        from the database.

        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d, open_store(pathlib.Path(d) / "p.db") as st:
        ...     st.write([("put", "runs", {"run_id": "r1", "status": "running", "pid": 7}),
        ...               ("put", "runs", {"run_id": "r1", "status": "ok"})])
        ...     st.sql("SELECT status, pid FROM runs").rows
        [('ok', 7)]
        """
        if not events:
            return
        self._check_open()
        try:
            with self._engine.begin() as conn:
                groups = self._group(conn, events)
                cursor = conn.connection.cursor()
                try:
                    for plan, rows in groups:
                        self._execute(cursor, plan, rows, len(events))
                finally:
                    cursor.close()
        except ProvenanceError:
            raise
        except self._errors as err:
            raise ProvenanceError(
                f"provenance write to {self.url} failed: {message(err)}; the batch of "
                f"{len(events)} event(s) was rolled back"
            ) from err

    def _group(
        self, conn: Connection, events: Sequence[Event]
    ) -> list[tuple[_Insert, list[Mapping[str, Any]]]]:
        """Validate ``events`` and cut them into runs of the same (verb, table, columns)."""
        groups: list[tuple[_Insert, list[Mapping[str, Any]]]] = []
        rows: list[Mapping[str, Any]] = []
        last_verb = last_table = None
        last_keys: Any = None
        for i, item in enumerate(events):
            try:
                verb, table_name, row = item
            except (TypeError, ValueError):
                raise ProvenanceError(
                    f"event {i} of the batch is {item!r}; expected a (verb, table, row) tuple"
                ) from None
            # Fast path: same verb, table and columns as the previous event (dict key views
            # compare as sets, in C).
            if (
                type(row) is dict
                and row.keys() == last_keys
                and table_name == last_table
                and verb == last_verb
            ):
                rows.append(row)
                continue
            if not isinstance(table_name, str):
                raise ProvenanceError(
                    f"event {i}: the table must be a name (str), got {table_name!r}"
                )
            if isinstance(row, Columns):  # a bulk event: a group of its own
                lengths = {len(v) for v in row.values()}
                if len(lengths) > 1:
                    raise ProvenanceError(
                        f"event {i} ({verb} {table_name}): the columns have different lengths "
                        f"{sorted(lengths)}"
                    )
                if verb not in VERBS:
                    raise ProvenanceError(
                        f"event {i}: unknown verb {verb!r}; expected one of {', '.join(VERBS)}"
                    )
                if not row or not row.num_rows:
                    continue
                columns = frozenset(row)
                table = self._table(conn, table_name, columns)
                groups.append((self._plan(verb, table, columns), [row]))
                last_verb = last_table = last_keys = None
                continue
            if not isinstance(row, Mapping) or not row:
                raise ProvenanceError(
                    f"event {i} ({verb} {table_name}): the row must be a non-empty dict of "
                    f"column -> value, got {row!r}"
                )
            if verb not in VERBS:
                raise ProvenanceError(
                    f"event {i}: unknown verb {verb!r}; expected one of {', '.join(VERBS)}"
                )
            columns = frozenset(row)
            table = self._table(conn, table_name, columns)
            rows = [row]
            groups.append((self._plan(verb, table, columns), rows))
            last_verb, last_table, last_keys = verb, table_name, dict(row).keys()
        return groups

    def _table(self, conn: Connection, name: str, columns: frozenset[str]) -> sa.Table:
        if name in _INTERNAL_TABLES:
            raise ProvenanceError(
                f"table {name!r} is written by the store itself, not by events"
                + (" (use ensure_domain_table)" if name == "domain_datasets" else "")
            )
        table = s.metadata.tables.get(name)
        if table is not None:
            return table
        cached = self._domain.get(name)
        if cached is not None and columns <= set(cached.c.keys()):
            return cached
        if name.startswith("domain_"):  # declared by another store, or since gained columns
            declared = conn.execute(
                sa.select(s.domain_datasets.c.columns).where(s.domain_datasets.c.table_name == name)
            ).scalar()
            if declared is not None:
                table = s.domain_table(name, json.loads(declared))
                self._domain[name] = table
                return table
        writable = [t for t in s.metadata.tables if t not in _INTERNAL_TABLES]
        hint = (
            " (declare a dataset's domain table with ensure_domain_table first)"
            if name.startswith("domain_")
            else ""
        )
        raise ProvenanceError(
            f"unknown provenance table {name!r}{hint}; tables: {', '.join(writable)}, domain_*"
        )

    def _plan(self, verb: str, table: sa.Table, columns: frozenset[str]) -> _Insert:
        cache_key = (verb, table, columns)
        cached = self._plans.get(cache_key)
        if cached is not None:
            return cached
        unknown = sorted(columns - set(table.c.keys()))
        if unknown:
            raise ProvenanceError(
                f"table {table.name!r} has no column(s) {', '.join(map(repr, unknown))}; its "
                f"columns are {', '.join(table.c.keys())}"
            )
        ordered = [c.name for c in table.columns if c.name in columns]
        pk = [c.name for c in table.primary_key.columns]
        keyed = bool(pk) or any(ix.unique for ix in table.indexes)
        dialect = self._engine.dialect
        # The PostgreSQL dialect module is imported only for PostgreSQL stores (30 ms of a
        # cold start otherwise).
        stmt: Any
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(table)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table)
        copy = False
        if verb == "put":
            if not pk:
                raise ProvenanceError(
                    f"'put' needs a table with a primary key; {table.name!r} has none, use 'add'"
                )
            missing = [k for k in pk if k not in columns]
            if missing:
                raise ProvenanceError(
                    f"'put' into {table.name!r} needs its key column(s) {', '.join(pk)}; "
                    f"missing {', '.join(missing)}"
                )
            update = [c for c in ordered if c not in pk]
            if update:
                stmt = stmt.on_conflict_do_update(
                    index_elements=pk, set_={c: stmt.excluded[c] for c in update}
                )
            else:
                stmt = stmt.on_conflict_do_nothing(index_elements=pk)
        elif keyed:
            stmt = stmt.on_conflict_do_nothing()
        elif self.dialect == "postgresql":
            copy = True
        if copy:
            quote = dialect.identifier_preparer.quote
            table_sql = dialect.identifier_preparer.format_table(table)
            sql = f"COPY {table_sql} ({', '.join(map(quote, ordered))}) FROM STDIN"
            keys = tuple(ordered)
        else:
            compiled = stmt.compile(dialect=dialect, column_keys=ordered)
            sql = compiled.string
            keys = tuple(compiled.positiontup or ())
        processors = []
        for i, k in enumerate(keys):
            process = table.c[k].type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                processors.append((i, process))
        plan = _Insert(verb, table.name, sql, keys, tuple(processors), copy)
        self._plans[cache_key] = plan
        return plan

    def _execute(self, cursor: Any, plan: _Insert, rows: list[Mapping[str, Any]], n: int) -> None:
        try:
            for piece in plan.chunks(rows):
                params = plan.params(piece)
                if plan.copy:
                    with cursor.copy(plan.sql) as copy:
                        for values in params:
                            copy.write_row(values)
                else:
                    cursor.executemany(plan.sql, params)
        except self._errors as err:
            raise ProvenanceError(
                f"provenance write to {self.url} failed on {plan.verb!r} of {len(rows)} row(s) "
                f"into {plan.table!r}: {message(err)}; the batch of {n} event(s) was rolled back"
            ) from err

    # -- domain tables ------------------------------------------------------------------------

    def ensure_domain_table(self, dataset: str, columns: Mapping[str, str]) -> str:
        """Create (if missing) ``domain_<dataset>`` for a dataset's declared attributes; its name.

        ``columns`` maps attribute name -> ``"int"``, ``"float"``, ``"str"``, ``"bool"``,
        ``"bytes"`` or ``"timestamp"``; the table also has ``run_id``, ``element_id`` and
        ``row_no``. Names are lowercase identifiers (they work unquoted in SQL on both databases).
        Declaring new attributes later adds columns; re-declaring one with another type raises
        :class:`~riera.errors.ProvenanceError`. Rows are written with
        ``write([("add", "domain_<dataset>", row)])``.

        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d, open_store(pathlib.Path(d) / "p.db") as st:
        ...     st.ensure_domain_table("reads", {"score": "float"})
        ...     st.write([("add", "domain_reads", {"run_id": "r1", "row_no": 0, "score": 0.9})])
        ...     st.sql("SELECT row_no FROM domain_reads WHERE score > 0.5").rows
        'domain_reads'
        [(0,)]
        """
        self._check_open()
        check_name(dataset, "dataset name", _MAX_DATASET)
        if not isinstance(columns, Mapping):
            raise ProvenanceError(
                f"domain attributes of dataset {dataset!r} must be a mapping of name -> type, "
                f"got {type(columns).__name__}"
            )
        for name, kind in columns.items():
            check_name(name, f"domain attribute of dataset {dataset!r}", MAX_IDENT)
            if name in s.DOMAIN_COLUMNS:
                raise ProvenanceError(
                    f"domain attribute {name!r} of dataset {dataset!r} clashes with a fixed column "
                    f"({', '.join(s.DOMAIN_COLUMNS)}); choose another name"
                )
            if kind not in s.DOMAIN_TYPES:
                raise ProvenanceError(
                    f"domain attribute {name!r} of dataset {dataset!r} has type {kind!r}; "
                    f"expected one of {', '.join(s.DOMAIN_TYPES)}"
                )
        table_name = f"domain_{dataset}"
        try:
            with self._engine.begin() as conn:
                table = self._declare(conn, dataset, table_name, dict(columns))
        except ProvenanceError:
            raise
        except self._errors as err:
            raise ProvenanceError(
                f"cannot create the domain table {table_name!r} in {self.url}: {message(err)}"
            ) from err
        self._domain[table_name] = table
        return table_name

    def _declare(
        self, conn: Connection, dataset: str, table_name: str, columns: dict[str, str]
    ) -> sa.Table:
        self._lock_ddl(conn)
        dd = s.domain_datasets
        stored = conn.execute(sa.select(dd.c.columns).where(dd.c.dataset == dataset)).scalar()
        declared: dict[str, str] = json.loads(stored) if stored is not None else {}
        for name, kind in columns.items():
            old = declared.get(name)
            if old is not None and old != kind:
                raise ProvenanceError(
                    f"domain attribute {name!r} of dataset {dataset!r} is declared as {old!r} in "
                    f"{self.url}; it cannot be re-declared as {kind!r} (use another attribute "
                    f"name, or another dataset name)"
                )
        added = [name for name in columns if name not in declared]
        merged = {**declared, **{name: columns[name] for name in added}}
        table = s.domain_table(table_name, merged)
        if stored is None:
            _create_table(conn, table)
            conn.execute(
                sa.insert(dd).values(dataset=dataset, table_name=table_name, columns=merged)
            )
        elif added:
            preparer = self._engine.dialect.identifier_preparer
            for name in added:
                ddl = table.c[name].type.compile(dialect=self._engine.dialect)
                conn.exec_driver_sql(
                    f"ALTER TABLE {preparer.format_table(table)} "
                    f"ADD COLUMN {preparer.quote(name)} {ddl}"
                )
            conn.execute(sa.update(dd).where(dd.c.dataset == dataset).values(columns=merged))
        return table

    # -- querying -----------------------------------------------------------------------------

    def sql(
        self,
        query: str,
        params: Mapping[str, Any] | None = None,
        *,
        limit: int | None = None,
        timeout_s: float | None = None,
        max_value_bytes: int | None = None,
    ) -> QueryResult:
        """Run one read-only SQL statement; at most ``limit`` rows when given.

        Parameters are named, ``:name``. Any statement that would change the store raises
        :class:`~riera.errors.ReadOnlyError`; other errors raise
        :class:`~riera.errors.ProvenanceError` with the database's message and the query.
        ``timeout_s`` cancels a statement that runs longer (PostgreSQL's ``statement_timeout``
        for this transaction only; on SQLite a progress handler interrupts it), raising
        :class:`~riera.errors.ProvenanceError` that says so. ``max_value_bytes`` caps the size
        of any string or blob SQLite builds (its ``SQLITE_LIMIT_LENGTH``, for this call), so one
        function call cannot take the memory or outlast the timeout.

        >>> import tempfile, pathlib
        >>> with tempfile.TemporaryDirectory() as d, open_store(pathlib.Path(d) / "p.db") as st:
        ...     st.write([("put", "runs", {"run_id": "r1", "status": "ok"})])
        ...     st.sql("SELECT run_id, status FROM runs WHERE status = :s", {"s": "ok"}).to_dicts()
        [{'run_id': 'r1', 'status': 'ok'}]
        """
        self._check_open()
        if limit is not None and limit < 0:
            raise ProvenanceError(f"limit must be >= 0 or None, got {limit}")
        statement, args = self._bind(query, params)
        keyword = first_keyword(query, nested_comments=self.dialect == "postgresql")
        if keyword in NOT_QUERIES:
            raise ReadOnlyError(
                f"provenance queries are read-only: {self.url} does not run {keyword.upper()} "
                f"statements; use SELECT (or WITH … SELECT) queries.\nquery: {query}"
            )
        try:
            raw = self._reader.raw_connection()
        except self._errors as err:
            raise ProvenanceError(
                f"cannot connect to the provenance store {self.url}: {message(err)}"
            ) from err
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            cursor = raw.cursor()
            try:
                if self.dialect == "postgresql":
                    if timeout_s is not None:  # local to the read-only transaction just begun
                        ms = str(max(1, int(timeout_s * 1000)))
                        cursor.execute("SELECT set_config('statement_timeout', %s, true)", (ms,))
                    cursor.execute(statement, args, prepare=True)  # type: ignore[call-arg]
                else:
                    conn = raw.driver_connection
                    if deadline is not None:
                        conn.set_progress_handler(  # type: ignore[union-attr]
                            lambda: time.monotonic() > deadline, 10_000
                        )
                    if max_value_bytes is not None:
                        conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, max_value_bytes)  # type: ignore[union-attr]
                    cursor.execute(statement, args or ())
                if cursor.description is None:
                    return QueryResult([], [])
                columns = [d[0] for d in cursor.description]
                if limit is None:
                    rows = cursor.fetchall()
                else:
                    rows = cursor.fetchmany(limit) if limit else []
            finally:
                cursor.close()
        except self._dbapi_error as err:
            if timeout_s is not None and connect.timed_out(err):
                raise ProvenanceError(
                    f"query on the provenance store {self.url} ran past its {timeout_s:g} s "
                    f"timeout and was cancelled\nquery: {query}"
                ) from err
            raise self._query_error(err, query) from err
        finally:
            if self.dialect == "sqlite":
                if deadline is not None:
                    raw.driver_connection.set_progress_handler(None, 0)  # type: ignore[union-attr]
                if max_value_bytes is not None:
                    raw.driver_connection.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 1_000_000_000)  # type: ignore[union-attr]
            raw.close()
        return QueryResult(columns, [tuple(row) for row in rows])

    def _bind(
        self, query: str, params: Mapping[str, Any] | None
    ) -> tuple[str, tuple[Any, ...] | None]:
        """The statement and positional parameters for the driver (``:name`` -> its style)."""
        if not isinstance(query, str) or not query.strip():
            raise ProvenanceError(f"expected a SQL query string, got {query!r}")
        if not params:
            return query, None
        try:
            compiled = sa.text(query).compile(dialect=self._reader.dialect)
            values = compiled.construct_params({k: self._adapt_param(v) for k, v in params.items()})
        except sa.exc.SQLAlchemyError as err:
            raise ProvenanceError(
                f"bad parameters for the query on {self.url}: {message(err)}\nquery: {query}"
            ) from err
        return compiled.string, tuple(values[name] for name in compiled.positiontup or ())

    def _adapt_param(self, value: Any) -> Any:
        if self.dialect == "sqlite":
            if isinstance(value, datetime):
                return s.sqlite_timestamp(value)
            if isinstance(value, date):
                return value.isoformat()
        return value

    def _query_error(self, err: Exception, query: str) -> ProvenanceError:
        text = message(err)
        if is_read_only_violation(err):
            return ReadOnlyError(
                f"provenance queries are read-only: {self.url} refused to run a statement that "
                f"would change the store ({text}). Use SELECT (or WITH … SELECT) queries.\n"
                f"query: {query}"
            )
        return ProvenanceError(
            f"query on the provenance store {self.url} failed: {text}\nquery: {query}"
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close every connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._reader.dispose()
        self._engine.dispose()

    def _check_open(self) -> None:
        if self._closed:
            raise ProvenanceError(f"the provenance store {self.url} is closed")

    def _lock_ddl(self, conn: Connection) -> None:
        """Serialise schema changes across processes (SQLite: ``BEGIN IMMEDIATE`` already does)."""
        if self.dialect == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_DDL_LOCK})")

    def _installed_version(self) -> int | None:
        """``schema_version`` of the store, or None if it has no tables yet (takes no lock)."""
        raw = self._engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                if self.dialect == "postgresql":
                    cursor.execute("SELECT to_regclass('schema_version') IS NOT NULL")
                else:
                    cursor.execute(
                        "SELECT count(*) FROM sqlite_master "
                        "WHERE type = 'table' AND name = 'schema_version'"
                    )
                exists = cursor.fetchone()
                if not exists or not exists[0]:
                    return None
                cursor.execute("SELECT max(version) FROM schema_version")
                found = cursor.fetchone()
                return None if found is None or found[0] is None else int(found[0])
            finally:
                cursor.close()
        finally:
            raw.close()

    def _create(self, schema: str | None) -> None:
        """Create missing tables and indexes, and record the schema version (idempotent)."""
        version = self._installed_version()
        if version is None or version < s.SCHEMA_VERSION:
            with self._engine.begin() as conn:
                self._lock_ddl(conn)
                if schema is not None:
                    conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
                for table in s.metadata.sorted_tables:
                    _create_table(conn, table)
                migrate.derivations_view(conn, self.dialect)
                version = conn.execute(sa.select(sa.func.max(s.schema_version.c.version))).scalar()
                if version is None:
                    conn.execute(sa.insert(s.schema_version).values(version=s.SCHEMA_VERSION))
                    version = s.SCHEMA_VERSION
                elif version < s.SCHEMA_VERSION:
                    migrate.add_missing_columns(conn)
                    conn.execute(sa.update(s.schema_version).values(version=s.SCHEMA_VERSION))
                    version = s.SCHEMA_VERSION
        if version > s.SCHEMA_VERSION:
            raise ProvenanceError(
                f"the provenance store {self.url} has schema version {version}, newer than this "
                f"Riera understands ({s.SCHEMA_VERSION}); upgrade Riera or use another store"
            )


def open_store(target: str | Path, *, schema: str | None = None) -> ProvenanceStore:
    """Open (creating tables if missing) the provenance store at ``target``.

    ``postgresql://…`` or ``postgres://…`` opens a PostgreSQL store (psycopg 3; ``schema`` puts
    its tables in that schema, created if missing, instead of the server's ``search_path``).
    Anything else is the path of a SQLite file (``sqlite:///path`` works too), created with its
    parent directory. Raises :class:`~riera.errors.ProvenanceError` naming the store and the
    setting to fix when it cannot be opened.

    >>> import tempfile, pathlib
    >>> with tempfile.TemporaryDirectory() as d, open_store(pathlib.Path(d) / "sub" / "p.db") as st:
    ...     st.dialect, st.sql("SELECT version FROM schema_version").rows
    ('sqlite', [(7,)])
    """
    text = str(target)
    match = _URL_SCHEME.match(text)
    scheme = match.group(1).lower() if match else ""
    if scheme in ("postgresql", "postgres") or scheme.startswith("postgresql+"):
        display, engine, reader = connect.postgresql_engines(text, schema)
        kind, fix = "PostgreSQL", connect.PG_FIX
        errors: tuple[type[BaseException], ...] = (
            sa.exc.SQLAlchemyError,
            engine.dialect.loaded_dbapi.Error,
        )
    else:
        if schema is not None:
            raise ProvenanceError(
                f"schema={schema!r} applies to PostgreSQL stores only, not to {redact_url(text)}"
            )
        if scheme == "sqlite":
            text = text[len("sqlite://") :]
            text = text[1:] if text.startswith("/") else text
        elif scheme:
            raise ProvenanceError(
                f"unsupported provenance store {redact_url(text)!r} ({scheme}://); "
                f"{connect.PG_FIX}, or give the path of a SQLite file"
            )
        if text in ("", ":memory:"):
            raise ProvenanceError(
                "an in-memory SQLite provenance store cannot be shared between the collector and "
                f"queries; give a file path. To fix, {connect.SQLITE_FIX}"
            )
        display, engine, reader = connect.sqlite_engines(Path(text).expanduser())
        kind, fix = "SQLite", connect.SQLITE_FIX
        errors = (sqlite3.Error, sa.exc.SQLAlchemyError, OSError)
    store = ProvenanceStore(display, engine, reader)
    try:
        store._create(schema)
    except ProvenanceError:
        store.close()
        raise
    except errors as err:
        store.close()
        raise ProvenanceError(
            f"cannot open the {kind} provenance store {display}: {message(err)}. To fix, {fix}"
        ) from err
    log.debug("opened provenance store %s", display)
    return store


# -- helpers -----------------------------------------------------------------------------------


def _create_table(conn: Connection, table: sa.Table) -> None:
    conn.execute(CreateTable(table, if_not_exists=True))
    for index in sorted(table.indexes, key=lambda ix: ix.name or ""):
        conn.execute(CreateIndex(index, if_not_exists=True))
