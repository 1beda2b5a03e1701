"""``kill -9`` schedules drawn by Hypothesis: the driver, one worker process, or all of them,
after random delays, under both triggers and both guarantees, while messages keep arriving; then a
restart that runs until the source is idle. The totals equal the batch engine's every time, and in
exactly-once mode no total the sink ever appended repeats or goes back (no epoch reached it twice).
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from riera.stream.connectors.memory import Broker
from riera.testing import send
from wordcount_data import messages, oracle, totals_and_log

pytestmark = pytest.mark.integration

SRC, DST = "memory://in?partitions=4", "memory://out?mode=upsert"


class Run:
    """One wordcount process (with its worker processes), in its own process group."""

    def __init__(self, env: dict[str, str], ckpt: Path, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "riera", "stream", "wordcount", "--from", SRC, "--to", DST,
               "--checkpoint", str(ckpt), "--interval", "100", "--workers", "2", *args]  # fmt: skip
        self.log = ckpt.parent / f"run-{time.monotonic_ns()}.log"
        with self.log.open("wb") as errors:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=errors,
                                         start_new_session=True)  # fmt: skip

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.NoSuchProcess:
            return []
        out = []
        for child in children:
            try:
                line = " ".join(child.cmdline())
            except psutil.Error:
                continue
            if "multiprocessing" in line and "resource_tracker" not in line:
                out.append(child)
        return out

    def stderr(self) -> str:
        return self.log.read_text()[-3000:]


def _kill_all(run: Run) -> None:
    members = [psutil.Process(run.proc.pid), *run.workers()]
    os.killpg(run.proc.pid, signal.SIGKILL)
    run.proc.wait(30)
    psutil.wait_procs(members, timeout=30)


def _kill_driver(run: Run) -> None:
    workers = run.workers()
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait(30)
    _, alive = psutil.wait_procs(workers, timeout=30)  # they see the pipe close and exit
    assert not alive, f"workers outlived their driver: {alive}"


SCHEDULES = st.lists(
    st.tuples(st.sampled_from(["driver", "worker", "all"]), st.integers(50, 1200)),
    min_size=1,
    max_size=3,
)


@settings(max_examples=6, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@example(
    schedule=[("worker", 300), ("driver", 200)], trigger="continuous", guarantee="exactly-once"
)
@example(
    schedule=[("worker", 150), ("worker", 400)], trigger="micro-batch", guarantee="at-least-once"
)
@given(
    schedule=SCHEDULES,
    trigger=st.sampled_from(["continuous", "micro-batch"]),
    guarantee=st.sampled_from(["exactly-once", "at-least-once"]),
)
def test_kill_schedules_end_with_exact_totals(
    tmp_path_factory: pytest.TempPathFactory,
    schedule: list[tuple[str, int]],
    trigger: str,
    guarantee: str,
) -> None:
    event(f"kills: {'+'.join(t for t, _ in schedule)}, {trigger}, {guarantee}")
    tmp = tmp_path_factory.mktemp("kills")
    before = os.environ.get("RIERA_BROKER_DIR")
    os.environ["RIERA_BROKER_DIR"] = str(tmp / "brokers")
    env = {**os.environ, "RIERA_PROVENANCE": "off"}
    args = ["--trigger", trigger, "--guarantee", guarantee]
    rows = messages(30_000, seed=len(schedule) * 1000 + sum(d for _, d in schedule))
    ckpt = tmp / "ckpt"
    sent = 0
    run: Run | None = None
    try:
        send(SRC, rows[:500], key="chave")
        sent = 500
        for target, delay_ms in schedule:
            if run is None:
                run = Run(env, ckpt, args)
            deadline = time.monotonic() + 60
            while len(run.workers()) < 2:  # both workers up: each target exists
                assert run.proc.poll() is None, run.stderr()
                assert time.monotonic() < deadline, f"workers never started: {run.stderr()}"
                time.sleep(0.02)
            until = time.monotonic() + delay_ms / 1000
            while time.monotonic() < until:
                send(SRC, rows[sent : sent + 40], key="chave")
                sent = min(len(rows), sent + 40)
                time.sleep(0.01)
            if target == "worker":
                victim = run.workers()[0]
                victim.kill()
                victim.wait(30)
            elif target == "driver":
                _kill_driver(run)
                run = None
            else:
                _kill_all(run)
                run = None
        if run is not None:  # the last kill was a worker's: the driver goes on; now kill it
            _kill_all(run)
            run = None
        send(SRC, rows[sent:], key="chave")
        final = Run(env, ckpt, [*args, "--until-idle", "0.5"])
        assert final.proc.wait(120) == 0, final.stderr()
        totals, log = totals_and_log("out")
        assert totals == oracle(rows), f"schedule {schedule}, {trigger}, {guarantee}"
        series: dict[str, list[int]] = collections.defaultdict(list)
        for entry in log:
            series[str(entry["valorA"])].append(int(entry["total"]))  # type: ignore[call-overload]
        for word, seen in series.items():
            if guarantee == "exactly-once":
                assert seen == sorted(set(seen)), f"{word}: totals repeated or went back: {seen}"
            else:
                assert seen == sorted(seen), f"{word}: a total went back: {seen}"
    finally:
        if run is not None and run.proc.poll() is None:
            _kill_all(run)
        Broker.drop("in")
        Broker.drop("out")
        if before is None:
            os.environ.pop("RIERA_BROKER_DIR", None)
        else:
            os.environ["RIERA_BROKER_DIR"] = before
