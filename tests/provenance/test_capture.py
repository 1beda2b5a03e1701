"""Capture end to end: real runs on real workers write provenance to a real store (SQLite file).

Each test gets a Riera home of its own, so the store holds only its runs. The in-progress and
``kill -9`` tests run the pipeline in another process, as a user's script would, and query the
store from this one.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import riera
import riera.provenance as prov
from riera.config import load_settings
from riera.errors import ProvenanceError, ReadOnlyError, TaskError


def settings(home: Path) -> Any:
    return load_settings(home=str(home))


def rows(home: Path, query: str, **params: Any) -> list[dict[str, Any]]:
    return prov.sql(query, params, settings=settings(home)).to_dicts()


def double(row: dict[str, Any]) -> dict[str, Any]:
    return {"k": row["k"], "v": row["v"] * 2}


def pipeline(out: Path) -> None:
    ds = riera.from_items([{"k": i % 5, "v": i} for i in range(1000)], partitions=4)
    ds.map(double).group_by("k").agg(total=("v", "sum")).write_parquet(str(out))


def test_a_run_records_plan_run_stages_tasks_and_elements(home: Path, tmp_path: Path) -> None:
    pipeline(tmp_path / "out")
    info = riera.get_runtime().last_run
    assert info is not None and info.status == "ok"
    [run] = prov.runs(settings=settings(home))
    assert run["run_id"] == info.run_id and run["status"] == "ok"
    assert run["started_at"] is not None and run["ended_at"] is not None

    ops = rows(home, "SELECT * FROM operators WHERE run_id = :r ORDER BY position", r=info.run_id)
    kinds = [o["kind"] for o in ops]
    assert kinds[0] == "table" and kinds[-1] == "write", kinds
    mapper = next(o for o in ops if o["kind"] == "map")
    assert mapper["function"] == f"{__name__}.double"
    assert mapper["source_hash"].startswith("sha256:")
    assert json.loads(ops[-1]["inputs"]) == [ops[-2]["op_id"]]

    stages = rows(home, "SELECT * FROM stages WHERE run_id = :r", r=info.run_id)
    assert {s["stage_id"] for s in stages} == {s.stage_id for s in info.stages}
    assert all(s["status"] == "ok" for s in stages)
    tasks = rows(home, "SELECT * FROM tasks WHERE run_id = :r", r=info.run_id)
    assert len(tasks) == info.tasks
    assert all(t["status"] == "ok" and t["worker_pid"] > 0 for t in tasks)
    assert {t["worker_pid"] for t in tasks} <= {w.pid for w in riera.get_runtime().executor.workers}

    # Every task used something; the map side generated hashed partitions the reducers used.
    used = rows(home, "SELECT task_id, count(*) AS n FROM used WHERE run_id = :r GROUP BY 1",
                r=info.run_id)  # fmt: skip
    assert {u["task_id"] for u in used} == {t["task_id"] for t in tasks}
    parts = rows(home, "SELECT * FROM elements WHERE run_id = :r AND kind = 'partition'",
                 r=info.run_id)  # fmt: skip
    assert parts and all(p["content_hash"].startswith("xxh3-") for p in parts)
    flow = rows(
        home,
        "SELECT g.task_id AS producer, u.task_id AS consumer FROM generated g "
        "JOIN used u ON u.run_id = g.run_id AND u.element_id = g.element_id WHERE g.run_id = :r",
        r=info.run_id,
    )
    assert {f["producer"].split("/")[0] for f in flow} != {
        f["consumer"].split("/")[0] for f in flow
    }

    outputs = rows(home, "SELECT * FROM elements WHERE run_id = :r AND kind = 'output'",
                   r=info.run_id)  # fmt: skip
    written = sorted((tmp_path / "out").glob("part-*"))
    assert sorted(Path(o["location"]).name for o in outputs) == [p.name for p in written]
    assert sum(o["rows"] for o in outputs) == sum(pq.read_metadata(p).num_rows for p in written)


def test_tasks_record_what_their_reader_read_side_inputs_included(
    home: Path, tmp_path: Path
) -> None:
    """Each task's ``used`` rows name what its stage's reader read: file splits, ranges, and
    for a broadcast join, the small side's partitions beside the task's own input."""
    big = tmp_path / "big.parquet"
    pq.write_table(pa.table({"k": [i % 10 for i in range(2000)], "v": list(range(2000))}), big,
                   row_group_size=500)  # fmt: skip
    small = riera.range(10, partitions=2).with_columns(name=riera.col("id").cast("string"))
    joined = riera.read_parquet(str(big)).join(small, left_on="k", right_on="id")
    assert "(broadcast right)" in joined.explain(show=False)
    assert joined.count() == 2000
    run = riera.get_runtime().last_run
    assert run is not None
    used = rows(
        home,
        "SELECT u.task_id, e.kind, e.element_id FROM used u JOIN elements e "
        "ON e.run_id = u.run_id AND e.element_id = u.element_id WHERE u.run_id = :r",
        r=run.run_id,
    )
    by_task: dict[str, set[str]] = {}
    for u in used:
        by_task.setdefault(u["task_id"], set()).add(u["kind"])
    ranges = {u["element_id"] for u in used if u["kind"] == "range"}
    assert ranges == {"range:0-5", "range:5-10"}
    big_side = [t for t, kinds in by_task.items() if "split" in kinds]
    assert big_side, by_task
    side = {u["element_id"] for u in used if u["kind"] == "partition" and u["task_id"] in big_side}
    # every task of the big side read both partitions of the broadcast small side
    for task in big_side:
        mine = {u["element_id"] for u in used if u["task_id"] == task and u["kind"] == "partition"}
        assert mine == side and len(side) == 2, (task, mine, side)


def test_content_hashes_identify_content_across_runs(home: Path, tmp_path: Path) -> None:
    pipeline(tmp_path / "a")
    pipeline(tmp_path / "b")
    first, second = (r["run_id"] for r in reversed(prov.runs(settings=settings(home))))

    def hashes(run: str) -> dict[str, str]:
        got = rows(home, "SELECT element_id, content_hash FROM elements WHERE run_id = :r "
                         "AND kind = 'partition'", r=run)  # fmt: skip
        return {g["element_id"]: g["content_hash"] for g in got}

    assert hashes(first) == hashes(second) != {}


def test_a_failed_task_is_recorded_with_its_error(home: Path) -> None:
    def boom(row: dict[str, Any]) -> dict[str, Any]:
        if row["v"] == 7:
            raise ValueError("bad record 7")
        return row

    with pytest.raises(TaskError):
        riera.from_items([{"v": i} for i in range(20)], partitions=2).map(boom).collect()
    [run] = prov.runs(settings=settings(home))
    assert run["status"] == "failed" and "bad record 7" in run["error"]
    failed = rows(home, "SELECT * FROM tasks WHERE run_id = :r AND status = 'failed'",
                  r=run["run_id"])  # fmt: skip
    assert len(failed) == 1 and "ValueError: bad record 7" in failed[0]["error"]


def test_provenance_off_writes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "off"
    riera.init(workers=1, progress="off", home=str(home), provenance="off")
    try:
        assert riera.range(10).count() == 10
    finally:
        riera.shutdown()
    assert not (home / "provenance.db").exists()


def test_a_failed_init_keeps_the_runtime_that_records_provenance(home: Path) -> None:
    """``riera.init`` with bad settings used to stop the session's runtime first: later runs then
    went through the stopped one and recorded no provenance."""
    before = riera.get_runtime()
    with pytest.raises(riera.ConfigError, match="workers"):
        riera.init(workers=0)
    assert riera.range(10).count() == 10
    run = rows(home, "SELECT * FROM runs ORDER BY started_at DESC LIMIT 1")[0]
    assert run["status"] == "ok" and run["action"] == "count"
    assert rows(home, "SELECT count(*) AS n FROM tasks WHERE run_id = :r", r=run["run_id"])[0]["n"]
    assert riera.get_runtime() is before and not before.closed


def test_a_replaced_runtime_refuses_to_run(home: Path) -> None:
    old = riera.get_runtime()
    riera.init(workers=1, progress="off", home=str(home))
    with pytest.raises(riera.RieraError, match="shut down"):
        old.execute(riera.range(3).node, "count")
    assert riera.range(3).count() == 3


def test_queries_are_read_only(home: Path) -> None:
    riera.range(10).count()
    with pytest.raises(ReadOnlyError):
        prov.sql("DELETE FROM runs", settings=settings(home))
    assert len(prov.runs(settings=settings(home))) == 1
    with pytest.raises(ProvenanceError, match="no run 'nope'"):
        prov.show("nope", settings=settings(home))
    shown = prov.show("last", settings=settings(home))
    assert shown["run"]["status"] == "ok" and shown["tasks"]


# -- another process runs; this one queries ---------------------------------------------------

SLOW_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import riera

    def slow(row):
        time.sleep(float(sys.argv[1]))
        return row

    riera.init(workers=1, progress="off")
    riera.from_items([{"v": i} for i in range(8)], partitions=8).map(slow).collect()
    print("done", flush=True)
    """
)


def start_script(tmp_path: Path, home: Path, delay: float) -> subprocess.Popen[str]:
    script = tmp_path / "slow.py"
    script.write_text(SLOW_SCRIPT)
    env = {**os.environ, "RIERA_HOME": str(home)}
    return subprocess.Popen(
        [sys.executable, str(script), str(delay)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(30)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def wait_for(predicate: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except ProvenanceError:  # the store may not exist yet
            got = None
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError("timed out waiting for the store")


def done_tasks(home: Path) -> int:
    got = rows(home, "SELECT count(*) AS n FROM tasks WHERE status = 'ok'")
    return int(got[0]["n"])


@pytest.mark.integration
def test_queries_during_a_run_see_finished_tasks(tmp_path: Path) -> None:
    home = tmp_path / "live"
    proc = start_script(tmp_path, home, 0.4)
    try:
        wait_for(lambda: done_tasks(home) >= 2)
        [run] = prov.runs(settings=settings(home))
        assert run["status"] == "running"  # seen while the run is in progress …
        assert proc.poll() is None
        assert 2 <= done_tasks(home) < 8  # … with the tasks finished so far
        _, errors = proc.communicate(timeout=60)
        assert proc.returncode == 0, errors
    finally:
        stop(proc)
    [run] = prov.runs(settings=settings(home))
    assert run["status"] == "ok" and done_tasks(home) == 8


@pytest.mark.integration
def test_a_killed_run_stays_readable_and_is_marked_interrupted(tmp_path: Path) -> None:
    home = tmp_path / "killed"
    proc = start_script(tmp_path, home, 0.5)
    try:
        wait_for(lambda: done_tasks(home) >= 1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        stop(proc)
    [run] = prov.runs(settings=settings(home))
    assert run["status"] == "interrupted" and run["ended_at"] is None
    assert 1 <= done_tasks(home) < 8
    assert rows(home, "SELECT count(*) AS n FROM operators")[0]["n"] >= 2


@pytest.mark.integration
def test_a_run_captured_into_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    """``provenance_dsn`` sends a run's provenance to PostgreSQL (a schema of this test's own)."""
    import psycopg

    schema = f"prov_capture_{secrets.token_hex(4)}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    dsn = f"{pg_dsn}?options=-csearch_path%3D{schema}"
    try:
        riera.init(workers=2, progress="off", home=str(tmp_path / "home"), provenance_dsn=dsn)
        try:
            pipeline(tmp_path / "out")
            info = riera.get_runtime().last_run
        finally:
            riera.shutdown()
        assert info is not None
        pg = load_settings(provenance_dsn=dsn)
        [run] = prov.runs(settings=pg)
        assert run["run_id"] == info.run_id and run["status"] == "ok"
        tasks = prov.sql("SELECT count(*) FROM tasks WHERE status = 'ok'", settings=pg).rows
        assert tasks == [(info.tasks,)]
        assert not (tmp_path / "home" / "provenance.db").exists()  # nothing went to SQLite
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
