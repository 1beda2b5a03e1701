"""The dashboard in a real browser: Debian's Chromium driven by Playwright (its own browser
download cannot work here, so ``executable_path`` points at ``/usr/bin/chromium``; ``.ci/run``
installs it when missing). The page of a running word count shows the exact totals as bars,
says it is live, sends no request beyond 127.0.0.1 and logs no console or CSP error.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import riera
from dashboard_server import Server
from riera.testing import send
from wordcount_data import messages, oracle, wordcount_query

pytestmark = pytest.mark.integration

MARGIN = 0.02  # app.js: a bar overtakes the one above when it leads by 2% of the largest value


@contextlib.contextmanager
def _watched(browser: Any, runtime: dict[str, str], tmp_path: Path, name: str
             ) -> Iterator[tuple[Any, Server, Any]]:  # fmt: skip
    """The word count of ``memory://NAME-in`` running, a dashboard on it, and a new page."""
    q = wordcount_query(f"memory://{name}-in").write_stream(
        f"memory://{name}-out",
        checkpoint=tmp_path / "ck",
        trigger=riera.stream.continuous(checkpoint="100ms"),
    )
    server = Server(runtime, tmp_path / "home" / "provenance.db")
    try:
        assert q.wait_for_epoch(0, 30)
        riera.runtime.get_runtime().provenance.flush()
        yield q, server, browser.new_page()
    finally:
        q.stop()
        server.stop()


def test_the_live_view_draws_the_exact_totals_and_stays_on_localhost(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    rows = messages(2000, seed=9, words=["Freezer", "Ar Condicionado", "Fogão", "ثلاجة", "🧊 gelo"])
    send("memory://web-in", rows, key="chave")
    with _watched(browser, runtime, tmp_path, "web") as (q, server, page):
        requests: list[str] = []
        problems: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto(server.base + f"/?run={q.run_id}")
        expected = oracle(rows)
        page.wait_for_function(
            "n => document.querySelectorAll('#chart .bar').length === n",
            arg=len(expected),
            timeout=30_000,
        )
        page.wait_for_function("() => document.getElementById('state').textContent === 'live'",
                               timeout=30_000)  # fmt: skip
        labels = page.eval_on_selector_all(
            "#chart .bar .label", "els => els.map(e => e.textContent)"
        )
        values = page.eval_on_selector_all(
            "#chart .bar .value", "els => els.map(e => e.textContent)"
        )
        shown = {k: int(re.sub(r"\D", "", v)) for k, v in zip(labels, values, strict=True)}
        assert shown == expected
        top = max(expected.values())
        for above, below in itertools.pairwise(labels):  # sorted, up to the hysteresis
            assert shown[below] - shown[above] <= MARGIN * top, (above, below, shown)
        assert all(u.startswith(server.base) for u in requests), [
            u for u in requests if not u.startswith(server.base)
        ]
        # the untreated view beside it: every key, in the order it reached the sink
        page.check("#show-untreated")
        page.wait_for_function(
            "n => document.querySelectorAll('#untreated .bar').length === n",
            arg=len(expected),
            timeout=30_000,
        )
        from riera.stream.connectors.base import open_sink

        sink = open_sink("memory://web-out")
        try:
            arrival = [json.loads(k)[0] for k in sink.latest()]  # type: ignore[attr-defined]
        finally:
            sink.close()
        raw = [(label, value) for label, value in _bars(page, "#untreated")]
        assert raw == [(k, expected[k]) for k in arrival]
        assert problems == []
        # the metrics panel lists the pipeline's processes, sampled every second; the status
        # file they come from is written at epochs, so a few more records make one
        send("memory://web-in", messages(50, seed=10, words=["Freezer"]), key="chave")
        page.wait_for_function(
            "pid => [...document.querySelectorAll('#processes tbody tr td:nth-child(2)')]"
            ".some(e => e.textContent === pid)",
            arg=str(os.getpid()),
            timeout=30_000,
        )  # the driver is this process
        assert problems == []


def _bars(page: object, chart: str = "#chart") -> list[tuple[str, int]]:
    labels = page.eval_on_selector_all(f"{chart} .bar .label", "els => els.map(e => e.textContent)")  # type: ignore[attr-defined]
    values = page.eval_on_selector_all(f"{chart} .bar .value", "els => els.map(e => e.textContent)")  # type: ignore[attr-defined]
    return [(k, int(re.sub(r"\D", "", v))) for k, v in zip(labels, values, strict=True)]


def test_near_ties_keep_their_order_and_a_clear_lead_overtakes(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    def words(word: str, n: int, start: int) -> list[dict[str, str]]:
        return [{"chave": str(start + i), "valorA": word, "valorB": "1"} for i in range(n)]

    send("memory://tie-in", words("alpha", 100, 0) + words("beta", 99, 100), key="chave")
    with _watched(browser, runtime, tmp_path, "tie") as (q, server, page):
        page.goto(server.base + f"/?run={q.run_id}")
        page.wait_for_function("() => document.querySelectorAll('#chart .bar').length === 2",
                               timeout=30_000)  # fmt: skip
        assert _bars(page) == [("alpha", 100), ("beta", 99)]
        send("memory://tie-in", words("beta", 2, 1000), key="chave")  # beta 101: a near-tie
        page.wait_for_function(
            "() => [...document.querySelectorAll('#chart .value')].some(e => e.textContent === '101')",
            timeout=30_000,
        )
        page.wait_for_timeout(1500)  # longer than the dwell: a near-tie still does not swap
        assert _bars(page) == [("alpha", 100), ("beta", 101)], "exact values, order kept"
        send("memory://tie-in", words("beta", 20, 2000), key="chave")  # beta 121: a clear lead
        page.wait_for_function(
            "() => document.querySelector('#chart .bar .label').textContent === 'beta'",
            timeout=30_000,
        )
        assert _bars(page) == [("beta", 121), ("alpha", 100)]


def test_a_bar_that_passed_several_others_moves_past_them_in_one_dwell(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    def words(word: str, n: int, start: int) -> list[dict[str, str]]:
        return [{"chave": f"{word}{start + i}", "valorA": word, "valorB": "1"} for i in range(n)]

    names = ["a", "b", "c", "d", "e", "f"]
    send("memory://jump-in", [r for i, w in enumerate(names) for r in words(w, 100 - 5 * i, 0)],
         key="chave")  # fmt: skip
    with _watched(browser, runtime, tmp_path, "jump") as (q, server, page):
        page.goto(server.base + f"/?run={q.run_id}")
        page.wait_for_function("() => document.querySelectorAll('#chart .bar').length === 6",
                               timeout=30_000)  # fmt: skip
        assert [k for k, _ in _bars(page)] == names
        # every place f takes in the chart's order, as the DOM changes
        page.evaluate("""() => {
            window.__places = [];
            const note = () => {
                const at = [...document.querySelectorAll('#chart .bar .label')]
                    .map(e => e.textContent).indexOf('f');
                if (window.__places[window.__places.length - 1] !== at) window.__places.push(at);
            };
            note();
            new MutationObserver(note).observe(document.getElementById('chart'), {childList: true});
        }""")
        send("memory://jump-in", words("f", 60, 1000), key="chave")  # f: 75 → 135, first by far
        page.wait_for_function(
            "() => document.querySelector('#chart .bar .label').textContent === 'f'",
            timeout=30_000,
        )
        assert _bars(page)[0] == ("f", 135)
        assert [k for k, _ in _bars(page)] == ["f", *names[:5]]
        # past five bars in one move, not one place per dwell
        assert page.evaluate("window.__places") == [5, 0]


def test_a_producer_process_shows_among_the_query_processes_while_it_sends(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    import subprocess
    import sys

    send("memory://prod-in", messages(10, seed=4), key="chave")
    with _watched(browser, runtime, tmp_path, "prod") as (q, server, page):
        page.goto(server.base + f"/?run={q.run_id}")
        producer = subprocess.Popen(
            [sys.executable, "-m", "riera", "stream", "produce", "retail", "--to",
             "memory://prod-in", "--count", "100000", "--interval", "0.01"],
            env=runtime, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            row = "[...document.querySelectorAll('#processes tbody tr')]"
            page.wait_for_function(
                f"pid => {row}.some(tr => tr.cells[1].textContent === pid && "
                "tr.cells[0].textContent.startsWith('producer: '))",
                arg=str(producer.pid), timeout=30_000)  # fmt: skip
        finally:
            producer.kill()  # kill -9: its announcement stays behind, and is ignored
            producer.wait()
        page.wait_for_function(  # (the driver's own sample of its child may linger till an epoch)
            f"pid => !{row}.some(tr => tr.cells[1].textContent === pid && "
            "tr.cells[0].textContent.startsWith('producer: '))",
            arg=str(producer.pid), timeout=30_000)  # fmt: skip


def test_the_page_says_it_waits_and_paints_the_first_result_in_its_own_frame(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    q = wordcount_query("memory://first-in").write_stream(
        "memory://first-out", checkpoint=tmp_path / "ck",
        trigger=riera.stream.continuous(checkpoint="100ms"))  # fmt: skip
    server = Server(runtime, tmp_path / "home" / "provenance.db")
    page = browser.new_page()  # type: ignore[attr-defined]
    try:
        riera.runtime.get_runtime().provenance.flush()
        page.goto(server.base + f"/?run={q.run_id}")
        page.wait_for_function("() => /waiting/.test(document.getElementById('state').textContent)",
                               timeout=30_000)  # fmt: skip
        assert page.text_content("#chart-note") == "waiting for the first result"
        assert page.locator("#chart .bar").count() == 0
        page.evaluate("""() => { window.__got = [];
            RieraBus.on('frame', f => __got.push({sent_at: f.sent_at, bars: (f.top || []).length})); }""")
        send("memory://first-in", messages(20, seed=5), key="chave")
        page.wait_for_function("() => document.querySelectorAll('#chart .bar').length > 0",
                               timeout=30_000)  # fmt: skip
        got = page.evaluate("__got")
        paints = page.evaluate("__riera.paints")
        first = next(f for f in got if f["bars"])
        painted = next(p for p in paints if p["bars"])
        # the frame that first carried bars is the one painted: no later frame stood in for it
        assert painted["sent_at"] == first["sent_at"]
        print(f"first result sent → painted: {painted['wall'] - 1000 * first['sent_at']:.0f} ms")
    finally:
        page.close()
        q.stop()
        server.stop()


def test_a_clear_lead_is_honoured_through_bars_within_the_margin(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    def words(word: str, n: int, start: int) -> list[dict[str, str]]:
        return [{"chave": f"{word}{start + i}", "valorA": word, "valorB": "1"} for i in range(n)]

    send("memory://chain-in", words("a", 1000, 0) + words("b", 990, 0) + words("c", 980, 0),
         key="chave")  # fmt: skip
    with _watched(browser, runtime, tmp_path, "chain") as (q, server, page):
        page.goto(server.base + f"/?run={q.run_id}")
        page.wait_for_function("() => document.querySelectorAll('#chart .bar').length === 3",
                               timeout=30_000)  # fmt: skip
        assert [k for k, _ in _bars(page)] == ["a", "b", "c"]
        # c leads a by 30 (more than 2% of 1,030) but b, between them, by 15 only: b alone
        # cannot pass a, nor c pass b, yet c must end above a
        send("memory://chain-in", words("b", 25, 5000) + words("c", 50, 5000), key="chave")
        page.wait_for_function(
            "() => { const l = [...document.querySelectorAll('#chart .bar .label')]"
            ".map(e => e.textContent); return l.indexOf('c') < l.indexOf('a'); }",
            timeout=30_000,
        )
        shown = dict(_bars(page))
        assert shown == {"a": 1000, "b": 1015, "c": 1030}


def test_a_query_started_after_the_page_opened_appears_and_is_watched(
    browser: object, runtime: dict[str, str], tmp_path: Path
) -> None:
    server = Server(runtime, tmp_path / "home" / "provenance.db")
    page = browser.new_page()  # type: ignore[attr-defined]
    q = None
    try:
        page.goto(server.base + "/")
        page.wait_for_function(
            "() => /no streaming query/.test(document.getElementById('stream-list').textContent)",
            timeout=30_000)  # fmt: skip
        send("memory://late-in", messages(30, seed=6), key="chave")
        q = wordcount_query("memory://late-in").write_stream(
            "memory://late-out", checkpoint=tmp_path / "ck",
            trigger=riera.stream.continuous(checkpoint="100ms"))  # fmt: skip
        assert q.wait_for_epoch(0, 30)
        riera.runtime.get_runtime().provenance.flush()
        page.wait_for_function(  # no reload: the list came by the event stream, then its bars
            "() => document.querySelectorAll('#chart .bar').length > 0", timeout=30_000)  # fmt: skip
        assert page.locator(f"#stream-list li[data-run='{q.run_id}']").count() == 1
    finally:
        page.close()
        if q is not None:
            q.stop()
        server.stop()
