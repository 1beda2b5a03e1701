"""Smoke test of ``riera bench provenance`` (tiny sizes), run as a user runs it.

Only the report's shape and its claims are checked — both jobs measured in every mode, numbers
where numbers belong, rows captured with provenance on — never a timing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from markdown_report import RANGE, run_cli, table
from riera_bench import provenance as study

NUMBER = re.compile(r"^\d+\.\d+$")
OVERHEAD = re.compile(r"^[+-]\d+\.\d%$")


@pytest.mark.slow
def test_bench_provenance_quick(tmp_path: Path) -> None:
    out = tmp_path / "report.md"
    code, stdout, stderr, _ = run_cli(
        "bench", "provenance", "--quick", "--dir", str(tmp_path / "data"), "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, stderr
    assert out.read_text(encoding="utf-8") == stdout
    assert stdout.startswith("# Riera provenance overhead\n") and "quick" in stdout
    times, rest = stdout.split("Rows captured per run:")
    captured, lineage = rest.split("Record-lineage queries")
    rows = table(times)
    assert [(r["job"], r["provenance"]) for r in rows] == [
        (job, mode) for job in study.JOBS for mode in study.MODES
    ]
    for r in rows:
        assert NUMBER.match(r["median (s)"]) and RANGE.match(r["min–max (s)"])
        if r["provenance"] == "off":
            assert r["overhead"] == "" and r["target"] == ""
        else:
            target = "≤ 2%" if r["provenance"] == "tasks" else "≤ 10%"
            assert OVERHEAD.match(r["overhead"]) and r["target"].startswith(target)
    got = table(captured)
    assert {r["job"] for r in got} == set(study.JOBS)
    for r in got:
        assert int(r["tasks"].replace(",", "")) > 0 and int(r["elements"].replace(",", "")) > 0
        derivations = int(r["derivations"].replace(",", ""))
        # Row-traced jobs store derivations in records mode only; tasks mode never stores any.
        if r["provenance"] == "tasks":
            assert derivations == 0
        elif r["job"] in ("wordcount-rows", "terasort"):
            assert derivations > 0, r
    match = re.search(r"([\d,]+) derivations stored.*median ([\d.]+) ms", lineage)
    assert match and int(match.group(1).replace(",", "")) > 0
    assert list((tmp_path / "data").iterdir()) == []  # the study's directory is gone


def test_unknown_job_and_mode_are_refused(tmp_path: Path) -> None:
    code, stdout, stderr, _ = run_cli("bench", "provenance", "--jobs", "sort", cwd=tmp_path)
    assert code == 1 and stdout == "" and "sort" in stderr
    code, _, stderr, _ = run_cli("bench", "provenance", "--quick", "--modes", "tasks",
                                 cwd=tmp_path)  # fmt: skip
    assert code == 1 and "off" in stderr
