"""The provenance explorer in a real browser (Debian's Chromium through Playwright): a streaming
run goes from running to ok on its page without a reload; lineage opens one level deep with
"+N more"; a domain filter shows the rows the same SQL returns; the plan is laid out; users' text
(argv with markup) shows as text; nothing leaves 127.0.0.1 and the console stays clean."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import riera
from dashboard_server import Server
from riera.provenance.store import open_store
from riera.testing import send
from riera_bench.explorer_data import BIG, fill
from wordcount_data import messages, wordcount_query

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _page(browser: Any, server: Server) -> Iterator[tuple[Any, list[str]]]:
    """A page that records console errors, page errors and requests beyond the server."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: problems.append("a dialog opened: " + d.message))
    page.on("request", lambda r: None if r.url.startswith(server.base) else problems.append(r.url))
    try:
        yield page, problems
    finally:
        page.close()


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Any]]:
    tmp = tmp_path_factory.mktemp("synthetic")
    store = open_store(tmp / "provenance.db")
    fill(store)
    server = Server(dict(os.environ), tmp / "provenance.db")
    try:
        yield server, store
    finally:
        server.stop()
        store.close()


def _cells(page: Any, table: str) -> list[list[str]]:
    rows: list[list[str]] = page.eval_on_selector_all(
        f"{table} tbody tr", "trs => trs.map(tr => [...tr.cells].map(td => td.textContent))"
    )
    return rows


def test_a_streaming_run_goes_from_running_to_ok_without_a_reload(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    send("memory://ex-in", messages(200, seed=3), key="chave")
    q = wordcount_query("memory://ex-in").write_stream(
        "memory://ex-out", checkpoint=tmp_path / "ck",
        trigger=riera.stream.continuous(checkpoint="100ms"))  # fmt: skip
    server = Server(runtime, tmp_path / "home" / "provenance.db")
    try:
        assert q.wait_for_epoch(0, 30)
        riera.runtime.get_runtime().provenance.flush()
        with _page(browser, server) as (page, problems):
            page.goto(server.base + "/#/runs")
            row = f"#runs-table tr[data-run='{q.run_id}']"
            page.wait_for_selector(row + " .badge.running", timeout=30_000)
            page.evaluate("window.__marker = 'same page'")
            page.click(row)
            page.wait_for_selector("#run-status.running", timeout=30_000)
            assert page.text_content("#run-title") == q.run_id
            page.click("button[data-tab=epochs]")
            page.wait_for_function(
                "() => document.querySelectorAll('#epochs-table tbody tr').length > 0",
                timeout=30_000)  # fmt: skip
            q.stop()
            riera.runtime.get_runtime().provenance.flush()
            page.wait_for_selector("#run-status.ok", timeout=30_000)
            assert page.evaluate("window.__marker") == "same page", "the page was reloaded"
            page.goto(server.base + "/#/runs")
            page.wait_for_selector(row + " .badge.ok", timeout=30_000)
            assert problems == []
    finally:
        q.stop()
        server.stop()


def test_a_big_run_lineage_starts_one_level_deep_with_more(
    browser: object, synthetic: tuple[Server, Any]
) -> None:
    server, _ = synthetic
    with _page(browser, server) as (page, problems):
        page.goto(server.base + f"/#/runs/{BIG}")
        page.wait_for_selector("#run-status.ok")
        # the plan, laid out: one box per operator
        page.wait_for_function("() => document.querySelectorAll('#plan g.node').length === 4")
        # 10,000 tasks come binned in 8 worker lanes
        page.wait_for_function(
            "() => /binned/.test(document.getElementById('timeline-note').textContent)"
        )
        assert page.locator("#timeline svg text").first.text_content() == "node-a pid 1000"
        # elements come 25 at a time; "more" pages on by keyset
        page.wait_for_function(
            "() => document.querySelectorAll('#elements-table tbody tr').length === 25"
        )
        page.click("#elements-more")
        page.wait_for_function(
            "() => document.querySelectorAll('#elements-table tbody tr').length === 50"
        )
        assert [r[0] for r in _cells(page, "#elements-table")] == [str(i) for i in range(50)]
        page.fill("#element-id", "report/summary")
        page.click("#element-find button")
        page.wait_for_selector("#lineage .side.up li.more")
        up = page.eval_on_selector_all("#lineage .side.up li", "els => els.map(e => e.textContent)")
        assert len(up) == 13 and up[-1] == "+88 more"
        assert up[0].startswith("stage-3/t0/p0 (output, 20 rows) via report/t0")
        assert page.eval_on_selector_all(
            "#lineage .side.down li", "els => els.map(e => e.textContent)"
        ) == ["none"]
        page.click("#lineage .side.up li.more")  # the next 12, by keyset
        page.wait_for_function(
            "() => document.querySelectorAll('#lineage .side.up li.item').length === 24"
        )
        assert page.text_content("#lineage .side.up li.more") == "+76 more"
        # one level at a time: a neighbour becomes the centre
        page.click("#lineage .side.up li.item >> nth=0")
        page.wait_for_function(
            "() => document.querySelector('#lineage h4').textContent.startsWith('stage-3/t0/p0')"
        )
        down = page.eval_on_selector_all(
            "#lineage .side.down li", "els => els.map(e => e.textContent)"
        )
        assert down == ["report/summary (output, 100 rows) via report/t0"]
        # users' text is shown as text: argv with markup runs nothing
        page.click("button[data-tab=programs]")
        page.wait_for_function(
            "() => document.querySelectorAll('#programs-table tbody tr').length === 25"
        )
        argv = _cells(page, "#programs-table")[0][1]
        assert argv.endswith("<script>x</script>")
        assert page.locator("#programs-table script").count() == 0
        assert problems == []


def test_a_domain_filter_shows_what_the_same_sql_returns(
    browser: object, synthetic: tuple[Server, Any]
) -> None:
    server, store = synthetic
    with _page(browser, server) as (page, problems):
        page.goto(server.base + "/#/domains")
        page.wait_for_function("() => document.getElementById('domain-dataset').value === 'reads'")
        for column, op, value in (("score", ">=", "50"), ("length", "<", "100")):
            page.click("#domain-add")
            last = page.locator("#domain-filters .filter").last
            last.locator(".col").select_option(column)
            last.locator(".op").select_option(op)
            last.locator(".val").fill(value)
        page.fill("#domain-run", BIG)
        page.click("#domain-go")
        page.wait_for_function(
            "() => document.querySelectorAll('#domain-table tbody tr').length === 100"
        )
        table = store.sql("SELECT table_name FROM domain_datasets WHERE dataset = 'reads'").rows[0][
            0
        ]
        direct = store.sql(
            f'SELECT run_id, element_id, row_no, score, length, sample FROM "{table}" WHERE '
            "run_id = :r AND score >= 50 AND length < 100 ORDER BY run_id, element_id, row_no",
            {"r": BIG}, limit=100,
        ).rows  # fmt: skip
        shown = _cells(page, "#domain-table")
        assert shown == [[_text(v) for v in row] for row in direct]
        assert "score" in page.text_content("#domain-sql")
        # the SQL console: read-only, its rows as text
        page.goto(server.base + "/#/sql")
        page.fill(
            "#sql-text",
            "SELECT stage_id, COUNT(*) AS n FROM tasks GROUP BY stage_id ORDER BY stage_id",
        )
        page.click("#sql-go")
        page.wait_for_function("() => /rows/.test(document.getElementById('sql-note').textContent)")
        assert _cells(page, "#sql-table")[0] == ["report", "1"]
        page.fill("#sql-text", "DELETE FROM runs")
        page.click("#sql-go")
        page.wait_for_function(
            "() => /read-only/.test(document.getElementById('sql-note').textContent)"
        )
        # the refused statement's 400 is the only message Chromium logs
        assert [p for p in problems if "status of 400" not in p] == [] and len(problems) == 1


def _text(value: Any) -> str:
    """A value as the page writes it (JavaScript's String of the JSON value)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return re.sub(r"^None$", "–", str(value))
