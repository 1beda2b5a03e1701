"""``riera terasort gen | sort | validate``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from riera.cli import Exchange, Workers, err, fail, start
from riera.errors import RieraError

app = typer.Typer(
    help="Generate, sort and validate gensort-format records (TeraSort).", no_args_is_help=True
)


def _gb_s(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:.2f} GB/s" if seconds > 0 else "-"


def _timed(fn: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float, str]:
    """Run a job; returns its manifest, seconds, and "N records (M MB)"; errors end the CLI."""
    t0 = time.perf_counter()
    try:
        m = fn()
    except RieraError as e:
        fail(e)
        raise  # unreachable: fail() exits
    dt = time.perf_counter() - t0
    nbytes = m["rows"] * 100
    return m, dt, f"{m['rows']:,} records ({nbytes / 1e6:,.1f} MB)"


@app.command()
def gen(
    out_dir: Annotated[Path, typer.Argument(help="output directory")],
    records: Annotated[int, typer.Option("--records", "-n", min=0, help="records to write")],
    partitions: Annotated[
        int | None, typer.Option("--partitions", "-p", min=1, help="output files")
    ] = None,
    ascii: Annotated[bool, typer.Option("--ascii", help="printable records (gensort -a)")] = False,
    seed: Annotated[int, typer.Option(help="key generator seed")] = 0,
    workers: Workers = None,
) -> None:
    """Write RECORDS 100-byte gensort records into OUT_DIR (one file per partition)."""
    from riera.apps.terasort import job

    start(workers)
    m, dt, what = _timed(
        lambda: job.generate(out_dir, records, partitions=partitions, ascii=ascii, seed=seed)
    )
    print(
        f"generated {what} in {len(m['files'])} file(s) under {out_dir} in {dt:.2f} s "
        f"({_gb_s(m['rows'] * 100, dt)})"
    )


@app.command()
def sort(
    in_dir: Annotated[Path, typer.Argument(help="directory of gensort files")],
    out_dir: Annotated[Path, typer.Argument(help="output directory")],
    partitions: Annotated[
        int | None,
        typer.Option("--partitions", "-p", min=1, help="output files (default: workers)"),
    ] = None,
    workers: Workers = None,
    exchange: Exchange = None,
) -> None:
    """Sort the records in IN_DIR into OUT_DIR; file i holds the i-th key range."""
    from riera.apps.terasort import job

    rt = start(workers, exchange)
    m, dt, what = _timed(lambda: job.sort(in_dir, out_dir, partitions=partitions))
    print(
        f"sorted {what} into {len(m['files'])} file(s) in {dt:.2f} s "
        f"({_gb_s(m['rows'] * 100, dt)}) with {rt.settings.workers} worker(s), "
        f"exchange {rt.settings.exchange}"
    )


@app.command()
def validate(
    in_dir: Annotated[Path, typer.Argument(help="directory of sorted gensort files")],
    workers: Workers = None,
) -> None:
    """Check global order; exit 0 only if sorted. Prints records, duplicates and checksum."""
    from riera.apps.terasort import job

    start(workers)
    try:
        v = job.validate(in_dir)
    except RieraError as e:
        fail(e)
        return
    r = v.report
    print(f"Records: {r.records}")
    print(f"Duplicate keys: {r.duplicates}")
    print(f"Checksum: {r.checksum:x}")
    if r.ok:
        print("SUCCESS - all records are in order")
        return
    err.print(
        f"[bold red]FAILURE[/] - {r.unordered} unordered record pair(s); first: {r.first_error}"
    )
    raise typer.Exit(1)
