"""Fixtures of the dashboard tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import riera


@pytest.fixture
def runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Riera with a provenance store in this test's home; the env a dashboard process needs."""
    monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "brokers"))
    riera.init(home=str(tmp_path / "home"), provenance="tasks", progress="off")
    try:
        yield {**os.environ, "RIERA_BROKER_DIR": str(tmp_path / "brokers"),
               "RIERA_HOME": str(tmp_path / "home")}  # fmt: skip
    finally:
        riera.shutdown()
