"""``riera bench core``: the core benchmark of the engine, reported as markdown.

Sections (each can be selected on its own):

- ``terasort``: generate, sort and validate N gensort records at each worker count; every sort output
  is validated (order, record count, checksum equal to the input's) and a failed validation aborts the
  benchmark — a wrong sort is never reported as a timing.
- ``wordcount``: ``riera.apps.wordcount.job.top_words`` over ~1 GB of synthetic English-like text whose
  exact per-word counts are known from the generator; every run's result is compared with them, and a
  5 MB sample is also cross-checked against an independent ``re.split`` count.
- ``shm``: ``ShmExchange.put`` / ``get`` / first full scan of 100–500 MB tables.
- ``overhead``: per-task overhead, from ``range(n, partitions=n).count()`` at n = 2 and 402.
- ``startup``: ``import riera`` and a trivial run in a fresh interpreter.

:func:`run` measures and returns a :class:`CoreReport`; :func:`riera_bench.core_report.render`
turns it into markdown.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from riera.apps.wordcount.corpus import TextGenerator, expected_order, reference_counts
from riera_bench.measure import (
    GB,
    MB,
    MemoryPeak,
    Options,
    PeakMemory,
    Stats,
    fmt_bytes,
    machine_info,
    timed,
)

SECTIONS = ("terasort", "wordcount", "shm", "overhead", "startup")

# Document 002: zero-copy read of a 100…500 MB table from shared memory, in seconds.
DOC002_READ_S = {100: 0.013, 200: 0.025, 300: 0.035, 400: 0.046, 500: 0.067}

Progress = Callable[[str], None]


class BenchmarkError(RuntimeError):
    """A benchmark produced a wrong result (or could not run); nothing is reported as a timing."""


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CoreConfig(Options):
    records: int = 10_000_000
    text_mb: int = 1024
    repeats: int = 3
    workers: tuple[int, ...] = (1, 2)
    base_dir: Path | None = None
    sections: tuple[str, ...] = SECTIONS
    shm_sizes_mb: tuple[int, ...] = (100, 200, 300, 400, 500)
    micro_repeats: int = 5  # shm put/get, per-task overhead and cold start
    overhead_tasks: tuple[int, int] = (2, 402)
    overhead_workers: int = 2
    sample_mb: int = 5
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> CoreConfig:
        """Tiny sizes for a smoke run."""
        return cls(
            records=200_000,
            text_mb=20,
            repeats=1,
            shm_sizes_mb=(10, 20),
            micro_repeats=2,
            sample_mb=2,
            quick=True,
        )


# -- results -----------------------------------------------------------------------------------------


@dataclass
class Phase:
    """Repeated runs of one thing at one worker count."""

    name: str
    workers: int
    stats: Stats
    nbytes: int
    memory: MemoryPeak = field(default_factory=MemoryPeak)


@dataclass
class TeraSortResult:
    records: int
    phases: list[Phase] = field(default_factory=list)
    checksum: str = ""
    validations: int = 0

    @property
    def nbytes(self) -> int:
        return self.records * 100


@dataclass
class WordCountResult:
    text_bytes: int = 0
    lines: int = 0
    words: int = 0
    distinct: int = 0
    pool_lines: int = 0
    resampled: bool = False
    gen_seconds: float = 0.0
    sample_bytes: int = 0
    sample_words: int = 0
    sample_checks: int = 0
    phases: list[Phase] = field(default_factory=list)


@dataclass
class ShmRow:
    size_mb: int
    nbytes: int
    put: Stats
    get: Stats
    scan: Stats


@dataclass
class ShmResult:
    memcopy_threads: int
    rows: list[ShmRow] = field(default_factory=list)


@dataclass
class OverheadResult:
    workers: int
    tasks: tuple[int, int]
    small: Stats
    large: Stats

    @property
    def per_task_ms(self) -> float:
        return (self.large.median - self.small.median) / (self.tasks[1] - self.tasks[0]) * 1e3


@dataclass
class StartupResult:
    trivial: Stats
    import_only: Stats


@dataclass
class CoreReport:
    config: CoreConfig
    machine: dict[str, Any]
    terasort: TeraSortResult | None = None
    wordcount: WordCountResult | None = None
    shm: ShmResult | None = None
    overhead: OverheadResult | None = None
    startup: StartupResult | None = None
    seconds: float = 0.0


# -- running -----------------------------------------------------------------------------------------


def run(config: CoreConfig, progress: Progress | None = None) -> CoreReport:
    """Run the selected sections; raises :class:`BenchmarkError` on any wrong result."""
    import riera

    say = progress or (lambda _msg: None)
    unknown = [s for s in config.sections if s not in SECTIONS]
    if unknown:
        raise BenchmarkError(f"unknown section(s) {unknown}; choose from {list(SECTIONS)}")
    from riera.config import load_settings

    report = CoreReport(config, machine_info(load_settings().shm_dir))
    base = config.base_dir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="riera-bench-", dir=base))
    say(f"working directory {root}")
    t0 = time.perf_counter()
    try:
        if "terasort" in config.sections:
            report.terasort = bench_terasort(config, root, say)
        if "wordcount" in config.sections:
            report.wordcount = bench_wordcount(config, root, say)
        if "shm" in config.sections:
            report.shm = bench_shm(config, say)
        if "overhead" in config.sections:
            report.overhead = bench_overhead(config, say)
        if "startup" in config.sections:
            report.startup = bench_startup(config, root, say)
    finally:
        riera.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def _start(workers: int) -> None:
    """A fresh runtime with ``workers`` warm workers (started by a tiny run, not timed). Small
    runs would otherwise run in the driver (``inline_bytes``): what is measured here is the
    worker pool."""
    import riera

    riera.init(workers=workers, progress="off", inline_bytes=0)
    if riera.range(workers * 4, partitions=workers).count() != workers * 4:
        raise BenchmarkError("the warm-up run riera.range(...).count() returned a wrong count")


def _sync() -> None:
    """Flush dirty pages so a previous run's write-back does not land in the next timing."""
    if hasattr(os, "sync"):
        os.sync()


def _measure(fn: Callable[[], Any]) -> tuple[Any, float, MemoryPeak]:
    """Time ``fn`` while sampling the memory of this process tree and its shm segments."""
    from riera.runtime import get_runtime

    with PeakMemory(shm_dir=get_runtime().settings.shm_dir) as mem:
        result, dt = timed(fn)
    return result, dt, mem.peak


# -- TeraSort ----------------------------------------------------------------------------------------


def bench_terasort(config: CoreConfig, root: Path, say: Progress) -> TeraSortResult:
    from riera.apps.terasort import job

    n = config.records
    res = TeraSortResult(n)
    expected_checksum: int | None = None
    for w in config.workers:
        say(f"terasort: {n:,} records ({n * 100 / GB:.2f} GB), {w} worker(s)")
        _start(w)
        warm = root / f"terasort-w{w}-warmup"  # untimed: workers load the app's code paths
        job.generate(warm / "in", 10_000)
        job.sort(warm / "in", warm / "out")
        if not job.validate(warm / "out").report.ok:
            raise BenchmarkError(f"TeraSort validation FAILED on the warm-up data ({w} worker(s))")
        shutil.rmtree(warm)
        gen, srt, val = (Phase(p, w, Stats(), n * 100) for p in ("gen", "sort", "validate"))
        input_dir: Path | None = None
        for i in range(config.repeats):
            d = root / f"terasort-w{w}-gen{i}"
            _sync()
            manifest, dt, mem = _measure(partial(job.generate, d, n))
            if manifest["rows"] != n:
                raise BenchmarkError(f"terasort gen wrote {manifest['rows']:,} records, not {n:,}")
            gen.stats.add(dt)
            gen.memory = gen.memory.merge(mem)
            say(f"  gen {i + 1}/{config.repeats}: {dt:.3f} s, peak RSS {fmt_bytes(mem.rss_sum)}")
            if input_dir is not None:
                shutil.rmtree(input_dir)
            input_dir = d
        assert input_dir is not None
        inp = job.validate(input_dir).report  # untimed: the input's record count and checksum
        if inp.records != n:
            raise BenchmarkError(
                f"terasort input under {input_dir} holds {inp.records:,} records, not {n:,}"
            )
        if expected_checksum is None:
            expected_checksum = inp.checksum
        elif inp.checksum != expected_checksum:
            raise BenchmarkError(
                f"terasort gen with {w} worker(s) produced a different data set "
                f"(checksum {inp.checksum:032x}, expected {expected_checksum:032x})"
            )
        for i in range(config.repeats):
            out = root / f"terasort-w{w}-sorted{i}"
            _sync()
            manifest, dt, mem = _measure(partial(job.sort, input_dir, out))
            if manifest["rows"] != n:
                raise BenchmarkError(f"terasort sort wrote {manifest['rows']:,} records, not {n:,}")
            srt.stats.add(dt)
            srt.memory = srt.memory.merge(mem)
            _sync()
            v, vdt, vmem = _measure(partial(job.validate, out))
            r = v.report
            problems = []
            if not r.ok:
                problems.append(f"{r.unordered} unordered record pair(s); first: {r.first_error}")
            if r.records != n:
                problems.append(f"{r.records:,} records instead of {n:,}")
            if r.checksum != expected_checksum:
                problems.append(
                    f"checksum {r.checksum:032x} differs from the input's "
                    f"{expected_checksum:032x} (records lost, duplicated or changed)"
                )
            if problems:
                raise BenchmarkError(
                    f"TeraSort validation FAILED ({w} worker(s), run {i + 1}, "
                    f"output {out}): " + "; ".join(problems)
                )
            res.validations += 1
            val.stats.add(vdt)
            val.memory = val.memory.merge(vmem)
            say(
                f"  sort {i + 1}/{config.repeats}: {dt:.3f} s (validated in {vdt:.3f} s: "
                f"{r.records:,} records in order), peak RSS {fmt_bytes(mem.rss_sum)}"
            )
            shutil.rmtree(out)
        shutil.rmtree(input_dir)
        res.phases += [gen, srt, val]
    res.checksum = f"{expected_checksum:032x}" if expected_checksum is not None else ""
    return res


# -- word count: the benchmark -----------------------------------------------------------------------


def _diff(got: list[tuple[str, int]], want: list[tuple[str, int]]) -> str:
    g, w = dict(got), dict(want)
    if len(g) != len(got):
        return f"the result lists {len(got) - len(g)} word(s) more than once"
    if g == w:
        first = next(i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        return f"same counts, wrong order from position {first}: {got[first]} vs {want[first]}"
    missing = [k for k in w if k not in g][:3]
    extra = [k for k in g if k not in w][:3]
    wrong = [(k, g[k], w[k]) for k in w if k in g and g[k] != w[k]][:3]
    return (
        f"{len(g)} words (expected {len(w)}), {sum(g.values()):,} tokens (expected "
        f"{sum(w.values()):,}); missing e.g. {missing}, unexpected e.g. {extra}, "
        f"wrong counts (word, got, expected) e.g. {wrong}"
    )


def bench_wordcount(config: CoreConfig, root: Path, say: Progress) -> WordCountResult:
    from riera.apps.wordcount.job import top_words

    res = WordCountResult()
    text_dir = root / "wordcount"
    text_dir.mkdir()
    path = text_dir / "text.txt"
    target = config.text_mb * MB
    say(f"wordcount: generating {target / MB:,.0f} MB of text")
    stats, dt = timed(lambda: TextGenerator().write(path, target))
    res.text_bytes, res.lines, res.pool_lines = stats.nbytes, stats.lines, stats.pool_lines
    res.resampled = stats.resampled
    res.words, res.distinct, res.gen_seconds = sum(stats.counts.values()), len(stats.counts), dt
    say(
        f"  {stats.nbytes / MB:,.1f} MB, {stats.lines:,} lines, {res.words:,} words "
        f"({res.distinct:,} distinct) in {dt:.1f} s ({stats.nbytes / MB / dt:,.0f} MB/s)"
    )
    expected = expected_order(stats.counts)
    del stats

    # An independent check on a sample: the same words counted by plain Python.
    sample_path = root / "wordcount-sample" / "sample.txt"
    sample_path.parent.mkdir()
    with open(path, "rb") as fh:
        head = fh.read(config.sample_mb * MB)
    head = head[: head.rfind(b"\n") + 1]
    sample_path.write_bytes(head)
    sample_expected = expected_order(reference_counts(head.decode("utf-8")))
    res.sample_bytes, res.sample_words = len(head), sum(c for _, c in sample_expected)
    del head
    _sync()

    for w in config.workers:
        say(f"wordcount: {res.text_bytes / MB:,.0f} MB, {w} worker(s)")
        _start(w)
        got = top_words(str(sample_path))
        if got != sample_expected:
            raise BenchmarkError(
                f"word count of the {res.sample_bytes / MB:.1f} MB sample with "
                f"{w} worker(s) differs from a plain-Python count: " + _diff(got, sample_expected)
            )
        res.sample_checks += 1
        phase = Phase("top_words", w, Stats(), res.text_bytes)
        for i in range(config.repeats):
            rows, t, mem = _measure(partial(top_words, str(path)))
            if rows != expected:
                raise BenchmarkError(
                    f"word count FAILED ({w} worker(s), run {i + 1}): " + _diff(rows, expected)
                )
            del rows
            phase.stats.add(t)
            phase.memory = phase.memory.merge(mem)
            say(
                f"  run {i + 1}/{config.repeats}: {t:.3f} s (counts verified), peak RSS "
                f"{fmt_bytes(mem.rss_sum)}"
            )
        res.phases.append(phase)
    shutil.rmtree(text_dir)
    return res


# -- shared-memory exchange --------------------------------------------------------------------------


def _scan(table: Any) -> int:
    """Read every byte of a table's buffers (a uint64 sum mod 2**64); forces the pages in."""
    total = 0
    for column in table.columns:
        for chunk in column.chunks:
            for buf in chunk.buffers():
                if buf is None:
                    continue
                raw = np.frombuffer(buf, dtype=np.uint8)
                whole = raw.size // 8 * 8
                total += int(raw[:whole].view(np.uint64).sum(dtype=np.uint64))
                total += int(raw[whole:].sum(dtype=np.uint64))
    return total % 2**64


def bench_shm(config: CoreConfig, say: Progress) -> ShmResult:
    import pyarrow as pa

    from riera.apps.terasort import gensort
    from riera.config import load_settings
    from riera.exchange.base import SegmentKey
    from riera.exchange.shm import ShmExchange

    settings = load_settings()
    ex = ShmExchange(settings.shm_dir, settings.memcopy_threads)
    res = ShmResult(settings.memcopy_threads)
    owner, run_id = os.getpid(), f"bench{secrets.token_hex(3)}"
    max_rows = max(config.shm_sizes_mb) * MB // 100
    say(f"shm: building a {max(config.shm_sizes_mb)} MB table (10-byte keys, 90-byte payloads)")
    recs = gensort.make_records(0, max_rows)
    keys = np.ascontiguousarray(recs[:, :10])
    payload = np.ascontiguousarray(recs[:, 10:])
    del recs
    try:
        for size in config.shm_sizes_mb:
            n = size * MB // 100
            table = pa.table(
                {
                    "key": pa.Array.from_buffers(pa.binary(10), n, [None, pa.py_buffer(keys[:n])]),
                    "payload": pa.Array.from_buffers(
                        pa.binary(90), n, [None, pa.py_buffer(payload[:n])]
                    ),
                }
            )
            want = _scan(table)
            row = ShmRow(size, table.nbytes, Stats(), Stats(), Stats())
            for i in range(config.micro_repeats):
                key = SegmentKey(owner, run_id, f"put{size}", i)
                ref, dt = timed(partial(ex.put, table, key))
                row.put.add(dt)
                ex.release([ref])
            ref = ex.put(table, SegmentKey(owner, run_id, f"get{size}", 0))
            try:
                for _ in range(config.micro_repeats):
                    got, dt = timed(partial(ex.get, ref))
                    row.get.add(dt)
                    total, st = timed(partial(_scan, got))
                    row.scan.add(st)
                    if got.num_rows != n or total != want:
                        raise BenchmarkError(
                            f"shm get of the {size} MB table returned different "
                            f"data ({got.num_rows:,} rows, sum {total:#x}; "
                            f"expected {n:,} rows, sum {want:#x})"
                        )
                    del got
            finally:
                ex.release([ref])
            res.rows.append(row)
            say(
                f"  {size} MB: put {row.put.median:.3f} s ({table.nbytes / GB / row.put.median:.2f}"
                f" GB/s), get {row.get.median * 1e3:.3f} ms, first scan {row.scan.median:.3f} s"
            )
            del table
    finally:
        ex.release_run(SegmentKey(owner, run_id, "", 0))
    return res


# -- per-task overhead -------------------------------------------------------------------------------


def bench_overhead(config: CoreConfig, say: Progress) -> OverheadResult:
    import riera

    small, large = config.overhead_tasks
    w = config.overhead_workers
    say(f"overhead: range(n, partitions=n).count() for n = {small} and {large}, {w} workers")
    _start(w)

    def job(n: int) -> Callable[[], int]:
        return lambda: riera.range(n, partitions=n).count()

    res = OverheadResult(w, (small, large), Stats(), Stats())
    for n in (small, large):  # warm-up
        if job(n)() != n:
            raise BenchmarkError(f"riera.range({n}, partitions={n}).count() did not return {n}")
    for _ in range(config.micro_repeats):  # interleaved, so drift hits both alike
        for n, stats in ((small, res.small), (large, res.large)):
            count, dt = timed(job(n))
            if count != n:
                raise BenchmarkError(f"riera.range({n}, partitions={n}).count() returned {count}")
            stats.add(dt)
    say(
        f"  {small} tasks {res.small.median * 1e3:.1f} ms, {large} tasks "
        f"{res.large.median * 1e3:.1f} ms: {res.per_task_ms:.3f} ms per task"
    )
    return res


# -- cold start --------------------------------------------------------------------------------------

TRIVIAL_RUN = "import riera; assert riera.range(10).count() == 10"
IMPORT_ONLY = "import riera"


def startup_env() -> dict[str, str]:
    """The environment of the cold-start runs: this one, but with Python's bytecode caches
    allowed, as after ``pip install`` (a machine that sets ``PYTHONDONTWRITEBYTECODE`` would
    otherwise make every run compile Riera's modules again)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def bench_startup(config: CoreConfig, root: Path, say: Progress) -> StartupResult:
    say("startup: fresh interpreters")
    res = StartupResult(Stats(), Stats())
    env = startup_env()
    # One untimed run writes the bytecode caches the timed ones read.
    subprocess.run([sys.executable, "-c", TRIVIAL_RUN], cwd=root, env=env, capture_output=True)
    for _ in range(config.micro_repeats):
        for code, stats in ((TRIVIAL_RUN, res.trivial), (IMPORT_ONLY, res.import_only)):
            command = [sys.executable, "-c", code]
            proc, dt = timed(
                partial(subprocess.run, command, cwd=root, env=env, capture_output=True, text=True)
            )
            if proc.returncode != 0:
                raise BenchmarkError(
                    f"`python -c {code!r}` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}"
                )
            stats.add(dt)
    say(f"  import + trivial run {res.trivial.median:.3f} s, import {res.import_only.median:.3f} s")
    return res
