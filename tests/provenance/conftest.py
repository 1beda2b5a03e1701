"""Fixtures for the provenance store conformance suite: every test runs against SQLite and PostgreSQL.

- ``pg_dsn`` (session): a PostgreSQL server that answers. The one at :data:`PG_DSN` (env
  ``RIERA_TEST_PG_DSN``, default ``postgresql://postgres@127.0.0.1:5432/test``); otherwise one
  started here with the machine's ``initdb``/``pg_ctl`` (as the ``postgres`` user when run as root)
  in a temporary directory, on 127.0.0.1 and a free port, stopped at the end. Only when neither is
  possible do the PostgreSQL tests skip with the reason (fail under
  ``RIERA_TEST_REQUIRE_SERVICES=1``).
- ``store_target`` (parametrized ``sqlite`` / ``postgresql``): where a fresh store lives. SQLite: a
  file under ``tmp_path``. PostgreSQL: ``pg_dsn`` with a fresh schema ``prov_<hex>`` per test,
  dropped at teardown.
- ``open_target``: ``() -> ProvenanceStore``, another store opened on the same target (as a second
  process would); every store it opened is closed at teardown.
- ``store``: the store the test works with (the first one ``open_target`` opened).
- ``home``: a fresh Riera home (so a fresh SQLite store and versions repository) with a 2-worker
  runtime using it, shut down afterwards — for tests of capture on real runs.

``StoreTarget.connect()`` gives a plain DB-API connection to the same database, for tests that
need a second writer holding a transaction open.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import riera
from pg_service import DIALECTS, PG_DSN, StoreTarget, pg_dsn  # noqa: F401
from pg_service import store_target as store_target  # a fixture
from riera.provenance.store import ProvenanceStore


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
