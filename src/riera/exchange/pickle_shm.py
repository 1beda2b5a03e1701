"""``shm-pickle``: pickled tables in shared memory — document 002's baseline, for comparison.

The document's alternative to Arrow: the producer pickles (protocol 5) into a shared-memory
block, the consumer unpickles. Pickle copies on both sides: serialising builds the byte string
(one copy) that is then written into the segment (a second), and reading copies the bytes out and
unpickles them into new buffers. Riera keeps it as a backend so the exchange study can measure the
difference in the same run; it is never the default.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from riera.config import Settings
from riera.errors import ExchangeError, ShmFullError
from riera.exchange.base import PerPartitionObjects, Ref, SegmentKey, register
from riera.kernels import arrowtypes  # a leaf module: pyarrow and riera.errors only


class PickleShmExchange(PerPartitionObjects):
    """One pickle (protocol 5) file per partition in the shared-memory directory."""

    name = "shm-pickle"
    suffix = ".pkl"

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ExchangeError(f"shared-memory directory {self.directory} does not exist")

    def put_partition(self, table: pa.Table, key: SegmentKey, partition: int) -> Ref:
        if table.get_total_buffer_size() > 2 * table.nbytes + 4096:
            # A slice pickles with its parent's whole buffers; copy out just its rows first.
            rows = np.arange(table.num_rows)
            table = pa.Table.from_arrays(
                [arrowtypes.take_view(c, rows) if arrowtypes.holds_views(c.type)
                 else c.take(pa.array(rows)) for c in table.columns],
                schema=table.schema,
            )  # fmt: skip
        data = pickle.dumps(table, protocol=5)
        path = self.directory / f"{key.task_prefix}-p{partition}{self.suffix}"
        try:
            with open(path, "xb") as fh:
                fh.write(data)
        except OSError as err:
            path.unlink(missing_ok=True)
            if err.errno == 28:  # ENOSPC
                st = os.statvfs(self.directory)
                raise ShmFullError(
                    str(path), len(data), st.f_bavail * st.f_frsize, str(self.directory)
                ) from err
            raise
        return Ref(self.name, str(path), table.num_rows, table.nbytes)

    def get(self, ref: Ref) -> pa.Table:
        try:
            with open(ref.location, "rb") as fh:
                table: pa.Table = pickle.loads(fh.read())
        except FileNotFoundError as err:
            raise ExchangeError(f"segment {ref.location} is gone: it was released") from err
        return table

    def release(self, refs: Sequence[Ref]) -> None:
        for r in refs:
            Path(r.location).unlink(missing_ok=True)

    def release_task(self, key: SegmentKey) -> int:
        return self._release(key.task_prefix)

    def release_run(self, key: SegmentKey) -> int:
        return self._release(key.run_prefix)

    def _release(self, prefix: str) -> int:
        n = 0
        for p in self.directory.glob(f"{prefix}*{self.suffix}"):
            p.unlink(missing_ok=True)
            n += 1
        return n


def _factory(settings: Settings) -> PickleShmExchange:
    return PickleShmExchange(settings.shm_dir)


register("shm-pickle", _factory)
