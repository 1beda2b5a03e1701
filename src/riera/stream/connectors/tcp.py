"""``tcp://HOST:PORT``: lines over a socket, like Spark's socket source fed by ``nc -lk PORT``.

**Source.** Riera connects, as a client, to a server that writes newline-terminated lines; each
line is one message (the bytes without ``\\n``; key None; ``ts_ms`` from a JSON object line's
``"ts"`` field). One partition. A socket cannot be read again, so the source is **not
replayable**: its position is only a count of the lines read, and ``reader(start)`` with a logged
count just goes on counting from it — what the server sent while no one was connected is lost, and
a restarted query cannot replay an epoch. Exactly-once output therefore cannot be had from this
source (the engine refuses it; at-least-once and at-most-once queries can use it). When the server
closes the connection the reader reconnects with backoff (50 ms doubling to 2 s) during its polls,
dropping the unterminated line the connection ended with. The first connection must succeed within
``?connect_timeout=`` seconds (default 5), or :class:`~riera.errors.StreamError` says so.

**Producer.** :class:`TcpProducer` is the server side, for tests and demos: it listens on
``HOST:PORT`` (port 0: a free one, see :attr:`TcpProducer.port`), accepts any number of clients on
a thread, and writes every message as one line to every connected client. :meth:`TcpProducer.send`
waits (30 s at most) until at least one client is connected, since a line sent to no one is lost.
"""

from __future__ import annotations

import errno
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

from riera.errors import PlanError, StreamError
from riera.stream.connectors import base
from riera.stream.connectors.files import line_ts

CONNECT_TIMEOUT_S = 5.0
SEND_WAIT_S = 30.0
_BACKOFF_MIN_S, _BACKOFF_MAX_S = 0.05, 2.0
_MAX_LINE = 16 << 20


def _address(url: base.Url) -> tuple[str, int]:
    if not url.host or url.port is None:
        raise PlanError(f"{url.raw}: expected tcp://HOST:PORT, e.g. tcp://127.0.0.1:9999")
    return url.host, url.port


def _connect_timeout(url: base.Url) -> float:
    value = url.query.get("connect_timeout")
    if value is None:
        return CONNECT_TIMEOUT_S
    try:
        return float(value)
    except ValueError as err:
        raise PlanError(f"{url.raw}: ?connect_timeout= must be seconds; got {value!r}") from err


class TcpReader:
    """Reads lines from one connection, reconnecting when the server closes it."""

    def __init__(self, url: str, address: tuple[str, int], count: int, connect_s: float) -> None:
        self.url, self.address = url, address
        self._count = count
        self._lines: deque[bytes] = deque()  # complete lines received, not yet polled
        self._partial = b""
        self._sock: socket.socket | None = None
        self._backoff = _BACKOFF_MIN_S
        self._retry_at = 0.0
        deadline = time.monotonic() + connect_s
        last: OSError | None = None
        while self._sock is None:
            try:
                self._sock = socket.create_connection(address, timeout=max(0.1, connect_s))
            except OSError as err:
                last = err
                if time.monotonic() >= deadline:
                    raise StreamError(
                        f"{url}: cannot connect to a line server at {address[0]}:{address[1]} "
                        f"within {connect_s:g} s ({last}); start it first (e.g. nc -lk "
                        f"{address[1]}) or fix the address"
                    ) from err
                time.sleep(min(_BACKOFF_MIN_S, max(0.0, deadline - time.monotonic())))
        self._sock.setblocking(False)

    def poll(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
             ) -> list[base.Message]:  # fmt: skip
        if upto is not None and 0 not in upto:
            return []
        limit = max_records
        if upto is not None:
            limit = min(limit, int(upto[0]) - self._count)
            if limit <= 0:
                return []
        deadline = time.monotonic() + timeout_s
        while not self._lines:
            remaining = deadline - time.monotonic()
            self._receive(max(0.0, remaining))
            if remaining <= 0:
                break
        while len(self._lines) < limit and self._receive(0.0):
            pass  # take what else already arrived, without waiting
        out: list[base.Message] = []
        while self._lines and len(out) < limit:
            line = self._lines.popleft()
            self._count += 1
            out.append(base.Message(line, None, line_ts(line), 0, self._count))
        return out

    def _receive(self, wait_s: float) -> bool:
        """Wait up to ``wait_s`` for data and split it into lines (reconnecting if need be);
        whether any data came."""
        if self._sock is None and not self._reconnect(wait_s):
            return False
        assert self._sock is not None
        ready, _, _ = select.select([self._sock], [], [], wait_s)
        if not ready:
            return False
        try:
            data = self._sock.recv(1 << 16)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:  # the server closed the connection
            self._drop()
            return False
        buf = self._partial + data
        *lines, self._partial = buf.split(b"\n")
        self._lines.extend(lines)
        if len(self._partial) > _MAX_LINE:
            raise StreamError(
                f"{self.url}: the server at {self.address[0]}:{self.address[1]} sent a line "
                f"longer than {_MAX_LINE} bytes; is it a line server?"
            )
        return True

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._partial = b""  # a line cut by the disconnection is incomplete
        self._retry_at = time.monotonic() + self._backoff

    def _reconnect(self, wait_s: float) -> bool:
        now = time.monotonic()
        if now < self._retry_at:
            time.sleep(min(wait_s, self._retry_at - now))
            if time.monotonic() < self._retry_at:
                return False
        try:
            sock = socket.create_connection(self.address, timeout=max(0.05, min(wait_s, 1.0)))
        except OSError:
            self._backoff = min(self._backoff * 2, _BACKOFF_MAX_S)
            self._retry_at = time.monotonic() + self._backoff
            return False
        sock.setblocking(False)
        self._sock, self._backoff = sock, _BACKOFF_MIN_S
        return True

    def positions(self) -> dict[int, Any]:
        return {0: self._count}

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class TcpSource:
    """A line server's output as one non-replayable partition (see the module doc)."""

    replayable = False

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.address = _address(url)
        self.connect_s = _connect_timeout(url)

    def partitions(self) -> int:
        return 1

    def reader(self, start: dict[int, Any]) -> TcpReader:
        for part in start:
            if part != 0:
                raise PlanError(f"{self.url}: a tcp source has one partition (0), not {part}")
        count = start.get(0)
        return TcpReader(self.url, self.address, int(count or 0), self.connect_s)

    def release(self, upto: dict[int, Any]) -> None:
        pass  # nothing to acknowledge: the server forgets what it sent

    def lag(self, positions: dict[int, Any]) -> dict[int, int | None]:
        return dict.fromkeys(positions)  # lines not yet received are unknowable

    def close(self) -> None:
        pass


class TcpProducer:
    """A line server: every sent value goes as one line to every connected client."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        host, port = _address(url)
        self._server = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._server.bind((host, port))
        except OSError as err:
            self._server.close()
            why = "is in use" if err.errno == errno.EADDRINUSE else f"cannot be bound ({err})"
            raise StreamError(
                f"{url.raw}: the line server's address {host}:{port} {why}; pick another port"
            ) from err
        self._server.listen(16)
        self._server.settimeout(0.05)
        self.host, self.port = host, int(self._server.getsockname()[1])
        self._clients: list[socket.socket] = []
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name=f"riera-tcp-{port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            client.settimeout(SEND_WAIT_S)  # a client that stops reading is dropped
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._changed:
                self._clients.append(client)
                self._changed.notify_all()

    def clients(self) -> int:
        """How many clients are connected (as far as the server knows)."""
        with self._changed:
            return len(self._clients)

    def send(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        lines = []
        for i, (_, value, _) in enumerate(messages):
            if b"\n" in value:
                raise PlanError(
                    f"{self.url}: message {i} ({value[:60]!r}…) contains a newline, but a tcp "
                    f"source reads one message per line; encode it as one line"
                )
            lines.append(value + b"\n")
        data = b"".join(lines)
        deadline = time.monotonic() + SEND_WAIT_S
        with self._changed:
            while True:
                while not self._clients:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise StreamError(
                            f"{self.url}: no client connected to {self.host}:{self.port} within "
                            f"{SEND_WAIT_S:g} s; start the query that reads tcp://{self.host}:"
                            f"{self.port} first"
                        )
                    self._changed.wait(remaining)
                for client in list(self._clients):
                    try:
                        client.sendall(data)
                    except OSError:  # that client went away
                        self._clients.remove(client)
                        client.close()
                if self._clients:
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self._server.close()
        with self._changed:
            for client in self._clients:
                client.close()
            self._clients.clear()
