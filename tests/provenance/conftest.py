"""Fixtures for the provenance store conformance suite: every test runs against SQLite and PostgreSQL.

- ``store_target`` (parametrized ``sqlite`` / ``postgresql``): where a fresh store lives. SQLite: a
  file under ``tmp_path``. PostgreSQL: the server at :data:`PG_DSN` (env ``RIERA_TEST_PG_DSN``,
  default ``postgresql://postgres@127.0.0.1:5432/test``) with a fresh schema ``prov_<hex>`` per
  test, dropped at teardown. The PostgreSQL tests skip, naming the DSN, only when the server does
  not answer.
- ``open_target``: ``() -> ProvenanceStore``, another store opened on the same target (as a second
  process would); every store it opened is closed at teardown.
- ``store``: the store the test works with (the first one ``open_target`` opened).
- ``home``: a fresh Riera home (so a fresh SQLite store and versions repository) with a 2-worker
  runtime using it, shut down afterwards — for tests of capture on real runs.

``StoreTarget.connect()`` gives a plain DB-API connection to the same database, for tests that
need a second writer holding a transaction open.
"""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import riera
from riera.provenance.store import ProvenanceStore, open_store

PG_DSN = os.environ.get("RIERA_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
DIALECTS = ["sqlite", "postgresql"]


@dataclass(frozen=True)
class StoreTarget:
    """A store's location: ``target`` for :func:`open_store`, plus ``schema`` on PostgreSQL."""

    dialect: str
    target: str
    schema: str | None = None

    def open(self) -> ProvenanceStore:
        return open_store(self.target, schema=self.schema)

    def connect(self) -> Any:
        """A DB-API connection (not autocommit on PostgreSQL, explicit BEGIN on SQLite)."""
        if self.dialect == "sqlite":
            return sqlite3.connect(self.target, isolation_level=None, timeout=5)
        import psycopg

        return psycopg.connect(self.target, options=f"-c search_path={self.schema}")


@pytest.fixture(scope="session")
def pg_available() -> str | None:
    """None when the PostgreSQL server answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return f"PostgreSQL at {PG_DSN} is not reachable ({err}); set RIERA_TEST_PG_DSN"
    return None


@pytest.fixture(params=DIALECTS)
def store_target(
    request: pytest.FixtureRequest, tmp_path: Path, pg_available: str | None
) -> Iterator[StoreTarget]:
    if request.param == "sqlite":
        yield StoreTarget("sqlite", str(tmp_path / "prov" / "provenance.db"))
        return
    if pg_available is not None:
        pytest.skip(pg_available)
    import psycopg

    schema = f"prov_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield StoreTarget("postgresql", PG_DSN, schema)
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def open_target(store_target: StoreTarget) -> Iterator[Callable[[], ProvenanceStore]]:
    opened: list[ProvenanceStore] = []

    def open_one() -> ProvenanceStore:
        store = store_target.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


@pytest.fixture
def store(open_target: Callable[[], ProvenanceStore]) -> ProvenanceStore:
    return open_target()


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "home"
    riera.init(workers=2, progress="off", home=str(path))
    yield path
    riera.shutdown()
