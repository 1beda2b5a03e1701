"""``riera bench …``: benchmarks of Riera itself; markdown reports on stdout, progress on stderr.

The ``riera`` command finds this app through the ``riera.commands`` entry point that
``benchmarks/pyproject.toml`` declares (``bench = "riera_bench.cli:app"``); it is loaded only when
``riera bench`` runs or ``riera --help`` lists the commands. The studies themselves are imported
by each command, so ``riera bench --help`` stays quick.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from riera.cli import err, fail
from riera.errors import RieraError

app = typer.Typer(
    help="Benchmarks of Riera itself (markdown reports).",
    no_args_is_help=True,
    add_completion=False,
)


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


OutOption = Annotated[
    Path | None,
    typer.Option("--out", help="also write the markdown report to this file", dir_okay=False),
]
DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="parent of the temporary data directory, removed at the end (default: system temp)",
        file_okay=False,
    ),
]


def _progress(message: str) -> None:
    err.print(f"[dim]bench:[/] {message}", highlight=False, soft_wrap=True)


def _run_and_report(
    run: Callable[[], Any],
    render: Callable[[Any], str],
    aborted: type[Exception] | None,
    out: Path | None,
) -> Any:
    """Run a study; print its markdown report (and write it to ``out``); errors end the CLI."""
    try:
        report = run()
    except RieraError as e:
        fail(f"benchmark aborted by an engine error: {e}")
    except Exception as e:
        if aborted is None or not isinstance(e, aborted):
            raise
        fail(f"benchmark aborted: {e}")
    text = render(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        err.print(f"[dim]report written to {out}[/]")
    typer.echo(text, nl=False)
    return report


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
    directory: DirOption = None,
    out: OutOption = None,
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
    from riera_bench import core as bench_core
    from riera_bench import core_report

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

    _run_and_report(
        lambda: bench_core.run(config, _progress),
        core_report.render,
        bench_core.BenchmarkError,
        out,
    )


def _str_list(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return tuple(s.strip() for s in value.split(",") if s.strip())


@app.command()
def exchange(
    sizes: Annotated[
        str | None,
        typer.Option("--sizes", help="Terasort CSV sizes in MB (default 100,200,300,400,500)"),
    ] = None,
    brain_sizes: Annotated[
        str | None,
        typer.Option("--brain-sizes", help="Brain CSV sizes in MB (default 32,63,95,127,150)"),
    ] = None,
    datasets: Annotated[
        str | None, typer.Option("--datasets", help="terasort,brain (default: both)")
    ] = None,
    variants: Annotated[
        str | None,
        typer.Option(
            "--variants",
            help="dtype variants: object,string,str,arrow (Terasort), numpy,arrow (Brain); "
            "default: all",
        ),
    ] = None,
    backends: Annotated[
        str | None,
        typer.Option(
            "--backends",
            help="exchanges to measure (default shm,shm-pickle,disk; also redis, s3, s3-parquet, "
            "s3fs, s3fs-parquet)",
        ),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", min=1, help="runs of each measurement (default 3)")
    ] = None,
    directory: DirOption = None,
    out: OutOption = None,
    plots: Annotated[
        Path | None,
        typer.Option(
            "--plots",
            help="write PNG plots into this directory (needs matplotlib)",
            file_okay=False,
        ),
    ] = None,
    s3_endpoint: Annotated[
        str | None,
        typer.Option(
            "--s3-endpoint",
            help="S3-compatible endpoint for s3/s3-parquet (default: start moto on 127.0.0.1)",
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="tiny sizes for a smoke run (5 and 10 MB, 1 repeat)"),
    ] = False,
) -> None:
    """Document 002's exchange study: sizes, memory per step and times, per backend and dtype.

    Terasort (two string columns) and Brain (int32, float64, float64) CSVs are loaded into pandas with each dtype variant and exchanged through each backend, every writer and reader in a fresh process.

    The markdown report, with the document's tables 3–24 beside ours, goes to stdout; progress to stderr.

    Every read is compared with what was written: a difference stops the study with exit code 1.
    """
    from riera_bench import exchange_study as study

    config = study.ExchangeConfig.quick_defaults() if quick else study.ExchangeConfig()
    config = config.with_options(
        terasort_sizes_mb=_int_list(sizes, "--sizes") if sizes is not None else None,
        brain_sizes_mb=_int_list(brain_sizes, "--brain-sizes") if brain_sizes is not None else None,
        datasets=_str_list(datasets),
        variants=_str_list(variants),
        backends=_str_list(backends),
        repeats=repeats,
        base_dir=directory,
        plots_dir=plots,
        s3_endpoint=s3_endpoint,
    )

    report = _run_and_report(
        lambda: study.run(config, _progress), study.render, study.BenchmarkError, out
    )
    for path in report.plots:
        err.print(f"[dim]plot written to {path}[/]")


@app.command()
def mapreduce(
    sizes: Annotated[
        str | None,
        typer.Option("--sizes", help="input sizes in GB, comma-separated (default 1,3,5)"),
    ] = None,
    mb: Annotated[
        str | None,
        typer.Option("--mb", help="input sizes in MB (10**6 bytes) instead, e.g. 50 or 50,200"),
    ] = None,
    procs: Annotated[
        str | None, typer.Option("--procs", help="process counts P (default 1,2,4)")
    ] = None,
    backends: Annotated[
        str | None,
        typer.Option(
            "--backends",
            help="Riera exchanges (default shm,disk,shm-pickle,redis,s3; also s3fs, the s3 "
            "exchange through s3fs; '' for none)",
        ),
    ] = None,
    peers: Annotated[
        str | None,
        typer.Option(
            "--peers",
            help="peer engines (default lithops,dask,ray,spark,polars,duckdb; '' for none)",
        ),
    ] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", min=1, help="timed runs of each job (default 3)")
    ] = None,
    directory: DirOption = None,
    out: OutOption = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="seconds allowed per peer and P (default 3600)"),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", help="Redis server of the redis exchange (default 127.0.0.1)"),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="a smoke run: 4 MB, P = 1,2, 1 repeat")
    ] = False,
) -> None:
    """Document 002's Terasort-style MapReduce on Riera (every exchange) and on its peers.

    Lithops (localhost), Dask, Ray Data, PySpark local[P], Polars and DuckDB run the same job
    on the same CSV files; peers come from the `peers` extra and missing ones are reported.
    Every output is verified before its time counts. The markdown report goes to stdout,
    progress to stderr; exit code 1 if a Riera job produced a wrong result.
    """
    from riera_bench import mapreduce as study
    from riera_bench.measure import GB, MB

    def names(value: str | None, option: str, known: tuple[str, ...]) -> tuple[str, ...] | None:
        if value is None:
            return None
        items = tuple(s.strip() for s in value.split(",") if s.strip())
        unknown = [s for s in items if s not in known]
        if unknown:
            fail(f"{option}: unknown {unknown}; choose from {','.join(known)}")
        return items

    def amounts(value: str, option: str, unit: int) -> tuple[int, ...]:
        try:
            items = tuple(int(float(x) * unit) for x in value.split(",") if x.strip())
        except ValueError:
            items = ()
        if not items or any(i < 1000 for i in items):
            fail(
                f"{option}: expected positive sizes separated by commas, e.g. 1,3,5; got {value!r}"
            )
        return items

    config = study.MapReduceConfig.quick_defaults() if quick else study.MapReduceConfig()
    chosen = (amounts(sizes, "--sizes", GB) if sizes is not None else ()) + (
        amounts(mb, "--mb", MB) if mb is not None else ()
    )
    config = config.with_options(
        sizes=tuple(sorted(set(chosen))) or None,
        procs=_int_list(procs, "--procs") if procs is not None else None,
        backends=names(backends, "--backends", study.BACKENDS + study.EXTRA_BACKENDS),
        peers=names(peers, "--peers", study.PEERS),
        repeats=repeats,
        base_dir=directory,
        timeout=timeout,
        redis_url=redis_url,
    )

    report = _run_and_report(lambda: study.run(config, _progress), study.render, None, out)
    if report.riera_wrong:
        fail(f"{len(report.riera_wrong)} Riera configuration(s) produced a wrong result")


@app.command()
def provenance(
    records: Annotated[
        int | None,
        typer.Option("--records", min=1, help="TeraSort records of 100 bytes (default 10,000,000)"),
    ] = None,
    text_mb: Annotated[
        int | None, typer.Option("--text-mb", min=1, help="MB of text for word count (512)")
    ] = None,
    rows_text_mb: Annotated[
        int | None,
        typer.Option("--rows-text-mb", min=1, help="MB of text for wordcount-rows (16)"),
    ] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="workers (2)")] = None,
    repeats: Annotated[
        int | None, typer.Option("--repeats", min=1, help="interleaved runs per mode (5)")
    ] = None,
    modes: Annotated[
        str | None,
        typer.Option("--modes", help="capture modes, comma-separated (off,tasks,records)"),
    ] = None,
    jobs: Annotated[
        str | None,
        typer.Option("--jobs", help="terasort,wordcount,wordcount-rows (default: all)"),
    ] = None,
    directory: DirOption = None,
    out: OutOption = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="a smoke run: 100k records, 5 MB text, 1 repeat")
    ] = False,
) -> None:
    """What provenance capture costs: TeraSort and word count with capture off, tasks, records.

    Modes are interleaved within each repeat; every result is verified before its time counts.
    The markdown report goes to stdout, progress to stderr.
    """
    from riera_bench import provenance as study

    config = study.ProvenanceConfig.quick_defaults() if quick else study.ProvenanceConfig()
    config = config.with_options(
        records=records,
        text_mb=text_mb,
        rows_text_mb=rows_text_mb,
        workers=workers,
        repeats=repeats,
        modes=_str_list(modes),
        jobs=_str_list(jobs),
        base_dir=directory,
    )
    unknown = [j for j in config.jobs if j not in study.JOBS]
    if unknown:
        fail(f"--jobs: unknown {unknown}; choose from {','.join(study.JOBS)}")
    _run_and_report(
        lambda: study.run(config, _progress), study.render, study.ProvenanceBenchError, out
    )


@app.command()
def raw(
    sizes: Annotated[
        str | None, typer.Option("--sizes", help="CSV sizes in MB (default 10,50,100,200)")
    ] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="runs (3)")] = None,
    directory: DirOption = None,
    out: OutOption = None,
    quick: Annotated[bool, typer.Option("--quick", help="a smoke run: 1 and 2 MB")] = False,
) -> None:
    """Time to the first answer from raw output files: DuckDB in place vs loading into SQLite.

    Both paths must give the same answers. The markdown report goes to stdout, progress to stderr.
    """
    from riera_bench import raw as study

    config = study.RawConfig.quick_defaults() if quick else study.RawConfig()
    config = config.with_options(
        sizes_mb=_int_list(sizes, "--sizes") if sizes is not None else None,
        repeats=repeats,
        base_dir=directory,
    )
    _run_and_report(lambda: study.run(config, _progress), study.render, study.RawBenchError, out)


@app.command()
def analytics(
    rows: Annotated[
        int | None,
        typer.Option(
            "--rows",
            min=1,
            help="line items (default 64,000,000: 1.39 GB of Parquet in 24 files)",
        ),
    ] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="timed runs (3)")] = None,
    threads: Annotated[
        int | None, typer.Option("--threads", min=1, help="threads / workers per engine (2)")
    ] = None,
    queries: Annotated[
        str | None, typer.Option("--queries", help="q1,q3,q5,topk (default: all)")
    ] = None,
    directory: DirOption = None,
    keep_data: Annotated[
        Path | None,
        typer.Option(
            "--keep-data",
            help="keep the generated data in this directory and reuse it when it holds data of "
            "the same row count (its manifest.json says); --dir is then unused",
            file_okay=False,
        ),
    ] = None,
    out: OutOption = None,
    quick: Annotated[bool, typer.Option("--quick", help="a smoke run: 60,000 line items")] = False,
) -> None:
    """Analytical queries over Parquet (decimal, date32, string_view): Riera's expressions beside
    DuckDB and Polars on the same files and threads. Answers are checked against DuckDB's.

    Each table is a directory of Parquet files. With --keep-data DIR the generated data (1.39 GB
    by default) is kept there, and later runs of the same size reuse it instead of writing it again."""
    from riera_bench import analytics as study

    config = study.AnalyticsConfig.quick_defaults() if quick else study.AnalyticsConfig()
    chosen = _str_list(queries)
    if chosen is not None and (not chosen or any(q not in study.QUERIES for q in chosen)):
        fail(f"--queries: choose from {','.join(study.QUERIES)}; got {queries!r}")
    config = config.with_options(
        lineitem_rows=rows,
        repeats=repeats,
        threads=threads,
        queries=chosen,
        base_dir=directory,
        keep_data=keep_data,
    )
    _run_and_report(lambda: study.run(config, _progress), study.render, study.AnalyticsError, out)


@app.command()
def stream(
    messages: Annotated[
        int | None,
        typer.Option(
            "--messages", min=1, help="pre-loaded messages of the throughput runs (200,000)"
        ),
    ] = None,
    rate: Annotated[
        int | None,
        typer.Option("--rate", min=1, help="messages per second of the latency runs (5,000)"),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option("--seconds", min=0.1, help="seconds the latency runs produce for (10)"),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option("--warmup", min=1, help="messages committed before a latency run (1,000)"),
    ] = None,
    products: Annotated[
        int | None, typer.Option("--products", help="the document's 3 or 20 products (3)")
    ] = None,
    repeat: Annotated[
        int | None, typer.Option("--repeat", min=1, help="repetitions of each measure (3)")
    ] = None,
    transports: Annotated[
        str | None,
        typer.Option(
            "--transports",
            help="Riera's transports: generator,memory,redis (default: all; generator: "
            "throughput only)",
        ),
    ] = None,
    riera_workers: Annotated[
        str | None,
        typer.Option("--riera-workers", help="Riera's worker counts, comma-separated (1,2)"),
    ] = None,
    modes: Annotated[
        str | None,
        typer.Option(
            "--modes",
            help="Riera rows: continuous-alo,continuous-eo,micro-batch (default: all)",
        ),
    ] = None,
    peers: Annotated[
        str | None,
        typer.Option("--peers", help="bytewax,spark,flink (default: all; '' for none)"),
    ] = None,
    flink_modes: Annotated[
        str | None,
        typer.Option("--flink-modes", help="PyFlink rows: process,thread,sql (process,thread)"),
    ] = None,
    redis_url: Annotated[
        str | None,
        typer.Option("--redis-url", help="Redis of the redis:// rows (redis://127.0.0.1:6379/0)"),
    ] = None,
    pyflink_python: Annotated[
        str | None,
        typer.Option(
            "--pyflink-python",
            help="interpreter with apache-flink (default: $RIERA_BENCH_PYFLINK_PYTHON, else this "
            "one)",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="seconds allowed per run and engine start (600)"),
    ] = None,
    directory: DirOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="write the markdown report here (default: benchmarks/results/stream.md)",
            dir_okay=False,
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="a smoke run: 2,000 messages, 500/s for 1 s, 1 repetition"),
    ] = False,
) -> None:
    """Document 000's streaming word count on Riera and its peers: throughput and latency.

    Riera (continuous at-least-once, continuous exactly-once, micro-batch exactly-once on
    memory:// and redis://), Bytewax, PySpark Structured Streaming and PyFlink run on the same
    messages; every run's totals are checked against a Counter. The table goes to stdout (rich),
    the markdown report to --out, progress to stderr; exit code 1 if a Riera row miscounted.
    """
    from rich.console import Console

    from riera_bench import stream as study
    from riera_bench import stream_report

    def names(value: str | None, option: str, known: tuple[str, ...]) -> tuple[str, ...] | None:
        items = _str_list(value)
        unknown = [s for s in items or () if s not in known]
        if unknown:
            fail(f"{option}: unknown {unknown}; choose from {','.join(known)}")
        return items

    if products is not None and products not in (3, 20):
        fail(f"--products: the document has 3 or 20 products; got {products}")
    config = study.StreamConfig.quick_defaults() if quick else study.StreamConfig()
    config = config.with_options(
        messages=messages,
        rate=rate,
        seconds=seconds,
        warmup=warmup,
        products=products,
        repeat=repeat,
        transports=names(transports, "--transports", study.TRANSPORTS),
        riera_workers=_int_list(riera_workers, "--riera-workers") if riera_workers else None,
        riera_modes=names(modes, "--modes", study.RIERA_MODES),
        peers=names(peers, "--peers", study.PEERS),
        flink_modes=names(flink_modes, "--flink-modes", study.FLINK_MODES),
        redis_url=redis_url,
        pyflink_python=pyflink_python,
        timeout=timeout,
        base_dir=directory,
    )
    try:
        report = study.run(config, _progress)
    except RieraError as e:
        fail(f"benchmark aborted by an engine error: {e}")
    target = out if out is not None else stream_report.default_out()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(stream_report.render(report), encoding="utf-8")
    console = Console(width=None if Console().is_terminal else 220)
    console.print(stream_report.rich_table(report))
    err.print(f"[dim]report written to {target}[/]")
    wrong = [r for r in report.mismatched if r.engine == "Riera"]
    for r in report.mismatched:
        err.print(f"[bold red]MISMATCH[/] {r.engine} {r.key} {r.transport}: {r.mismatches[0]}")
    if wrong:
        fail(f"{len(wrong)} Riera row(s) committed wrong totals")


@app.command()
def explorer(
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="requests per endpoint")] = 20,
    postgres: Annotated[
        str | None,
        typer.Option("--postgres", help="also on this PostgreSQL (a schema of its own, dropped)"),
    ] = None,
    out: OutOption = None,
) -> None:
    """How fast the dashboard's provenance explorer answers, endpoint by endpoint (server time
    and client time), over a synthetic store of 10,001 tasks and 52,501 elements."""
    from riera_bench import explorer as study

    _run_and_report(
        lambda: study.run(repeats, postgres, _progress), study.render, RuntimeError, out
    )
