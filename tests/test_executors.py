"""The executor registry and what only the in-process executor gives (the semantics shared by
all executors are the tests using the ``workers`` fixture, run under each)."""

from __future__ import annotations

import os
import traceback

import pytest

import riera
from riera.config import load_settings
from riera.exec import base as executors


def test_the_registry_names_every_executor_and_refuses_unknown_ones() -> None:
    assert {"local", "inprocess"} <= set(executors.available())
    with pytest.raises(riera.ConfigError, match=r"unknown executor 'gpu'.*inprocess, local"):
        executors.create(load_settings(executor="gpu"))


def explode(row: dict[str, int]) -> dict[str, int]:
    if row["id"] == 3:
        raise ValueError("bad row 3")
    return row


def test_in_process_tasks_run_in_the_driver_with_the_real_traceback() -> None:
    riera.init(executor="inprocess", progress="off", provenance="off")
    try:
        pids: list[int] = []

        class Pids(riera.Hooks):
            def on_task_end(self, task: riera.TaskInfo) -> None:
                pids.append(task.worker_pid)

        riera.add_hooks(Pids())
        assert riera.range(10, partitions=3).map(lambda r: {"pid": os.getpid()}).collect()[0] == {
            "pid": os.getpid()
        }
        assert pids and set(pids) == {os.getpid()}
        with pytest.raises(riera.TaskError) as info:
            riera.range(5, partitions=2).map(explode).collect()
        cause = info.value.__cause__
        assert isinstance(cause, ValueError) and str(cause) == "bad row 3"
        # The very exception object, its frames intact: pdb.post_mortem lands in explode().
        frames = [f.name for f in traceback.extract_tb(cause.__traceback__)]
        assert frames[-1] == "explode"
        assert riera.range(1000, partitions=8).head(2).num_rows == 2
    finally:
        riera.init(progress="off")


class _Recorder(riera.Hooks):
    """The executor and worker pids of each run."""

    def __init__(self) -> None:
        self.runs: list[tuple[str, set[int]]] = []

    def on_run_start(self, run: riera.RunInfo) -> None:
        self.runs.append((run.executor, set()))

    def on_task_end(self, task: riera.TaskInfo) -> None:
        self.runs[-1][1].add(task.worker_pid)


def test_small_runs_of_built_in_operators_run_in_the_driver_and_start_no_worker(
    tmp_path: os.PathLike[str],
) -> None:
    """A fresh session whose runs are small and call no user function never starts the pool;
    the first run that calls a function of the user's, or reads more than ``inline_bytes``,
    goes to the worker processes. The choice is recorded with the run."""
    recorder = _Recorder()
    rt = riera.init(workers=2, progress="off", hooks=[recorder], inline_bytes=4096)
    try:
        assert riera.range(100, partitions=4).filter(riera.col("id") % 7 == 0).count() == 15
        small = riera.from_items([{"k": i % 3, "v": i} for i in range(50)])
        assert small.group_by("k").agg(n=("v", "count")).sort("k").collect() == [
            {"k": 0, "n": 17}, {"k": 1, "n": 17}, {"k": 2, "n": 16},
        ]  # fmt: skip
        assert [r[0] for r in recorder.runs] == ["inprocess", "inprocess"]
        assert all(pids == {os.getpid()} for _, pids in recorder.runs)
        assert "local" not in rt._executors  # no worker process was started

        # User code goes to the workers, however small the run.
        assert riera.range(10, partitions=2).map(lambda r: {"pid": os.getpid()}).count() == 10
        executor, pids = recorder.runs[-1]
        assert executor == "local" and os.getpid() not in pids and len(pids) >= 1
        # So do sources beyond inline_bytes (8 bytes a range row: 1000 rows > 4096 bytes).
        assert riera.range(1000, partitions=4).count() == 1000
        assert recorder.runs[-1][0] == "local" and os.getpid() not in recorder.runs[-1][1]

        runs = riera.provenance.sql("SELECT executor, workers FROM runs ORDER BY started_at")
        assert [tuple(r) for r in runs.rows[-4:]] == [
            ("inprocess", 1), ("inprocess", 1), ("local", 2), ("local", 2),
        ]  # fmt: skip
    finally:
        riera.init(progress="off")


def test_inline_bytes_zero_sends_every_run_to_the_executor() -> None:
    recorder = _Recorder()
    riera.init(workers=1, progress="off", provenance="off", hooks=[recorder], inline_bytes=0)
    try:
        assert riera.range(3).count() == 3
        assert recorder.runs[-1][0] == "local" and os.getpid() not in recorder.runs[-1][1]
    finally:
        riera.init(progress="off")


@pytest.mark.parametrize(
    ("dataset", "expected"),
    [
        (lambda: riera.range(5).filter(riera.col("id") > 1), False),
        (lambda: riera.range(5).filter(lambda r: r["id"] > 1), True),
        (lambda: riera.range(5).map_batches(lambda t: t, batch_format="pyarrow"), True),
        (lambda: riera.range(5).group_by("id").agg(s=("id", lambda xs: sum(xs))), True),
        (lambda: riera.range(5).group_by("id").agg(s=riera.col("id").sum()), False),
        (lambda: riera.range(5).reduce_by_key("id", lambda a, b: a, column="id"), True),
    ],
)
def test_user_code_is_found_in_every_kind_of_operator(dataset: object, expected: bool) -> None:
    from riera.plan import nodes

    assert nodes.user_code(dataset()._node) is expected  # type: ignore[operator]
