"""Test your own dataflows the way Riera tests its own.

>>> import riera
>>> from riera import testing
>>> with testing.session(workers=2):
...     ds = riera.from_items([{"w": "a"}, {"w": "b"}, {"w": "a"}]).group_by("w").count()
...     testing.assert_rows_equal(ds, [{"w": "a", "count": 2}, {"w": "b", "count": 1}])

``session`` starts a runtime with progress bars off and shuts it down afterwards, checking that the
run left no shared-memory segment behind; ``assert_rows_equal`` compares a dataset's rows with the
rows you expect, in order or as a multiset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import riera
from riera.dataset import Dataset
from riera.runtime import Runtime


@contextlib.contextmanager
def session(workers: int = 2, **settings: Any) -> Iterator[Runtime]:
    """A runtime for the ``with`` block; fails if it leaves a shared-memory segment behind."""
    from riera.exchange.shm import list_segments

    rt = riera.init(workers=workers, progress="off", **settings)
    try:
        yield rt
    finally:
        shm_dir = rt.settings.shm_dir
        riera.shutdown()
        left = [p for p in list_segments(shm_dir) if p.name.startswith(f"riera-{os.getpid()}-")]
        if left:
            raise AssertionError(f"shared-memory segments left behind: {[p.name for p in left]}")


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in row.items()))


def assert_rows_equal(
    ds: Dataset, expected: Iterable[dict[str, Any]], *, ordered: bool = False
) -> None:
    """Run ``ds`` and compare its rows with ``expected`` (as a multiset unless ``ordered``)."""
    got = ds.collect()
    want = list(expected)
    if not ordered:
        got, want = sorted(got, key=_key), sorted(want, key=_key)
    if got != want:
        missing = [r for r in want if r not in got][:5]
        extra = [r for r in got if r not in want][:5]
        raise AssertionError(
            f"{ds.name}: {len(got)} row(s), expected {len(want)}; missing e.g. {missing}; "
            f"unexpected e.g. {extra}"
            + ("" if not ordered or missing or extra else "; same rows, different order")
        )


# -- streams -------------------------------------------------------------------------------------


def CollectSink() -> Any:
    """A stream sink keeping every committed table in memory: ``.rows()`` gives the rows."""
    from riera.stream.connectors.python import Collect

    return Collect()


def memory_stream(name: str, rows: Iterable[dict[str, Any]] = (), *, partitions: int = 1) -> str:
    """A fresh ``memory://`` stream holding ``rows`` (as JSON messages); returns its URL. Append
    more with :func:`send`."""
    from riera.stream.connectors.memory import Broker

    Broker.drop(name)
    Broker(name, partitions).close()
    url = f"memory://{name}"
    send(url, rows)
    return url


def send(url: str, rows: Iterable[dict[str, Any]], *, key: str | None = None) -> None:
    """Append ``rows`` to a stream as JSON messages (keyed by the column ``key``, if given)."""
    import json
    import time

    from riera.stream.connectors.base import open_producer

    now = time.time() * 1000
    messages = [
        (None if key is None else str(r[key]).encode(), json.dumps(r, default=str).encode(), now)
        for r in rows
    ]
    producer = open_producer(url)
    try:
        if messages:
            producer.send(messages)
    finally:
        producer.close()


def run_stream(ds: Dataset, *, idle: float = 0.3, timeout: float = 60.0, **options: Any
               ) -> list[dict[str, Any]]:  # fmt: skip
    """Run a streaming dataset until its source has been idle ``idle`` seconds; the rows its
    sink received, in order (``options`` go to ``write_stream``)."""
    import tempfile

    sink = CollectSink()
    options.setdefault("checkpoint", tempfile.mkdtemp(prefix="riera-test-stream-"))
    query = ds.write_stream(sink, stop_when_idle=idle, **options)
    if not query.await_termination(timeout):
        query.stop()
        raise AssertionError(f"the stream did not go idle within {timeout} s")
    rows: list[dict[str, Any]] = sink.rows()
    return rows
