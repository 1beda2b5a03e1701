"""Fixtures of the dashboard tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import riera
from pg_service import pg_dsn as pg_dsn  # a fixture (the explorer runs on PostgreSQL too)
from services import service_missing


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


CHROMIUM = os.environ.get("RIERA_TEST_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        service_missing("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).exists():
        service_missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
