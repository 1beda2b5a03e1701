"""The tables of ``riera bench stream`` (:mod:`riera_bench.stream`): markdown for ``--out``, rich for
the terminal; the same cells in both.

Throughput is the median (min–max) words/s over the repetitions; each latency percentile the
median over them; ``× reference`` the throughput's median over that of the reference row (Riera
continuous exactly-once on ``memory://``, else the first Riera row measured); ``exact counts``
how many runs' final totals equalled the ``Counter`` of the messages, or **NO — MISMATCH** with the
first difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from riera_bench.measure import median
from riera_bench.stream import DIR_BATCH_MS, Row, StreamReport

COLUMNS = ("engine", "mode / trigger", "guarantee", "transport",
           "throughput (words/s), median (min–max)", "p50 (ms)", "p95 (ms)", "p99 (ms)",
           "× reference", "exact counts", "notes")  # fmt: skip


def _reference(report: StreamReport) -> Row | None:
    ref = next((r for r in report.rows if r.reference and r.throughput), None)
    return ref or next((r for r in report.rows if r.engine == "Riera" and r.throughput), None)


def cells(row: Row, ref: Row | None) -> list[str]:
    """The row's cells, in :data:`COLUMNS` order."""
    head = [row.engine, row.mode, row.guarantee, row.transport]
    if row.problem:
        return [*head, row.problem, "–", "–", "–", "–", "–", ""]
    if row.throughput:
        t = row.throughput
        tp = f"{median(t):,.0f} ({min(t):,.0f}–{max(t):,.0f})"
        ratio = f"{median(t) / median(ref.throughput):.2f}" if ref is not None else "–"
    else:
        tp, ratio = ("error" if "throughput" in row.measures else "–"), "–"
    if row.latency:
        lat = [f"{median([x[i] for x in row.latency]):,.1f}" for i in range(3)]
    else:
        lat = ["error" if "latency" in row.measures else "– (no live input)", "–", "–"]
    if row.mismatches:
        exact = f"NO — MISMATCH ({row.runs - row.exact}/{row.runs}: {row.mismatches[0]})"
    else:
        exact = f"yes ({row.exact}/{row.runs})" if row.runs else "–"
    notes = list(dict.fromkeys(row.errors))[:2]
    if row.check:
        notes.append(f"sink-side count-based p50 {median(row.check):,.1f} ms")
    return [*head, tp, *lat, ratio, exact, "; ".join(notes)]


def render(report: StreamReport) -> str:
    """The markdown report."""
    c, m = report.config, report.machine
    ref = _reference(report)
    trial = "**Trial run (--quick): tiny sizes on a shared machine; the numbers mean nothing.**"
    lines = [
        "# Riera streaming word count (document 000) beside its peers",
        "",
        *([trial, ""] if c.quick else []),
        f"{m['usable_cores']} usable cores, load {m['load'][0]:.2f} at the start, Python "
        f"{m['python']}, riera {m['riera']}, {m['date']}; total {report.seconds:.0f} s.",
        "",
        f"Workload: the document's retail messages over {c.products} products (seed {c.seed}). "
        f"Throughput: {c.messages:,} messages pre-loaded, from the query's start (engines and "
        f"worker processes up) to the final totals at the sink. Latency: {c.rate:,} messages/s for {c.seconds:g} s after "
        f"{c.warmup:,} warm-up messages; producer timestamp → sink commit, p50/p95/p99 over the "
        f"timed events, median over {c.repeat} repetition(s). Throughput: median (min–max) over "
        f"{c.repeat} repetition(s).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|:--|:--|:--|:--|--:|--:|--:|--:|--:|:--|:--|",
    ]
    for row in report.rows:
        lines.append("| " + " | ".join(x.replace("|", "/") for x in cells(row, ref)) + " |")
    lines += ["", f"× reference: throughput ÷ that of {_ref_name(ref)}."]
    if report.mismatched:
        lines += ["", f"**MISMATCH: {len(report.mismatched)} row(s) committed wrong totals.**"]
    lines += ["", "## Engines", ""]
    lines += [f"- {r.engine} `{r.key}` ({r.transport}): {r.info}" for r in report.rows if r.info]
    lines += ["", "## How the rows were measured", "", *_HOW]
    return "\n".join(lines) + "\n"


def _ref_name(ref: Row | None) -> str:
    return (
        "no Riera row"
        if ref is None
        else f"{ref.engine} {ref.mode} {ref.guarantee} {ref.transport}"
    )


_HOW = [
    "- **Riera** runs in the benchmark's process; its sink is the row's transport "
    "(`memory://…-out`, `redis://…-out`) and latency is the query's own metric (producer `ts` → "
    "the sink write holding the event returned). The producer is another process.",
    "- **Peers** run in child processes (started, checked ready, their process group killed at "
    "the end); their running totals go to a pipe the benchmark reads and stamps on arrival, and "
    "the k-th event of a word counts as committed when a total ≥ k arrives.",
    "- **Bytewax**: `stateful_map` running sum per record, recovery on (SQLite, 1 s epochs); "
    "`TestingSource` over pre-loaded lines (throughput only), or a custom `XREAD` source on the "
    "same Redis Streams transport as Riera's.",
    "- **PySpark**: Structured Streaming, files source on a directory (the producer renames a "
    f"file in every {DIR_BATCH_MS} ms), `groupBy(valorA).sum(valorB)`, update mode, default "
    "trigger, `foreachBatch` sink (at-least-once), `local[2]`.",
    "- **PyFlink**: Table API, `filesystem` source monitoring the directory, group-by sum into the "
    "`print` connector (a changelog, at-least-once), checkpoints every 1 s, parallelism 1; the "
    "Python UDF parses each line in `process` (Beam worker) or `thread` (PEMJA) mode; `sql` has "
    "no Python in the data path.",
    "- Exact counts: every run's final totals against a `Counter` of the messages; a MISMATCH "
    "names the words that differ.",
]


def rich_table(report: StreamReport) -> Any:
    """The same table for the terminal."""
    from rich.table import Table

    ref = _reference(report)
    table = Table(title="riera bench stream" + (" (trial: --quick)" if report.config.quick else ""))
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="right" if 4 <= i <= 8 else "left", overflow="fold")
    for row in report.rows:
        values = cells(row, ref)
        style = "bold red" if row.mismatches else ("dim" if row.problem else None)
        table.add_row(*values, style=style)
    return table


def default_out() -> Path:
    """``benchmarks/results/stream.md`` of the source tree (an editable install), else of the
    current directory."""
    tree = Path(__file__).resolve().parents[1]
    base = tree if (tree / "pyproject.toml").is_file() else Path.cwd() / "benchmarks"
    return base / "results" / "stream.md"
