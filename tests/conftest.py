"""Shared fixtures for Riera's test suite.

- ``riera_session`` (session, autouse): shuts the runtime down at the end of the session, then
  checks that no shared-memory segment created by this process (``riera-<pid>-*.arrow`` in
  ``/dev/shm``) survived — every run must release what it put in the exchange.
- ``workers``: the executor conformance fixture: every test using it runs under the local pool
  with 1 and with 2 worker processes and under the in-process executor (ids ``w1``, ``w2``,
  ``inproc``); it (re)initialises the runtime only when that choice changes (or someone else
  replaced the runtime), since starting workers costs time. The parameter lives on a
  module-scoped fixture so pytest groups a module's tests by executor. Under the local pool,
  ``inline_bytes=0``: the tests' small runs of built-in operators would otherwise run in the
  driver (``riera.exec.base.choose``) and the pool would go untested.
- ``out_dir``: a fresh directory under ``tmp_path`` for tests that write files.
- ``s3_server`` (session): the one S3-compatible server of the session, moto's
  (``python -m moto.server``) on 127.0.0.1 and a free port, with dummy AWS credentials in the
  environment; yields its endpoint. Every test that needs S3 uses it (the exchange backends, the
  exchange study).

The session sets ``RIERA_HOME`` to a temporary directory of its own (removed at the end).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import riera
from riera import runtime as _rt
from services import s3_server  # noqa: F401  (the one S3 server; benchmarks/tests share it)

SHM_DIR = Path("/dev/shm")
EXECUTORS = (("local", 1), ("local", 2), ("inprocess", 1))  # (executor, workers)
_TEST_HOME = tempfile.mkdtemp(prefix="riera-test-home-")


def pytest_configure(config: pytest.Config) -> None:
    """A Riera home of the session's own (provenance store, spill directory): tests never write
    into the user's ``~/.riera``, and subprocesses they start inherit it."""
    os.environ["RIERA_HOME"] = _TEST_HOME


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


def own_segments() -> list[Path]:
    """Shared-memory segments whose names say this process (the driver) created them."""
    if not SHM_DIR.is_dir():
        return []
    return sorted(SHM_DIR.glob(f"riera-{os.getpid()}-*.arrow"))


@pytest.fixture(scope="session")
def _shm_leak_check() -> Iterator[None]:
    """Fail loudly if a segment created by this process is still in /dev/shm after the session."""
    yield
    leaked = own_segments()
    if leaked:
        names = "\n  ".join(p.name for p in leaked[:20])
        more = f"\n  … and {len(leaked) - 20} more" if len(leaked) > 20 else ""
        pytest.fail(
            f"{len(leaked)} shared-memory segment(s) created by this test process (pid "
            f"{os.getpid()}) were never released:\n  {names}{more}",
            pytrace=False,
        )


@pytest.fixture(scope="session", autouse=True)
def riera_session(_shm_leak_check: None) -> Iterator[None]:
    """Make sure Riera's runtime (and its worker processes) is shut down at the end.

    Depends on ``_shm_leak_check`` so that the leak check runs *after* the shutdown.
    """
    yield
    riera.shutdown()
    _state.workers = None
    _state.runtime = None


class _RuntimeState:
    """What the ``workers`` fixture last started (module-level, shared by all tests)."""

    workers: tuple[str, int] | None = None
    runtime: object | None = None


_state = _RuntimeState()


def ensure_runtime(workers: int, executor: str = "local") -> _rt.Runtime:
    """Initialise the runtime with ``workers`` workers under ``executor`` unless it is current."""
    current = _rt._runtime
    if current is None or current is not _state.runtime or _state.workers != (executor, workers):
        inline = 0 if executor == "local" else None
        current = riera.init(
            workers=workers, executor=executor, progress="off", inline_bytes=inline
        )
        _state.workers, _state.runtime = (executor, workers), current
    assert current.settings.workers == workers and current.settings.executor == executor
    return current


@pytest.fixture(
    scope="module",
    params=EXECUTORS,
    ids=lambda p: "inproc" if p[0] == "inprocess" else f"w{p[1]}",
)
def _executor(request: pytest.FixtureRequest) -> tuple[str, int]:
    choice: tuple[str, int] = request.param
    return choice


@pytest.fixture
def workers(_executor: tuple[str, int]) -> Iterator[int]:
    """Run the test under every executor (local with 1 and 2 workers, in-process); yields the
    worker count."""
    executor, count = _executor
    ensure_runtime(count, executor)
    yield count


@pytest.fixture
def out_dir(tmp_path: Path) -> Path:
    """A fresh, empty directory for a test's output files."""
    d = tmp_path / "out"
    d.mkdir()
    return d
