"""The ``riera`` command line, run as a real subprocess (``python -m riera``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import riera

pytestmark = pytest.mark.integration


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "RIERA_PROGRESS": "off", "RIERA_WORKERS": "2", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "riera", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=240,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"riera {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def test_version() -> None:
    assert run_cli("--version").stdout.strip() == f"riera {riera.__version__}"


def test_config_layers_env_over_toml_over_default(tmp_path: Path) -> None:
    (tmp_path / "riera.toml").write_text("workers = 3\npartition_bytes = 4096\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIERA_")}
    env["RIERA_PARTITION_BYTES"] = "8192"
    proc = subprocess.run(
        [sys.executable, "-m", "riera", "config", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cfg = json.loads(proc.stdout)
    assert cfg["workers"] == {"value": 3, "source": str(Path("riera.toml"))}
    assert cfg["partition_bytes"] == {"value": 8192, "source": "env"}
    assert cfg["max_task_retries"]["source"] == "default"


def test_config_rejects_bad_value_naming_the_setting(tmp_path: Path) -> None:
    proc = run_cli("config", env={"RIERA_WORKERS": "zero"}, check=False, cwd=tmp_path)
    assert proc.returncode != 0
    assert "workers" in proc.stderr and "RIERA_WORKERS" in proc.stderr


def test_terasort_gen_sort_validate(tmp_path: Path) -> None:
    gen = run_cli(
        "terasort", "gen", str(tmp_path / "in"), "--records", "50000", "--partitions", "3"
    )
    assert "50,000 records" in gen.stdout
    files = sorted((tmp_path / "in").glob("part-*.bin"))
    assert len(files) == 3 and sum(f.stat().st_size for f in files) == 50000 * 100

    unsorted = run_cli("terasort", "validate", str(tmp_path / "in"), check=False)
    assert unsorted.returncode == 1
    assert "FAILURE" in unsorted.stderr

    run_cli("terasort", "sort", str(tmp_path / "in"), str(tmp_path / "out"), "--workers", "2")
    ok = run_cli("terasort", "validate", str(tmp_path / "out"))
    assert "Records: 50000" in ok.stdout and "SUCCESS" in ok.stdout
    checksum_in = [x for x in unsorted.stdout.splitlines() if x.startswith("Checksum")]
    checksum_out = [x for x in ok.stdout.splitlines() if x.startswith("Checksum")]
    assert checksum_in == checksum_out  # same records, reordered


def test_terasort_ascii_records_are_printable(tmp_path: Path) -> None:
    run_cli("terasort", "gen", str(tmp_path / "in"), "--records", "1000", "--ascii")
    data = b"".join(p.read_bytes() for p in sorted((tmp_path / "in").glob("part-*")))
    assert len(data) == 100_000
    for i in range(0, len(data), 100):
        rec = data[i : i + 100]
        assert rec.endswith(b"\r\n") and all(32 <= b < 127 for b in rec[:98])


def test_terasort_sort_missing_input_is_a_clear_error(tmp_path: Path) -> None:
    proc = run_cli("terasort", "sort", str(tmp_path / "nope"), str(tmp_path / "out"), check=False)
    assert proc.returncode == 1
    assert "does not exist" in proc.stderr and "nope" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_wordcount_counts_and_orders(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("The cat, the DOG.\nthe end\n")
    (tmp_path / "b.txt").write_text("cat! cat? dog\n")
    proc = run_cli("wordcount", str(tmp_path), "--workers", "2")
    lines = [tuple(x.split("\t")) for x in proc.stdout.splitlines()]
    assert lines == [("cat", "3"), ("the", "3"), ("dog", "2"), ("end", "1")]
    top = run_cli("wordcount", str(tmp_path / "a.txt"), "--top", "1")
    assert top.stdout.splitlines() == ["the\t3"]


def test_run_executes_an_unguarded_script(tmp_path: Path) -> None:
    # No `if __name__ == "__main__"` guard: workers must not re-run the script.
    script = tmp_path / "pipe.py"
    script.write_text(
        "import sys, riera\n"
        "print('RAN', sys.argv[1:])\n"
        "print('COUNT', riera.range(1000).filter(lambda r: r['id'] % 3 == 0).count())\n"
    )
    proc = run_cli("run", str(script), "--workers", "2", "--", "x")
    assert proc.stdout.count("RAN") == 1
    assert "COUNT 334" in proc.stdout


def test_run_reports_task_errors_without_traceback_noise(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text(
        "import riera\n"
        "def explode(row):\n"
        "    raise ValueError('bad row ' + str(row['id']))\n"
        "riera.range(10, partitions=2).map(explode).collect()\n"
    )
    proc = run_cli("run", str(script), check=False)
    assert proc.returncode == 1
    assert "map(explode)" in proc.stderr and "ValueError: bad row" in proc.stderr


def test_shm_ls_and_sweep() -> None:
    assert "segment(s)" in run_cli("shm", "ls").stderr
    assert run_cli("shm", "sweep").stdout.startswith("removed ")


def test_invalid_flag_value_is_a_clean_error(tmp_path: Path) -> None:
    proc = run_cli("wordcount", str(tmp_path), "--workers", "0", check=False)
    assert proc.returncode == 2
    assert "workers" in proc.stderr and "Traceback" not in proc.stderr
