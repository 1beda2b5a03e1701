"""A ``riera dashboard`` process beside another command (``riera demo``,
``riera stream wordcount --dashboard``).

The dashboard runs in a process of its own, exactly as ``riera dashboard`` runs it, so a busy
query never slows its frames and its server never slows the query. It inherits the command's
environment and working directory, hence the same settings and provenance store (a store's
PostgreSQL DSN is never put on a command line, where ``ps`` would show it), and, for
``memory://`` streams, the same ``RIERA_BROKER_DIR``.

**Ready means answering.** :meth:`DashboardProcess.start` returns once ``GET /api/streams``
answers 200 — polled, not a sleep — so the URL it prints opens a working page; a process that
exits first is an error carrying its last log lines.

**The command owns its life.** The process starts in a session of its own: Ctrl-C in the
terminal reaches only the command, which stops the dashboard itself in its ``finally``: SIGTERM;
after a second, SIGINT, which makes uvicorn stop waiting for open event streams (a browser tab
still watching) and exit; SIGKILL only if it still runs :data:`GRACE_S` later.
Even a command killed with ``kill -9``, which runs no ``finally``, takes the dashboard with it:
the child is ``python -m riera.cli.dashboard_process PARENT_PID dashboard …``, which asks Linux
to SIGKILL it when its parent dies (``PR_SET_PDEATHSIG``; the dashboard only reads, so nothing is
lost) before it runs ``riera dashboard``. Nothing outlives the command.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from riera.errors import ConfigError, RieraError

DEFAULT_PORT = 8765
START_TIMEOUT_S = 30.0
GRACE_S = 5.0


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now (as uvicorn binds: ``SO_REUSEADDR``,
    so a port in ``TIME_WAIT`` after the last dashboard counts as free).

    >>> with socket.socket() as s:
    ...     s.bind(("127.0.0.1", 0)); s.listen(); taken = s.getsockname()[1]
    ...     port_free(taken)
    False
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the system has free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class DashboardProcess:
    """``riera dashboard`` on 127.0.0.1:``port`` in a child process; a context manager.

    >>> with DashboardProcess(free_port()) as dash:  # doctest: +SKIP
    ...     print(dash.url)                            # answering already
    http://127.0.0.1:.../
    """

    def __init__(self, port: int = DEFAULT_PORT, *, store: str | None = None,
                 env: dict[str, str] | None = None) -> None:  # fmt: skip
        self.port, self.store, self.env = port, store, env
        self.url = f"http://127.0.0.1:{port}/"
        self.proc: subprocess.Popen[str] | None = None
        self._log: Path | None = None

    def start(self, timeout: float = START_TIMEOUT_S) -> DashboardProcess:
        """Start the process and wait until its API answers. A taken port is a
        :class:`~riera.errors.ConfigError` naming it, raised before anything starts."""
        if not port_free(self.port):
            raise ConfigError(
                f"port {self.port} on 127.0.0.1 is taken (another dashboard, or another "
                f"program, listens there); stop it or choose another port"
            )
        cmd = [sys.executable, "-m", "riera.cli.dashboard_process", str(os.getpid()),
               "dashboard", "--host", "127.0.0.1", "--port", str(self.port)]  # fmt: skip
        if self.store is not None:
            cmd += ["--store", self.store]
        fd, log = tempfile.mkstemp(prefix="riera-dashboard-", suffix=".log")
        self._log = Path(log)
        with os.fdopen(fd, "w") as errors:
            self.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL,
                                         stdout=errors, stderr=errors, text=True,
                                         start_new_session=True)  # fmt: skip
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RieraError(
                    f"the dashboard exited with code {self.proc.returncode} before it answered:"
                    f"\n{self._tail()}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                raise RieraError(
                    f"the dashboard did not answer on {self.url} within {timeout:.0f} s:"
                    f"\n{self._tail()}"
                )
            time.sleep(0.05)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "api/streams", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):  # not listening yet (HTTPError is a URLError)
            return False

    def _tail(self, lines: int = 20) -> str:
        if self._log is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        return ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self) -> int:
        """Block until the process ends (Ctrl-C in the caller interrupts the wait)."""
        assert self.proc is not None
        return self.proc.wait()

    def stop(self) -> None:
        """SIGTERM, SIGINT after 1 s, SIGKILL after :data:`GRACE_S` more; idempotent.
        Removes the log."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                proc.terminate()
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:  # a tab's open event stream: uvicorn waits
                    proc.send_signal(signal.SIGINT)  # for it until a SIGINT after the first
                    proc.wait(GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            finally:  # also when a second Ctrl-C cuts the grace short
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        if self._log is not None:
            self._log.unlink(missing_ok=True)
            self._log = None

    def __enter__(self) -> DashboardProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:  # fmt: skip
        self.stop()


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it ends (``PR_SET_PDEATHSIG``)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG


def _main(argv: list[str]) -> None:
    """``python -m riera.cli.dashboard_process PARENT_PID ARGS…``: ``riera ARGS…``, tied to the
    parent's life."""
    _die_with_parent()
    if os.getppid() != int(argv[0]):  # the parent died before the tie was made
        return
    sys.argv = ["riera", *argv[1:]]
    from riera.cli import main

    main()


if __name__ == "__main__":
    _main(sys.argv[1:])
