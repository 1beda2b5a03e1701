"""Fixtures for the exchange tests: real Redis and S3-compatible servers on 127.0.0.1, no mocks.

- ``redis_url`` (session): a Redis URL on database :data:`REDIS_DB`. Uses the server already
  listening on 127.0.0.1:6379 if it answers ``PING``; otherwise starts ``redis-server`` on a free
  port (no persistence) and stops it at the end; skips only when neither is possible. At the end
  it deletes the ``riera:*`` keys this test process created (their run paths carry its pid) and
  nothing else.
- ``s3_server`` (session): starts moto's S3-compatible HTTP server (``python -m moto.server``) on
  127.0.0.1 and a free port, with dummy AWS credentials in the environment; yields its endpoint.
- ``remote_backends``: the names ``exchange_factory`` accepts (:data:`REMOTE_BACKENDS`).
- ``remote_settings``: ``name -> dict`` of setting overrides selecting that backend and server,
  for ``load_settings(**...)`` or ``riera.init(**...)``; the ``exchange`` entry is the registered
  backend name.
- ``exchange_factory``: ``name -> Exchange``, a backend constructed through the registry from
  those settings. Servers start on first use, so a suite asking only for S3 never needs Redis.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from riera.config import load_settings
from riera.exchange import create
from riera.exchange.base import Exchange

REMOTE_BACKENDS = ["redis", "s3-ipc", "s3-parquet", "s3fs-ipc", "s3fs-parquet"]
REDIS_DB = 15
S3_BUCKET = "riera-test-exchange"
S3_CREDENTIALS = {"s3_access_key": "testing", "s3_secret_key": "testing"}
_START_TIMEOUT = 15.0


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server process started for the tests; kill it after 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _redis_answers(port: int) -> bool:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, socket_timeout=1)
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    deadline = time.monotonic() + _START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{log.read_text()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {_START_TIMEOUT:.0f} s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis URL (database 15) on 127.0.0.1: the running server, or one started here."""
    if importlib.util.find_spec("redis") is None:
        pytest.skip("the redis client library is not installed: pip install 'riera[test]'")
    proc: subprocess.Popen[bytes] | None = None
    port = 6379
    if not _redis_answers(port):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("no Redis answers on 127.0.0.1:6379 and redis-server is not on PATH")
        port = _free_port()
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
            _wait_until(lambda: _redis_answers(port), proc, "redis-server", log)
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
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP server, in a subprocess)."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        pytest.skip("moto[server] and boto3 are not installed: pip install 'riera[test]'")
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def listening() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return True
        return False

    try:
        _wait_until(listening, proc, "moto.server", log)
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            yield endpoint
    finally:
        stop_process(proc)


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
