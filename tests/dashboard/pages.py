"""What the dashboard's timing tests share: a producer that feeds the embedded broker at a given
event rate (batches appended straight to ``memory://``, the fastest way in), a running word count
with a dashboard on it, and probes of an open page (what it painted, its heap and DOM through
CDP, its bars) and of a process (psutil).

The figures come from ``window.__riera`` (app.js): ``paints`` (``at``: ``performance.now()``,
``wall``: ``Date.now()``, ``sent_at``: the server's ``time.time()`` of the frame, ``values`` when
``keepValues`` is set), ``intervals`` between painted frames, ``firstPaintMs`` and ``dropped``.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

import riera
from dashboard_server import Server
from riera.dashboard.live import sink_rows
from riera.stream.connectors.memory import Broker
from riera.testing import send
from wordcount_data import wordcount_query

# Headless Chromium keeps every page visible: a second page brought to front, a minimised
# window (CDP Browser.setWindowBounds), a background target and Page.setWebLifecycleState all
# leave document.visibilityState "visible". The page's hidden state is set here instead, by the
# same property and event a browser uses; events.js reads nothing else.
VISIBILITY = """(() => {
  let hidden = false;
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  Object.defineProperty(document, "visibilityState", { configurable: true,
    get: () => hidden ? "hidden" : "visible" });
  window.__setHidden = (h) => { hidden = h; document.dispatchEvent(new Event("visibilitychange")); };
})();"""

# Every EventSource the page makes, so a test can ask which are still open.
SOURCES = """(() => {
  const Native = window.EventSource;
  const made = window.__sources = [];
  window.EventSource = class extends Native {
    constructor(...args) { super(...args); made.push(this); }
  };
})();"""


class Producer(threading.Thread):
    """Appends document 000's messages to ``memory://NAME`` in batches at about ``rate`` events
    per second (pre-encoded, so the producer costs little beside the pipeline), until stopped.
    Two :meth:`mark` calls give the rate it achieved between them (:func:`rate_between`)."""

    def __init__(self, name: str, words: Sequence[str], rate: float, batch: int = 500,
                 seed: int = 0) -> None:  # fmt: skip
        super().__init__(name=f"producer-{name}", daemon=True)
        self.topic, self.rate, self.batch = name, rate, batch
        rng = random.Random(seed)
        self.payloads = [
            json.dumps({"chave": str(i), "valorA": rng.choice(words), "valorB": "1"}).encode()
            for i in range(batch * 8)
        ]
        self.sent = 0
        self.started_at = self.ended_at = 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        broker = Broker(self.topic)
        try:
            self.started_at = due = time.monotonic()
            k = 0
            while not self._halt.is_set():
                now = time.time() * 1000
                start = (k % 8) * self.batch
                broker.append([(None, p, now) for p in self.payloads[start : start + self.batch]])
                self.sent += self.batch
                k += 1
                due += self.batch / self.rate
                self._halt.wait(max(0.0, due - time.monotonic()))  # pacing, not polling
            self.ended_at = time.monotonic()
        finally:
            broker.close()

    def payload_words(self) -> list[str]:
        """The word of every message sent so far, in order."""
        words = [json.loads(p)["valorA"] for p in self.payloads]
        return [words[i % len(words)] for i in range(self.sent)]

    def mark(self) -> tuple[float, int]:
        """Now and the events sent so far: two marks give the rate between them."""
        return time.monotonic(), self.sent

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def rate_between(a: tuple[float, int], b: tuple[float, int]) -> float:
    return (b[1] - a[1]) / (b[0] - a[0])


@dataclass
class Live:
    """A word count from ``memory://NAME-in`` to ``memory://NAME-out`` and a dashboard on it (the
    test may replace the server: the one here at the end is stopped)."""

    name: str
    query: Any
    server: Server

    @property
    def url(self) -> str:
        return f"{self.server.base}/?run={self.query.run_id}"

    def totals(self) -> dict[str, float]:
        """The sink's latest value per key, now."""
        return {r["key"]: r["value"] for r in sink_rows(f"memory://{self.name}-out")}


@contextlib.contextmanager
def live_wordcount(runtime: dict[str, str], tmp_path: Path, name: str) -> Iterator[Live]:
    """Document 000's word count, at-least-once on the continuous trigger (outputs written as
    they are computed), started on one seed message, and a dashboard process on its store."""
    send(f"memory://{name}-in", [{"chave": "0", "valorA": "seed", "valorB": "1"}], key="chave")
    q = wordcount_query(f"memory://{name}-in").write_stream(
        f"memory://{name}-out",
        checkpoint=tmp_path / "ck",
        trigger=riera.stream.continuous(checkpoint="100ms"),
        guarantee="at_least_once",
    )
    live = None
    try:
        assert q.wait_for_epoch(0, 30)
        provenance = riera.runtime.get_runtime().provenance
        assert provenance is not None, "riera.init(provenance=...) records the query's run"
        provenance.flush()  # the dashboard finds the query in the store
        live = Live(name, q, Server(runtime, tmp_path / "home" / "provenance.db"))
        yield live
    finally:
        q.stop()
        if live is not None:
            live.server.stop()


def open_page(context: Any, url: str) -> Any:
    """A new page on ``url``, once it has painted bars."""
    page = context.new_page()
    page.goto(url)
    page.wait_for_function("() => window.__riera && window.__riera.firstPaintMs !== null",
                           timeout=30_000)  # fmt: skip
    return page


def now_ms(page: Any) -> float:
    return float(page.evaluate("() => performance.now()"))


def received(page: Any) -> int:
    """Frames the page has received: painted, or replaced by a newer one before painting."""
    return int(page.evaluate("() => window.__riera.paints.length + window.__riera.dropped"))


def paints_since(page: Any, at_ms: float) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(
        "t => window.__riera.paints.filter(p => p.at >= t)", at_ms
    )
    return rows


def cdp_figures(cdps: Sequence[Any], rounds: int = 10) -> list[dict[str, float]]:
    """Each page's heap and DOM after a forced garbage collection (CDP Performance metrics): the
    least of ``rounds`` readings spread over about two seconds. A collection that lands while a
    frame's replaced rows are still referenced keeps them (~200 nodes) for that one reading."""
    least: list[dict[str, float]] = [{} for _ in cdps]
    for _ in range(rounds):
        for cdp, low in zip(cdps, least, strict=True):
            cdp.send("HeapProfiler.collectGarbage")
            for m in cdp.send("Performance.getMetrics")["metrics"]:
                low[m["name"]] = min(float(m["value"]), low.get(m["name"], float("inf")))
        time.sleep(0.1)  # another moment of the 250 ms frame
    return least


def bars(page: Any) -> dict[str, int]:
    rows = page.eval_on_selector_all(
        "#chart .bar",
        "els => els.map(e => [e.querySelector('.label').textContent,"
        " e.querySelector('.value').textContent])",
    )
    return {k: int(re.sub(r"\D", "", v)) for k, v in rows}


def uss(pid: int) -> int:
    return int(psutil.Process(pid).memory_full_info().uss)


def summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, SD, median and 95th percentile (nearest rank)."""
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return {"mean": statistics.fmean(ordered), "sd": statistics.pstdev(ordered),
            "p50": statistics.median(ordered), "p95": p95, "n": len(ordered)}  # fmt: skip


def show(values: dict[str, float], unit: str = "ms") -> str:
    return (f"mean {values['mean']:.1f} ± {values['sd']:.1f} {unit}, p50 {values['p50']:.1f}, "
            f"p95 {values['p95']:.1f} (n={values['n']:.0f})")  # fmt: skip


def metric(page: Any, name: str) -> str:
    """The text of the metrics panel's entry whose name starts with ``name``."""
    text: str = page.evaluate(
        """name => {
          const dt = [...document.querySelectorAll('#metrics dt')]
            .find(e => e.textContent.startsWith(name));
          return dt ? dt.nextElementSibling.textContent : '';
        }""",
        name,
    )
    return text


# True when the sorted chart shows exactly ``expected`` ({key: value}); for wait_for_function.
SHOWS = """expected => {
  const got = {};
  for (const li of document.querySelectorAll('#chart .bar')) {
    got[li.querySelector('.label').textContent] =
      Number(li.querySelector('.value').textContent.replace(/\\D/g, ''));
  }
  const norm = (o) => JSON.stringify(Object.entries(o).sort());
  return norm(got) === norm(expected);
}"""


def connections(pid: int, port: int) -> set[tuple[str, int]]:
    """The peers of the established TCP connections the process ``pid`` holds on its ``port``."""
    return {
        (c.raddr[0], c.raddr[1])
        for c in psutil.Process(pid).net_connections(kind="tcp")
        if c.laddr and c.laddr[1] == port and c.raddr and c.status == psutil.CONN_ESTABLISHED
    }
