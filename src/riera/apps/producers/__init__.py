"""The producers of document 000 (Baraldi, USP, 2023): test messages for the streaming word count.

The document feeds its stream engines from two kinds of producer, both writing the same JSON
message, ``{"chave": "<n>", "valorA": "<word>", "valorB": "1"}`` keyed ``Chave <n>``:

- :mod:`riera.apps.producers.retail`: retail purchases, one of 3 or 20 products per message, 500
  messages, one every 0.5 s (≈ the 2.49 online purchases per second of Brazil in 2021);
- :mod:`riera.apps.producers.comments`: product comments written by a local LLM, one message per
  word (or, without a model, by a seeded generator that recombines the prompt's examples).

The generators there are pure (seeded, no I/O); this module turns any of them into messages on a
stream with :func:`produce`. Apps sit on the public API: only :mod:`riera.stream.connectors.base`
(``open_producer``) and :mod:`riera.errors` are used, never the engine's internals.

**Pacing.** Message ``i`` is due at ``t0 + i * interval`` on the monotonic clock: a late send (a
slow broker, a sleep that overslept) does not push every later message back, so 500 messages at
0.5 s take 249.5 s however long each send took, and messages already due when the producer catches
up leave together in one batch. ``interval=0`` sends as fast as possible, in batches of up to
1000. Each message is stamped ``"ts"`` (Unix ms, float) when it is sent, in its JSON and as the
broker's producer timestamp, so a consumer can measure end-to-end latency.

**A slow generator never holds messages back.** The LLM takes seconds per comment and then yields
its words at once; the generator runs in a thread of its own feeding a bounded queue, and the
sender takes whatever is ready. Without the thread, batching at ``interval=0`` would wait for a
thousand words (twenty generations) before sending any, and a paced producer would sleep while the
model could be working. The thread holds no lock the sender needs; an error in the generator is
raised in the caller after the messages before it were sent.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from riera.errors import PlanError, RieraError, StreamError
from riera.stream.announce import announce
from riera.stream.connectors.base import Producer, open_producer

BATCH = 1000  # the most messages one send() carries
Progress = Callable[[int, float], None]  # (messages sent so far, seconds since the start)


def message(n: int, word: str) -> dict[str, str]:
    """The document's message: ``{"chave": "<n>", "valorA": "<word>", "valorB": "1"}``.

    >>> message(7, "Freezer")
    {'chave': '7', 'valorA': 'Freezer', 'valorB': '1'}
    """
    return {"chave": str(n), "valorA": word, "valorB": "1"}


def encode(msg: Mapping[str, Any], ts_ms: float) -> tuple[bytes | None, bytes, float]:
    """``(key, value, ts)`` as a :class:`~riera.stream.connectors.base.Producer` sends them: the key
    ``Chave <n>``, the value the message's JSON (UTF-8, accents kept) with ``"ts"`` added.

    >>> encode(message(1, "Fogão"), 1700000000000.5)
    (b'Chave 1', b'{"chave": "1", "valorA": "Fog\\xc3\\xa3o", "valorB": "1", "ts": 1700000000000.5}', 1700000000000.5)
    """
    record = {**msg, "ts": ts_ms}
    key = f"Chave {msg['chave']}".encode() if "chave" in msg else None
    return key, json.dumps(record, ensure_ascii=False).encode("utf-8"), ts_ms


@dataclass(frozen=True)
class Produced:
    """What :func:`produce` did: messages sent and seconds taken."""

    sent: int
    seconds: float

    @property
    def rate(self) -> float:
        """Messages per second (0 when no time passed)."""
        return self.sent / self.seconds if self.seconds > 0 else 0.0


def produce(
    target: str | Producer,
    messages: Iterable[Mapping[str, Any]],
    interval: float = 0.5,
    progress: Progress | None = None,
    *,
    batch: int = BATCH,
) -> Produced:
    """Send ``messages`` to ``target`` (a stream URL or an open producer), one every ``interval``
    seconds on a monotonic schedule (0: as fast as possible, ``batch`` at a time); stamp each with
    ``"ts"`` at send time. ``progress(sent, seconds)`` is called after every send. A URL's producer
    is opened here and closed at the end; an open producer is left open.

    >>> class Collect:  # any Producer will do; a URL such as memory://words opens one
    ...     def __init__(self): self.got = []
    ...     def send(self, messages): self.got += messages
    ...     def close(self): pass
    >>> c = Collect()
    >>> produce(c, [message(1, "Freezer"), message(2, "Microondas")], interval=0).sent
    2
    >>> [key for key, value, ts in c.got]
    [b'Chave 1', b'Chave 2']
    """
    if not (isinstance(interval, int | float) and math.isfinite(interval) and interval >= 0):
        raise PlanError(f"produce: interval must be a number of seconds ≥ 0; got {interval!r}")
    if batch < 1:
        raise PlanError(f"produce: batch must be ≥ 1; got {batch!r}")
    producer = open_producer(target) if isinstance(target, str) else target
    try:  # a URL's producer announces itself (riera.stream.announce): the dashboard lists it
        with announce(target) if isinstance(target, str) else contextlib.nullcontext():
            return _send_all(producer, _name(target), _Feed(messages), interval, progress, batch)
    finally:
        if isinstance(target, str):
            producer.close()


def _send_all(
    producer: Producer,
    name: str,
    feed: _Feed,
    interval: float,
    progress: Progress | None,
    batch: int,
) -> Produced:
    """The sending loop of :func:`produce`: wait for each message's due time, add what else is
    ready and due, stamp, send; stop the feed's thread however it ends."""
    sent = 0
    t0 = time.monotonic()
    try:
        while True:
            first = feed.get()
            if first is _DONE:
                break
            wait = t0 + sent * interval - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            pending, done = _catch_up(feed, [first], t0, sent, interval, batch)
            now_ms = time.time() * 1000
            try:
                producer.send([encode(m, now_ms) for m in pending])
            except RieraError:
                raise
            except Exception as err:  # the client's own errors (redis.ConnectionError, OSError…)
                raise StreamError(f"{name}: sending failed after {sent} messages: {err}") from err
            sent += len(pending)
            if progress is not None:
                progress(sent, time.monotonic() - t0)
            if done:
                break
    finally:
        feed.close()
    return Produced(sent, time.monotonic() - t0)


def _catch_up(
    feed: _Feed,
    pending: list[Mapping[str, Any]],
    t0: float,
    sent: int,
    interval: float,
    batch: int,
) -> tuple[list[Mapping[str, Any]], bool]:
    """Add to ``pending`` the messages that are ready and already due; True once the feed ended."""
    now = time.monotonic()
    while len(pending) < batch and (interval == 0 or t0 + (sent + len(pending)) * interval <= now):
        item = feed.get_nowait()
        if item is _EMPTY:
            break
        if item is _DONE:
            return pending, True
        pending.append(item)
    return pending, False


def _name(target: str | Producer) -> str:
    return target if isinstance(target, str) else type(target).__name__


# -- the generator's thread ------------------------------------------------------------------------

_DONE: Any = object()  # the generator is exhausted
_EMPTY: Any = object()  # nothing ready yet


@dataclass(frozen=True)
class _Failed:
    error: BaseException


class _Feed:
    """Runs a message iterator in a daemon thread feeding a bounded queue (see the module doc)."""

    def __init__(self, messages: Iterable[Mapping[str, Any]], maxsize: int = 10 * BATCH) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize)
        self._stop = threading.Event()
        self._failed: _Failed | None = None
        self._thread = threading.Thread(
            target=self._run, args=(iter(messages),), name="riera-producer-feed", daemon=True
        )
        self._thread.start()

    def _run(self, items: Iterator[Mapping[str, Any]]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the sender, which raises it
            self._put(_Failed(error))

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def get(self) -> Any:
        """The next message, waiting for it; ``_DONE`` at the end; raises the generator's error."""
        item = self._failed or self._queue.get()
        if isinstance(item, _Failed):
            raise item.error
        return item

    def get_nowait(self) -> Any:
        """The next message if one is ready, else ``_EMPTY``; an error stays queued for
        :meth:`get`, so the messages before it are sent first."""
        if self._failed is not None:
            return _EMPTY
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return _EMPTY
        if isinstance(item, _Failed):
            self._failed = item
            return _EMPTY
        return item

    def close(self) -> None:
        """Stop the thread at its next message (it is a daemon: a generator stuck in a long call
        does not keep the process alive)."""
        self._stop.set()
