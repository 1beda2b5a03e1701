"""Exactly-once after ``kill -9``: the word count of document 000, killed at every step of the
checkpoint protocol (and at random moments), restarted, ends with exact totals — and, in
exactly-once mode, each committed epoch reached the sink once (no total ever repeats or goes back).

The batch engine is the oracle: the final totals equal ``group_by().agg()`` over the same input.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wordcount_data import messages, oracle, totals_and_log

pytestmark = pytest.mark.integration


def _send(url: str, rows: list[dict[str, str]]) -> None:
    from riera.testing import send

    send(url, rows, key="chave")


def _start(
    env: dict[str, str], src: str, dst: str, ckpt: Path, *extra: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "riera", "stream", "wordcount", "--from", src, "--to", dst,
           "--checkpoint", str(ckpt), "--interval", "100", *extra]  # fmt: skip
    log = ckpt.parent / f"wordcount-{time.monotonic_ns()}.log"
    with log.open("wb") as errors:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    return str(proc.log.read_text()[-3000:])  # type: ignore[attr-defined]


def _wait_dead(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the query did not stop: {_stderr(proc)}") from None


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    brokers = tmp_path / "brokers"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(brokers))
    e = dict(os.environ)
    e["RIERA_BROKER_DIR"] = str(brokers)
    e["RIERA_PROVENANCE"] = "off"
    return e


STEPS = ["process", "log_positions", "state_durable", "sink_commit:0", "sink_commit:1", "cleanup"]


@pytest.mark.parametrize("trigger", ["continuous", "micro-batch"])
@pytest.mark.parametrize("step", STEPS)
def test_crash_at_each_checkpoint_step_then_exact_totals(
    env: dict[str, str], tmp_path: Path, step: str, trigger: str
) -> None:
    src, dst = "memory://in", "memory://out?mode=upsert"
    rows = messages(3000, seed=len(step))
    _send(src, rows[:1000])
    ckpt = tmp_path / "ckpt"
    crash_env = {**env, "RIERA_STREAM_CRASH": f"{step}@1"}
    proc = _start(crash_env, src, dst, ckpt, "--trigger", trigger)
    deadline = time.monotonic() + 60
    while not (ckpt / "status.json").exists() and proc.poll() is None:  # epoch 0 committed
        assert time.monotonic() < deadline, _stderr(proc)
        time.sleep(0.01)
    sent = 1000
    while proc.poll() is None and time.monotonic() < deadline and sent < len(rows) - 500:
        _send(src, rows[sent : sent + 20])
        sent += 20
        time.sleep(0.02)
    code = _wait_dead(proc)
    assert code == -signal.SIGKILL, f"expected the fault point to kill it: {_stderr(proc)}"
    _send(src, rows[sent:])
    again = _start(env, src, dst, ckpt, "--trigger", trigger, "--until-idle", "0.5")
    assert _wait_dead(again) == 0, _stderr(again)
    totals, log = totals_and_log("out")
    assert totals == oracle(rows)
    # exactly-once: every total the sink ever appended is new — no epoch was written twice
    seen = collections.defaultdict(list)
    for entry in log:
        seen[entry["valorA"]].append(entry["total"])
    for word, series in seen.items():
        assert series == sorted(set(series)), f"{word}: totals repeated or went back: {series}"


def test_random_kill_schedule_at_least_once_converges(env: dict[str, str], tmp_path: Path) -> None:
    """SIGKILL at random moments, five times, at-least-once: upserts converge to the exact totals
    and a consumer never sees a total go backwards."""
    rng = random.Random(7)
    src, dst = "memory://in", "memory://out"
    rows = messages(6000, seed=3)
    ckpt = tmp_path / "ckpt"
    sent = 0
    for _ in range(5):
        proc = _start(env, src, dst, ckpt, "--guarantee", "at-least-once")
        until = time.monotonic() + rng.uniform(0.3, 1.2)
        while time.monotonic() < until:
            _send(src, rows[sent : sent + 50])
            sent = min(len(rows), sent + 50)
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    _send(src, rows[sent:])
    final = _start(env, src, dst, ckpt, "--guarantee", "at-least-once", "--until-idle", "0.5")
    assert _wait_dead(final) == 0, _stderr(final)
    totals, log = totals_and_log("out")
    assert totals == oracle(rows)
    last: dict[str, int] = {}
    for entry in log:
        word, total = str(entry["valorA"]), int(entry["total"])  # type: ignore[call-overload]
        assert total >= last.get(word, 0), f"{word} went back from {last[word]} to {total}"
        last[word] = total


def test_a_sink_failing_after_another_committed_the_epoch_loses_and_doubles_nothing(
    env: dict[str, str], tmp_path: Path
) -> None:
    """A partial commit across sinks by an exception, not a kill: the output sink holds epoch e,
    the dead-letter sink raises on it, the query fails and marks e aborted. The restart replays
    e with its logged boundaries (the output skips it, the other sink gets it), so no total is
    appended twice."""
    import riera
    from riera import col
    from riera.errors import StreamError
    from riera.stream import continuous

    src, dst = "memory://in", "memory://out?mode=append"
    rows = messages(600, seed=11)
    _send(src, rows[:300])
    counts = (
        riera.read_stream(src, schema={"chave": "string", "valorA": "string", "valorB": "string"})
        .group_by("valorA")
        .agg(total=col("valorB").cast("int64").sum())
    )

    class Flaky:
        """A dead-letter sink that refuses every write from epoch 1 on (until ``fail`` is off)."""

        url, mode = "python://flaky", "append"

        def __init__(self, fail: bool) -> None:
            self.fail, self.last = fail, (-1, -1)

        def open(self, job, key):  # type: ignore[no-untyped-def]
            pass

        def committed(self):  # type: ignore[no-untyped-def]
            return self.last

        def write(self, rows, epoch, seq, fence):  # type: ignore[no-untyped-def]
            if self.fail and epoch >= 1:
                raise RuntimeError("the dead-letter store is down")
            self.last = max(self.last, (epoch, seq))
            return True

        def close(self) -> None:
            pass

    trig = continuous(checkpoint="50ms")
    q = counts.write_stream(dst, checkpoint=tmp_path / "ck", dead_letter=Flaky(True), trigger=trig)
    assert q.wait_for_epoch(0, 30)
    _send(src, rows[300:450])
    with pytest.raises(StreamError, match="dead-letter store is down"):
        q.await_termination(30)
    _send(src, rows[450:])
    again = counts.write_stream(dst, checkpoint=tmp_path / "ck", dead_letter=Flaky(False),
                                trigger=trig, stop_when_idle="0.3s")  # fmt: skip
    assert again.await_termination(60)
    _, log = totals_and_log("out")
    series: dict[str, list[int]] = collections.defaultdict(list)
    for entry in log:
        series[str(entry["valorA"])].append(int(entry["total"]))  # type: ignore[call-overload]
    assert {w: s[-1] for w, s in series.items()} == oracle(rows)
    for word, seen in series.items():
        assert seen == sorted(set(seen)), f"{word}: a total was appended twice: {seen}"
