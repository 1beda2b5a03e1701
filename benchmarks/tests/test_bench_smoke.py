"""Smoke tests of ``riera bench core`` (tiny sizes) and its helpers.

The benchmark runs in a subprocess, as a user would run it. Only the report's shape is checked —
sections, tables, numeric cells — never a timing: benchmarks do not fail tests for slowness.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from markdown_report import RANGE, run_cli, sections, table
from riera_bench import core, measure

SHM_DIR = Path("/dev/shm")
NUMBER = re.compile(r"^-?[\d,]*\.?\d+$")
SIZE = re.compile(r"^\d+(\.\d+)? (B|KiB|MiB|GiB|TiB)$")


def number(cell: str) -> float:
    assert NUMBER.match(cell), f"not a number: {cell!r}"
    return float(cell.replace(",", ""))


def leftover_segments(pid: int) -> list[Path]:
    return sorted(SHM_DIR.glob(f"riera-{pid}-*.arrow")) if SHM_DIR.is_dir() else []


@pytest.mark.slow
def test_bench_core_quick_all_sections(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "report.md"
    code, stdout, stderr, pid = run_cli(
        "bench", "core", "--quick", "--dir", str(data_dir), "--out", str(out), cwd=tmp_path
    )
    assert code == 0, stderr
    assert out.read_text(encoding="utf-8") == stdout
    assert "bench:" in stderr and "bench:" not in stdout  # progress on stderr only
    assert stdout.startswith("# Riera core benchmark\n")
    header = stdout.splitlines()[2]
    for word in ("cores", "RAM", "Python", "pyarrow", "/dev/shm"):
        assert word in header
    secs = sections(stdout)
    assert list(secs) == [
        "Targets",
        "TeraSort",
        "Word count",
        "Shared-memory exchange",
        "Per-task overhead",
        "Cold start",
    ]

    targets = table(secs["Targets"])
    assert len(targets) == 6
    for row in targets:
        assert row["status"] in ("✅", "❌"), row
        assert re.match(r"^\d+\.\d+ (s|ms|GB/s)$", row["measured"]), row

    for name in ("TeraSort", "Word count"):
        rows = table(secs[name])
        workers = {row["workers"] for row in rows}
        assert workers == {"1", "2"}
        for row in rows:
            assert number(row["median (s)"]) > 0
            assert RANGE.match(row["min–max (s)"])
            assert number(row["MB/s"]) > 0
            for col in ("peak RSS (sum)", "peak /dev/shm", "peak footprint"):
                assert SIZE.match(row[col]), row
            assert number(row["peak RSS (sum)"].split()[0]) > 0
    assert {r["phase"] for r in table(secs["TeraSort"])} == {"gen", "sort", "validate"}
    assert "validation(s) passed" in secs["TeraSort"]
    assert "matched a plain-Python" in secs["Word count"]

    shm = table(secs["Shared-memory exchange"])
    assert [r["MB"] for r in shm] == ["10", "20"]
    for row in shm:
        for col in ("put (s)", "put GB/s", "open (ms)", "first scan (s)", "open + scan (s)"):
            assert number(row[col]) >= 0, row

    overhead = table(secs["Per-task overhead"])
    assert [r["tasks"] for r in overhead] == ["2", "402"]
    assert re.search(r"Per-task overhead: -?\d+\.\d+ ms", secs["Per-task overhead"])
    startup = table(secs["Cold start"])
    assert len(startup) == 2 and all(number(r["median (s)"]) > 0 for r in startup)

    # Everything the benchmark made is gone: data directory, shared-memory segments.
    assert not any(data_dir.iterdir())
    assert leftover_segments(pid) == []


@pytest.mark.slow
def test_bench_core_only_some_sections(tmp_path: Path) -> None:
    code, stdout, stderr, pid = run_cli(
        "bench", "core", "--quick", "--only", "shm,overhead", cwd=tmp_path
    )
    assert code == 0, stderr
    assert list(sections(stdout)) == ["Targets", "Shared-memory exchange", "Per-task overhead"]
    status = {r["figure"]: r["status"] for r in table(sections(stdout)["Targets"])}
    assert status["word count over 1 GB"] == "–"  # not measured, not a pass
    assert status["per-task overhead"] in ("✅", "❌")
    assert leftover_segments(pid) == []


def test_bench_core_rejects_unknown_section(tmp_path: Path) -> None:
    code, stdout, stderr, _ = run_cli(
        "bench", "core", "--only", "shm,sorting", cwd=tmp_path, timeout=60
    )
    assert code != 0
    assert "sorting" in stderr and stdout == ""


# -- helpers (fast) ---------------------------------------------------------------------------------


def test_stats() -> None:
    s = measure.Stats([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.n) == (2.0, 1.0, 3.0, 3)
    assert s.rate(4_000_000) == pytest.approx(2.0)  # MB per second at the median
    assert s.range_str(digits=1) == "1.0–3.0"


def test_peak_memory_sees_an_allocation() -> None:
    with measure.PeakMemory(interval=0.005) as mem:
        block = b"x" * 64_000_000
        time.sleep(0.05)
    del block
    assert mem.peak.samples >= 2
    assert mem.peak.rss_sum >= 64_000_000
    assert mem.peak.footprint >= 64_000_000


# -- a wrong result is never reported as a timing -----------------------------------------------------


@pytest.mark.slow
def test_a_wrong_sort_aborts_the_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from riera.apps.terasort import job

    def not_sorting(in_dir: Path, out_dir: Path, **_: object) -> dict[str, object]:
        shutil.copytree(in_dir, out_dir, dirs_exist_ok=True)  # the input, unsorted
        return {"rows": sum(p.stat().st_size for p in Path(in_dir).glob("*.bin")) // 100}

    monkeypatch.setattr(job, "sort", not_sorting)
    config = core.CoreConfig(
        records=20_000, repeats=1, workers=(1,), sections=("terasort",), base_dir=tmp_path
    )
    with pytest.raises(core.BenchmarkError, match="TeraSort validation FAILED"):
        core.run(config)
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_a_wrong_word_count_aborts_the_benchmark(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from riera.apps.wordcount import job

    real = job.top_words

    def miscounting(paths: object, k: int | None = None) -> list[tuple[str, int]]:
        rows = real(paths, k)  # type: ignore[arg-type]
        return [(w, c + (1 if i == 3 else 0)) for i, (w, c) in enumerate(rows)]

    monkeypatch.setattr(job, "top_words", miscounting)
    config = core.CoreConfig(
        text_mb=1, sample_mb=1, repeats=1, workers=(1,), sections=("wordcount",), base_dir=tmp_path
    )
    with pytest.raises(core.BenchmarkError, match="differs from a plain-Python count"):
        core.run(config)
