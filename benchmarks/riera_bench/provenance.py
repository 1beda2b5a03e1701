"""``riera bench provenance``: what capturing provenance costs a run.

TeraSort (sort of gensort records) and word count run with each capture mode — ``off``, ``tasks``
(the default) and ``records`` (record-level lineage everywhere) — on the same data and the same
worker count. The fast word count and TeraSort parse their input in ``map_batches`` steps that
change the row count, which record lineage cannot see through (those stages are opaque; the sort's
reduce stage is traced row by row). So a third job, ``wordcount-rows``, is the classic lineage
benchmark (Titian's): lines ``flat_map``-ed into words, then ``group_by(word).count()``, every row
traced; after its ``records`` run, the study times record-lineage queries over what it stored. Modes are interleaved within each repeat (off, tasks, off, tasks, …) so that a
machine drifting (page cache, thermal, noisy neighbours) weighs on every mode alike; each mode gets
a fresh runtime (so its own settings) warmed up by an untimed run. Every result is verified (the
sort validated, the counts compared with the generator's) before its time counts.

Overhead = median(mode) / median(off) − 1. On a noisy 2-core VM run-to-run spread is often larger
than the effect being measured, so the report prints min–max beside every median.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riera_bench.measure import GB, MB, Options, Stats, machine_info, timed

MODES = ("off", "tasks", "records")
JOBS = ("terasort", "wordcount", "wordcount-rows")
LINEAGE_QUERIES = 20
Progress = Callable[[str], None]


class ProvenanceBenchError(RuntimeError):
    """A job produced a wrong result; its time is not reported."""


@dataclass(frozen=True)
class ProvenanceConfig(Options):
    records: int = 10_000_000  # TeraSort records of 100 bytes (1 GB)
    text_mb: int = 512
    rows_text_mb: int = 16  # the row-by-row word count (Python per row: slower per byte)
    workers: int = 2
    repeats: int = 5
    modes: tuple[str, ...] = MODES
    jobs: tuple[str, ...] = JOBS
    base_dir: Path | None = None
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> ProvenanceConfig:
        return cls(records=100_000, text_mb=5, rows_text_mb=1, repeats=1, quick=True)


@dataclass
class JobResult:
    job: str
    nbytes: int
    stats: dict[str, Stats] = field(default_factory=dict)
    captured: dict[str, dict[str, int]] = field(default_factory=dict)  # mode -> table -> rows
    lineage: dict[str, float] | None = None  # record-lineage query timings (wordcount-rows)

    def overhead(self, mode: str) -> float:
        return self.stats[mode].median / self.stats["off"].median - 1


@dataclass
class ProvenanceReport:
    config: ProvenanceConfig
    machine: dict[str, Any]
    jobs: list[JobResult] = field(default_factory=list)
    store_bytes: int = 0
    seconds: float = 0.0


def run(config: ProvenanceConfig, progress: Progress | None = None) -> ProvenanceReport:
    import riera
    from riera.config import load_settings

    say = progress or (lambda _msg: None)
    bad = [m for m in config.modes if m not in ("off", "tasks", "records")]
    if bad or "off" not in config.modes or len(config.modes) < 2:
        raise ProvenanceBenchError(
            f"modes must include 'off' and another of tasks/records; got {list(config.modes)}"
        )
    report = ProvenanceReport(config, machine_info(load_settings().shm_dir))
    if config.base_dir is not None:
        config.base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="riera-bench-prov-", dir=config.base_dir))
    home = root / "home"
    say(f"working directory {root}")
    t0 = time.perf_counter()
    try:
        if "terasort" in config.jobs:
            report.jobs.append(_terasort(config, root, home, say))
        if "wordcount" in config.jobs:
            report.jobs.append(_wordcount(config, root, home, say))
        if "wordcount-rows" in config.jobs:
            report.jobs.append(_wordcount_rows(config, root, home, say))
        db = home / "provenance.db"
        report.store_bytes = sum(
            p.stat().st_size for p in db.parent.glob("provenance.db*") if p.is_file()
        )
    finally:
        riera.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def _start(config: ProvenanceConfig, mode: str, home: Path) -> None:
    import riera

    riera.init(workers=config.workers, progress="off", provenance=mode, home=str(home))
    n = config.workers * 4
    if riera.range(n, partitions=config.workers).count() != n:
        raise ProvenanceBenchError("the warm-up run returned a wrong count")


def _captured(home: Path) -> dict[str, int]:
    """Rows the last run left in the store's main tables."""
    import riera.provenance as prov
    from riera.config import load_settings

    settings = load_settings(home=str(home))
    last = prov.sql("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1", settings=settings)
    run_id = last.rows[0][0]
    out = {}
    counts = {t: "count(*)" for t in ("operators", "stages", "tasks", "elements", "used")}
    counts |= {"generated": "count(*)", "derivation_blocks": "coalesce(sum(n), 0)"}
    for table, count in counts.items():
        got = prov.sql(
            f"SELECT {count} FROM {table} WHERE run_id = :r", {"r": run_id}, settings=settings
        )
        out["derivations" if table == "derivation_blocks" else table] = int(got.rows[0][0])
    return out


def _interleaved(
    config: ProvenanceConfig,
    home: Path,
    result: JobResult,
    job: Callable[[int], Callable[[], Any]],
    check: Callable[[Any, str], None],
    say: Progress,
    after: Callable[[str], None] | None = None,
) -> None:
    for mode in config.modes:
        result.stats[mode] = Stats()
    for rep in range(config.repeats):
        for mode in config.modes:
            _start(config, mode, home)
            out, dt = timed(job(rep))
            if mode != "off" and mode not in result.captured:
                result.captured[mode] = _captured(home)  # before the check runs jobs of its own
            check(out, f"{result.job}, provenance={mode}, run {rep + 1}")
            result.stats[mode].add(dt)
            if after is not None and rep == 0:
                after(mode)
            say(f"  {result.job} provenance={mode} run {rep + 1}/{config.repeats}: {dt:.3f} s")


def _terasort(config: ProvenanceConfig, root: Path, home: Path, say: Progress) -> JobResult:
    from riera.apps.terasort import job

    data = root / "terasort-in"
    say(f"terasort: generating {config.records:,} records ({config.records * 100 / GB:.2f} GB)")
    _start(config, "off", home)
    job.generate(data, config.records)
    result = JobResult("terasort", config.records * 100)

    def sort(rep: int) -> Callable[[], Path]:
        def go() -> Path:
            out = root / f"terasort-out-{rep}-{time.monotonic_ns()}"
            job.sort(data, out)
            return out

        return go

    def check(out: Path, what: str) -> None:
        ok = job.validate(out).report.ok
        shutil.rmtree(out)
        if not ok:
            raise ProvenanceBenchError(f"TeraSort validation FAILED ({what})")

    _interleaved(config, home, result, sort, check, say)
    shutil.rmtree(data)
    return result


def _corpus(root: Path, job: str, mb: int, say: Progress) -> tuple[Path, Any]:
    """A generated text of ``mb`` MB in its own directory, and the generator's statistics."""
    from riera.apps.wordcount.corpus import TextGenerator

    path = root / job / "text.txt"
    path.parent.mkdir()
    say(f"{job}: generating {mb} MB of text")
    return path, TextGenerator().write(path, mb * MB)


def _wordcount(config: ProvenanceConfig, root: Path, home: Path, say: Progress) -> JobResult:
    from riera.apps.wordcount.corpus import expected_order
    from riera.apps.wordcount.job import top_words

    path, stats = _corpus(root, "wordcount", config.text_mb, say)
    expected = expected_order(stats.counts)
    result = JobResult("wordcount", stats.nbytes)

    def count(rep: int) -> Callable[[], Any]:
        return lambda: top_words(str(path))

    def check(got: Any, what: str) -> None:
        if got != expected:
            raise ProvenanceBenchError(f"word count differs from the generator's counts ({what})")

    _interleaved(config, home, result, count, check, say)
    shutil.rmtree(path.parent)
    return result


def _wordcount_rows(config: ProvenanceConfig, root: Path, home: Path, say: Progress) -> JobResult:
    import riera
    from riera.apps.wordcount.job import PUNCTUATION

    path, stats = _corpus(root, "wordcount-rows", config.rows_text_mb, say)
    expected = dict(stats.counts)
    result = JobResult("wordcount-rows", stats.nbytes)

    def words(row: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for token in row["text"].split():
            w = token.lower().strip(PUNCTUATION)
            if w:
                out.append({"word": w})
        return out

    def count(rep: int) -> Callable[[], Any]:
        def go() -> dict[str, int]:
            ds = riera.read_text(str(path)).flat_map(words).group_by("word").count()
            return {r["word"]: r["count"] for r in ds.collect()}

        return go

    def check(got: Any, what: str) -> None:
        if got != expected:
            raise ProvenanceBenchError(f"row word count differs from the generator's ({what})")

    def lineage_queries(mode: str) -> None:
        if mode == "records":
            result.lineage = _time_lineage(home, say)

    _interleaved(config, home, result, count, check, say, lineage_queries)
    shutil.rmtree(path.parent)
    return result


def _time_lineage(home: Path, say: Progress) -> dict[str, float]:
    """Median and max time of record-lineage queries from output rows of the last run."""
    import random
    import statistics

    import riera.provenance as prov
    from riera.config import load_settings
    from riera.provenance.lineage import record_lineage

    settings = load_settings(home=str(home))
    store = prov.open_default_store(settings)
    try:
        run_id = store.sql("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").rows[0][0]
        p = {"r": run_id}
        derivations = store.sql(
            "SELECT coalesce(sum(n), 0) FROM derivation_blocks WHERE run_id = :r", p
        ).rows[0][0]
        last = store.sql(
            "SELECT element_id, rows FROM elements WHERE run_id = :r AND stage_id = "
            "(SELECT max(stage_id) FROM elements WHERE run_id = :r) AND rows > 0",
            p,
        ).rows
        rng = random.Random(0)
        times, found = [], []
        for _ in range(LINEAGE_QUERIES):
            element, rows = rng.choice(last)
            t0 = time.perf_counter()
            got = record_lineage(store, run_id, element, rng.randrange(rows))
            times.append(time.perf_counter() - t0)
            found.append(len(got))
    finally:
        store.close()
    out = {
        "derivations": float(derivations),
        "queries": float(len(times)),
        "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
        "rows_found": float(statistics.median(found)),
    }
    say(f"  lineage: {derivations:,} derivations, query median {out['median_ms']:.1f} ms")
    return out


# -- report --------------------------------------------------------------------------------------

TARGETS = {"tasks": 0.02, "records": 0.10}  # issue 4: task-level ≤ 2%, record-level ≤ 10%


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render(report: ProvenanceReport) -> str:
    c = report.config
    m = report.machine
    lines = [
        "# Riera provenance overhead",
        "",
        f"Machine: {m.get('cores')} cores, {m.get('ram', 0) / GB:.0f} GB RAM, "
        f"Python {m.get('python')}. Workers {c.workers}; {c.repeats} interleaved repeat(s) per "
        f"mode; modes {', '.join(c.modes)}."
        + (" **quick (smoke-test sizes; the numbers mean little)**." if c.quick else ""),
        f"Total time {report.seconds:.0f} s. Store after the study: "
        f"{report.store_bytes / MB:.2f} MB (SQLite, WAL).",
        "",
    ]
    rows = []
    for j in report.jobs:
        for mode in c.modes:
            s = j.stats[mode]
            over = "" if mode == "off" else f"{j.overhead(mode) * 100:+.1f}%"
            target = TARGETS.get(mode)
            verdict = ""
            if target is not None:
                verdict = f"≤ {target * 100:.0f}%: " + (
                    "✅" if j.overhead(mode) <= target else "❌"
                )
            rows.append([j.job, f"{j.nbytes / MB:,.0f} MB", mode, f"{s.median:.3f}",
                         s.range_str(), over, verdict])  # fmt: skip
    lines.append(
        _table(
            ["job", "input", "provenance", "median (s)", "min–max (s)", "overhead", "target"], rows
        )
    )
    captured = [
        [j.job, mode, *(f"{n:,}" for n in counts.values())]
        for j in report.jobs
        for mode, counts in j.captured.items()
    ]
    if captured:
        names = next(iter(report.jobs[0].captured.values())).keys() if report.jobs else []
        lines += ["", "Rows captured per run:", "",
                  _table(["job", "provenance", *names], captured)]  # fmt: skip
    for j in report.jobs:
        if j.lineage:
            lin = j.lineage
            verdict = "✅" if lin["median_ms"] <= 150 else "❌"
            lines += [
                "",
                f"Record-lineage queries ({j.job}, provenance=records): "
                f"{lin['derivations']:,.0f} derivations stored for the run; "
                f"{lin['queries']:.0f} queries from random output rows up to the input lines "
                f"(median {lin['rows_found']:.0f} rows found): median {lin['median_ms']:.1f} ms, "
                f"max {lin['max_ms']:.1f} ms (target ≤ 150 ms: {verdict}).",
            ]
    return "\n".join(lines) + "\n"
