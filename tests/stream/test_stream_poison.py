"""A record that kills the process on every restart is quarantined after N restarts: it goes to
the dead letters with the reason, every other record is counted exactly once, and the stream goes
on. The process really dies (SIGKILL from inside a user function), as a crash in native code would."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from riera.stream.connectors.memory import Broker

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import riera
    from riera import col

    def check(row):
        if row["w"] == "POISON":
            os.kill(os.getpid(), signal.SIGKILL)  # dies like a segfault would
        return row

    words = riera.read_stream("memory://poison-in", schema={"w": "string"})
    counts = words.map(check).group_by("w").agg(n=col("w").count())
    q = counts.write_stream("memory://poison-out", checkpoint=sys.argv[1], stop_when_idle=0.3,
                            trigger=riera.stream.micro_batch("50ms"))
    q.await_termination(60)
    """
)


def test_a_record_that_kills_the_process_is_quarantined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    brokers = tmp_path / "brokers"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(brokers))
    env = {**os.environ, "RIERA_BROKER_DIR": str(brokers), "RIERA_PROVENANCE": "off"}
    from riera.testing import memory_stream, send

    words = ["a", "b", "a", "c"] * 25
    url = memory_stream("poison-in", [{"w": w} for w in words[:50]])
    send(url, [{"w": "POISON"}])
    send(url, [{"w": w} for w in words[50:]])
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    ckpt = tmp_path / "ckpt"
    codes = []
    for _ in range(6):
        proc = subprocess.run(
            [sys.executable, str(script), str(ckpt)], env=env, capture_output=True, timeout=120
        )
        codes.append(proc.returncode)
        if proc.returncode == 0:
            break
    assert codes[-1] == 0, f"never got past the poison record: {codes}"
    assert codes[:3] == [-9, -9, -9]  # three restarts die on it, then it is found
    broker = Broker("poison-out")
    try:
        import json

        totals = {
            json.loads(k)[0]: json.loads(r)["n"]
            for k, r in broker.db.execute("SELECT k, row FROM latest")
        }
    finally:
        broker.close()
    assert totals == {"a": 50, "b": 25, "c": 25}
    with sqlite3.connect(ckpt / "dead_letters.sqlite") as db:
        rows = db.execute("SELECT value, reason FROM dead_letters").fetchall()
    assert len(rows) == 1
    assert "POISON" in rows[0][0] and "quarantined" in rows[0][1]
