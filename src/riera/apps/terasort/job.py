"""TeraSort on Riera's public API: generate, sort and validate gensort-format records.

- ``generate``: ``riera.range(N)`` split into P partitions → each task builds its records with the
  vectorized gensort kernels → ``write_binary`` (one ``part-NNNNN.bin`` per partition, committed
  atomically).
- ``sort``: ``read_files`` → records become two columns, a 10-byte ``key`` and the 100-byte
  ``record`` (a zero-copy view of the file bytes) → ``sort("key")`` (sampled range partitioning, local
  sort per partition) → ``write_binary``. Output file *i* holds range *i*, so the concatenation of
  the files in name order is globally sorted.
- ``validate``: one summary per file (first/last key, order violations, duplicates, CRC32 checksum
  sum, like ``valsort``), combined in file order with the boundaries between files checked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import riera
from riera.apps.terasort import gensort


def _gen_batch(table: pa.Table, ascii: bool, seed: int) -> pa.Table:
    ids = table.column("id")
    if len(ids) == 0:
        return pa.table({"record": pa.array([], pa.binary(gensort.RECORD_SIZE))})
    start = ids[0].as_py()
    recs = gensort.make_records(start, len(ids), ascii=ascii, seed=seed)
    arr = pa.Array.from_buffers(
        pa.binary(gensort.RECORD_SIZE), len(recs), [None, pa.py_buffer(recs)]
    )
    return pa.table({"record": arr})


def generate(
    out_dir: str | os.PathLike[str],
    records: int,
    *,
    partitions: int | None = None,
    ascii: bool = False,
    seed: int = 0,
    mode: str = "overwrite",
) -> dict[str, Any]:
    """Write ``records`` gensort records into ``partitions`` files under ``out_dir``."""
    if partitions is None:
        partitions = max(
            riera.get_runtime().settings.workers, -(-records * gensort.RECORD_SIZE // (128 * 2**20))
        )
    ds = riera.range(records, partitions=partitions).map_batches(
        _gen_batch, batch_format="pyarrow", ascii=ascii, seed=seed
    )
    return ds.write_binary(out_dir, column="record", mode=mode)


def parse_records(table: pa.Table) -> pa.Table:
    """``read_files`` rows → ``key`` (fixed 10 bytes, copied) and ``record`` (zero-copy view)."""
    blobs = table.column("bytes")
    chunks = []
    for chunk in blobs.chunks:
        if len(chunk) == 0:
            continue
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        data = chunk.buffers()[2]
        for path, size in zip(
            table.column("path").to_pylist(), table.column("size").to_pylist(), strict=False
        ):
            if size % gensort.RECORD_SIZE:
                raise ValueError(
                    f"{path}: {size} bytes is not a multiple of "
                    f"{gensort.RECORD_SIZE}; not a gensort file"
                )
        raw = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]]
        chunks.append(raw)
    raw = (
        np.concatenate(chunks)
        if len(chunks) > 1
        else (chunks[0] if chunks else np.empty(0, np.uint8))
    )
    recs = gensort.records_view(raw)
    n = len(recs)
    keys = np.ascontiguousarray(recs[:, : gensort.KEY_SIZE])
    return pa.table(
        {
            "key": pa.Array.from_buffers(
                pa.binary(gensort.KEY_SIZE), n, [None, pa.py_buffer(keys)]
            ),
            "record": pa.Array.from_buffers(
                pa.binary(gensort.RECORD_SIZE), n, [None, pa.py_buffer(recs)]
            ),
        }
    )


def sort(
    in_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    partitions: int | None = None,
    mode: str = "overwrite",
) -> dict[str, Any]:
    """Sort the records under ``in_dir`` into ``partitions`` range-partitioned files."""
    parts = partitions or riera.get_runtime().settings.workers
    ds = (
        riera.read_files(in_dir)
        .map_batches(parse_records, batch_format="pyarrow")
        .sort("key", partitions=parts)
        .select("record")
    )
    return ds.write_binary(out_dir, column="record", mode=mode)


def _summarize_batch(table: pa.Table) -> pa.Table:
    rows = []
    blobs = table.column("bytes")
    for i, path in enumerate(table.column("path").to_pylist()):
        data = blobs[i].as_buffer()
        try:
            recs = gensort.records_view(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from err
        s = gensort.summarize(recs)
        rows.append(
            {
                "path": path,
                "records": s.records,
                "checksum": f"{s.checksum:032x}",
                "first_key": s.first_key,
                "last_key": s.last_key,
                "unordered": s.unordered,
                "duplicates": s.duplicates,
                "first_unordered": s.first_unordered,
            }
        )
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("records", pa.int64()),
            ("checksum", pa.string()),
            ("first_key", pa.binary()),
            ("last_key", pa.binary()),
            ("unordered", pa.int64()),
            ("duplicates", pa.int64()),
            ("first_unordered", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


@dataclass(frozen=True)
class Validation:
    report: gensort.ValidationReport
    files: int


def validate(in_dir: str | os.PathLike[str]) -> Validation:
    """Check global order, count records and sum per-record CRC32s (valsort's checksum)."""
    rows = (
        riera.read_files(in_dir, partition_bytes=1)
        .map_batches(_summarize_batch, batch_format="pyarrow")
        .collect()
    )
    rows.sort(key=lambda r: r["path"])
    summaries = [
        gensort.PartitionSummary(
            records=r["records"],
            checksum=int(r["checksum"], 16),
            first_key=r["first_key"],
            last_key=r["last_key"],
            unordered=r["unordered"],
            duplicates=r["duplicates"],
            first_unordered=r["first_unordered"],
        )
        for r in rows
    ]
    names = [Path(r["path"]).name for r in rows]
    return Validation(gensort.combine(summaries, names), len(rows))
