"""A ``riera dashboard`` process on a free port, for the dashboard tests."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], store: Path | str, *args: str,
                 log_dir: Path | None = None, port: int | None = None) -> None:  # fmt: skip
        self.port = port or _free_port()
        cmd = [sys.executable, "-m", "riera", "dashboard", "--port", str(self.port),
               "--store", str(store), *args]  # fmt: skip
        self.log = (log_dir or Path(store).parent) / f"dashboard-{self.port}.log"
        with self.log.open("w") as errors:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=errors,
                                         text=True)  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"(http://\S+)", line)
        assert match, f"no URL printed: {line!r} {self.log.read_text()[-2000:]}"
        self.url = match.group(1)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.base + "/static/app.css", timeout=1)
                break
            except httpx.TransportError:
                assert self.proc.poll() is None, self.log.read_text()[-2000:]
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
