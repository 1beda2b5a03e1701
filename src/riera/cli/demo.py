"""``riera demo``: the main demo — the dashboard, document 000's streaming word count, then
TeraSort and word count in batch, with a summary of what ran, where and how fast.

In order:

1. **The dashboard** in a process of its own (:mod:`riera.cli.dashboard_process`), answering
   before anything runs; its URL is printed first, and opened in a browser when a display seems
   to exist (``--no-browser``: never).
2. **The stream.** Document 000's retail producer (20 products) sends :data:`STREAM_RATE`
   purchases a second for ``--stream-seconds`` while the word count sums them per product,
   exactly once, into a sink the dashboard charts live. Both run here, through the Python API.
   The broker is the embedded one (``memory://``, in ``<work>/stream-broker``), or Redis with
   ``--broker redis`` (the ``redis_url`` setting) or ``--broker redis://HOST:PORT/DB``, on
   stream names of this demo's own. The check: the totals sum to the messages sent.
3. **Batch.** TeraSort (generate, sort, validate) and word count over generated text.

Every run lands in the configured provenance store, the one the dashboard reads. The work
directory is ``<home>/demo`` (``--keep DIR``: DIR, nothing removed): the batch data is removed
at the end; the stream's broker and checkpoint (small) stay until the next demo, so the
dashboard opened again later still shows the query's last totals and figures.

The demo then keeps the dashboard serving until Ctrl-C; with ``--no-browser`` it stops it and
ends by itself, printing the command that opens the dashboard again on the same store.
"""

from __future__ import annotations

import contextlib
import os
import platform
import shlex
import shutil
import socket
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit

import pyarrow as pa
import typer
from rich.panel import Panel
from rich.table import Table

from riera import Hooks, RunInfo, __version__
from riera.cli import Workers, err, fail, out, start
from riera.errors import RieraError
from riera.exchange.policy import redact_url
from riera.exec.progress import human_bytes

if TYPE_CHECKING:
    from riera.cli.dashboard_process import DashboardProcess

STREAM_RATE = 100  # purchases a second: 20 bars that visibly move, light on 2 cores
STREAM_PRODUCTS = 20  # document 000's 20-product list
IDLE_S = 2.0  # the word count ends this long after the last purchase
BATCH_DIRS = ("terasort-in", "terasort-out", "text")
STREAM_DIRS = ("stream-broker", "stream-checkpoint")


class _Runs(Hooks):
    """Collects every run's info for the summary."""

    def __init__(self) -> None:
        self.runs: list[RunInfo] = []

    def on_run_end(self, run: RunInfo) -> None:
        self.runs.append(run)


@dataclass(frozen=True)
class _Stream:
    """Where the demo's stream goes: source and sink URLs, checkpoint, broker directory."""

    source: str
    sink: str
    checkpoint: Path
    broker_dir: Path | None  # memory:// only

    @staticmethod
    def plan(broker: str, work: Path, redis_url: str) -> _Stream:
        checkpoint = work / "stream-checkpoint"
        if broker == "memory":
            return _Stream("memory://mensagens-produtor", "memory://mensagens-consumidor",
                           checkpoint, work / "stream-broker")  # fmt: skip
        base = redis_url if broker == "redis" else broker
        parts = urlsplit(base)
        db = parts.path.strip("/") or "0"
        if parts.scheme != "redis" or not db.isdigit():
            raise RieraError(
                f"--broker must be memory, redis or redis://HOST:PORT/DB; got {broker!r}"
            )
        # names of this demo's own: a new checkpoint never meets an older demo's fenced sink
        prefix = f"redis://{parts.netloc}/{db}/riera-demo-{time.strftime('%Y%m%d-%H%M%S')}"
        return _Stream(f"{prefix}-mensagens-produtor", f"{prefix}-mensagens-consumidor",
                       checkpoint, None)  # fmt: skip


def demo(
    records: Annotated[
        int, typer.Option("--records", min=1, help="TeraSort records (100 B each)")
    ] = 2_000_000,
    text_mb: Annotated[float, typer.Option("--text-mb", help="MB of text for word count")] = 100,
    workers: Workers = None,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="keep the data in this directory")
    ] = None,
    stream_seconds: Annotated[
        float,
        typer.Option("--stream-seconds", min=1, help=f"seconds of purchases ({STREAM_RATE}/s)"),
    ] = 30,
    broker: Annotated[
        str,
        typer.Option(
            "--broker",
            help="memory (the embedded broker), redis (the redis_url setting) or "
            "redis://HOST:PORT/DB",
        ),
    ] = "memory",
    no_browser: Annotated[
        bool,
        typer.Option("--no-browser", help="open no browser; stop the dashboard and end by itself"),
    ] = False,
    dashboard_port: Annotated[
        int, typer.Option("--dashboard-port", help="the dashboard's port (taken: a free one)")
    ] = 8765,
) -> None:
    """Riera's main demo: the dashboard, a streaming word count, TeraSort and word count."""
    from riera.cli.dashboard_process import DashboardProcess

    rt = start(workers)
    work = (keep or rt.settings.home / "demo").expanduser().resolve()
    try:
        stream = _Stream.plan(broker, work, rt.settings.redis_url)
    except RieraError as e:
        fail(e, 2)
        return
    if rt.settings.provenance == "off":
        err.print("[yellow]provenance is off (setting provenance): the dashboard lists no query[/]")
    for name in STREAM_DIRS:  # the last demo's stream: a new checkpoint needs a new sink
        shutil.rmtree(work / name, ignore_errors=True)
    runs = _Runs()
    rt.add_hooks(runs)
    with _broker_dir(stream.broker_dir):
        dash = DashboardProcess(_port(dashboard_port))
        one = _Demo(rt, runs, work, stream, dash, kept=keep is not None)
        try:
            one.run(records, text_mb, stream_seconds, no_browser)
        finally:
            dash.stop()
            if keep is None:
                for name in BATCH_DIRS:
                    shutil.rmtree(work / name, ignore_errors=True)


@contextlib.contextmanager
def _broker_dir(path: Path | None) -> Iterator[None]:
    """``RIERA_BROKER_DIR`` set to ``path`` (this process and the dashboard's) while inside."""
    if path is None:
        yield
        return
    before = os.environ.get("RIERA_BROKER_DIR")
    os.environ["RIERA_BROKER_DIR"] = str(path)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RIERA_BROKER_DIR", None)
        else:
            os.environ["RIERA_BROKER_DIR"] = before


def _port(wanted: int) -> int:
    from riera.cli.dashboard_process import free_port, port_free

    if port_free(wanted):
        return wanted
    port = free_port()
    err.print(f"[yellow]port {wanted} is taken; the dashboard listens on {port} instead[/]")
    return port


@dataclass
class _Demo:
    """One demo: the runtime, its runs, the work directory, the stream and the dashboard."""

    rt: Any
    runs: _Runs
    work: Path
    stream: _Stream
    dash: DashboardProcess
    kept: bool

    def run(self, records: int, text_mb: float, stream_seconds: float, no_browser: bool) -> None:
        steps: list[dict[str, Any]] = []
        err.print("[bold cyan]▶ dashboard[/]")
        try:
            self.dash.start()
        except RieraError as e:
            fail(e, 1)
        out.print(Panel(f"[bold]{self.dash.url}[/]", title="Riera dashboard", expand=False))
        if not no_browser and _display():
            webbrowser.open(self.dash.url)
        stream_report = _stream(self.stream, stream_seconds, steps)
        check, top = _batch(self.runs, self.work, records, text_mb, steps)
        _print_results(stream_report, top, steps)
        self.print_where(check)
        if no_browser:
            err.print("[dim]all runs done; stopping the dashboard[/]")
            return
        out.print(
            f"[bold]The dashboard keeps serving at {self.dash.url} — press Ctrl-C to stop it.[/]",
            soft_wrap=True,
        )
        try:
            code = self.dash.wait()
        except KeyboardInterrupt:  # the expected end: the caller's finally stops all; exit 0
            err.print("[dim]stopping the dashboard[/]")
            return
        fail(f"the dashboard ended by itself (exit code {code})")

    def print_where(self, check: Any) -> None:
        """Where it ran, the provenance store, and the command that opens the dashboard again."""
        from riera.exchange.shm import list_segments

        settings, runs, stream = self.rt.settings, self.runs.runs, self.stream
        shm = settings.shm_dir
        usage = shutil.disk_usage(shm) if shm.exists() else None
        leftover = [p for p in list_segments(shm) if p.name.startswith(f"riera-{os.getpid()}-")]
        pg = settings.provenance_dsn is not None
        store = "PostgreSQL (provenance_dsn)" if pg else settings.provenance_target
        rows = [
            ("host", f"{socket.gethostname()} ({platform.system()} {platform.machine()}, "
                     f"{os.cpu_count()} CPUs)"),
            ("workers", f"{settings.workers} processes ({settings.start_method}), kept warm"),
            ("exchange", f"{settings.exchange} → runs used "
                         f"{', '.join(sorted({r.exchange for r in runs}))}; shared memory is {shm}"
                         + (f" ({human_bytes(usage.free)} free)" if usage else "")
                         + (f"; {human_bytes(sum(r.spilled_bytes for r in runs))} spilled to disk"
                            if any(r.spilled_bytes for r in runs) else "")),
            ("segments left", f"{len(leftover)}"),
            ("TeraSort check", f"{check.records:,} records in order, checksum {check.checksum:x}"),
            ("stream", f"{redact_url(stream.source)} → {redact_url(stream.sink)}; "
                       f"checkpoint {stream.checkpoint}"),
            ("versions", f"riera {__version__}, Python {platform.python_version()}, "
                         f"pyarrow {pa.__version__}"),
            ("data", str(self.work) if self.kept else f"{self.work} (batch data removed, the "
                     f"stream's kept; --keep DIR keeps everything)"),
            ("provenance store", store),
            ("dashboard", self.dash.url),
        ]  # fmt: skip
        where = Table(title="Where", show_header=False)
        where.add_column("")
        where.add_column("")
        for k, v in rows:
            where.add_row(k, v)
        out.print(where)
        again = "riera dashboard" if pg else f"riera dashboard --store {shlex.quote(store)}"
        if stream.broker_dir is not None:
            again = f"RIERA_BROKER_DIR={shlex.quote(str(stream.broker_dir))} {again}"
        out.print(f"Open the dashboard on these runs again:\n  {again}", soft_wrap=True,
                  highlight=False)  # fmt: skip


def _display() -> bool:
    """Whether a browser could show a window here."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def _step(steps: list[dict[str, Any]], runs: _Runs, name: str, nbytes: int,
          fn: Callable[[], Any]) -> Any:  # fmt: skip
    err.print(f"[bold cyan]▶ {name}[/]")
    before = len(runs.runs)
    t0 = time.perf_counter()
    try:
        result = fn()
    except RieraError as e:
        fail(f"{name}: {e}", 130 if isinstance(e, KeyboardInterrupt) else 1)
    dt = time.perf_counter() - t0
    mine = runs.runs[before:]
    steps.append({
        "step": name, "seconds": dt,
        "rate": f"{nbytes / dt / 1e6:,.0f} MB/s" if dt else "-",
        "stages": str(sum(len(r.stages) for r in mine)), "tasks": str(sum(r.tasks for r in mine)),
        "retries": str(sum(r.retries for r in mine)),
    })  # fmt: skip
    return result


def _batch(runs: _Runs, work: Path, records: int, text_mb: float,
           steps: list[dict[str, Any]]) -> tuple[Any, list[tuple[str, int]]]:  # fmt: skip
    from riera.apps.terasort import job as terasort
    from riera.apps.wordcount import corpus
    from riera.apps.wordcount import job as wordcount

    nbytes, text = records * 100, int(text_mb * 1e6)
    _step(steps, runs, "generate TeraSort records", nbytes,
          lambda: terasort.generate(work / "terasort-in", records))  # fmt: skip
    _step(steps, runs, "generate text", text, lambda: corpus.write_text(work / "text", text_mb))
    _step(steps, runs, "TeraSort: sort", nbytes,
          lambda: terasort.sort(work / "terasort-in", work / "terasort-out"))  # fmt: skip
    check = _step(steps, runs, "TeraSort: validate", nbytes,
                  lambda: terasort.validate(work / "terasort-out")).report  # fmt: skip
    if not check.ok or check.records != records:
        fail(f"TeraSort output is not sorted: {check.first_error}")
    top = _step(steps, runs, "word count", text,
                lambda: wordcount.top_words(str(work / "text"), 10))  # fmt: skip
    return check, top


# -- the stream ------------------------------------------------------------------------------------


def _stream(stream: _Stream, seconds: float, steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Produce document 000's purchases while the word count sums them, exactly once; the
    report holds the totals, the query's figures and the exactly-once check."""
    from riera.apps.producers import produce
    from riera.apps.producers.retail import retail_messages
    from riera.apps.streamcount import counts, wordcount
    from riera.stream.connectors.base import open_producer

    count = max(1, round(seconds * STREAM_RATE))
    err.print(f"[bold cyan]▶ stream: {count:,} purchases at {STREAM_RATE}/s → word count, "
              f"exactly once[/]  [dim]{redact_url(stream.source)} → {redact_url(stream.sink)}[/]",
              soft_wrap=True)  # fmt: skip
    t0 = time.perf_counter()
    try:
        producer = open_producer(stream.source)
    except RieraError as e:
        fail(f"stream: {e}", 1)
    try:
        query = wordcount(stream.source, stream.sink, str(stream.checkpoint), interval_ms=500,
                          guarantee="exactly_once", until_idle=IDLE_S)  # fmt: skip
    except RieraError as e:
        producer.close()
        fail(f"stream: {e}", 1)
    try:
        watch = _StreamProgress(query)
        sent = produce(producer, retail_messages(STREAM_PRODUCTS, count, seed=0),
                       1 / STREAM_RATE, watch).sent  # fmt: skip
        if not query.await_termination(60):
            query.stop()
    except RieraError as e:
        fail(f"stream: {e}", 1)
    finally:
        producer.close()
        if query.is_active:  # Ctrl-C, or a failure: commit what is in flight
            query.stop()
    dt = time.perf_counter() - t0
    m = query.metrics
    totals = list(counts(stream.sink))
    steps.append({"step": "stream word count", "seconds": dt,
                  "rate": f"{sent / dt:,.0f} msg/s", "stages": "-", "tasks": "-",
                  "retries": "-"})  # fmt: skip
    return {"sent": sent, "totals": totals, "summed": sum(t or 0 for _, t in totals),
            "epoch": m["committed_epoch"], "latency": m["latency"]}  # fmt: skip


class _StreamProgress:
    """The producer's progress callback: a line every 5 s with the query's figures."""

    def __init__(self, query: Any) -> None:
        self.query, self.last = query, time.monotonic()

    def __call__(self, sent: int, seconds: float) -> None:
        if time.monotonic() - self.last < 5:
            return
        self.last = time.monotonic()
        m = self.query.metrics
        err.print(f"[dim]… {sent:,} purchases sent in {seconds:.0f} s; word count at epoch "
                  f"{m['committed_epoch']}, {m['records_in']:,} read, latency p50 "
                  f"{_ms(m['latency'].get('p50_ms'))}[/]", highlight=False, soft_wrap=True)  # fmt: skip


def _ms(value: Any) -> str:
    return f"{value:,.0f} ms" if isinstance(value, int | float) else "-"


# -- the summary -----------------------------------------------------------------------------------


def _print_results(stream: dict[str, Any], top: list[tuple[str, int]],
                   steps: list[dict[str, Any]]) -> None:  # fmt: skip
    products = Table(title="Stream: purchases per product (exactly once)", show_edge=False)
    products.add_column("product")
    products.add_column("total", justify="right")
    for w, c in stream["totals"][:10]:
        products.add_row(w, f"{c:,}")
    out.print(products)
    ok = stream["summed"] == stream["sent"]
    lat = stream["latency"]
    out.print(
        f"{'[green]✓' if ok else '[red]✗'} the totals sum to {stream['summed']:,}; "
        f"{stream['sent']:,} purchases were sent[/] (epoch {stream['epoch']}, latency p50 "
        f"{_ms(lat.get('p50_ms'))}, p99 {_ms(lat.get('p99_ms'))})",
        highlight=False,
        soft_wrap=True,
    )
    words = Table(title="Batch: top 10 words", show_edge=False)
    words.add_column("word")
    words.add_column("count", justify="right")
    for w, c in top:
        words.add_row(w, f"{c:,}")
    out.print(words)
    summary = Table(title="What ran, how fast")
    for col in ("step", "time", "throughput", "stages", "tasks", "retries"):
        summary.add_column(col, justify="left" if col == "step" else "right")
    for s in steps:
        summary.add_row(s["step"], f"{s['seconds']:.2f} s", s["rate"], s["stages"], s["tasks"],
                        s["retries"])  # fmt: skip
    out.print(summary)
    if not ok:
        fail("the stream's totals do not sum to the purchases sent")
