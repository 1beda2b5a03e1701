"""The machine's figures for the dashboard (:mod:`riera.dashboard.system`), checked against
psutil read in this same process, a real shared-memory segment, and the one-second cache."""

from __future__ import annotations

import os
import threading
import time
import uuid
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import psutil
import pytest

from riera.dashboard.system import SHM_DIR, system_metrics

SEGMENT = 2**20 + 7 * 4096  # a size no other segment is likely to have


def test_ram_and_this_process_agree_with_psutil() -> None:
    got = system_metrics(max_age_s=0)
    vm = psutil.virtual_memory()
    ram = got["ram"]
    assert ram["total"] == vm.total
    assert abs(ram["available"] - vm.available) <= 0.03 * vm.total
    assert abs(ram["used_percent"] - vm.percent) <= 3.0
    mine = psutil.Process().memory_full_info()
    process = got["process"]
    assert process["pid"] == os.getpid()
    assert abs(process["uss_bytes"] - mine.uss) <= 0.2 * mine.uss
    assert abs(process["pss_bytes"] - mine.pss) <= 0.2 * mine.pss
    assert abs(process["rss_bytes"] - mine.rss) <= 0.2 * mine.rss
    assert 0.0 <= process["cpu_percent"] <= 100.0 * (os.cpu_count() or 1)


def _riera(shm: dict[str, Any]) -> tuple[int, int, int]:
    return shm["riera_segments"], shm["riera_size"], shm["riera_bytes"]


@pytest.mark.skipif(not SHM_DIR.is_dir(), reason="this system has no /dev/shm (macOS)")
def test_a_riera_segment_in_dev_shm_is_counted() -> None:
    for _attempt in range(5):  # other runs on this machine may add or release segments meanwhile
        before = system_metrics(max_age_s=0)["shm"]
        seg = shared_memory.SharedMemory(name=f"riera-test-{uuid.uuid4().hex}", create=True,
                                         size=SEGMENT)  # fmt: skip
        try:
            seg.buf[:] = b"\x01" * SEGMENT  # touched: its pages are allocated
            during = system_metrics(max_age_s=0)["shm"]
        finally:
            seg.close()
            seg.unlink()
        after = system_metrics(max_age_s=0)["shm"]
        if _riera(before) == _riera(after):  # nobody else changed /dev/shm meanwhile
            break
    else:
        pytest.fail("/dev/shm's riera segments kept changing: other runs are using it")
    assert during["path"] == "/dev/shm" and during["total"] > 0
    assert during["riera_segments"] == before["riera_segments"] + 1
    assert during["riera_size"] == before["riera_size"] + SEGMENT
    assert during["riera_bytes"] >= before["riera_bytes"] + SEGMENT


def test_what_counts_as_a_segment_and_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "riera-123-run-s0-t0-a0.arrow").write_bytes(b"x" * 10_000)
    (tmp_path / "riera-123.lock").write_bytes(b"")  # a driver's lock: not a segment
    (tmp_path / "psm_other").write_bytes(b"y" * 5000)  # not Riera's
    (tmp_path / "riera-dir").mkdir()
    shm = system_metrics(shm_dir=tmp_path, max_age_s=0)["shm"]
    assert _riera(shm)[:2] == (1, 10_000) and shm["riera_bytes"] >= 10_000
    assert shm["path"] == str(tmp_path) and shm["total"] >= shm["used"] > 0
    assert system_metrics(shm_dir=tmp_path / "absent", max_age_s=0)["shm"] is None


def test_one_reading_per_second_is_shared_between_callers_and_threads() -> None:
    first = system_metrics()
    assert system_metrics() is first, "within a second: the same reading"
    fresh = system_metrics(max_age_s=0)
    assert fresh is not first and fresh["sampled_at"] >= first["sampled_at"]
    time.sleep(0.6)
    start = threading.Barrier(8)
    got: list[dict[str, Any]] = []

    def tab() -> None:
        start.wait()
        got.append(system_metrics(max_age_s=0.5))  # stale: one thread reads, the others share it

    threads = [threading.Thread(target=tab) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(got) == 8 and all(g is got[0] for g in got) and got[0] is not fresh
