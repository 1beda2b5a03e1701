"""Several worker processes read one query's partitions: the totals are exact, a restart with
another number of workers (2 → 4 → 1) loses and doubles nothing, and a worker killed with
``kill -9`` is replaced from the last commit without stopping the query."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from riera.stream.connectors.memory import Broker

pytestmark = pytest.mark.integration

WORDS = ["Freezer", "Ar Condicionado", "Microondas", "Fogão"]


def _rows(n: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"chave": str(i), "valorA": rng.choice(WORDS), "valorB": "1"} for i in range(n)]


def _expected(rows: list[dict[str, str]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["valorA"]] = out.get(r["valorA"], 0) + 1
    return out


def _totals(name: str) -> dict[str, int]:
    broker = Broker(name)
    try:
        rows = broker.db.execute("SELECT k, row FROM latest").fetchall()
    finally:
        broker.close()
    return {json.loads(k)[0]: json.loads(r)["total"] for k, r in rows}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("RIERA_BROKER_DIR", str(tmp_path / "brokers"))
    return {**os.environ, "RIERA_BROKER_DIR": str(tmp_path / "brokers"), "RIERA_PROVENANCE": "off"}


def _wordcount(
    env: dict[str, str], ckpt: Path, workers: int, *extra: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "riera", "stream", "wordcount", "--from", "memory://in?partitions=4",
           "--to", "memory://out", "--checkpoint", str(ckpt), "--interval", "100",
           "--workers", str(workers), *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _finish(proc: subprocess.Popen[bytes]) -> None:
    _, errors = proc.communicate(timeout=120)
    assert proc.returncode == 0, errors.decode()[-3000:]


def test_rescaling_two_four_one_keeps_exact_totals(env: dict[str, str], tmp_path: Path) -> None:
    from riera.testing import send

    rows = _rows(9000, seed=1)
    ckpt = tmp_path / "ckpt"
    for i, workers in enumerate([2, 4, 1]):
        send("memory://in?partitions=4", rows[i * 3000 : (i + 1) * 3000], key="chave")
        _finish(_wordcount(env, ckpt, workers, "--until-idle", "0.5"))
        assert _totals("out") == _expected(rows[: (i + 1) * 3000]), f"after {workers} workers"


def test_a_worker_killed_mid_stream_is_replaced_and_totals_stay_exact(
    env: dict[str, str], tmp_path: Path
) -> None:
    from riera.testing import send

    rows = _rows(20000, seed=2)
    send("memory://in?partitions=4", rows[:2000], key="chave")
    proc = _wordcount(env, tmp_path / "ckpt", 2)
    deadline = time.monotonic() + 60
    victims: list[psutil.Process] = []
    while not victims:  # the worker processes the driver started
        assert time.monotonic() < deadline and proc.poll() is None
        victims = [
            c
            for c in psutil.Process(proc.pid).children()
            if "multiprocessing" in " ".join(c.cmdline())
        ]
        time.sleep(0.05)
    sent = 2000
    killed = False
    while sent < len(rows):
        send("memory://in?partitions=4", rows[sent : sent + 500], key="chave")
        sent += 500
        if sent >= 8000 and not killed:
            os.kill(victims[0].pid, signal.SIGKILL)
            killed = True
        time.sleep(0.02)
    while _totals("out") != _expected(rows):
        assert time.monotonic() < deadline + 60, (_totals("out"), _expected(rows))
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _finish(proc)
    assert _totals("out") == _expected(rows)
