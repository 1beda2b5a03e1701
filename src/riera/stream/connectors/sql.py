"""``sqlite:///PATH?table=T`` and ``postgresql://HOST:PORT/DB?table=T``: a SQL table as a sink.

**URLs.** SQLite paths follow SQLAlchemy (and the provenance store): ``sqlite:///out.db`` is the
relative file ``out.db``, ``sqlite:////srv/out.db`` the absolute ``/srv/out.db``. A PostgreSQL URL
is a libpq connection URI (user, password and libpq options like ``?sslmode=`` pass through);
Riera's own options are ``?table=`` (required; ``schema.table`` works on PostgreSQL) and
``?mode=upsert`` (default) or ``?mode=append``.

**Tables.** The table is created at the first write from the rows' Arrow schema (integers →
``BIGINT``, floats → ``DOUBLE PRECISION``, strings → ``TEXT``, timestamps → ``TIMESTAMP[TZ]``,
decimals → ``NUMERIC``, nested values → ``JSONB``; SQLite stores what it cannot type as ``TEXT``),
plus two hidden columns ``_riera_epoch`` and ``_riera_seq``: the version ``(epoch, seq)`` of the
write that stored the row. In upsert mode the key columns are the ``PRIMARY KEY`` (a keyless upsert,
a global aggregate, keeps one row under a hidden ``_riera_key`` column). An existing table must have
the columns written; it is never altered.

**Commits.** Each write is ONE transaction: check the job's record in ``riera_commits`` (fencing
token, then the last ``(epoch, seq)`` applied), write the rows, update the record. Upserts use
``INSERT … ON CONFLICT (key) DO UPDATE … WHERE`` the stored version is older than the write's, so
an older version never replaces a newer one. The record's key is ``(job, tbl)``: a job writing two
tables of one database keeps one record per table. PostgreSQL serialises concurrent drivers on the
record's row lock (``SELECT … FOR UPDATE``, after inserting a placeholder row so there is a row to
lock); SQLite on its write lock (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.types as pat

from riera.errors import FencedError, MissingExtraError, PlanError, SinkError
from riera.stream.connectors import base
from riera.stream.connectors.rows import dumps

EPOCH_COL, SEQ_COL, KEY_COL = "_riera_epoch", "_riera_seq", "_riera_key"
COMMITS = "riera_commits"
_OWN_OPTIONS = ("table", "mode")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_table(name: str) -> str:
    return ".".join(_quote(part) for part in name.split("."))


def _sql_type(t: pa.DataType, postgres: bool) -> str:
    """The column type a value of Arrow type ``t`` is stored as."""
    if pat.is_boolean(t):
        return "BOOLEAN" if postgres else "INTEGER"
    if pat.is_integer(t):
        if pat.is_uint64(t):
            return "NUMERIC(20)" if postgres else "INTEGER"
        return "BIGINT" if postgres else "INTEGER"
    if pat.is_floating(t):
        return "DOUBLE PRECISION" if postgres else "REAL"
    if pat.is_string(t) or pat.is_large_string(t) or pat.is_string_view(t):
        return "TEXT"
    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_binary_view(t):
        return "BYTEA" if postgres else "BLOB"
    if pat.is_fixed_size_binary(t):
        return "BYTEA" if postgres else "BLOB"
    if not postgres:
        return "TEXT"  # timestamps, dates, decimals and nested values as their text/JSON
    if pat.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else "TIMESTAMP"
    if pat.is_date(t):
        return "DATE"
    if pat.is_time(t):
        return "TIME"
    if pat.is_duration(t):
        return "INTERVAL"
    if pat.is_decimal(t):
        return f"NUMERIC({t.precision}, {t.scale})"
    if pat.is_nested(t):
        return "JSONB"
    return "TEXT"


class _Dialect:
    """What differs between SQLite and PostgreSQL: connecting, placeholders, locking, adapting."""

    postgres = False
    param = "?"

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw

    def connect(self) -> Any:
        raise NotImplementedError

    def adapt(self, value: Any) -> Any:
        return value

    def begin(self, conn: Any) -> None:
        raise NotImplementedError

    def lock_record(self, conn: Any, job: str, table: str) -> tuple[int, int, int] | None:
        raise NotImplementedError

    def table_columns(self, conn: Any, table: str) -> list[str] | None:
        raise NotImplementedError


class _Sqlite(_Dialect):
    def __init__(self, url: base.Url) -> None:
        super().__init__(url)
        text = url.raw[len("sqlite://") :].split("?", 1)[0]
        text = text[1:] if text.startswith("/") else text
        if not text or text == ":memory:":
            raise PlanError(
                f"{url.raw}: give the SQLite file, e.g. sqlite:///out.db (relative) or "
                f"sqlite:////srv/out.db (absolute); an in-memory database would be lost"
            )
        self.path = Path(text)

    def connect(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    def adapt(self, value: Any) -> Any:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, dt.date | dt.datetime | dt.time):
            return value.isoformat()
        if isinstance(value, dt.timedelta | decimal.Decimal):
            return str(value)
        if isinstance(value, dict | list):
            return dumps(value)
        if isinstance(value, int) and value >= 1 << 63:
            return str(value)
        return value

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def lock_record(self, conn: Any, job: str, table: str) -> tuple[int, int, int] | None:
        row = conn.execute(
            f"SELECT epoch, seq, fence FROM {COMMITS} WHERE job=? AND tbl=?", (job, table)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    def table_columns(self, conn: Any, table: str) -> list[str] | None:
        *schema, name = table.split(".")
        prefix = f"{_quote(schema[0])}." if schema else ""
        rows = conn.execute(f"PRAGMA {prefix}table_info({_quote(name)})").fetchall()
        return [r[1] for r in rows] or None


class _Postgres(_Dialect):
    postgres = True
    param = "%s"

    def __init__(self, url: base.Url) -> None:
        super().__init__(url)
        try:
            import psycopg
        except ImportError as err:
            raise MissingExtraError(
                f"{url.raw}: PostgreSQL sinks need psycopg 3: pip install 'riera[postgres]'"
            ) from err
        self.psycopg = psycopg
        parts = urlsplit(url.raw)
        query = [(k, v) for k, v in parse_qsl(parts.query) if k not in _OWN_OPTIONS]
        self.conninfo = urlunsplit(parts._replace(query=urlencode(query)))

    def connect(self) -> Any:
        try:
            return self.psycopg.connect(self.conninfo, connect_timeout=10)
        except self.psycopg.Error as err:
            raise SinkError(
                f"{self.url}: cannot connect to PostgreSQL: {str(err).strip()}; check that the "
                f"server runs and the URL's host, port, user and database are right"
            ) from err

    def adapt(self, value: Any) -> Any:
        if isinstance(value, dict | list):
            from psycopg.types.json import Jsonb

            return Jsonb(value)
        return value

    def begin(self, conn: Any) -> None:
        pass  # psycopg opens a transaction at the first statement

    def lock_record(self, conn: Any, job: str, table: str) -> tuple[int, int, int] | None:
        conn.execute(
            f"INSERT INTO {COMMITS} VALUES (%s, %s, -1, -1, -1) ON CONFLICT DO NOTHING",
            (job, table),
        )
        row = conn.execute(
            f"SELECT epoch, seq, fence FROM {COMMITS} WHERE job=%s AND tbl=%s FOR UPDATE",
            (job, table),
        ).fetchone()
        if row is None or int(row[2]) < 0:
            return None
        return int(row[0]), int(row[1]), int(row[2])

    def table_columns(self, conn: Any, table: str) -> list[str] | None:
        row = conn.execute("SELECT to_regclass(%s)", (_quote_table(table),)).fetchone()
        if row is None or row[0] is None:
            return None
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum",
            (_quote_table(table),),
        ).fetchall()
        return [r[0] for r in rows]


class SqlSink:
    """Commits rows to a SQLite or PostgreSQL table in one transaction per write (module doc)."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        table = url.query.get("table")
        if not table:
            example = "sqlite:///out.db?table=counts" if url.scheme == "sqlite" else (
                "postgresql://127.0.0.1:5432/db?table=counts")  # fmt: skip
            raise PlanError(f"{url.raw}: name the table to write with ?table=, e.g. {example}")
        if not re.fullmatch(r"[^\x00]+", table):
            raise PlanError(f"{url.raw}: bad table name {table!r}")
        self.table = table
        mode = url.query.get("mode", "upsert")
        if mode not in ("upsert", "append"):
            raise PlanError(f"{url.raw}: ?mode= must be upsert or append; got {mode!r}")
        self.mode: Literal["upsert", "append"] = mode  # type: ignore[assignment]
        self.dialect: _Dialect = _Sqlite(url) if url.scheme == "sqlite" else _Postgres(url)
        self.conn: Any = None
        self.job = ""
        self.key: tuple[str, ...] = ()
        self._columns: list[str] | None = None  # the table's columns, once known to exist

    def open(self, job: str, key: Sequence[str]) -> None:
        self.job, self.key = job, tuple(key)
        if self.conn is None:
            self.conn = self.dialect.connect()
        ddl = (f"CREATE TABLE IF NOT EXISTS {COMMITS} (job TEXT, tbl TEXT, epoch BIGINT, "
               f"seq BIGINT, fence BIGINT, PRIMARY KEY (job, tbl))")  # fmt: skip
        self._run(lambda: self._exec_commit(ddl))

    def _exec_commit(self, sql: str) -> None:
        self.dialect.begin(self.conn)
        try:
            self.conn.execute(sql)
        except BaseException:
            self.conn.rollback()
            raise
        self.conn.commit()

    def _run(self, action: Any) -> Any:
        """``action()``, its database errors as :class:`SinkError` naming the URL and table."""
        errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
        if isinstance(self.dialect, _Postgres):
            errors = (self.dialect.psycopg.Error,)
        try:
            return action()
        except errors as err:
            raise SinkError(f"{self.url}: table {self.table!r}: {str(err).strip()}") from err

    def committed(self) -> tuple[int, int]:
        def read() -> tuple[int, int]:
            sql = f"SELECT epoch, seq FROM {COMMITS} WHERE job={self.dialect.param} AND tbl=" + (
                self.dialect.param)  # fmt: skip
            row = self.conn.execute(sql, (self.job, self.table)).fetchone()
            if isinstance(self.dialect, _Postgres):
                self.conn.rollback()  # end the read's transaction
            return (int(row[0]), int(row[1])) if row else (-1, -1)

        return self._checked_conn(read)

    def _checked_conn(self, action: Any) -> Any:
        if self.conn is None:
            raise PlanError(f"{self.url}: call open(job, key) before using the sink")
        return self._run(action)

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        return bool(self._checked_conn(lambda: self._write(rows, epoch, seq, fence)))

    def _write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        d, conn = self.dialect, self.conn
        d.begin(conn)
        try:
            record = d.lock_record(conn, self.job, self.table)
            if record is not None:
                if fence < record[2]:
                    raise FencedError(
                        f"{self.url}: job {self.job!r} is fenced at token {record[2]} for table "
                        f"{self.table!r}; this driver holds {fence}: another driver took the job "
                        f"over"
                    )
                if (epoch, seq) <= (record[0], record[1]):
                    if fence > record[2]:  # skipped, but its token fences older drivers out
                        conn.execute(
                            f"UPDATE {COMMITS} SET fence={d.param} WHERE job={d.param} AND "
                            f"tbl={d.param}",
                            (fence, self.job, self.table),
                        )
                        conn.commit()
                    else:
                        conn.rollback()
                    return False
            self._insert(conn, rows, epoch, seq)
            conn.execute(
                f"INSERT INTO {COMMITS} VALUES ({', '.join([d.param] * 5)}) ON CONFLICT (job, tbl) "
                f"DO UPDATE SET epoch=excluded.epoch, seq=excluded.seq, fence=excluded.fence",
                (self.job, self.table, epoch, seq, fence),
            )
        except BaseException:
            conn.rollback()
            self._columns = None  # a table created in the rolled-back transaction is gone
            raise
        conn.commit()
        return True

    def _value_columns(self, rows: pa.Table) -> list[str]:
        return [c for c in rows.column_names if not c.startswith("__")]

    def _key_columns(self) -> list[str]:
        return list(self.key) if self.key else [KEY_COL]

    def _ensure_table(self, conn: Any, rows: pa.Table) -> None:
        columns = self._value_columns(rows)
        if self._columns is None:
            self._columns = self.dialect.table_columns(conn, self.table)
        if self._columns is None:
            self._create(conn, rows, columns)
            self._columns = self.dialect.table_columns(conn, self.table)
            assert self._columns is not None
        needed = [*columns, EPOCH_COL, SEQ_COL]
        if self.mode == "upsert" and not self.key:
            needed.append(KEY_COL)
        missing = [c for c in needed if c not in self._columns]
        if missing:
            raise SinkError(
                f"{self.url}: table {self.table!r} has columns {self._columns}, but the query "
                f"writes {needed} ({missing} missing); drop the table or write to another ?table="
            )

    def _create(self, conn: Any, rows: pa.Table, columns: list[str]) -> None:
        pg = self.dialect.postgres
        missing_keys = [k for k in self.key if k not in columns]
        if self.mode == "upsert" and missing_keys:
            raise PlanError(
                f"{self.url}: the upsert key {missing_keys} is not among the columns written "
                f"({columns})"
            )
        defs = [f"{_quote(c)} {_sql_type(rows.schema.field(c).type, pg)}" for c in columns]
        defs += [f"{EPOCH_COL} BIGINT NOT NULL", f"{SEQ_COL} BIGINT NOT NULL"]
        if self.mode == "upsert":
            if not self.key:
                defs.append(f"{KEY_COL} TEXT NOT NULL DEFAULT ''")
            defs.append(f"PRIMARY KEY ({', '.join(_quote(k) for k in self._key_columns())})")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {_quote_table(self.table)} ({', '.join(defs)})")

    def _insert(self, conn: Any, rows: pa.Table, epoch: int, seq: int) -> None:
        if rows.num_rows == 0:
            return
        self._ensure_table(conn, rows)
        columns = self._value_columns(rows)
        names = [*columns, EPOCH_COL, SEQ_COL]
        extra: list[Any] = [epoch, seq]
        if self.mode == "upsert" and not self.key:
            names.append(KEY_COL)
            extra.append("")
        sql = (f"INSERT INTO {_quote_table(self.table)} AS _riera_old "
               f"({', '.join(map(_quote, names))}) "
               f"VALUES ({', '.join([self.dialect.param] * len(names))})")  # fmt: skip
        if self.mode == "upsert":
            keys = self._key_columns()
            updates = [c for c in names if c not in keys]
            sql += (f" ON CONFLICT ({', '.join(map(_quote, keys))}) DO UPDATE SET "
                    + ", ".join(f"{_quote(c)}=excluded.{_quote(c)}" for c in updates)
                    + f" WHERE (_riera_old.{EPOCH_COL}, _riera_old.{SEQ_COL}) <= "
                    f"(excluded.{EPOCH_COL}, excluded.{SEQ_COL})")  # fmt: skip
        adapt = self.dialect.adapt
        params = [
            [adapt(row[c]) for c in columns] + extra for row in rows.select(columns).to_pylist()
        ]
        if isinstance(self.dialect, _Postgres):
            with conn.cursor() as cur:
                cur.executemany(sql, params)
        else:
            conn.executemany(sql, params)

    def latest(self) -> dict[str, dict[str, Any]]:
        """The rows per key: ``{JSON list of the key values: row}`` (like ``MemorySink.latest``;
        an append sink's rows are keyed by their position)."""

        def read() -> dict[str, dict[str, Any]]:
            columns = self.dialect.table_columns(self.conn, self.table)
            if columns is None:
                out: dict[str, dict[str, Any]] = {}
            else:
                visible = [c for c in columns if c not in (EPOCH_COL, SEQ_COL, KEY_COL)]
                sql = (f"SELECT {', '.join(map(_quote, visible))} FROM "
                       f"{_quote_table(self.table)} ORDER BY {EPOCH_COL}, {SEQ_COL}")  # fmt: skip
                found = [dict(zip(visible, r, strict=True)) for r in self.conn.execute(sql)]
                if self.mode == "append":
                    out = {dumps([i]): row for i, row in enumerate(found)}
                else:
                    out = {
                        dumps([row[k] for k in self.key]) if self.key else "": row for row in found
                    }
            if isinstance(self.dialect, _Postgres):
                self.conn.rollback()
            return out

        return dict(self._checked_conn(read))

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
