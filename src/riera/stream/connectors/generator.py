"""In-process generator sources: a Python function makes each partition's records.

``riera.stream.from_generator(make, partitions=P)`` calls ``make(partition)`` and reads what it
yields: dicts (rows) or Arrow record batches/tables. A background thread per partition pulls the
generator into a bounded queue, so a slow generator (a language model writing comments) never
blocks the engine's loop and a fast one cannot run ahead without bound.

The position of a partition is the number of records consumed from it. When ``make`` yields the
same records again for the same partition (``deterministic=True``, the default), the source is
replayable: a restarted query calls ``make`` again and skips what was committed — exactly-once.
Records come to the engine as Arrow tables (``poll_table``), never as bytes to decode.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa

from riera.errors import PlanError, StreamError
from riera.stream.connectors import base

CHUNK = 1024


class _Feeder:
    """Pulls one partition's generator into a bounded queue of chunks, in a thread."""

    def __init__(
        self, make: Callable[[int], Iterable[Any]], part: int, skip: int, depth: int
    ) -> None:
        self.queue: queue.Queue[tuple[Any, float] | BaseException | None] = queue.Queue(depth)
        self.done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, part, skip),
                                        name=f"riera-generator-{part}", daemon=True)  # fmt: skip
        self._thread.start()

    def _put(self, item: tuple[Any, float] | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, make: Callable[[int], Iterable[Any]], part: int, skip: int) -> None:
        try:
            it: Iterator[Any] = iter(make(part))
            rows: list[dict[str, Any]] = []
            for item in it:
                if isinstance(item, pa.RecordBatch | pa.Table):
                    if rows and not self._put((rows, time.time() * 1000)):
                        return
                    rows = []
                    table = item if isinstance(item, pa.Table) else pa.Table.from_batches([item])
                    if skip >= table.num_rows:
                        skip -= table.num_rows
                        continue
                    if not self._put((table.slice(skip), time.time() * 1000)):
                        return
                    skip = 0
                    continue
                if skip:
                    skip -= 1
                    continue
                rows.append(item)
                if len(rows) >= CHUNK:
                    if not self._put((rows, time.time() * 1000)):
                        return
                    rows = []
            if rows:
                self._put((rows, time.time() * 1000))
            self._put(None)
        except BaseException as err:  # the generator failed: the engine raises it
            self._put(err)

    def stop(self) -> None:
        self._stop.set()


class GeneratorReader:
    def __init__(self, source: GeneratorSource, start: dict[int, Any]) -> None:
        self.source = source
        self._pos = {p: int(v or 0) for p, v in start.items()}
        self._feeders = {p: _Feeder(source.make, p, self._pos[p], source.depth) for p in self._pos}
        self._held: dict[int, tuple[Any, float]] = {}  # a chunk taken but not wholly consumed

    def _next_chunk(self, part: int, wait: float) -> tuple[Any, float] | None:
        if part in self._held:
            return self._held.pop(part)
        feeder = self._feeders[part]
        if feeder.done:
            return None
        try:
            item = feeder.queue.get(timeout=wait) if wait > 0 else feeder.queue.get_nowait()
        except queue.Empty:
            return None
        if item is None:
            feeder.done = True
            return None
        if isinstance(item, BaseException):
            feeder.done = True
            raise StreamError(f"{self.source.url}: the generator of partition {part} failed: "
                              f"{type(item).__name__}: {item}") from item  # fmt: skip
        return item

    def poll_table(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
                   ) -> tuple[pa.Table, np.ndarray, np.ndarray] | None:  # fmt: skip
        deadline = time.monotonic() + timeout_s
        tables: list[pa.Table] = []
        parts: list[np.ndarray] = []
        stamps: list[np.ndarray] = []
        got = 0
        while got < max_records:
            progressed = False
            waiting = []
            for part in self._pos:
                bound = None if upto is None else upto.get(part)
                if upto is not None and (bound is None or self._pos[part] >= int(bound)):
                    continue
                if got >= max_records:
                    break
                chunk = self._next_chunk(part, 0.0)
                if chunk is None:
                    if not self._feeders[part].done:
                        waiting.append(part)
                    continue
                got += self._consume(part, chunk, max_records - got, bound, tables, parts, stamps)
                progressed = True
            if progressed:
                continue
            remaining = deadline - time.monotonic()
            if tables or not waiting or remaining <= 0:
                break
            chunk = self._next_chunk(waiting[0], min(remaining, 0.005))  # wait a little
            if chunk is not None:
                self._held[waiting[0]] = chunk
        if not tables:
            return None
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise StreamError(
                f"{self.source.url}: the generator's records disagree on types: {err}"
            ) from err
        return table, np.concatenate(parts), np.concatenate(stamps)

    def _consume(self, part: int, chunk: tuple[Any, float], room: int, bound: Any,
                 tables: list[pa.Table], parts: list[np.ndarray], stamps: list[np.ndarray]) -> int:  # fmt: skip
        data, made = chunk
        n = data.num_rows if isinstance(data, pa.Table) else len(data)
        take = min(n, room)
        if bound is not None:
            take = min(take, int(bound) - self._pos[part])
        if take < n:
            rest = data.slice(take) if isinstance(data, pa.Table) else data[take:]
            self._held[part] = (rest, made)
            data = data.slice(0, take) if isinstance(data, pa.Table) else data[:take]
        table = data if isinstance(data, pa.Table) else _rows(data)
        tables.append(table)
        parts.append(np.full(take, part, np.int64))
        if "ts" in table.column_names and pa.types.is_floating(table.schema.field("ts").type):
            stamps.append(table.column("ts").to_numpy(zero_copy_only=False).astype(np.float64))
        else:
            stamps.append(np.full(take, made, np.float64))
        self._pos[part] += take
        return take

    def poll(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
             ) -> list[base.Message]:  # fmt: skip
        raise StreamError(f"{self.source.url}: a generator source is read with poll_table")

    def positions(self) -> dict[int, Any]:
        return dict(self._pos)

    def close(self) -> None:
        for f in self._feeders.values():
            f.stop()


def _rows(rows: list[dict[str, Any]]) -> pa.Table:
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise StreamError(f"generator source: rows that cannot form one table: {err}") from err


class GeneratorSource:
    """See the module docstring; made by :func:`riera.stream.from_generator`."""

    def __init__(self, make: Callable[[int], Iterable[Any]], partitions: int, name: str,
                 deterministic: bool, depth: int) -> None:  # fmt: skip
        self.make, self.n, self.name = make, partitions, name
        self.url = f"python://generator/{name}"
        self.replayable = deterministic
        self.depth = depth

    def partitions(self) -> int:
        return self.n

    def reader(self, start: dict[int, Any]) -> GeneratorReader:
        return GeneratorReader(self, start)

    def release(self, upto: dict[int, Any]) -> None:
        pass

    def lag(self, positions: dict[int, Any]) -> dict[int, int | None]:
        return dict.fromkeys(positions)

    def close(self) -> None:
        pass


def from_generator(
    make: Callable[[int], Iterable[Any]],
    *,
    partitions: int = 1,
    name: str | None = None,
    deterministic: bool = True,
    queue_chunks: int = 64,
) -> str:
    """Register an in-process generator source; returns its URL for :func:`riera.read_stream`.

    ``make(partition)`` returns an iterable of dicts or Arrow batches. ``name`` (default: the
    function's qualified name) makes the URL, so a restarted program finds its checkpoint.

    >>> import riera
    >>> from riera.stream import from_generator
    >>> url = from_generator(lambda p: ({"n": i} for i in range(3)), name="doc-gen")
    >>> url
    'python://generator/doc-gen'
    """
    if not callable(make):
        raise PlanError(f"from_generator: expected a function of the partition; got {make!r}")
    if not isinstance(partitions, int) or partitions < 1:
        raise PlanError(
            f"from_generator: partitions must be a positive integer; got {partitions!r}"
        )
    label = name or getattr(make, "__qualname__", "generator").replace("<", "").replace(">", "")
    source = GeneratorSource(make, partitions, label, deterministic, queue_chunks)
    base.register_object(source.url, source)
    return source.url
