"""Connecting to a provenance store: the SQLite file (WAL, a read-only query connection) and
PostgreSQL (psycopg 3, read-only query sessions). Each returns the writing and the querying engine;
:func:`riera.provenance.store.open_store` makes the store of them."""

from __future__ import annotations

import importlib.util
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine

from riera.errors import ProvenanceError
from riera.exchange.policy import redact_url
from riera.provenance.sqlguard import read_only_authorizer

BUSY_TIMEOUT_S = 5.0
PG_CONNECT_TIMEOUT_S = 5
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
MAX_IDENT = 63  # PostgreSQL's identifier limit
PG_FIX = (
    "set `provenance_dsn` (env RIERA_PROVENANCE_DSN) to a reachable PostgreSQL server, e.g. "
    "postgresql://user@host:5432/db, or unset it to use the SQLite file under `home`"
)
SQLITE_FIX = (
    "set `home` (env RIERA_HOME) to a writable directory, or `provenance_dsn` "
    "(env RIERA_PROVENANCE_DSN) to use a PostgreSQL server"
)


# -- SQLite ------------------------------------------------------------------------------------


Engines = tuple[str, Engine, Engine]
"""What a store is made of: its name for messages, the writing engine, the querying engine."""


def sqlite_engines(path: Path) -> Engines:
    """The SQLite file ``path`` (its directory created): writes in WAL mode under ``BEGIN
    IMMEDIATE``; queries on ``mode=ro`` connections with the read-only authorizer."""
    path = path.absolute()
    display = str(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ProvenanceError(
            f"cannot create the directory of the SQLite provenance store {display}: {err}. "
            f"To fix, {SQLITE_FIX}"
        ) from err

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            _wal(conn)
            conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error:
            conn.close()
            raise
        return conn

    def connect_read_only() -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"{path.as_uri()}?mode=ro",
            uri=True,
            timeout=BUSY_TIMEOUT_S,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA query_only = ON")
        except sqlite3.Error:
            conn.close()
            raise
        conn.set_authorizer(read_only_authorizer)
        return conn

    engine = sa.create_engine("sqlite://", creator=connect, poolclass=sa.pool.QueuePool)
    # Write transactions take the write lock up front: concurrent writers wait (busy_timeout)
    # instead of failing when a deferred transaction tries to upgrade its lock.
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN IMMEDIATE"))
    reader = sa.create_engine("sqlite://", creator=connect_read_only, poolclass=sa.pool.QueuePool)
    return display, engine, reader


def _wal(conn: sqlite3.Connection) -> None:
    """Switch a connection to WAL. On a new file several first opens race for the exclusive lock
    this needs, and SQLite may answer "locked" without waiting for its busy timeout: retry until
    the lock is free (it is held for microseconds), for as long as the busy timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as err:
            if "locked" not in str(err) or time.monotonic() > deadline:
                raise
            time.sleep(pause)  # a lock held by another connection: poll it with backoff
            pause = min(pause * 2, 0.2)


# -- PostgreSQL --------------------------------------------------------------------------------


def postgresql_engines(target: str, schema: str | None) -> Engines:
    """The PostgreSQL server at ``target`` through psycopg 3, in UTC, with ``schema`` on the
    search path when given; queries in read-only transactions."""
    display = redact_url(target)
    if schema is not None:
        check_name(schema, "PostgreSQL schema name", MAX_IDENT)
    try:
        url = sa.make_url(target)
    except (sa.exc.ArgumentError, ValueError) as err:
        raise ProvenanceError(
            f"cannot parse the provenance store URL {display}: {message(err)}. To fix, {PG_FIX}"
        ) from err
    url = url.set(drivername="postgresql+psycopg")
    if importlib.util.find_spec("psycopg") is None:
        raise ProvenanceError(
            f"the provenance store {display} is PostgreSQL, which needs psycopg (not installed): "
            f"pip install 'riera[postgres]'"
        )
    try:
        engine = _pg_engine(url, schema, read_only=False)
        reader = _pg_engine(url, schema, read_only=True)
    except (sa.exc.SQLAlchemyError, ValueError, ImportError) as err:
        raise ProvenanceError(
            f"cannot use the provenance store {display}: {message(err)}. To fix, {PG_FIX}"
        ) from err
    return display, engine, reader


def _pg_engine(url: sa.URL, schema: str | None, *, read_only: bool) -> Engine:
    options = []
    given = url.query.get("options")
    if isinstance(given, str):
        options.append(given)
    options.append("-c TimeZone=UTC")  # timestamps come back in UTC whatever the server's zone
    if schema is not None:
        options.append(f"-c search_path={schema}")
    if read_only:
        options.append("-c default_transaction_read_only=on")
    connect_args: dict[str, Any] = {"options": " ".join(options)}
    if "connect_timeout" not in url.query:
        connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_S
    engine = sa.create_engine(
        url, connect_args=connect_args, paramstyle="format", pool_pre_ping=True
    )
    if read_only:

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.read_only = True  # every transaction starts BEGIN READ ONLY

        event.listen(engine, "connect", on_connect)
    return engine


# -- names and messages ------------------------------------------------------------------------


def check_name(name: Any, what: str, max_len: int) -> None:
    if not isinstance(name, str) or not NAME.match(name) or len(name) > max_len:
        raise ProvenanceError(
            f"{what} {name!r} is not a valid name: use lowercase letters, digits and underscores, "
            f"starting with a letter or underscore, at most {max_len} characters (so it works "
            f"unquoted in SQL on SQLite and PostgreSQL)"
        )


def timed_out(err: BaseException) -> bool:
    """A statement cancelled by its timeout: SQLite's interrupt, PostgreSQL's query_canceled."""
    return "interrupted" in str(err) or getattr(err, "sqlstate", None) == "57014"


def message(err: BaseException) -> str:
    """The database's own message (without SQLAlchemy's wrapping and background links)."""
    orig = getattr(err, "orig", None)
    if isinstance(orig, BaseException):
        err = orig
    text = str(err).strip() or type(err).__name__
    return text.split("\n(Background on this error")[0]
