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
