"""Helpers for the benchmark smoke tests: run the ``riera`` CLI and read its markdown reports."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-c", "from riera.cli import main; main()"]
RANGE = re.compile(r"^\d+\.\d+–\d+\.\d+$")


def run_cli(*args: str, cwd: Path, timeout: float = 240) -> tuple[int, str, str, int]:
    """Run ``riera ARGS``; returns exit code, stdout, stderr and the pid."""
    proc = subprocess.Popen(
        [*CLI, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"riera {' '.join(args)} timed out; stderr:\n{err}")
    return proc.returncode, out, err, proc.pid


def sections(text: str, level: str = "##") -> dict[str, str]:
    """``## Title`` (or another ``level``) → the text up to the next heading of that level."""
    parts = re.split(rf"^{level} (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every markdown table in ``text``, each as one dict per row (header separator checked)."""
    found: list[list[dict[str, str]]] = []
    block: list[str] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            assert len(block) >= 2, f"a table without a header separator:\n{block}"
            cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in block]
            assert set(block[1].replace("|", "").replace(":", "").replace("-", "")) <= {""}
            found.append([dict(zip(cells[0], row, strict=True)) for row in cells[2:]])
            block = []
    return found


def table(text: str) -> list[dict[str, str]]:
    """The first markdown table in ``text``; it must have rows."""
    found = tables(text)
    assert found and found[0], f"no table with rows in:\n{text}"
    return found[0]
