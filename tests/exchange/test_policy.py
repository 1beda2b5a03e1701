"""The exchange policy: which backend ``auto`` picks, ``confidential``, and spill reporting."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

import riera
from riera.config import load_settings
from riera.errors import ExchangeError
from riera.exchange import policy
from riera.plan import nodes as n


def test_choose_follows_the_documented_order() -> None:
    s = load_settings(exchange="auto")
    assert policy.choose(s, 100, budget=1000) == "shm"
    assert policy.choose(s, 600, budget=1000) == "disk"  # 600 x GROWTH > 1000
    remote = load_settings(exchange="auto", remote_exchange="s3", s3_endpoint="https://s3.aws")
    assert policy.choose(remote, 600, budget=1000) == "s3"
    secret = remote.replace(confidential=True)
    assert policy.choose(secret, 600, budget=1000) == "disk"  # never off the machine
    local_s3 = secret.replace(s3_endpoint="http://127.0.0.1:9000")
    assert policy.choose(local_s3, 600, budget=1000) == "s3"  # 127.0.0.1 is this machine
    assert policy.choose(load_settings(exchange="disk"), 1, budget=10**9) == "disk"


def test_confidential_refuses_remote_backends_by_name() -> None:
    s = load_settings(
        exchange="redis", redis_url="redis://cache.example.com:6379/0", confidential=True
    )
    with pytest.raises(ExchangeError, match="confidential"):
        policy.choose(s, 1, budget=10)
    assert policy.is_local_url("redis://127.0.0.1:6379/0")
    assert policy.is_local_url("unix:///run/redis.sock")
    assert not policy.is_local_url("https://s3.amazonaws.com")
    assert not policy.is_local_url("http://127.example.com:9000")  # a name, not an address
    assert policy.is_local_url("http://[::1]:9000")


def test_estimate_counts_every_source(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("x" * 1000)
    ds = riera.read_text(tmp_path / "a.txt").union(
        riera.range(100), riera.from_arrow(pa.table({"v": list(range(10))}))
    )
    assert n.source_bytes(ds.node) == 1000 + 800 + 80


def test_auto_uses_disk_when_the_run_does_not_fit_and_shm_when_it_does(tmp_path: Path) -> None:
    rt = riera.init(workers=2, progress="off", shm_budget=1_000_000, spill_dir=tmp_path / "spill")
    try:
        big = riera.range(1_000_000, partitions=4).repartition(3)
        assert big.count() == 1_000_000 and rt.last_run.exchange == "disk"
        assert riera.range(1000).repartition(3).count() == 1000
        assert rt.last_run.exchange == "shm"
        assert list((tmp_path / "spill").glob("*.arrow")) == []  # released after the run
    finally:
        riera.init(workers=2, progress="off")


def test_unknown_exchange_is_refused_when_the_runtime_starts() -> None:
    with pytest.raises(ExchangeError, match="unknown exchange 'ftp'"):
        riera.init(exchange="ftp")
    riera.init(workers=2, progress="off")
