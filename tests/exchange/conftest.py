"""Fixtures for the exchange tests: real Redis and S3-compatible servers on 127.0.0.1, no mocks.

- ``redis_url`` (session): a Redis URL on database :data:`REDIS_DB`. Uses the server already
  listening on 127.0.0.1:6379 if it answers ``PING``; otherwise starts ``redis-server`` on a free
  port (no persistence) and stops it at the end; skips (fails under
  ``RIERA_TEST_REQUIRE_SERVICES=1``) only when neither is possible. At the end
  it deletes the ``riera:*`` keys this test process created (their run paths carry its pid) and
  nothing else.
- ``s3_server`` (session, in ``tests/conftest.py``): moto's S3-compatible server on 127.0.0.1.
- ``remote_backends``: the names ``exchange_factory`` accepts (:data:`REMOTE_BACKENDS`).
- ``remote_settings``: ``name -> dict`` of setting overrides selecting that backend and server,
  for ``load_settings(**...)`` or ``riera.init(**...)``; the ``exchange`` entry is the registered
  backend name.
- ``exchange_factory``: ``name -> Exchange``, a backend constructed through the registry from
  those settings. Servers start on first use, so a suite asking only for S3 never needs Redis.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from riera.config import load_settings
from riera.exchange import create
from riera.exchange.base import Exchange
from services import free_port, service_missing, stop_process, wait_until

REMOTE_BACKENDS = ["redis", "s3-ipc", "s3-parquet", "s3fs-ipc", "s3fs-parquet"]
REDIS_DB = 15
S3_BUCKET = "riera-test-exchange"
S3_CREDENTIALS = {"s3_access_key": "testing", "s3_secret_key": "testing"}


def _redis_answers(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL (database 15) on 127.0.0.1: the running server, or one started here."""
    if importlib.util.find_spec("redis") is None:
        service_missing("the redis client library is not installed: pip install 'riera[test]'")
    proc: subprocess.Popen[bytes] | None = None
    port = 6379
    if not _redis_answers(port):
        binary = shutil.which("redis-server")
        if binary is None:
            service_missing("no Redis answers on 127.0.0.1:6379 and redis-server is not on PATH")
        port = free_port()
        workdir = tmp_path_factory.mktemp("redis")
        log = workdir / "redis.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                 "--appendonly", "no", "--dir", str(workdir)],
                stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            wait_until(lambda: _redis_answers(port), proc, "redis-server", log)
        except BaseException:
            stop_process(proc)
            raise
    url = f"redis://127.0.0.1:{port}/{REDIS_DB}"
    try:
        yield url
    finally:
        if proc is None:
            _delete_own_keys(url)
        else:
            stop_process(proc)


def _delete_own_keys(url: str) -> None:
    """Delete the ``riera:*`` keys of runs owned by this process (``riera:<run>.<pid>/…``)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        keys = list(client.scan_iter(match=f"riera:*.{os.getpid()}/*", count=1000))
        for start in range(0, len(keys), 1000):
            client.unlink(*keys[start : start + 1000])
    except redis.RedisError:
        pass
    finally:
        client.close()


@pytest.fixture(scope="session")
def remote_backends() -> list[str]:
    """Names ``exchange_factory`` accepts: ``redis``, ``s3-ipc``, ``s3-parquet`` (boto3) and
    ``s3fs-ipc``, ``s3fs-parquet``."""
    return list(REMOTE_BACKENDS)


@pytest.fixture
def remote_settings(request: pytest.FixtureRequest) -> Callable[[str], dict[str, Any]]:
    """``name -> setting overrides`` for a remote backend; starts its server on first use."""

    def overrides(name: str) -> dict[str, Any]:
        if name == "redis":
            return {"exchange": "redis", "redis_url": request.getfixturevalue("redis_url")}
        if name in REMOTE_BACKENDS:  # s3-<format> (boto3) or s3fs-<format>
            client, fmt = name.split("-")
            return {
                "exchange": "s3",
                "s3_endpoint": request.getfixturevalue("s3_server"),
                "s3_bucket": S3_BUCKET,
                "s3_format": fmt,
                "s3_client": "boto3" if client == "s3" else "s3fs",
                **S3_CREDENTIALS,
            }
        raise ValueError(f"unknown remote backend {name!r}; expected one of {REMOTE_BACKENDS}")

    return overrides


@pytest.fixture
def exchange_factory(
    remote_settings: Callable[[str], dict[str, Any]],
) -> Callable[[str], Exchange]:
    """``name -> Exchange`` for the :data:`REMOTE_BACKENDS`, built via the registry."""

    def make(name: str) -> Exchange:
        settings = load_settings(**remote_settings(name))
        return create(settings.exchange, settings)

    return make
