"""PostgreSQL for the tests: a server that answers (the configured one, or one started here with
the machine's ``initdb``/``pg_ctl``) and a fresh schema per test; shared by the provenance store's
conformance suite and the dashboard's explorer tests (see ``tests/provenance/conftest.py``)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from riera.provenance.store import ProvenanceStore, open_store
from services import free_port, service_missing

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


def _pg_error(dsn: str) -> str | None:
    """None when the server at ``dsn`` answers, else why not."""
    import psycopg

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as err:
        return str(err).strip()
    return None


def _pg_bindir() -> Path | None:
    """The directory of the newest ``pg_ctl`` on this machine (Debian keeps it off PATH)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(dirs[-1]).parent if dirs else None


@contextlib.contextmanager
def _local_postgres(bindir: Path) -> Iterator[str]:
    """A throw-away PostgreSQL cluster: temp data dir, trust auth, 127.0.0.1 and a free port,
    its unix socket in the temp dir; database ``test``. PostgreSQL refuses to run as root, so a
    root test process runs the server as the ``postgres`` user."""
    workdir = Path(tempfile.mkdtemp(prefix="riera-test-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(workdir, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = workdir / "data", workdir / "server.log", free_port()

    def run(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--no-sync")  # fmt: skip
        # -w: pg_ctl polls until the server accepts connections (or 60 s pass).
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
            "-o", f"-h 127.0.0.1 -p {port} -k {workdir} -F", "start")  # fmt: skip
    except subprocess.CalledProcessError as err:
        server_log = log.read_text() if log.exists() else ""
        shutil.rmtree(workdir, ignore_errors=True)
        raise RuntimeError(
            f"could not start a local PostgreSQL from {bindir}: {err.stderr.decode()}{server_log}"
        ) from err
    try:
        import psycopg

        base = f"postgresql://postgres@127.0.0.1:{port}"
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE test")
        yield f"{base}/test"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """The DSN of a PostgreSQL server that answers: the configured one, or one started here."""
    error = _pg_error(PG_DSN)
    if error is None:
        yield PG_DSN
        return
    bindir = _pg_bindir()
    if bindir is None:
        service_missing(
            f"PostgreSQL at {PG_DSN} is not reachable ({error}) and no initdb/pg_ctl is installed "
            f"to start one; set RIERA_TEST_PG_DSN"
        )
    with _local_postgres(bindir) as dsn:
        yield dsn


@pytest.fixture(params=DIALECTS)
def store_target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreTarget]:
    if request.param == "sqlite":
        yield StoreTarget("sqlite", str(tmp_path / "prov" / "provenance.db"))
        return
    dsn: str = request.getfixturevalue("pg_dsn")  # only the PostgreSQL half needs the server
    import psycopg

    schema = f"prov_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield StoreTarget("postgresql", dsn, schema)
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
