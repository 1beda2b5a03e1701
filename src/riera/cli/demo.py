"""``riera demo``: generate data, run TeraSort and word count, print what ran, where, how fast."""

from __future__ import annotations

import os
import platform
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.table import Table

from riera import Hooks, RunInfo, __version__
from riera.cli import Workers, err, fail, out, start
from riera.errors import RieraError
from riera.exec.progress import human_bytes


class _Runs(Hooks):
    """Collects every run's info for the summary."""

    def __init__(self) -> None:
        self.runs: list[RunInfo] = []

    def on_run_end(self, run: RunInfo) -> None:
        self.runs.append(run)


def demo(
    records: Annotated[
        int, typer.Option("--records", help="TeraSort records (100 B each)")
    ] = 2_000_000,
    text_mb: Annotated[float, typer.Option("--text-mb", help="MB of text for word count")] = 100,
    workers: Workers = None,
    keep: Annotated[
        Path | None, typer.Option("--keep", help="keep the data in this directory")
    ] = None,
) -> None:
    """Riera's main demo: TeraSort and word count on all cores, with a summary."""
    from riera.apps.terasort import job as terasort
    from riera.apps.wordcount import corpus
    from riera.apps.wordcount import job as wordcount
    from riera.exchange.shm import list_segments

    runs = _Runs()
    rt = start(workers)
    rt.add_hooks(runs)
    work = keep or Path(tempfile.mkdtemp(prefix="riera-demo-"))
    steps: list[dict[str, Any]] = []

    def step(name: str, nbytes: int, fn: Any) -> Any:
        err.print(f"[bold cyan]▶ {name}[/]")
        before = len(runs.runs)
        t0 = time.perf_counter()
        try:
            result = fn()
        except RieraError as e:
            fail(f"{name}: {e}", 130 if isinstance(e, KeyboardInterrupt) else 1)
        dt = time.perf_counter() - t0
        mine = runs.runs[before:]
        steps.append(
            {
                "step": name,
                "seconds": dt,
                "bytes": nbytes,
                "stages": sum(len(r.stages) for r in mine),
                "tasks": sum(r.tasks for r in mine),
                "retries": sum(r.retries for r in mine),
            }
        )
        return result

    try:
        step(
            "generate TeraSort records",
            records * 100,
            lambda: terasort.generate(work / "terasort-in", records),
        )
        step("generate text", int(text_mb * 1e6), lambda: corpus.write_text(work / "text", text_mb))
        step(
            "TeraSort: sort",
            records * 100,
            lambda: terasort.sort(work / "terasort-in", work / "terasort-out"),
        )
        check = step(
            "TeraSort: validate", records * 100, lambda: terasort.validate(work / "terasort-out")
        ).report
        if not check.ok or check.records != records:
            fail(f"TeraSort output is not sorted: {check.first_error}")
        top = step(
            "word count", int(text_mb * 1e6), lambda: wordcount.top_words(str(work / "text"), 10)
        )
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)

    words = Table(title="Top 10 words", show_edge=False)
    words.add_column("word")
    words.add_column("count", justify="right")
    for w, c in top:
        words.add_row(w, f"{c:,}")
    out.print(words)

    summary = Table(title="What ran, how fast")
    for col in ("step", "time", "throughput", "stages", "tasks", "retries"):
        summary.add_column(col, justify="left" if col == "step" else "right")
    for s in steps:
        summary.add_row(
            s["step"],
            f"{s['seconds']:.2f} s",
            f"{s['bytes'] / s['seconds'] / 1e6:,.0f} MB/s" if s["seconds"] else "-",
            str(s["stages"]),
            str(s["tasks"]),
            str(s["retries"]),
        )
    out.print(summary)

    shm = rt.settings.shm_dir
    usage = shutil.disk_usage(shm) if shm.exists() else None
    leftover = [p for p in list_segments(shm) if p.name.startswith(f"riera-{os.getpid()}-")]
    where = Table(title="Where", show_header=False)
    where.add_column("")
    where.add_column("")
    rows = [
        (
            "host",
            f"{socket.gethostname()} ({platform.system()} {platform.machine()}, "
            f"{os.cpu_count()} CPUs)",
        ),
        ("workers", f"{rt.settings.workers} processes ({rt.settings.start_method}), kept warm"),
        (
            "exchange",
            f"{rt.settings.exchange} → runs used "
            f"{', '.join(sorted({r.exchange for r in runs.runs}))}; shared memory is {shm}"
            + (f" ({human_bytes(usage.free)} free)" if usage else "")
            + (
                f"; {human_bytes(sum(r.spilled_bytes for r in runs.runs))} spilled to disk"
                if any(r.spilled_bytes for r in runs.runs)
                else ""
            ),
        ),
        ("segments left", f"{len(leftover)}"),
        ("TeraSort check", f"{check.records:,} records in order, checksum {check.checksum:x}"),
        (
            "versions",
            f"riera {__version__}, Python {platform.python_version()}, pyarrow {pa.__version__}",
        ),
        ("data", str(work) if keep else f"{work} (removed; --keep DIR to keep it)"),
    ]
    for k, v in rows:
        where.add_row(k, v)
    out.print(where)
