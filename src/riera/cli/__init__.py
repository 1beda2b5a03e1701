"""The ``riera`` command line. Results go to stdout; progress, summaries and errors to stderr."""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from riera import __version__
from riera.cli.plugins import PluginGroup
from riera.errors import RieraError

app = typer.Typer(
    name="riera",
    cls=PluginGroup,  # adds the commands of other distributions (riera bench: riera-bench)
    help="Parallel dataflows with zero-copy shared-memory exchange.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()

Workers = Annotated[int | None, typer.Option("--workers", "-w", help="worker processes")]
Exchange = Annotated[str | None, typer.Option("--exchange", help="exchange backend (shm)")]


def _version(value: bool) -> None:
    if value:
        print(f"riera {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


def start(workers: int | None = None, exchange: str | None = None, **more: Any) -> Any:
    """Initialise the runtime from CLI flags over the configured layers (bad values: exit 2)."""
    import riera

    try:
        return riera.init(workers=workers, exchange=exchange, **more)
    except RieraError as e:
        fail(e, 2)


def fail(message: str | BaseException, code: int | None = None) -> None:
    """Print the error and exit: 130 for a cancelled run (like Ctrl-C in a shell), else 1."""
    if code is None:
        code = 130 if isinstance(message, KeyboardInterrupt) else 1
    message = str(message)
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.command()
def run(
    script: Annotated[Path, typer.Argument(help="a Python file that builds and runs datasets")],
    workers: Workers = None,
    exchange: Exchange = None,
    args: Annotated[list[str] | None, typer.Argument(help="arguments for the script")] = None,
) -> None:
    """Run a pipeline script with Riera initialised from settings and flags."""
    if not script.is_file():
        fail(f"no such script: {script}")
    start(workers, exchange)
    sys.argv = [str(script), *(args or [])]
    sys.path.insert(0, str(script.resolve().parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except RieraError as e:
        fail(e)


@app.command()
def config(as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """Show the effective settings and where each value came from."""
    from riera.config import Settings, load_settings, setting_sources

    try:
        settings = load_settings()
    except RieraError as e:
        fail(e)
        return
    sources = setting_sources(settings)
    values = settings.model_dump(mode="json")
    if as_json:
        print(
            json.dumps({k: {"value": v, "source": sources[k]} for k, v in values.items()}, indent=1)
        )
        return
    table = Table(title="Riera settings (argument > RIERA_* env > riera.toml > default)")
    table.add_column("setting")
    table.add_column("value")
    table.add_column("source")
    table.add_column("meaning")
    for k, v in values.items():
        table.add_row(k, str(v), sources[k], Settings.model_fields[k].description or "")
    out.print(table)


@app.command()
def wordcount(
    path: Annotated[list[Path], typer.Argument(help="text files, directories, globs")],
    top: Annotated[int | None, typer.Option("--top", "-k", help="only the K most frequent")] = None,
    workers: Workers = None,
    exchange: Exchange = None,
) -> None:
    """Count words: prints "word<TAB>count" lines, most frequent first."""
    from riera.apps.wordcount.job import top_words

    start(workers, exchange)
    t0 = time.perf_counter()
    try:
        rows = top_words([str(p) for p in path], top)
    except RieraError as e:
        fail(e)
        return
    elapsed = time.perf_counter() - t0
    w = sys.stdout.write
    for word, count in rows:
        w(f"{word}\t{count}\n")
    err.print(f"[dim]{len(rows):,} words in {elapsed:.2f} s[/]")


shm_app = typer.Typer(
    help="Inspect and clean Riera's shared-memory segments.", no_args_is_help=True
)
app.add_typer(shm_app, name="shm")


@shm_app.command("ls")
def shm_ls() -> None:
    """List Riera segments in the shared-memory directory."""
    from riera.config import load_settings
    from riera.exchange.shm import list_segments

    d = load_settings().shm_dir
    segs = list_segments(d)
    for s in segs:
        print(f"{s.stat().st_size:>14,}  {s}")
    err.print(f"[dim]{len(segs)} segment(s) in {d}[/]")


@shm_app.command("sweep")
def shm_sweep() -> None:
    """Remove segments left by Riera drivers that are no longer running."""
    from riera.config import load_settings
    from riera.exchange.shm import sweep_dead_owners

    d = load_settings().shm_dir
    n = sweep_dead_owners(d)
    print(f"removed {n} segment(s) from {d}")


def _register() -> None:
    from riera.cli import dashboard, demo, prov, stream, terasort

    app.add_typer(terasort.app, name="terasort")
    app.add_typer(prov.app, name="prov")
    app.add_typer(stream.app, name="stream")
    app.command()(demo.demo)
    app.command()(dashboard.dashboard)


_register()


def main() -> None:
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    try:
        app()
    except KeyboardInterrupt:
        err.print("[yellow]cancelled[/]")
        sys.exit(130)
