"""Failure modes with real processes and real shared memory.

Every scenario runs a small driver script in a subprocess (written to ``tmp_path``), so the test
process is never the one killed or interrupted. Checks of ``/dev/shm`` only look at segments named
after pids these tests started (``riera-<pid>-...``): the machine may hold other segments.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from riera.exchange.shm import sweep_dead_owners

pytestmark = pytest.mark.integration

SHM = Path("/dev/shm")

# Prepended to every driver script.
HEADER = """\
import json, os, signal, sys, time
from pathlib import Path

import riera


def own_segments(shm_dir="/dev/shm"):
    return sorted(p.name for p in Path(shm_dir).glob(f"riera-{os.getpid()}-*.arrow"))


def emit(**kw):
    print(json.dumps(kw), flush=True)

"""

# A 2-stage run: a shuffle (group_by) whose output stays in the exchange while a slow second stage
# reads it. The slow function drops a ``started-<worker pid>-<time>`` marker so the test knows when
# (and in which worker) it runs. argv: marker directory, seconds to sleep per task.
SLOW_DRIVER = """
MARKS = Path(sys.argv[1])
SLEEP = float(sys.argv[2])


def slow(df):
    (MARKS / f"started-{os.getpid()}-{time.time()}").touch()
    time.sleep(SLEEP)
    return df


def key_value(row):
    return {"k": row["id"] % 10, "v": row["id"]}


if __name__ == "__main__":
    riera.init(workers=2)
    ds = (riera.range(20000, partitions=4).map(key_value)
          .group_by("k").agg(total=("v", "sum"), n=("v", "count"))
          .map_batches(slow))
    try:
        t = ds.to_arrow()
    except riera.RunCancelled as err:
        emit(status="cancelled", message=str(err), left=own_segments())
        sys.exit(3)
    emit(status="ok", rows=t.num_rows, total=sum(t.column("total").to_pylist()),
         n=sum(t.column("n").to_pylist()), retries=riera.get_runtime().last_run.retries,
         left=own_segments())
"""
SLOW_TOTAL = sum(range(20000))


# -- helpers --------------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    # The session's RIERA_HOME stays: a test never writes into the user's ~/.riera.
    env = {k: v for k, v in os.environ.items() if not k.startswith("RIERA_") or k == "RIERA_HOME"}
    env["RIERA_PROGRESS"] = "off"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# A driver starts the way a program typed in a terminal does: SIGINT at its default action. A
# process started in the background by a shell without job control (``pytest ... &``, how a long
# suite is often run) inherits SIGINT *ignored*, and so would every driver it starts: Python then
# installs no KeyboardInterrupt handler and the driver rightly ignores Ctrl-C. This stub restores
# the default and execs the driver in the same process (same pid).
_SIGINT_DEFAULT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _command(script: Path, args: tuple[Any, ...]) -> list[str]:
    return [sys.executable, "-c", _SIGINT_DEFAULT, sys.executable, str(script), *map(str, args)]


def _script(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(HEADER + textwrap.dedent(body))
    return path


def _run(
    tmp_path: Path, script: Path, *args: Any, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(script, args),
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start(tmp_path: Path, script: Path, *args: Any) -> subprocess.Popen[str]:
    """Start a driver with stdout/stderr going to files: its workers inherit them, and a pipe would
    make reading the driver's output wait for the last orphaned worker."""
    with (
        (tmp_path / f"{script.stem}.out").open("w") as out,
        (tmp_path / f"{script.stem}.err").open("w") as err,
    ):
        return subprocess.Popen(
            _command(script, args),
            cwd=tmp_path,
            env=_env(),
            stdout=out,
            stderr=err,
            text=True,
        )


def _finish(
    proc: subprocess.Popen[str], tmp_path: Path, script: Path, timeout: float = 60
) -> tuple[str, str]:
    """Wait for the driver to exit; returns what it printed (stdout, stderr)."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(
            f"the driver did not exit within {timeout} s:\n"
            f"{(tmp_path / f'{script.stem}.err').read_text()}"
        )
    return (
        (tmp_path / f"{script.stem}.out").read_text(),
        (tmp_path / f"{script.stem}.err").read_text(),
    )


def _result(
    proc: subprocess.CompletedProcess[str] | tuple[str, str], rc: int | None = None
) -> dict[str, Any]:
    """The last JSON line the driver printed."""
    out, err = (proc.stdout, proc.stderr) if not isinstance(proc, tuple) else proc
    if rc is not None and not isinstance(proc, tuple):
        assert proc.returncode == rc, f"driver exit code {proc.returncode}\n{out}\n{err}"
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, f"the driver printed no result\nstdout:\n{out}\nstderr:\n{err}"
    return json.loads(lines[-1])


def _segments(pid: int, directory: Path = SHM) -> list[str]:
    return sorted(p.name for p in directory.glob(f"riera-{pid}-*.arrow"))


def _lock(pid: int, directory: Path = SHM) -> Path:
    return directory / f"riera-{pid}.lock"


def _wait_for(
    predicate: Any, timeout: float, what: str, proc: subprocess.Popen[str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the driver exited ({proc.returncode}) before {what}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def _started(marks: Path) -> list[tuple[int, str]]:
    """(worker pid, marker name) of every slow task started so far."""
    out = []
    for p in marks.iterdir():
        m = re.match(r"started-(\d+)-", p.name)
        if m:
            out.append((int(m.group(1)), p.name))
    return out


def _workers(driver: psutil.Process) -> list[psutil.Process]:
    """The driver's worker processes (children of its forkserver, or direct worker children)."""
    found = []
    for child in driver.children():
        cmd = " ".join(child.cmdline())
        if "forkserver" in cmd:
            found.extend(child.children())
        elif "resource_tracker" not in cmd:
            found.append(child)
    return found


def _gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Processes of ``procs`` still running (not zombies) after waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        alive = []
        for p in procs:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
            except psutil.NoSuchProcess:
                pass
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _clean(pid: int, directory: Path = SHM) -> None:
    """Remove what a driver we started left behind (only on a failed assertion path)."""
    for p in directory.glob(f"riera-{pid}-*.arrow"):
        p.unlink(missing_ok=True)
    _lock(pid, directory).unlink(missing_ok=True)


# -- retries --------------------------------------------------------------------------------------

RETRY_DRIVER = """
class Recorder(riera.Hooks):
    def __init__(self):
        self.ended = []

    def on_task_end(self, task):
        self.ended.append({"stage": task.stage_id, "index": task.index,
                           "attempt": task.attempt, "status": task.status,
                           "pid": task.worker_pid})


def square(df, marker="", mode="none"):
    # partition 0 is the one starting at id 0
    if mode != "none" and len(df) and int(df["id"].iloc[0]) == 0:
        if mode == "always":
            os.kill(os.getpid(), signal.SIGKILL)
        try:
            fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            pass  # not the first attempt
        else:
            os.close(fd)
            if mode == "segv":  # a real segmentation fault, as a crashing C extension would
                import ctypes
                ctypes.string_at(0)
            os.kill(os.getpid(), signal.SIGKILL)
    return df.assign(sq=df["id"] * df["id"], neg=-df["id"])


def rows(t):
    return sorted((r["id"], r["sq"], r["neg"]) for r in t.to_pylist())


if __name__ == "__main__":
    marker, mode, retries = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rec = Recorder()
    rt = riera.init(workers=2, max_task_retries=retries, hooks=[rec])
    ds = riera.range(2000, partitions=4)
    if mode in ("once", "segv"):
        expected = rows(ds.map_batches(square).to_arrow())
        rec.ended.clear()
        got = rows(ds.map_batches(square, marker=marker, mode=mode).to_arrow())
        info = rt.last_run
        emit(same=got == expected, n=len(got), retries=info.retries, status=info.status,
             tasks=rec.ended, left=own_segments())
    else:
        try:
            ds.map_batches(square, marker=marker, mode="always").collect()
        except riera.WorkerLostError as err:
            emit(error=type(err).__name__, message=str(err), status=rt.last_run.status,
                 pid=os.getpid(), left=own_segments())
        else:
            emit(error=None)
"""


def test_worker_killed_mid_task_is_retried_and_output_is_identical(tmp_path: Path) -> None:
    script = _script(tmp_path, "retry.py", RETRY_DRIVER)
    marker = tmp_path / "killed-once"
    proc = _run(tmp_path, script, marker, "once", 3)
    res = _result(proc, rc=0)
    assert marker.exists(), "the task never killed its worker"
    assert res["status"] == "ok"
    assert res["n"] == 2000
    assert res["same"], "the output after a retry differs from the undisturbed run"
    assert res["retries"] >= 1
    lost = [t for t in res["tasks"] if t["status"] == "lost"]
    assert [(t["index"], t["attempt"]) for t in lost] == [(0, 0)], res["tasks"]
    ok0 = [t for t in res["tasks"] if t["status"] == "ok" and t["index"] == 0]
    assert len(ok0) == 1 and ok0[0]["attempt"] == 1
    assert ok0[0]["pid"] != lost[0]["pid"], "the retry did not run on a fresh worker"
    assert "SIGKILL" in proc.stderr  # the driver logged the lost worker
    assert res["left"] == []


def test_worker_segfault_mid_task_is_retried_and_output_is_identical(tmp_path: Path) -> None:
    script = _script(tmp_path, "segv.py", RETRY_DRIVER)
    marker = tmp_path / "segfaulted-once"
    proc = _run(tmp_path, script, marker, "segv", 3)
    res = _result(proc, rc=0)
    assert marker.exists(), "the task never crashed its worker"
    assert res["status"] == "ok" and res["same"] and res["retries"] >= 1
    assert "SIGSEGV" in proc.stderr  # the driver logged why the worker died
    assert res["left"] == []


def test_task_killing_its_worker_every_time_ends_in_worker_lost_error(tmp_path: Path) -> None:
    script = _script(tmp_path, "retry.py", RETRY_DRIVER)
    proc = _run(tmp_path, script, tmp_path / "unused", "always", 1)
    res = _result(proc, rc=0)
    assert res["error"] == "WorkerLostError"
    msg = res["message"]
    assert "partition 0" in msg
    assert "max_task_retries=1" in msg
    assert "died 2 time(s)" in msg
    assert "SIGKILL" in msg
    assert res["status"] == "failed"
    assert res["left"] == []
    assert _segments(res["pid"]) == []


# -- nothing left in /dev/shm -----------------------------------------------------------------------

SHUFFLE_DRIVER = """
def tag(row):
    return {"k": row["id"] % 13, "v": row["id"]}


if __name__ == "__main__":
    riera.init(workers=2)
    t = riera.range(50000, partitions=4).map(tag).group_by("k").agg(
        n=("v", "count"), total=("v", "sum")).to_arrow()
    emit(pid=os.getpid(), groups=t.num_rows, n=sum(t.column("n").to_pylist()),
         total=sum(t.column("total").to_pylist()),
         stages=len(riera.get_runtime().last_run.stages), left=own_segments())
"""


def test_no_segments_remain_after_a_shuffle(tmp_path: Path) -> None:
    script = _script(tmp_path, "shuffle.py", SHUFFLE_DRIVER)
    proc = _run(tmp_path, script)
    res = _result(proc, rc=0)
    assert (res["groups"], res["n"], res["total"]) == (13, 50000, sum(range(50000)))
    assert res["stages"] == 2, "expected a shuffle between two stages"
    assert res["left"] == [], "segments left after the run, while the driver is still alive"
    assert _segments(res["pid"]) == []
    assert not _lock(res["pid"]).exists()


BOOM_DRIVER = """
def boom(row):
    if row["id"] == 7:
        raise ValueError("boom: cannot handle row 7")
    return {"id": row["id"], "double": row["id"] * 2}


if __name__ == "__main__":
    riera.init(workers=2)
    ds = riera.range(10, partitions=2).map(boom).group_by("id").count()
    try:
        ds.collect()
    except riera.TaskError as err:
        emit(pid=os.getpid(), operator=err.operator, partition=err.partition, text=str(err),
             cause=type(err.__cause__).__name__, left=own_segments())
"""


def test_no_segments_remain_after_a_user_exception(tmp_path: Path) -> None:
    script = _script(tmp_path, "boom.py", BOOM_DRIVER)
    proc = _run(tmp_path, script)
    res = _result(proc, rc=0)
    assert res["operator"].startswith("map(boom)"), res["operator"]
    assert res["partition"] == 1  # range(10) in 2 partitions: id 7 is in the second
    assert "boom: cannot handle row 7" in res["text"]
    assert res["operator"] in res["text"]
    assert "partition 1" in res["text"]
    assert res["cause"] == "ValueError"
    assert res["left"] == []
    assert _segments(res["pid"]) == []


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 3), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_a_signal_stops_the_run_and_releases_everything(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Ctrl-C (SIGINT) raises ``RunCancelled``, which the driver script catches (exit 3);
    ``kill PID`` (SIGTERM, how service managers stop a program) releases the same way and the
    process exits with 128 + 15."""
    marks = tmp_path / "marks"
    marks.mkdir()
    script = _script(tmp_path, "slow.py", SLOW_DRIVER)
    proc = _start(tmp_path, script, marks, 30)
    try:
        _wait_for(lambda: _started(marks), 60, "the slow stage to start", proc)
        driver = psutil.Process(proc.pid)
        descendants = driver.children(recursive=True)
        workers = _workers(driver)
        assert len(workers) == 2, [w.cmdline() for w in descendants]
        busy = {pid for pid, _ in _started(marks)}
        assert busy <= {w.pid for w in workers}
        # Stage 1's shuffle output is in shared memory while stage 2 runs.
        assert _segments(proc.pid), "expected stage-1 segments during the slow stage"
        assert _lock(proc.pid).exists()

        os.kill(proc.pid, sig)
        out, err = _finish(proc, tmp_path, script, timeout=30)
    finally:
        _stop(proc)
    assert proc.returncode == code, f"{proc.returncode}\n{out}\n{err}"
    if sig == signal.SIGINT:
        res = _result((out, err))
        assert res["status"] == "cancelled"
        assert res["left"] == [], "segments left right after the cancelled run"
    assert _segments(proc.pid) == []
    assert not _lock(proc.pid).exists()
    alive = _gone(descendants, timeout=15)
    assert alive == [], f"processes of the driver still running: {[p.pid for p in alive]}"


def test_a_driver_gets_ctrl_c_even_when_the_suite_inherited_sigint_ignored(
    tmp_path: Path,
) -> None:
    """The suite run in the background (``pytest ... &`` without job control) has SIGINT ignored;
    the drivers it starts must still turn Ctrl-C into KeyboardInterrupt, or the SIGINT test above
    waits for a run that ignores the signal."""
    script = _script(tmp_path, "handler.py", "emit(handler=repr(signal.getsignal(signal.SIGINT)))")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = _run(tmp_path, script, timeout=60)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert _result(proc, rc=0)["handler"] == repr(signal.default_int_handler)


def test_worker_killed_from_outside_is_retried_and_releases_everything(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    script = _script(tmp_path, "slow.py", SLOW_DRIVER)
    proc = _start(tmp_path, script, marks, 1.0)
    try:
        _wait_for(lambda: _started(marks), 60, "the slow stage to start", proc)
        driver = psutil.Process(proc.pid)
        workers = {w.pid: w for w in _workers(driver)}
        victim = _started(marks)[0][0]
        assert victim in workers, "the busy worker is not a child of the driver"
        workers[victim].kill()
        out, err = _finish(proc, tmp_path, script, timeout=60)
    finally:
        _stop(proc)
    res = _result((out, err))
    assert proc.returncode == 0, f"{out}\n{err}"
    assert res["status"] == "ok"
    assert (res["rows"], res["n"], res["total"]) == (10, 20000, SLOW_TOTAL)
    assert res["retries"] >= 1
    assert f"worker pid {victim} died (killed by SIGKILL)" in err
    assert res["left"] == []
    assert _segments(proc.pid) == []
    assert not _lock(proc.pid).exists()


# -- a driver killed with kill -9 -------------------------------------------------------------------

SWEEP_DRIVER = """
if __name__ == "__main__":
    riera.init(workers=1)  # a new runtime sweeps segments of dead drivers at start-up
    emit(ok=True)
"""


def _kill9_driver_during_slow_stage(
    tmp_path: Path, sleep: float
) -> tuple[int, list[psutil.Process], list[str], float]:
    """Start the slow driver, kill -9 it during stage 2.

    Returns its pid, its workers, its segments just before the kill, and when the first slow task
    started (time.time()).
    """
    marks = tmp_path / "marks"
    marks.mkdir()
    script = _script(tmp_path, "slow.py", SLOW_DRIVER)
    proc = _start(tmp_path, script, marks, sleep)
    try:
        _wait_for(lambda: _started(marks), 60, "the slow stage to start", proc)
        first_start = min(float(name.split("-", 2)[2]) for _, name in _started(marks))
        workers = _workers(psutil.Process(proc.pid))
        assert len(workers) == 2
        before = _segments(proc.pid)
        assert before, "expected stage-1 segments during the slow stage"
        proc.kill()
        proc.wait(30)
    finally:
        _stop(proc)
    assert proc.returncode == -signal.SIGKILL
    return proc.pid, workers, before, first_start


def test_segments_of_a_kill9_driver_are_swept_at_next_start(tmp_path: Path) -> None:
    pid, workers, before, _ = _kill9_driver_during_slow_stage(tmp_path, sleep=2.0)
    try:
        left = _segments(pid)
        assert set(before) <= set(left), "the killed driver's segments vanished on their own"
        assert _lock(pid).exists()
        # Orphaned workers notice the dead driver (once their task ends) and exit on their own.
        alive = _gone(workers, timeout=30)
        assert alive == [], f"orphaned workers still running: {[p.pid for p in alive]}"

        sweep = _run(tmp_path, _script(tmp_path, "sweep.py", SWEEP_DRIVER))
        assert _result(sweep, rc=0)["ok"]
        assert _segments(pid) == [], "segments of the dead driver survived the sweep"
        assert not _lock(pid).exists(), "the dead driver's lock file survived the sweep"
    finally:
        _clean(pid)


def test_orphaned_worker_does_not_write_segments_after_the_sweep(tmp_path: Path) -> None:
    sleep = 3.0
    pid, workers, _, first_start = _kill9_driver_during_slow_stage(tmp_path, sleep=sleep)
    try:
        # Riera starts again (its start-up sweep) right away, while the orphaned workers are
        # still inside their task.
        sweep_dead_owners(SHM)
        if time.time() >= first_start + sleep:
            pytest.skip("the orphaned tasks ended before the sweep; the race was not exercised")
        assert _segments(pid) == [], "the sweep missed segments of the dead driver"
        alive = _gone(workers, timeout=30)
        assert alive == [], f"orphaned workers still running: {[p.pid for p in alive]}"
        assert _segments(pid) == [], "an orphaned worker wrote segments for its dead driver"
    finally:
        _clean(pid)


# -- shared memory full ---------------------------------------------------------------------------

SHM_FULL_DRIVER = """
import pyarrow as pa
import numpy as np


def describe(err):
    return {"type": type(err).__name__, "mro": [c.__name__ for c in type(err).__mro__],
            "message": str(err), "cause": type(err.__cause__).__name__ if err.__cause__ else None,
            "cause_message": str(err.__cause__) if err.__cause__ else None}


if __name__ == "__main__":
    shm_dir = sys.argv[1]
    riera.init(workers=2, exchange="shm", shm_dir=shm_dir, spill=False,
               spill_dir=shm_dir + "-spill")
    out = {"pid": os.getpid()}
    # Shuffle: each map task writes ~15 MiB of partial aggregates into an 8 MiB tmpfs.
    try:
        out["shuffle_count"] = riera.range(2_000_000, partitions=2).group_by("id").count().count()
    except riera.RieraError as err:
        out["shuffle"] = describe(err)
    # The driver itself placing an in-memory table (16 MiB) into the exchange.
    table = pa.table({"x": np.arange(2_000_000, dtype=np.int64)})
    try:
        out["driver_count"] = riera.from_arrow(table, partitions=1).count()
    except riera.RieraError as err:
        out["driver"] = describe(err)
    # The session still works afterwards with data that fits.
    out["small"] = riera.range(1000, partitions=2).group_by("id").count().count()
    out["left"] = own_segments(shm_dir)
    # With spilling on (the default), the same shuffle completes: what does not fit goes to disk.
    rt = riera.init(workers=2, exchange="shm", shm_dir=shm_dir, spill_dir=shm_dir + "-spill")
    out["spilled_count"] = riera.range(2_000_000, partitions=2).group_by("id").count().count()
    out["spilled_bytes"] = rt.last_run.spilled_bytes
    out["spill_left"] = sorted(p.name for p in Path(shm_dir + "-spill").glob("*.arrow"))
    out["left_after_spill"] = own_segments(shm_dir)
    emit(**out)
"""


@pytest.fixture(scope="module")
def shm_full_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    base = tmp_path_factory.mktemp("shmfull")
    small = base / "shm"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(small)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a small tmpfs (needs root / CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        )
    try:
        script = _script(base, "shmfull.py", SHM_FULL_DRIVER)
        proc = _run(base, script, small)
        remaining = sorted(p.name for p in small.iterdir())
        return {"proc": proc, "remaining": remaining, "dir": str(small)}
    finally:
        if subprocess.run(["umount", str(small)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)


def test_shm_full_is_reported_without_sigbus_and_leaves_nothing(
    shm_full_run: dict[str, Any],
) -> None:
    proc = shm_full_run["proc"]
    assert proc.returncode != -signal.SIGBUS, "the driver died of SIGBUS"
    res = _result(proc, rc=0)  # the process survived and handled the error
    for case in ("shuffle", "driver"):
        assert case in res, f"{case}: no error although the data exceeds the 8 MiB tmpfs: {res}"
        msg = res[case]["message"]
        assert "shared memory" in msg
        m = re.search(r"needs ([\d,.]+) MiB but .* has ([\d,.]+) MiB free", msg)
        assert m, msg
        needed, free = (float(g.replace(",", "")) for g in m.groups())
        assert needed > free
        assert 0 < free <= 8.0
        assert shm_full_run["dir"] in msg
    assert res["driver"]["type"] == "ShmFullError"
    assert res["small"] == 1000, "the session is unusable after ShmFullError"
    assert res["left"] == []
    assert shm_full_run["remaining"] == [], "files left in the small tmpfs"


def test_shm_over_budget_spills_to_disk_and_completes(shm_full_run: dict[str, Any]) -> None:
    res = _result(shm_full_run["proc"], rc=0)
    assert res["spilled_count"] == 2_000_000
    assert res["spilled_bytes"] > 8 * 2**20, "the run info does not report the spill"
    assert res["spill_left"] == [] and res["left_after_spill"] == []


def test_shm_full_in_a_worker_raises_shm_full_error(shm_full_run: dict[str, Any]) -> None:
    res = _result(shm_full_run["proc"], rc=0)
    err = res["shuffle"]
    assert err["type"] == "ShmFullError" or (
        "ExchangeError" in err["mro"] and err["cause"] == "ShmFullError"
    ), err


# -- atomic writes --------------------------------------------------------------------------------

WRITE_DRIVER = """
def fail_on_partition_1(df):
    if len(df) and int(df["id"].iloc[0]) >= 50:
        raise RuntimeError("write-side failure in partition 1")
    return df


def listing(path):
    p = Path(path)
    if not p.exists():
        return None
    return sorted(str(q.relative_to(p)) for q in p.rglob("*"))


if __name__ == "__main__":
    mode, out = sys.argv[1], sys.argv[2]
    riera.init(workers=2)
    res = {"pid": os.getpid()}
    if mode == "fail":
        ds = riera.range(100, partitions=2).map_batches(fail_on_partition_1)
        try:
            ds.write_csv(out)
        except riera.TaskError as err:
            res["error"] = str(err)
        res["listing"] = listing(out)
        # A failing overwrite keeps the previous, committed contents.
        prev = out + "-prev"
        riera.range(10, partitions=2).write_csv(prev)
        before = {p: (Path(prev) / p).read_bytes() for p in listing(prev)}
        try:
            ds.write_csv(prev, mode="overwrite")
        except riera.TaskError as err:
            res["overwrite_error"] = str(err)
        after = {p: (Path(prev) / p).read_bytes() for p in listing(prev)}
        res["prev_unchanged"] = before == after
        res["prev_listing"] = listing(prev)
    elif mode == "ok":
        res["manifest"] = riera.range(1234, partitions=3).write_csv(out)
        res["listing"] = listing(out)
    elif mode == "error_mode":
        Path(out).mkdir()
        (Path(out) / "existing.txt").write_text("keep me")
        try:
            riera.range(10).write_csv(out)
        except riera.SinkError as err:
            res["error"] = str(err)
        res["listing"] = listing(out)
    elif mode == "overwrite":
        riera.range(100, partitions=4).write_csv(out)
        res["first"] = listing(out)
        res["manifest"] = riera.range(1000, 1010, partitions=2).write_csv(out, mode="overwrite")
        res["listing"] = listing(out)
        res["ids"] = sorted(riera.read_csv(out).to_arrow().column("id").to_pylist())
    res["left"] = own_segments()
    emit(**res)
"""


def _write(tmp_path: Path, mode: str) -> tuple[dict[str, Any], Path]:
    out = tmp_path / "out"
    proc = _run(tmp_path, _script(tmp_path, "write.py", WRITE_DRIVER), mode, out)
    res = _result(proc, rc=0)
    assert res["left"] == []
    return res, out


def test_failed_write_leaves_no_output(tmp_path: Path) -> None:
    res, out = _write(tmp_path, "fail")
    assert "write-side failure in partition 1" in res["error"]
    assert "map_batches(fail_on_partition_1)" in res["error"]
    listing = res["listing"] or []
    assert not [p for p in listing if p.startswith("part-")], listing
    assert "_SUCCESS" not in listing
    assert not [p for p in listing if p.startswith("_temporary")], listing
    assert not out.exists() or not any(out.iterdir())
    # The same failure on mode="overwrite" keeps what was there before.
    assert "write-side failure" in res["overwrite_error"]
    assert res["prev_unchanged"], res["prev_listing"]
    assert res["prev_listing"] == ["_SUCCESS", "part-00000.csv", "part-00001.csv"]


def test_successful_write_has_success_manifest(tmp_path: Path) -> None:
    res, out = _write(tmp_path, "ok")
    assert res["listing"] == ["_SUCCESS", "part-00000.csv", "part-00001.csv", "part-00002.csv"]
    manifest = json.loads((out / "_SUCCESS").read_text())
    assert manifest == res["manifest"]
    assert manifest["rows"] == 1234
    assert sorted(f["file"] for f in manifest["files"]) == [f"part-0000{i}.csv" for i in range(3)]
    data_rows = 0
    for entry in manifest["files"]:
        lines = (out / entry["file"]).read_text().splitlines()
        assert entry["rows"] == len(lines) - 1  # minus the header
        assert entry["bytes"] == (out / entry["file"]).stat().st_size
        data_rows += len(lines) - 1
    assert data_rows == 1234


def test_mode_error_on_non_empty_directory_names_the_path(tmp_path: Path) -> None:
    res, out = _write(tmp_path, "error_mode")
    assert str(out) in res["error"]
    assert "not empty" in res["error"]
    assert res["listing"] == ["existing.txt"]
    assert (out / "existing.txt").read_text() == "keep me"


def test_mode_overwrite_replaces_old_parts(tmp_path: Path) -> None:
    res, out = _write(tmp_path, "overwrite")
    assert res["first"] == ["_SUCCESS"] + [f"part-0000{i}.csv" for i in range(4)]
    assert res["listing"] == ["_SUCCESS", "part-00000.csv", "part-00001.csv"]
    assert res["ids"] == list(range(1000, 1010))
    assert json.loads((out / "_SUCCESS").read_text())["rows"] == 10
