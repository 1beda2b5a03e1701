"""``riera stream wordcount | counts | status``: document 000's word count as one command.

``wordcount`` runs the query in this process until it is stopped (Ctrl-C or SIGTERM commit what
is in flight, then exit 0) or, with ``--until-idle S``, until the source has been idle S seconds and
everything is committed. Killed with ``kill -9``, the same command with the same ``--checkpoint``
resumes where the last commit left off, and the sink ends exactly as if nothing had happened.
A progress line every few seconds goes to stderr; nothing to stdout. With ``--dashboard`` the
dashboard is served beside it, in a process of its own, from before the query starts until it
ends (:mod:`riera.cli.dashboard_process`); its URL goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from riera.cli import err, fail, out
from riera.errors import RieraError


def wordcount(
    source: Annotated[str, typer.Option("--from", help="stream URL to read the messages from")],
    sink: Annotated[str, typer.Option("--to", help="stream or table URL for the running totals")],
    checkpoint: Annotated[str, typer.Option("--checkpoint", help="checkpoint directory")],
    trigger: Annotated[
        str, typer.Option("--trigger", help="continuous | micro-batch")
    ] = "continuous",
    interval: Annotated[
        int, typer.Option("--interval", help="micro-batch / checkpoint interval, ms")
    ] = 1000,
    workers: Annotated[
        int,
        typer.Option("--workers", help="processes reading the source's partitions (1: the driver)"),
    ] = 1,
    guarantee: Annotated[
        str, typer.Option("--guarantee", help="exactly-once | at-least-once")
    ] = "exactly-once",
    until_idle: Annotated[
        float | None,
        typer.Option("--until-idle", help="exit once the source is idle this long (s)"),
    ] = None,
    coordinator: Annotated[
        str | None,
        typer.Option(
            "--coordinator",
            help="redis://HOST:PORT/DB: run the job with every driver started with the same "
            "coordinator, sharing its key groups by leases (the checkpoint must be shared)",
        ),
    ] = None,
    shards: Annotated[
        int, typer.Option("--shards", help="with --coordinator: shards, fixed at the first start")
    ] = 8,
    lease_ttl: Annotated[
        int, typer.Option("--lease-ttl", help="with --coordinator: lease time to live, ms")
    ] = 3000,
    name: Annotated[
        str, typer.Option("--name", help="the job's name at the sinks and the coordinator")
    ] = "wordcount",
    dashboard: Annotated[
        bool,
        typer.Option(
            "--dashboard",
            help="serve the dashboard (its own process) beside the query; it stops with the query",
        ),
    ] = False,
    dashboard_port: Annotated[
        int, typer.Option("--dashboard-port", help="with --dashboard: its port on 127.0.0.1")
    ] = 8765,
) -> None:
    """Sum valorB per valorA of document 000's messages, resumable after any crash."""
    with _beside(dashboard_port) if dashboard else contextlib.nullcontext():
        _wordcount(source, sink, checkpoint, trigger=trigger, interval_ms=interval,
                   guarantee=guarantee, until_idle=until_idle, workers=workers,
                   coordinator=coordinator, shards=shards, name=name,
                   lease_ttl_ms=lease_ttl)  # fmt: skip


@contextlib.contextmanager
def _beside(port: int) -> Iterator[None]:
    """The dashboard in a process of its own while the word count runs (a taken port: exit 2)."""
    from riera.cli.dashboard_process import DashboardProcess

    dash = DashboardProcess(port)
    try:
        dash.start()
    except RieraError as e:
        fail(f"--dashboard: {e} with --dashboard-port", 2)
    err.print(f"dashboard: [bold]{dash.url}[/] (it stops when the word count ends)",
              highlight=False, soft_wrap=True)  # fmt: skip
    try:
        yield
    finally:
        dash.stop()


def _wordcount(source: str, sink: str, checkpoint: str, *, coordinator: str | None,
               **options: Any) -> None:  # fmt: skip
    from riera.apps.streamcount import wordcount as start

    try:
        query = start(source, sink, checkpoint, coordinator=coordinator, **options)
    except RieraError as e:
        fail(e, 2)
        return
    stopping = {"n": 0}

    def on_signal(signum: int, frame: Any) -> None:
        stopping["n"] += 1
        query.request_stop()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    last = time.monotonic()
    try:
        _watch(query, last)
    except RieraError as e:  # the query failed: what failed, and exit 1 (resume: run it again)
        fail(e, 1)
    m = query.metrics
    if coordinator is not None:
        st = query.status
        err.print(
            f"wordcount {st['state']}: shards {sorted({r['shard'] for r in m['shards']})} run here "
            f"({m['records_read']:,} records read), {st['taken_over']} taken, {st['lost']} lost",
            highlight=False,
        )
        return
    err.print(
        f"wordcount {query.status['state']}: epoch {m['committed_epoch']}, {m['records_in']:,} "
        f"records in this run, latency p50 {m['latency']['p50_ms']} ms p99 {m['latency']['p99_ms']} ms",
        highlight=False,
    )


def _watch(query: Any, last: float) -> None:
    while not query.await_termination(0.2):
        if time.monotonic() - last >= 5:
            last = time.monotonic()
            m = query.metrics
            if "shards" in m:
                err.print(f"[dim]shards {query.status['held']}: {m['records_read']:,} records read[/]",
                          highlight=False)  # fmt: skip
                continue
            err.print(
                f"[dim]epoch {m['committed_epoch']}: {m['records_in']:,} records, "
                f"{m['records_per_second']:,.0f}/s, p50 {m['latency']['p50_ms']} ms[/]",
                highlight=False,
            )


def counts(
    url: Annotated[str, typer.Argument(help="the sink URL the word count wrote to")],
) -> None:
    """Print "word<TAB>total" of the latest total per word, most frequent first."""
    from riera.apps.streamcount import counts as read

    try:
        for word, total in read(url):
            print(f"{word}\t{total}")
    except RieraError as e:
        fail(e, 2)


def status(
    directory: Annotated[str, typer.Argument(help="the query's checkpoint directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print the raw JSON")] = False,
) -> None:
    """The query's epoch, lag, throughput, latency percentiles and per-process CPU/memory."""
    from pathlib import Path

    from riera.stream.checkpoint import read_status

    shards = sorted(Path(directory).glob("shard-*/status.json"))
    if shards and not (Path(directory) / "status.json").exists():  # a job run in shards
        if as_json:
            print(json.dumps({p.parent.name: read_status(p.parent) for p in shards}, indent=2,
                             default=str))  # fmt: skip
            return
        for p in shards:
            out.print(f"[bold]{p.parent.name}[/]")
            _print_status(read_status(p.parent))
        return
    try:
        st = read_status(directory)
    except RieraError as e:
        fail(e, 2)
        return
    if as_json:
        print(json.dumps(st, indent=2, default=str))
        return
    _print_status(st)


def _print_status(st: dict[str, Any]) -> None:
    age = time.time() - float(st.get("written_at", 0))
    lat = st.get("latency", {})
    out.print(
        f"query {st.get('name')} ({st.get('state')}, pid {st.get('pid')}, written {age:.1f} s ago)"
    )
    out.print(f"  epoch {st.get('committed_epoch')} committed; watermark {st.get('watermark')}")
    out.print(
        f"  records in {st.get('records_in'):,}, {st.get('records_per_second')}/s; rows out {st.get('rows_out'):,}"
    )
    out.print(
        f"  latency p50 {lat.get('p50_ms')} ms, p95 {lat.get('p95_ms')} ms, p99 {lat.get('p99_ms')} ms ({lat.get('count')} events)"
    )
    out.print(
        f"  lag {st.get('lag')}; late {st.get('late_records')}; dead letters {st.get('dead_letters')}"
    )
    out.print(f"  state {st.get('state_store')}; checkpoint ms {st.get('checkpoint_ms')}")
    for p in st.get("processes", []):
        out.print(
            f"  pid {p['pid']}: cpu {p['cpu_percent']:.1f}%, uss {p['uss_bytes'] / 2**20:.1f} MiB, "
            f"pss {(p.get('pss_bytes') or 0) / 2**20:.1f} MiB  {p['name']}"
        )
