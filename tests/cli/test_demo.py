"""``riera demo`` and ``riera stream wordcount --dashboard`` as real processes: the dashboard
beside them answers while they run, the runs land in the store it reads, and when they end
nothing is left behind — no process, no port, nothing of theirs in ``/dev/shm``.

Every process a test starts carries a marker in its environment, inherited by all it starts in
turn (workers, the forkserver, the dashboard); after the command ends, no process on the machine
may carry it. Each command gets a Riera home (and ``HOME``) of its own, so the user's store is
never touched.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from riera.apps.producers import encode, message
from riera.stream.connectors.base import open_producer
from services import free_port
from services import redis_client as connect_redis

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SHM = Path("/dev/shm")
MARK = "RIERA_TEST_PROCESS_MARK"
REDIS = os.environ.get("RIERA_TEST_REDIS", "127.0.0.1:6379")
# the smallest demo: every step runs, in a few seconds
SMALL = ("--records", "1000", "--text-mb", "0.2", "--stream-seconds", "2")


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    """A home of the test's own, no display, the marker; no broker directory of the caller's."""
    (tmp_path / "user").mkdir(exist_ok=True)
    drop = ("DISPLAY", "WAYLAND_DISPLAY", "RIERA_BROKER_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update({"HOME": str(tmp_path / "user"), "RIERA_HOME": str(tmp_path / "riera-home"),
                "TMPDIR": str(tmp_path), "RIERA_PROGRESS": "off", "PYTHONFAULTHANDLER": "1",
                MARK: uuid.uuid4().hex, **more})  # fmt: skip
    return env


def _marked(mark: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``mark``."""
    found = []
    for p in psutil.process_iter():
        try:
            if p.environ().get(MARK) == mark and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.Error:  # gone, or not ours to read
            continue
    return found


def _shm_entries() -> set[str]:
    """Riera's names in /dev/shm, one level into its directories (the default broker's)."""
    if not SHM.is_dir():
        return set()
    names = set()
    for p in SHM.glob("riera-*"):
        names.add(p.name)
        if p.is_dir():
            names |= {f"{p.name}/{q.name}" for q in p.iterdir()}
    return names


def _theirs(new: set[str], pids: set[int]) -> list[str]:
    """Of the entries new in /dev/shm, those that a process of the tree made (its pid in the
    name) or that hold the demo's streams (the default broker, which the demo must not use)."""
    pid_in = re.compile(r"riera-(\d+)[-.]")
    return sorted(n for n in new if ((m := pid_in.match(n)) and int(m.group(1)) in pids)
                  or "mensagens" in n)  # fmt: skip


def _wait_tracking(proc: subprocess.Popen[Any], timeout: float) -> set[int]:
    """Wait for ``proc`` to end, collecting the pids of its process tree meanwhile."""
    pids = {proc.pid}
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        except psutil.Error:
            pass
        try:
            proc.wait(0.2)
            return pids
        except subprocess.TimeoutExpired:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"still running after {timeout:.0f} s") from None


def _assert_nothing_left(env: dict[str, str], pids: set[int], shm_before: set[str]) -> None:
    # multiprocessing's forkserver exits when it reads EOF from its dead parent: a few ms after
    deadline = time.monotonic() + 5
    while (survivors := _marked(env[MARK])) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not survivors, [(p.pid, p.cmdline()) for p in survivors]
    left = _theirs(_shm_entries() - shm_before, pids)
    assert not left, f"left in /dev/shm: {left}"


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _runs(store: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT run_id, action, status, plan FROM runs").fetchall()
    finally:
        db.close()
    return [{"run_id": r, "action": a, "status": s, "plan": p or ""} for r, a, s, p in rows]


def _demo_runs_ok(store: Path) -> dict[str, Any]:
    """The store holds ok runs of the streaming word count, TeraSort's sort and the batch word
    count; returns the streaming run's plan."""
    runs = _runs(store)
    streams = [r for r in runs if r["action"] == "write_stream"]
    assert [r["status"] for r in streams] == ["ok"], runs
    terasort = [r for r in runs if "parse_records" in r["plan"] and '"sort"' in r["plan"]]
    assert terasort and all(r["status"] == "ok" for r in terasort), runs
    wordcount = [r for r in runs if "count_words_batch" in r["plan"]]
    assert wordcount and all(r["status"] == "ok" for r in wordcount), runs
    plan: dict[str, Any] = json.loads(streams[0]["plan"])
    assert plan["guarantee"] == "exactly_once"
    return plan


def _demo(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[int],
                                                dict[str, str], set[str]]:  # fmt: skip
    """Run ``riera demo --no-browser ARGS`` to its end; its output, process tree, env and the
    /dev/shm entries before it."""
    env, before = _env(tmp_path), _shm_entries()
    out, errs = tmp_path / "demo.out", tmp_path / "demo.err"
    with out.open("w") as o, errs.open("w") as e:
        proc = subprocess.Popen([sys.executable, "-m", "riera", "demo", "--no-browser", *args],
                                env=env, stdout=o, stderr=e, stdin=subprocess.DEVNULL,
                                text=True)  # fmt: skip
        pids = _wait_tracking(proc, 180)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                       errs.read_text())  # fmt: skip
    return done, pids, env, before


def _store_from(stdout: str) -> Path:
    """The store named by the command that opens the dashboard again."""
    line = next(ln for ln in stdout.splitlines() if "riera dashboard --store" in ln)
    words = shlex.split(line)
    return Path(words[words.index("--store") + 1])


def test_demo_no_browser_runs_everything_and_ends_by_itself(tmp_path: Path) -> None:
    port = free_port()
    done, pids, env, before = _demo(tmp_path, *SMALL, "--dashboard-port", str(port))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"http://127.0.0.1:{port}/" in done.stdout
    assert "✓ the totals sum to 200; 200 purchases were sent" in done.stdout
    store = _store_from(done.stdout)
    assert store == tmp_path / "riera-home" / "provenance.db"  # the configured store
    plan = _demo_runs_ok(store)
    assert plan["source"].startswith("memory://") and plan["sink"].startswith("memory://")
    # the stream's checkpoint and broker stay in the work directory, so the dashboard opened
    # again shows the query's figures; the batch data is gone
    work = tmp_path / "riera-home" / "demo"
    assert (work / "stream-checkpoint" / "status.json").is_file()
    assert f"RIERA_BROKER_DIR={work / 'stream-broker'}" in done.stdout
    assert not (work / "terasort-in").exists() and not (work / "text").exists()
    assert _port_closed(port)
    _assert_nothing_left(env, pids, before)


def test_demo_serves_the_dashboard_until_ctrl_c(tmp_path: Path) -> None:
    if sys.platform != "linux":
        pytest.skip("Ctrl-C is sent to the process group as a Linux terminal sends it")
    port = free_port()
    env, before = _env(tmp_path), _shm_entries()
    # As in a terminal's foreground: SIGINT at its default. A test run started in the background
    # by a non-interactive shell ignores SIGINT, and its children would inherit that (Python
    # then installs no KeyboardInterrupt handler, and the demo would never see the Ctrl-C).
    proc = subprocess.Popen(
        [sys.executable, "-m", "riera", "demo", *SMALL, "--dashboard-port", str(port)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        text=True, process_group=0,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert proc.stdout is not None
    pids, seen = {proc.pid}, []
    try:
        for line in proc.stdout:  # the runs, then the dashboard keeps serving
            seen.append(line)
            with contextlib.suppress(psutil.Error):
                pids |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            if "press Ctrl-C" in line:
                break
        else:
            raise AssertionError(f"exited {proc.wait()} instead of serving:\n{''.join(seen)}")
        listed = httpx.get(f"http://127.0.0.1:{port}/api/streams").json()
        assert [q["status"] for q in listed] == ["ok"] and listed[0]["job"] == "wordcount"
        # The rest of the output is read by a thread: a process that outlives the demo and holds
        # the pipe must fail the test below (nothing left), not hang it.
        rest: list[str] = []
        reader = threading.Thread(target=lambda: rest.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        reader.start()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)  # PYTHONFAULTHANDLER: every thread's stack
            proc.wait(30)
            reader.join(10)
            raise AssertionError("the demo did not end within 60 s of Ctrl-C; its stacks:\n"
                                 + "".join(seen) + "".join(rest)) from None  # fmt: skip
        reader.join(10)
        assert code == 0, "".join(seen) + "".join(rest)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
    assert _port_closed(port)
    _assert_nothing_left(env, pids, before)


@pytest.fixture
def redis_client() -> Iterator[Any]:
    client = connect_redis()
    try:
        yield client
    finally:
        client.close()


def test_demo_streams_through_redis_when_asked(tmp_path: Path, redis_client: Any) -> None:
    done, pids, env, before = _demo(tmp_path, *SMALL, "--dashboard-port", str(free_port()),
                                    "--broker", f"redis://{REDIS}/0")  # fmt: skip
    plan: dict[str, Any] = {}
    try:
        assert done.returncode == 0, done.stdout + done.stderr
        assert "✓ the totals sum to 200; 200 purchases were sent" in done.stdout
        plan = _demo_runs_ok(_store_from(done.stdout))
        assert plan["source"].startswith(f"redis://{REDIS}/0/riera-demo-")
        assert plan["sink"].startswith(f"redis://{REDIS}/0/riera-demo-")
        assert "RIERA_BROKER_DIR" not in done.stdout
    finally:
        for url in (plan.get("source"), plan.get("sink")):
            if url:
                name = url.split("/", 4)[4].split("?")[0]
                keys = list(redis_client.scan_iter(match=f"{name}*"))
                if keys:
                    redis_client.delete(*keys)
    _assert_nothing_left(env, pids, before)


def test_demo_refuses_an_unknown_broker_before_anything_runs(tmp_path: Path) -> None:
    done, pids, env, before = _demo(tmp_path, *SMALL, "--broker", "kafka://127.0.0.1:9092")
    assert done.returncode == 2
    assert "--broker must be memory, redis or redis://HOST:PORT/DB" in done.stderr
    assert not (tmp_path / "riera-home" / "provenance.db").exists() or not _runs(
        tmp_path / "riera-home" / "provenance.db"
    )
    _assert_nothing_left(env, pids, before)


# -- riera stream wordcount --dashboard -------------------------------------------------------------


class _Producer:
    """Sends document 000's messages to a stream, a few every 20 ms, until closed."""

    def __init__(self, url: str) -> None:
        self.producer = open_producer(url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stop.wait(0.02):  # paced, not synchronising: the query keeps reading
            batch = [message(n + i, ("Freezer", "Fogão", "Microondas")[i]) for i in range(3)]
            self.producer.send([encode(m, time.time() * 1000) for m in batch])
            n += 3

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        self.producer.close()


def _wordcount_with_dashboard(tmp_path: Path, env: dict[str, str], port: int,
                              *extra: str) -> subprocess.Popen[str]:  # fmt: skip
    """``riera stream wordcount --dashboard`` from memory://pedidos to memory://totais."""
    return subprocess.Popen(
        [sys.executable, "-m", "riera", "stream", "wordcount", "--from", "memory://pedidos",
         "--to", "memory://totais", "--checkpoint", str(tmp_path / "ckpt"), *extra,
         "--dashboard", "--dashboard-port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip


def test_stream_wordcount_dashboard_serves_while_the_query_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = tmp_path / "broker"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(broker))  # the producer here, the command there
    env, before = _env(tmp_path, RIERA_BROKER_DIR=str(broker)), _shm_entries()
    port = free_port()
    producer = _Producer("memory://pedidos")
    proc = _wordcount_with_dashboard(tmp_path, env, port, "--until-idle", "2")
    assert proc.stderr is not None
    try:
        first = proc.stderr.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+/)", first)
        assert url and url.group(1) == f"http://127.0.0.1:{port}/", first + proc.stderr.read()
        deadline = time.monotonic() + 60
        while True:  # the query appears in the store once its run is recorded
            listed = httpx.get(url.group(1) + "api/streams", timeout=5).json()
            if any(q["sink"] == "memory://totais" for q in listed):
                break
            assert proc.poll() is None and time.monotonic() < deadline, listed
            time.sleep(0.1)
        (query,) = listed
        assert query["status"] == "running" and query["source"] == "memory://pedidos"
        assert not _port_closed(port)
    finally:
        producer.close()  # the source goes idle: the word count ends by itself
        pids = _wait_tracking(proc, 60)
        rest = proc.stderr.read()
        proc.stderr.close()
    assert proc.returncode == 0, rest
    assert "wordcount finished" in rest
    assert _port_closed(port)
    _assert_nothing_left(env, pids, before)


def test_a_command_killed_with_sigkill_takes_its_dashboard_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if sys.platform != "linux":
        pytest.skip("the tie to the parent's life is Linux's PR_SET_PDEATHSIG")
    broker = tmp_path / "broker"
    monkeypatch.setenv("RIERA_BROKER_DIR", str(broker))
    env, port = _env(tmp_path, RIERA_BROKER_DIR=str(broker)), free_port()
    proc = _wordcount_with_dashboard(tmp_path, env, port)
    assert proc.stderr is not None
    try:
        first = proc.stderr.readline()
        assert f"http://127.0.0.1:{port}/" in first, first + proc.stderr.read()
        (dashboard,) = psutil.Process(proc.pid).children()
        proc.kill()  # no finally runs in the command
        proc.wait(30)
        dashboard.wait(10)  # not our child: psutil knows it ended, not how (TimeoutExpired: alive)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    assert _port_closed(port)
    assert not _marked(env[MARK])


def test_stream_wordcount_dashboard_says_when_its_port_is_taken(tmp_path: Path) -> None:
    env = _env(tmp_path, RIERA_BROKER_DIR=str(tmp_path / "broker"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "riera", "stream", "wordcount", "--from", "memory://a",
             "--to", "memory://b", "--checkpoint", str(tmp_path / "ckpt"), "--until-idle", "1",
             "--dashboard", "--dashboard-port", str(port)],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"port {port} on 127.0.0.1 is taken" in done.stderr
    assert "--dashboard-port" in done.stderr
    assert not (tmp_path / "ckpt").exists(), "the query must not start"
    assert not _marked(env[MARK])
