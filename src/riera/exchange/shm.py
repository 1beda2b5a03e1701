"""Shared-memory exchange: Arrow IPC files in a tmpfs directory (``/dev/shm``), mapped zero-copy.

Why files in ``/dev/shm`` rather than ``multiprocessing.shared_memory``: a file is a named segment any
process can open, ``pyarrow.memory_map`` reads it without copying, and the segment can be unlinked
while readers still hold it mapped (the memory lives until the last mapping goes), so a driver can
release a run's segments as soon as it has mapped its results. ``SharedMemory`` also registers every
segment with a resource tracker that unlinks or warns at the wrong times across processes.

Write path (one copy of the payload):
1. the IPC size is computed by writing into a ``MockOutputStream`` (no copy);
2. the file is created and ``posix_fallocate``'d to that size: tmpfs reserves the pages now, so a full
   ``/dev/shm`` is an ``ENOSPC`` we turn into :class:`ShmFullError` (space needed, space free, fix),
   never a ``SIGBUS`` on a page fault later;
3. the file is mapped and the IPC stream written into the mapping by a multi-threaded memcopy.

Read path: ``pa.memory_map`` + ``ipc.open_file``; record batches point into the mapping.

Lifecycle. Segment names are ``riera-<owner pid>-<run>-<stage>-t<task>-a<attempt>.arrow``. The
driver releases a stage's segments after the last stage reading them finishes, sweeps a failed task
attempt's prefix before retrying it, and sweeps the whole run prefix when the run ends in any way.
Each driver holds an ``flock`` on ``riera-<pid>.lock``; at start-up, any lock that can be taken
belongs to a dead driver (``kill -9``), and its segments are removed (:func:`sweep_dead_owners`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import mmap
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from riera.config import Settings
from riera.errors import ExchangeError, ShmFullError
from riera.exchange.base import Exchange, Ref, SegmentKey, register

log = logging.getLogger(__name__)

SUFFIX = ".arrow"
_RESERVE = 64 * 2**20  # spill rather than leave /dev/shm with less than this free
_SEGMENT_RE = re.compile(r"^riera-(\d+)-")
_LOCK_RE = re.compile(r"^riera-(\d+)\.lock$")
_owner_locks: dict[tuple[str, int], tuple[int, int]] = {}  # (dir, pid) -> (fd, claims)


class ShmExchange:
    """Arrow IPC segments in a tmpfs directory; zero-copy reads."""

    name = "shm"
    suffix = SUFFIX
    zero_copy = True  # a read maps the segment: slicing a stored table costs nothing

    def __init__(
        self,
        directory: Path,
        memcopy_threads: int = 1,
        budget: int | None = None,
        spill: Callable[[], Exchange] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.memcopy_threads = memcopy_threads
        self.budget = budget  # bytes one driver's segments may hold; None: no limit
        self._spill_factory = spill
        self._spill: Exchange | None = None
        if not self.directory.is_dir():
            raise ExchangeError(
                f"shared-memory directory {self.directory} does not exist; set RIERA_SHM_DIR to a "
                f"tmpfs mount (e.g. /dev/shm) or choose another exchange"
            )

    # -- writing -------------------------------------------------------------------------------
    def put(self, table: pa.Table, key: SegmentKey) -> Ref:
        return self.put_partitioned([table], key)[0]

    def put_partitioned(self, tables: Sequence[pa.Table], key: SegmentKey) -> list[Ref]:
        if not tables:
            return []
        schema = tables[0].schema
        if any(pa.types.is_dictionary(f.type) for f in schema) and len(tables) > 1:
            # The IPC file format cannot replace dictionaries between batches: one segment each.
            return [
                self.put_partitioned(
                    [t], SegmentKey(key.owner, key.run, f"{key.stage}p{i}", key.task, key.attempt)
                )[0]
                for i, t in enumerate(tables)
            ]
        batch_lists = []
        for t in tables:
            if t.schema != schema:
                t = t.cast(schema)
            batch_lists.append(t.to_batches())
        if any(pa.types.is_dictionary(f.type) for f in schema):
            batch_lists = _one_dictionary(schema, batch_lists)
        path = self.directory / f"{key.task_prefix}{self.suffix}"
        size = _ipc_size(schema, batch_lists)
        if self._spill_factory is not None and self._over_budget(size, key.owner):
            return self._spilled().put_partitioned(tables, key)
        try:
            self._write(path, size, schema, batch_lists)
        except ShmFullError:
            if self._spill_factory is None:
                raise
            log.warning("shared memory full writing %s; spilling it to disk", path.name)
            return self._spilled().put_partitioned(tables, key)
        refs, start = [], 0
        for t, batches in zip(tables, batch_lists, strict=True):
            refs.append(
                Ref(self.name, str(path), t.num_rows, t.nbytes, (start, start + len(batches)))
            )
            start += len(batches)
        return refs

    def _write(
        self, path: Path, size: int, schema: pa.Schema, batch_lists: list[list[pa.RecordBatch]]
    ) -> None:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as err:
                if err.errno in (errno.ENOSPC, errno.EFBIG):
                    st = os.statvfs(self.directory)
                    raise ShmFullError(
                        str(path), size, st.f_bavail * st.f_frsize, str(self.directory)
                    ) from err
                raise
            mapping = mmap.mmap(
                fd, size, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE
            )
        except BaseException:
            os.close(fd)
            _unlink(path)
            raise
        os.close(fd)
        try:
            buf = pa.py_buffer(mapping)
            sink = pa.FixedSizeBufferWriter(buf)
            if self.memcopy_threads > 1:
                sink.set_memcopy_threads(self.memcopy_threads)
                sink.set_memcopy_threshold(1 << 20)
            with ipc.new_file(sink, schema) as writer:
                for batches in batch_lists:
                    for b in batches:
                        writer.write_batch(b)
            sink.close()
            del writer, sink, buf
        except BaseException:
            _unlink(path)
            raise
        finally:
            try:
                mapping.close()
            except BufferError:  # a view still exists; the GC unmaps it
                pass

    # -- spilling ------------------------------------------------------------------------------
    def _over_budget(self, size: int, owner: int) -> bool:
        """Whether ``size`` more bytes would pass the budget or crowd the free space."""
        st = os.statvfs(self.directory)
        if size + _RESERVE > st.f_bavail * st.f_frsize:
            return True
        if self.budget is None:
            return False
        # This driver's segments are part of what the whole file system holds: when even that
        # fits, no need to add up our own (a directory scan per write made a stage of many small
        # tasks quadratic: 0.8 ms per task for 400 tasks).
        if (st.f_blocks - st.f_bfree) * st.f_frsize + size <= self.budget:
            return False
        used = 0
        with os.scandir(self.directory) as it:
            for entry in it:
                if entry.name.startswith(f"riera-{owner}-"):
                    with contextlib.suppress(FileNotFoundError):
                        used += entry.stat().st_blocks * 512
        return used + size > self.budget

    def _spilled(self) -> Exchange:
        if self._spill is None:
            assert self._spill_factory is not None
            self._spill = self._spill_factory()
        return self._spill

    # -- reading -------------------------------------------------------------------------------
    def get(self, ref: Ref) -> pa.Table:
        if ref.backend != self.name:
            return self._spilled().get(ref)
        try:
            source = pa.memory_map(ref.location, "r")
        except FileNotFoundError as err:
            raise ExchangeError(
                f"segment {ref.location} is gone: it was released before this read "
                f"(or swept as belonging to a dead driver)"
            ) from err
        reader = ipc.open_file(source)
        if ref.batches is None:
            return reader.read_all()
        start, stop = ref.batches
        if start == 0 and stop == reader.num_record_batches:
            return reader.read_all()
        return pa.Table.from_batches(
            [reader.get_batch(i) for i in range(start, stop)], schema=reader.schema
        )

    # -- lifecycle -----------------------------------------------------------------------------
    def release(self, refs: Sequence[Ref]) -> None:
        mine = [r for r in refs if r.backend == self.name]
        for loc in {r.location for r in mine}:
            _unlink(Path(loc))
        if len(mine) < len(refs):
            self._spilled().release([r for r in refs if r.backend != self.name])

    def release_task(self, key: SegmentKey) -> int:
        spilled = self._spill.release_task(key) if self._spill is not None else 0
        return self._release_prefix(key.task_prefix) + spilled

    def release_run(self, key: SegmentKey) -> int:
        spilled = self._spill.release_run(key) if self._spill is not None else 0
        return self._release_prefix(key.run_prefix) + spilled

    def _release_prefix(self, prefix: str) -> int:
        n = 0
        for p in self.directory.glob(f"{prefix}*{self.suffix}"):
            n += _unlink(p)
        return n


def claim_owner(directory: Path) -> None:
    """Mark this process as a live owner of segments in ``directory`` (a held ``flock``).

    Claims are counted: a new runtime claims before the one it replaces releases, and the lock
    goes only with the last release."""
    key = (str(directory), os.getpid())
    if key in _owner_locks:
        fd, count = _owner_locks[key]
        _owner_locks[key] = (fd, count + 1)
        return
    fd = os.open(directory / f"riera-{key[1]}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _owner_locks[key] = (fd, 1)


def release_owner(directory: Path) -> None:
    key = (str(directory), os.getpid())
    held = _owner_locks.get(key)
    if held is None:
        return
    fd, count = held
    if count > 1:
        _owner_locks[key] = (fd, count - 1)
        return
    del _owner_locks[key]
    _unlink(directory / f"riera-{key[1]}.lock")
    os.close(fd)


def list_segments(directory: Path) -> list[Path]:
    """Every Riera segment in ``directory`` (Arrow IPC, pickle or temporary files)."""
    return sorted(
        p
        for p in Path(directory).glob("riera-*")
        if _SEGMENT_RE.match(p.name) and not p.name.endswith(".lock")
    )


def sweep_dead_owners(directory: Path) -> int:
    """Remove segments whose driver is gone (lock takeable, or no lock and pid not running)."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    dead: set[int] = set()
    live: set[int] = set()
    for lock in directory.glob("riera-*.lock"):
        m = _LOCK_RE.match(lock.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid == os.getpid():
            live.add(pid)
            continue
        try:
            fd = os.open(lock, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            live.add(pid)
        else:
            dead.add(pid)
            _unlink(lock)
        finally:
            os.close(fd)
    removed = 0
    for seg in list_segments(directory):
        m = _SEGMENT_RE.match(seg.name)
        if not m:
            continue
        pid = int(m.group(1))
        if pid in live:
            continue
        if pid in dead or not _pid_alive(pid):
            removed += _unlink(seg)
    if removed:
        log.warning(
            "removed %d shared-memory segment(s) left by dead Riera drivers in %s",
            removed,
            directory,
        )
    return removed


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _one_dictionary(
    schema: pa.Schema, batch_lists: list[list[pa.RecordBatch]]
) -> list[list[pa.RecordBatch]]:
    """The batches with one dictionary per dictionary column: an IPC *file* holds one (no
    replacements), but partitions (or chunks of one) may carry different dictionaries."""
    flat = [b for batches in batch_lists for b in batches]
    if len(flat) < 2:
        return batch_lists
    unified = pa.Table.from_batches(flat, schema).unify_dictionaries()
    out, start = [], 0
    for batches in batch_lists:
        rows = sum(b.num_rows for b in batches)
        out.append(unified.slice(start, rows).to_batches() if rows else batches)
        start += rows
    return out


def _ipc_size(schema: pa.Schema, batch_lists: list[list[pa.RecordBatch]]) -> int:
    mock = pa.MockOutputStream()
    with ipc.new_file(mock, schema) as writer:
        for batches in batch_lists:
            for b in batches:
                writer.write_batch(b)
    return int(mock.size())


def _unlink(path: Path) -> int:
    try:
        os.unlink(path)
        return 1
    except FileNotFoundError:
        return 0


def _factory(settings: Settings) -> ShmExchange:
    def spill() -> Exchange:
        from riera.exchange.disk import DiskExchange

        return DiskExchange(settings.spill_path)

    return ShmExchange(
        settings.shm_dir,
        settings.memcopy_threads,
        settings.shm_budget,
        spill if settings.spill else None,
    )


register("shm", _factory)
