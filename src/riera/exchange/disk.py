"""Disk exchange: Arrow IPC files in a spill directory, committed by rename, read memory-mapped.

The same files, names and lifecycle as the shared-memory backend (it subclasses it), in a
directory on disk (``spill_dir``, default ``<home>/spill``) instead of tmpfs: for data that does
not fit in ``/dev/shm``, and as the target of shared-memory spills. A segment is written to a
``.tmp`` name and renamed into place, so a reader never sees a half-written file; reads map the
file, so a table read soon after it was written comes from the page cache without a copy.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from riera.config import Settings
from riera.errors import ExchangeError
from riera.exchange.base import register
from riera.exchange.shm import ShmExchange


class DiskExchange(ShmExchange):
    """Arrow IPC files on disk; zero-copy reads through the page cache."""

    name = "disk"

    def __init__(self, directory: Path) -> None:
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ExchangeError(
                f"cannot create the spill directory {directory}: {err}; set RIERA_SPILL_DIR"
            ) from err
        super().__init__(directory, memcopy_threads=1)

    def _write(
        self, path: Path, size: int, schema: pa.Schema, batch_lists: list[list[pa.RecordBatch]]
    ) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            with pa.OSFile(str(tmp), "wb") as sink, ipc.new_file(sink, schema) as writer:
                for batches in batch_lists:
                    for b in batches:
                        writer.write_batch(b)
            os.replace(tmp, path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            if err.errno == errno.ENOSPC:
                raise ExchangeError(
                    f"the spill directory {self.directory} is full writing {path.name} "
                    f"({size / 2**20:,.1f} MiB); free space or set RIERA_SPILL_DIR"
                ) from err
            raise
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def _factory(settings: Settings) -> DiskExchange:
    return DiskExchange(settings.spill_path)


register("disk", _factory)
