"""What the service fixtures share: a free port, waiting for a server, and what to do when one is
missing.

On CI (``RIERA_TEST_REQUIRE_SERVICES=1``, set by ``.ci/run``) Redis, PostgreSQL and the S3 server
run on every machine, so a missing one is a broken machine: the test **fails** with the reason.
Elsewhere it skips with the reason (after the fixture tried to start a local server).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

REQUIRE_SERVICES = os.environ.get("RIERA_TEST_REQUIRE_SERVICES", "") not in ("", "0")
START_TIMEOUT = 15.0


def service_missing(reason: str) -> NoReturn:
    """Skip the test, or fail it when services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(
            f"{reason} (RIERA_TEST_REQUIRE_SERVICES is set: services must run)", pytrace=False
        )
    pytest.skip(reason)


REDIS = os.environ.get("RIERA_TEST_REDIS", "127.0.0.1:6379")


def redis_client() -> Any:
    """A client of the test Redis (``RIERA_TEST_REDIS``, default 127.0.0.1:6379) that answered a
    ping; a missing server skips the test (fails it on CI)."""
    import redis

    host, port = REDIS.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    try:
        client.ping()
    except redis.RedisError as err:
        client.close()
        service_missing(f"Redis at {REDIS} is not reachable ({err}); set RIERA_TEST_REDIS")
    return client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until(
    ready: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, log: Path
) -> None:
    """Poll ``ready`` until it holds; fail with the server's log if it exits or takes too long."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}:\n{log.read_text()}")
        if ready():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {START_TIMEOUT:.0f} s:\n{log.read_text()}")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a server started by a fixture; kill it after 5 s."""
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP server, in a subprocess)."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        service_missing("moto[server] and boto3 are not installed: pip install 'riera[test]'")
    port = free_port()
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
        wait_until(listening, proc, "moto.server", log)
        with pytest.MonkeyPatch.context() as mp:
            for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
                mp.delenv(var, raising=False)
            mp.setenv("AWS_ACCESS_KEY_ID", "testing")
            mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
            yield endpoint
    finally:
        stop_process(proc)
