"""Producers announce themselves for the dashboard (riera.stream.announce): while they send, under
the home, with their URL; gone when they stop, ignored and cleaned when they were killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from riera.stream.announce import announce, announced


def test_an_announcement_lasts_as_long_as_its_block(tmp_path: Path) -> None:
    with announce("memory://words", home=tmp_path) as path:
        assert path is not None and path.exists()
        got = announced("memory://words", home=tmp_path)
        assert [(r["pid"], r["url"]) for r in got] == [(os.getpid(), "memory://words")]
        assert announced("memory://other", home=tmp_path) == []
    assert announced(home=tmp_path) == [] and not path.exists()


def test_a_killed_producers_announcement_is_ignored_and_removed(tmp_path: Path) -> None:
    code = (
        "import sys, time; from pathlib import Path; from riera.stream.announce import announce\n"
        f"with announce('memory://x', home=Path({str(tmp_path)!r})):\n"
        "    print('ready', flush=True); time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        assert [r["pid"] for r in announced("memory://x", home=tmp_path)] == [proc.pid]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    files = list((tmp_path / "producers").glob("*.json"))
    assert len(files) == 1, "kill -9 left its announcement behind"
    deadline = time.monotonic() + 10
    while announced("memory://x", home=tmp_path):  # the pid may linger a moment as a zombie
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert list((tmp_path / "producers").glob("*.json")) == []


def test_an_unwritable_home_only_means_no_announcement(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with announce("memory://x", home=blocker) as path:
        assert path is None
