"""Fixtures for the benchmark smoke tests (``riera_bench``), run beside Riera's own suite.

- The session sets ``RIERA_HOME`` to a temporary directory of its own (removed at the end), so
  the studies and the ``riera`` subprocesses they start never write into the user's ``~/.riera``.
- ``riera_session`` (session, autouse): shuts the runtime the in-process tests started down at
  the end, then checks that no shared-memory segment created by this process survived.

These tests need ``riera_bench`` installed (``pip install -e ./benchmarks``, which the README's
test command does): ``riera bench`` is found through its entry point, not through this folder.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import riera

# The S3 test server is the suite's one fixture (tests/services.py), shared with these tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from services import s3_server  # noqa: F401

SHM_DIR = Path("/dev/shm")
_TEST_HOME = tempfile.mkdtemp(prefix="riera-bench-test-home-")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("RIERA_HOME", _TEST_HOME)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_TEST_HOME, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def riera_session() -> Iterator[None]:
    """Shut Riera's runtime down at the end, then fail if this process leaked a segment."""
    yield
    riera.shutdown()
    leaked = sorted(SHM_DIR.glob(f"riera-{os.getpid()}-*.arrow")) if SHM_DIR.is_dir() else []
    if leaked:
        pytest.fail(
            f"{len(leaked)} shared-memory segment(s) created by this test process were never "
            f"released: {', '.join(p.name for p in leaked[:20])}",
            pytrace=False,
        )
