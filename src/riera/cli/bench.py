"""``riera bench core``: the core benchmark; the markdown report on stdout, progress on stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from riera.cli import err, fail
from riera.errors import RieraError

app = typer.Typer(help="Benchmarks of Riera itself (markdown reports).", no_args_is_help=True)


@app.callback()
def _bench() -> None:
    """Benchmarks of Riera itself (markdown reports)."""


def _int_list(value: str, option: str) -> tuple[int, ...]:
    try:
        items = tuple(int(x) for x in value.split(",") if x.strip())
    except ValueError:
        items = ()
    if not items or any(i < 1 for i in items):
        fail(
            f"{option}: expected a comma-separated list of positive integers, e.g. 1,2; "
            f"got {value!r}"
        )
    return items


@app.command()
def core(
    records: Annotated[
        int | None,
        typer.Option(
            "--records", min=1, help="TeraSort records of 100 bytes (default 10,000,000 = 1 GB)"
        ),
    ] = None,
    text_mb: Annotated[
        int | None,
        typer.Option(
            "--text-mb", min=1, help="MB (10**6 bytes) of text for the word count (default 1024)"
        ),
    ] = None,
    repeats: Annotated[
        int | None,
        typer.Option("--repeats", min=1, help="timed runs of TeraSort and word count (default 3)"),
    ] = None,
    workers: Annotated[
        str | None,
        typer.Option("--workers", help="worker counts to measure, comma-separated (default 1,2)"),
    ] = None,
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="parent of the temporary data directory (default: the system temp dir)",
            file_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="also write the markdown report to this file", dir_okay=False),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick",
            help="tiny sizes for a smoke run (200k records, 20 MB text, 1 repeat, "
            "shm tables of 10 and 20 MB)",
        ),
    ] = False,
    only: Annotated[
        str | None,
        typer.Option(
            "--only",
            help="sections to run, comma-separated: terasort,wordcount,shm,overhead,"
            "startup (default: all)",
        ),
    ] = None,
) -> None:
    """Measure TeraSort, word count, the shared-memory exchange, per-task overhead and cold start.

    The markdown report goes to stdout, progress to stderr.

    Results are checked: a wrong sort or count stops the benchmark with exit code 1.
    """
    from riera.bench import core as bench_core

    config = bench_core.CoreConfig.quick_defaults() if quick else bench_core.CoreConfig()
    sections = None
    if only is not None:
        sections = tuple(s.strip() for s in only.split(",") if s.strip())
        unknown = [s for s in sections if s not in bench_core.SECTIONS]
        if unknown or not sections:
            fail(
                f"--only: unknown section(s) {unknown or only!r}; choose from "
                f"{','.join(bench_core.SECTIONS)}"
            )
    config = config.with_options(
        records=records,
        text_mb=text_mb,
        repeats=repeats,
        workers=_int_list(workers, "--workers") if workers is not None else None,
        base_dir=directory,
        sections=sections,
    )

    def progress(message: str) -> None:
        err.print(f"[dim]bench:[/] {message}", highlight=False, soft_wrap=True)

    try:
        report = bench_core.run(config, progress)
    except bench_core.BenchmarkError as e:
        fail(f"benchmark aborted: {e}")
        return
    except RieraError as e:
        fail(f"benchmark aborted by an engine error: {e}")
        return
    text = bench_core.render(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        err.print(f"[dim]report written to {out}[/]")
    typer.echo(text, nl=False)
