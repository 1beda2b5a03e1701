"""The MapReduce study's data (generator and verifier) and the job as each peer engine runs it.

Every engine of ``riera bench mapreduce`` reads the same input and must produce the same output:

- **Input**: CSV files with a ``key,value`` header and lines of exactly :data:`LINE_LEN` bytes:
  a 10-character key from a 64-character alphabet that needs no quoting, a comma, an 88-character
  value and ``\\n``: gensort records converted (:func:`make_lines`, :func:`generate`).
- **Output**: a directory of Parquet files with the string columns ``key`` and ``value``, sorted by
  ``key`` (byte order), the files' key ranges in file-name order.

:func:`verify_output` reads an output directory back (untimed) and checks it: each file sorted,
file boundaries in order, no nulls, every key and value of the expected length, and the row count
and an order-independent checksum of the rows (:func:`row_checksum`) equal to the input's — so a
lost, duplicated or altered row is caught, not only a wrong order.

The peers run in a child process each (``python -m riera_bench.peers SPEC.json``), one per engine
and process count, so that no engine's threads, JVM or daemons outlive its measurement or disturb
the next one. The child starts the engine (timed apart), does one untimed warm-up job on the first
input file, then the timed runs, verifying each output; it writes its results as JSON to the path
named in the spec after every step, so a timeout still leaves the finished runs.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

KEY_LEN = 10
VALUE_LEN = 88
LINE_LEN = KEY_LEN + 1 + VALUE_LEN + 1
HEADER = b"key,value\n"
# 64 characters, in byte order; none of them needs quoting in CSV.
ALPHABET = b"-0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"

PEERS = ("lithops", "dask", "ray", "spark", "polars", "duckdb")
INSTALL_HINT = "not installed (pip install 'riera-bench[peers]')"
# Modules each peer needs (checked with importlib.util.find_spec, without importing them).
PEER_MODULES: dict[str, tuple[str, ...]] = {
    "lithops": ("lithops",),
    "dask": ("dask", "distributed"),
    "ray": ("ray",),
    "spark": ("pyspark",),
    "polars": ("polars",),
    "duckdb": ("duckdb",),
}
PEER_LABELS = {
    "lithops": "Lithops (localhost)",
    "dask": "Dask (distributed)",
    "ray": "Ray Data",
    "spark": "PySpark",
    "polars": "Polars",
    "duckdb": "DuckDB",
}

# -- checksum and verification -----------------------------------------------------------------------

_M64 = (1 << 64) - 1
_WORDS = 2 + VALUE_LEN // 8  # key padded to 16 bytes (2 words) + value (11 words)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser on a uint64 array (in place)."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


_WEIGHTS = _mix64(np.arange(1, _WORDS + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | 1


def row_checksum(keys: np.ndarray, values: np.ndarray) -> int:
    """Order-independent checksum of rows: the sum (mod 2**64) of a 64-bit hash of each row.

    ``keys`` is an ``(n, KEY_LEN)`` and ``values`` an ``(n, VALUE_LEN)`` uint8 array.
    """
    n = keys.shape[0]
    if n == 0:
        return 0
    words = np.zeros((n, _WORDS * 8), dtype=np.uint8)
    words[:, :KEY_LEN] = keys
    words[:, 16:] = values
    w = words.view(np.uint64)
    h = (w * _WEIGHTS).sum(axis=1, dtype=np.uint64)  # wraps mod 2**64
    return int(_mix64(h).sum(dtype=np.uint64))


def _fixed_bytes(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray | None:
    """The bytes of a string column whose every value is ``width`` long, as ``(n, width)``."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_string_view(arr.type) or pa.types.is_binary_view(arr.type):
        arr = arr.cast(pa.large_binary())
    n = len(arr)
    if n == 0:
        return np.zeros((0, width), dtype=np.uint8)
    lengths = pc.binary_length(arr)
    bounds = pc.min_max(lengths)
    if bounds["min"].as_py() != width or bounds["max"].as_py() != width:
        return None
    offsets_type = np.int64 if arr.type in (pa.large_string(), pa.large_binary()) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=offsets_type)[arr.offset : arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    return data.reshape(n, width)


@dataclass
class FileSummary:
    name: str
    rows: int = 0
    first: str | None = None
    last: str | None = None
    disorder: int = 0  # adjacent pairs out of order inside the file
    checksum: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Verification:
    """What :func:`verify_output` found; ``ok`` when there are no problems."""

    rows: int = 0
    checksum: int = 0
    files: int = 0
    order: str = "file names"  # how the files were ordered: "file names" or "first keys"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def expect(self, rows: int, checksum: int) -> Verification:
        """Add problems if the row count or checksum differ from the input's; returns self."""
        if self.rows != rows:
            self.problems.append(f"{self.rows:,} rows instead of the input's {rows:,}")
        elif self.checksum != checksum:
            self.problems.append(
                f"row checksum {self.checksum:016x} differs from the input's {checksum:016x} "
                f"(rows altered, lost or duplicated)"
            )
        return self


def _summarize(path: Path) -> FileSummary:
    s = FileSummary(path.name)
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        s.problems.append(f"{path.name}: unreadable Parquet ({type(e).__name__}: {e})")
        return s
    names = pf.schema_arrow.names
    missing = [c for c in ("key", "value") if c not in names]
    if missing:
        s.problems.append(f"{path.name}: no column(s) {missing} (columns {names})")
        return s
    prev: str | None = None
    total = 0
    for batch in pf.iter_batches(batch_size=1 << 20, columns=["key", "value"]):
        key, value = batch.column(0), batch.column(1)
        if batch.num_rows == 0:
            continue
        if key.null_count or value.null_count:
            s.problems.append(f"{path.name}: null keys or values")
            return s
        kb, vb = _fixed_bytes(key, KEY_LEN), _fixed_bytes(value, VALUE_LEN)
        if kb is None or vb is None:
            s.problems.append(
                f"{path.name}: keys or values not {KEY_LEN} and {VALUE_LEN} characters long"
            )
            return s
        total = (total + row_checksum(kb, vb)) & _M64
        if batch.num_rows > 1:
            s.disorder += pc.sum(pc.less(key.slice(1), key.slice(0, batch.num_rows - 1))).as_py()
        first, last = key[0].as_py(), key[batch.num_rows - 1].as_py()
        if prev is not None and first < prev:
            s.disorder += 1
        if s.first is None:
            s.first = first
        prev = last
        s.rows += batch.num_rows
    s.last = prev
    s.checksum = total
    if s.disorder:
        s.problems.append(f"{path.name}: {s.disorder:,} adjacent row pair(s) out of key order")
    return s


def _boundary_errors(files: Sequence[FileSummary]) -> list[str]:
    errors = []
    prev: FileSummary | None = None
    for f in files:
        if f.rows == 0:
            continue
        if (
            prev is not None
            and f.first is not None
            and prev.last is not None
            and f.first < prev.last
        ):
            errors.append(
                f"{f.name} starts at key {f.first!r}, before {prev.name} ends ({prev.last!r})"
            )
        prev = f
    return errors


def output_files(out: Path) -> list[Path]:
    """The Parquet files of an output directory (hidden, ``_``-prefixed and temporary skipped)."""
    found = []
    for p in out.rglob("*.parquet"):
        rel = p.relative_to(out).parts
        if any(part.startswith(("_", ".")) for part in rel):
            continue
        found.append(p)
    return sorted(found, key=lambda p: p.relative_to(out).as_posix())


def verify_output(out: str | os.PathLike[str]) -> Verification:
    """Read an output directory back and check it (see the module docstring)."""
    out = Path(out)
    v = Verification()
    if not out.is_dir():
        v.problems.append(f"no output directory {out}")
        return v
    paths = output_files(out)
    v.files = len(paths)
    if not paths:
        v.problems.append(f"no Parquet files under {out}")
        return v
    summaries = [_summarize(p) for p in paths]
    for s in summaries:
        v.rows += s.rows
        v.checksum = (v.checksum + s.checksum) & _M64
        v.problems += s.problems[:3]
    if v.problems:
        return v
    errors = _boundary_errors(summaries)
    if errors:
        by_key = sorted((s for s in summaries if s.rows), key=lambda s: s.first or "")
        if _boundary_errors(by_key):
            v.problems += errors[:3]
        else:
            v.order = "first keys"  # sorted, but the file names do not follow the key ranges
    return v


# -- input data ------------------------------------------------------------------------------------


@dataclass
class InputSet:
    directory: Path
    files: list[str]
    nbytes: int
    rows: int
    checksum: int
    first_rows: int
    first_checksum: int
    gen_seconds: float = 0.0


_ALPHA = np.frombuffer(ALPHABET, dtype=np.uint8)


def make_lines(start: int, count: int) -> np.ndarray:
    """CSV lines for gensort records ``start .. start + count - 1``: ``(count, 100)`` uint8.

    Key: the record's 10 random key bytes mapped onto :data:`ALPHABET`. Value (88 characters): the
    record number in 32 hex digits, gensort's 48 filler letters, and the number's last 8 digits.

    >>> bytes(make_lines(0, 2)[1])
    b'7oxc7HpDb9,00000000000000000000000000000001AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAABBBB00000001\\n'
    """
    from riera.apps.terasort import gensort

    rec = gensort.make_records(start, count)
    out = np.empty((count, LINE_LEN), dtype=np.uint8)
    out[:, :KEY_LEN] = _ALPHA[rec[:, :KEY_LEN] & 63]
    out[:, KEY_LEN] = ord(",")
    out[:, 11:43] = rec[:, 12:44]
    out[:, 43:91] = rec[:, 48:96]
    out[:, 91:99] = rec[:, 36:44]
    out[:, 99] = ord("\n")
    return out


def _lines_checksum(lines: np.ndarray) -> int:
    keys = np.ascontiguousarray(lines[:, :KEY_LEN])
    values = np.ascontiguousarray(lines[:, KEY_LEN + 1 : KEY_LEN + 1 + VALUE_LEN])
    return row_checksum(keys, values)


def generate(directory: Path, nbytes: int, files: int, chunk: int = 1 << 20) -> InputSet:
    """Write ``nbytes // 100`` rows as ``files`` CSV files (with a header) under ``directory``."""
    rows = max(1, nbytes // LINE_LEN)
    files = max(1, min(files, rows))
    directory.mkdir(parents=True)
    paths, total, first = [], 0, (0, 0)
    written = 0
    t0 = time.perf_counter()
    for i in range(files):
        lo, hi = rows * i // files, rows * (i + 1) // files
        path = directory / f"part-{i:05d}.csv"
        file_sum = 0
        with open(path, "wb") as fh:
            fh.write(HEADER)
            for a in range(lo, hi, chunk):
                lines = make_lines(a, min(chunk, hi - a))
                fh.write(lines.data)
                file_sum = (file_sum + _lines_checksum(lines)) & ((1 << 64) - 1)
        written += path.stat().st_size
        total = (total + file_sum) & ((1 << 64) - 1)
        if i == 0:
            first = (hi - lo, file_sum)
        paths.append(str(path))
    return InputSet(
        directory, paths, written, rows, total, first[0], first[1], time.perf_counter() - t0
    )


# -- the peers' jobs ---------------------------------------------------------------------------------


@dataclass
class Context:
    """What a peer's start/job/stop functions get."""

    procs: int
    tmp: Path
    ram: int  # bytes of RAM of the machine
    handle: Any = None
    info: str = ""  # version and settings, for the report
    short_tmp: str | None = None  # a short path (for Ray's sockets), made and removed by the parent


def _polars_start(ctx: Context) -> None:
    import polars as pl

    if pl.thread_pool_size() != ctx.procs:
        raise RuntimeError(f"polars runs {pl.thread_pool_size()} threads, not {ctx.procs}")
    ctx.info = f"polars {pl.__version__}, one process, P threads (POLARS_MAX_THREADS)"


def _polars_job(ctx: Context, files: list[str], out: Path) -> None:
    import polars as pl

    out.mkdir(parents=True)
    schema = {"key": pl.String, "value": pl.String}
    pl.scan_csv(files, schema=schema).sort("key").sink_parquet(out / "part-00000.parquet")


def _sql_string(text: str) -> str:
    """``text`` as an SQL string literal (quotes doubled).

    >>> _sql_string("it's")
    "'it''s'"
    """
    return "'" + text.replace("'", "''") + "'"


# DuckDB: one in-process database, P threads. Its memory limit stays at DuckDB's default (80 % of
# the RAM: it is the only engine running, and Polars has no limit at all); past it, the sort spills
# to ``temp_directory``, which is put in the run's temporary directory (DuckDB's default, ``.tmp``
# in the working directory, would be wherever the study was started). VARCHAR keys compare byte by
# byte unless a collation is set, the order the verifier checks.


def _duckdb_start(ctx: Context) -> None:
    import duckdb

    con = duckdb.connect()  # in memory
    con.execute(f"SET threads = {int(ctx.procs)}")
    con.execute(f"SET temp_directory = {_sql_string(str(ctx.tmp / 'duckdb'))}")
    threads, memory, collation = con.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit'), "
        "current_setting('default_collation')"
    ).fetchall()[0]
    if threads != ctx.procs or collation:
        con.close()
        raise RuntimeError(
            f"duckdb runs {threads} threads (not {ctx.procs}) with default collation "
            f"{collation!r} (expected none: byte order)"
        )
    ctx.handle = con
    ctx.info = (
        f"duckdb {duckdb.__version__}, one process, SET threads = P, memory_limit {memory} "
        f"(its default), temp_directory in the run's directory"
    )


def _duckdb_job(ctx: Context, files: list[str], out: Path) -> None:
    out.mkdir(parents=True)
    # Every CSV option given, nothing sniffed; one output file, which keeps the ORDER BY's order
    # (PER_THREAD_OUTPUT would write one file per thread with no key order between them).
    sources = "[" + ", ".join(_sql_string(f) for f in files) + "]"
    ctx.handle.execute(
        f"""
        COPY (
            SELECT key, value
            FROM read_csv({sources}, header = true, delim = ',', quote = '"', escape = '"',
                          columns = {{'key': 'VARCHAR', 'value': 'VARCHAR'}}, auto_detect = false)
            ORDER BY key
        ) TO {_sql_string(str(out / "part-00000.parquet"))} (FORMAT parquet, COMPRESSION snappy)
        """
    )


def _duckdb_stop(ctx: Context) -> None:
    ctx.handle.close()


def _dask_start(ctx: Context) -> None:
    import dask
    from distributed import Client, LocalCluster

    cluster = LocalCluster(
        n_workers=ctx.procs,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        local_directory=str(ctx.tmp / "dask"),
    )
    ctx.handle = (cluster, Client(cluster))
    ctx.info = f"dask {dask.__version__}, LocalCluster(n_workers=P, threads_per_worker=1)"


def _dask_job(ctx: Context, files: list[str], out: Path) -> None:
    import dask.dataframe as dd

    df = dd.read_csv(files, dtype=str, na_filter=False)
    df.sort_values("key").to_parquet(
        str(out), write_index=False, name_function=lambda i: f"part-{i:05d}.parquet"
    )


def _dask_stop(ctx: Context) -> None:
    cluster, client = ctx.handle
    client.close()
    cluster.close()


def _ray_start(ctx: Context) -> None:
    import tempfile

    import ray
    import ray.data

    # A short temporary directory of its own (Ray's socket paths must stay under 108 bytes).
    ctx.handle = ctx.short_tmp or tempfile.mkdtemp(prefix="riera-ray-")
    ray.init(
        num_cpus=ctx.procs,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        _temp_dir=ctx.handle,
    )
    data_ctx = ray.data.DataContext.get_current()
    data_ctx.enable_progress_bars = False
    ctx.info = f"ray {ray.__version__}, ray.init(num_cpus=P)"


def _ray_job(ctx: Context, files: list[str], out: Path) -> None:
    import pyarrow.csv as pacsv
    import ray.data

    types = {"key": pa.string(), "value": pa.string()}
    ds = ray.data.read_csv(files, convert_options=pacsv.ConvertOptions(column_types=types))
    ds.sort("key").write_parquet(str(out))


def _ray_stop(ctx: Context) -> None:
    import ray

    ray.shutdown()
    shutil.rmtree(ctx.handle, ignore_errors=True)


def _spark_start(ctx: Context) -> None:
    import pyspark
    from pyspark.sql import SparkSession

    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        raise RuntimeError("PySpark needs Java (17 or newer): no `java` on PATH and no JAVA_HOME")
    memory_gb = max(1, int(ctx.ram * 0.5 / 2**30))
    spark = (
        SparkSession.builder.master(f"local[{ctx.procs}]")
        .appName("riera-bench-mapreduce")
        .config("spark.driver.memory", f"{memory_gb}g")
        .config("spark.local.dir", str(ctx.tmp / "spark"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    ctx.handle = spark
    ctx.info = f"pyspark {pyspark.__version__}, local[P], spark.driver.memory={memory_gb}g"


def _spark_job(ctx: Context, files: list[str], out: Path) -> None:
    spark = ctx.handle
    df = spark.read.csv(files, header=True, schema="key STRING, value STRING")
    df.sort("key").write.parquet(str(out))


def _spark_stop(ctx: Context) -> None:
    ctx.handle.stop()


# Lithops: the document's own setting. Mappers read one input file each and range-partition it by
# key into P partitions, written as Arrow IPC objects to Lithops' storage API (localhost mode: files
# in a local directory); P reducers each fetch their partition from every mapper, sort it and
# write one Parquet file. Two chained ``map`` calls, because ``map_reduce`` gives one reducer (or
# one per input object), not one per key range.


def _sample_bounds(files: Sequence[str], parts: int, per_file: int = 200) -> list[str]:
    """``parts - 1`` key boundaries from keys read at random offsets of each file."""
    rng = random.Random(0)
    keys: list[bytes] = []
    for f in files:
        size = os.path.getsize(f)
        with open(f, "rb") as fh:
            fh.readline()  # header
            start = fh.tell()
            for _ in range(per_file):
                fh.seek(rng.randrange(start, max(start + 1, size)))
                fh.readline()  # the rest of a line
                line = fh.readline()
                if line:
                    keys.append(line.split(b",", 1)[0])
    keys.sort()
    if not keys:
        return []
    return [keys[len(keys) * j // parts].decode() for j in range(1, parts)]


def _lithops_tasks() -> tuple[Callable[..., int], Callable[..., int]]:
    """The mapper and reducer, as closures so that cloudpickle ships them by value (a Lithops
    worker then needs no ``import riera``, which would add its import time to every task)."""

    def mapper(path: str, bounds: list[str], run: str, index: int, storage: Any) -> int:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        types = {"key": pa.string(), "value": pa.string()}
        table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(column_types=types))
        keys = table.column("key").combine_chunks()
        width = len(bounds[0]) if bounds else 0
        lengths = pc.min_max(pc.binary_length(keys))
        if not bounds or not len(keys):
            dest = np.zeros(len(keys), dtype=np.int64)
        elif lengths["min"].as_py() == width == lengths["max"].as_py():
            raw = keys.cast(pa.binary(width)).buffers()[1]
            k = np.frombuffer(raw, dtype=f"S{width}")[keys.offset : keys.offset + len(keys)]
            dest = np.searchsorted(np.array([b.encode() for b in bounds]), k, side="right")
        else:  # keys of varying length: compare Python strings
            k = keys.to_numpy(zero_copy_only=False)
            dest = np.searchsorted(np.array(bounds, dtype=object), k, side="right")
        parts = len(bounds) + 1
        order = np.argsort(dest, kind="stable")
        counts = np.bincount(dest, minlength=parts)
        table = table.take(pa.array(order))
        start = 0
        for j in range(parts):
            piece = table.slice(start, counts[j])
            start += counts[j]
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, table.schema) as writer:
                writer.write_table(piece)
            body = pa.BufferReader(sink.getvalue())
            storage.put_object(storage.bucket, f"riera-bench/{run}/r{j:05d}/m{index:05d}", body)
        return table.num_rows

    def reducer(part: int, mappers: int, run: str, out: str, storage: Any) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = [f"riera-bench/{run}/r{part:05d}/m{i:05d}" for i in range(mappers)]
        tables = [
            pa.ipc.open_stream(storage.get_object(storage.bucket, n)).read_all() for n in names
        ]
        table = pa.concat_tables(tables)
        # With P reducers each holds 1/P of the data: past 2 GB of text, 32-bit string offsets
        # overflow when the sort takes rows across chunks, so sort with 64-bit ones.
        table = table.cast(pa.schema([(f.name, pa.large_string()) for f in table.schema]))
        table = table.sort_by("key")
        pq.write_table(table, f"{out}/part-{part:05d}.parquet")
        storage.delete_objects(storage.bucket, names)
        return table.num_rows

    return mapper, reducer


LITHOPS_WAIT_BASE = 180.0  # seconds a Lithops job may take, plus this per GB of input:
LITHOPS_WAIT_PER_GB = 90.0  # about 6x its measured times (11–17 s per GB)


def _lithops_start(ctx: Context) -> None:
    import lithops

    ctx.handle = lithops.FunctionExecutor()
    ctx.info = (
        f"lithops {lithops.__version__}, localhost backend and storage, worker_processes=P; "
        f"one mapper per input file, P reducers"
    )


def _lithops_job(ctx: Context, files: list[str], out: Path) -> None:
    import uuid

    fexec = ctx.handle
    out.mkdir(parents=True)
    bounds = _sample_bounds(files, ctx.procs)
    run = uuid.uuid4().hex[:12]
    mapper, reducer = _lithops_tasks()
    # Lithops' localhost runner sometimes exits between jobs and get_result() then waits for
    # ever (lithops-cloud/lithops#1369); a generous bound turns that into a reported error.
    limit = LITHOPS_WAIT_BASE + LITHOPS_WAIT_PER_GB * sum(os.path.getsize(f) for f in files) / 1e9

    def wait() -> None:
        try:
            fexec.get_result(timeout=limit)
        except TimeoutError as err:
            raise RuntimeError(
                f"Lithops returned no result within {limit:.0f} s: its localhost runner "
                f"stopped answering (an intermittent Lithops issue, lithops-cloud/lithops"
                f"#1369)"
            ) from err

    maps = [{"path": f, "bounds": bounds, "run": run, "index": i} for i, f in enumerate(files)]
    fexec.map(mapper, maps, include_modules=[])
    wait()
    reds = [
        {"part": j, "mappers": len(files), "run": run, "out": str(out)}
        for j in range(len(bounds) + 1)
    ]
    fexec.map(reducer, reds, include_modules=[])
    wait()


def _lithops_stop(ctx: Context) -> None:
    with contextlib.suppress(Exception):
        ctx.handle.clean(clean_cloudobjects=True)


def _nothing(ctx: Context) -> None:
    return None


Job = Callable[[Context, list[str], Path], None]
ENGINES: dict[str, tuple[Callable[[Context], None], Job, Callable[[Context], None]]] = {
    "polars": (_polars_start, _polars_job, _nothing),
    "duckdb": (_duckdb_start, _duckdb_job, _duckdb_stop),
    "dask": (_dask_start, _dask_job, _dask_stop),
    "ray": (_ray_start, _ray_job, _ray_stop),
    "spark": (_spark_start, _spark_job, _spark_stop),
    "lithops": (_lithops_start, _lithops_job, _lithops_stop),
}


def environment(engine: str, procs: int, tmp: Path) -> dict[str, str]:
    """Environment variables the child needs for ``engine`` (set before it imports the engine)."""
    env = {"PYTHONUNBUFFERED": "1"}
    if engine == "polars":
        env["POLARS_MAX_THREADS"] = str(procs)
    elif engine == "lithops":
        # Localhost storage lives under tempfile.gettempdir(); its cache under ~/.lithops.
        config = {
            "lithops": {"backend": "localhost", "storage": "localhost", "log_level": "WARNING"},
            "localhost": {"runtime": sys.executable, "worker_processes": procs},
        }
        path = tmp / "lithops-config.yaml"
        path.write_text(json.dumps(config, indent=1))  # JSON is valid YAML
        env.update(LITHOPS_CONFIG_FILE=str(path), TMPDIR=str(tmp), HOME=str(tmp))
    elif engine == "ray":
        env.update(RAY_DEDUP_LOGS="0", RAY_USAGE_STATS_ENABLED="0")
    elif engine == "dask":
        env["DASK_DISTRIBUTED__LOGGING__DISTRIBUTED"] = "error"
    return env


# -- the child process -------------------------------------------------------------------------------


@dataclass
class RunRecord:
    seconds: float
    rss: int
    rows: int
    checksum: str
    files: int
    order: str
    problems: list[str]


@dataclass
class PeerResult:
    engine: str
    procs: int
    info: str = ""
    start_seconds: float | None = None
    runs: list[RunRecord] = field(default_factory=list)
    error: str | None = None


def _sync() -> None:
    if hasattr(os, "sync"):
        os.sync()


def _error(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:400] if text else type(e).__name__


def run_spec(spec: dict[str, Any]) -> PeerResult:
    """Start the engine, warm it up, time and verify the runs; see the module docstring."""
    from riera_bench.measure import PeakMemory, timed

    engine, procs = spec["engine"], int(spec["procs"])
    start, job, stop = ENGINES[engine]
    tmp = Path(spec["tmp"])
    tmp.mkdir(parents=True, exist_ok=True)
    result = PeerResult(engine, procs)
    save = Path(spec["result"])

    def flush() -> None:
        save.write_text(json.dumps(asdict(result)))

    ctx = Context(procs, tmp, int(spec["ram"]), short_tmp=spec.get("short_tmp"))
    try:
        _, result.start_seconds = timed(lambda: start(ctx))
    except Exception as e:
        result.error = f"failed to start: {_error(e)}"
        traceback.print_exc()
        flush()
        return result
    result.info = ctx.info
    flush()
    files = list(spec["files"])
    out_root = Path(spec["out"])
    try:
        warm = out_root / "warm-up"
        job(ctx, files[:1], warm)
        v = verify_output(warm).expect(spec["warm_rows"], int(spec["warm_checksum"], 16))
        if not v.ok:
            result.error = "wrong result in the warm-up job: " + "; ".join(v.problems[:2])
            flush()
            return result
        shutil.rmtree(warm)
        for i in range(int(spec["repeats"])):
            out = out_root / f"run{i}"
            _sync()
            with PeakMemory() as mem:
                _, dt = timed(partial(job, ctx, files, out))
            v = verify_output(out).expect(spec["rows"], int(spec["checksum"], 16))
            result.runs.append(
                RunRecord(
                    dt, mem.peak.rss_sum, v.rows, f"{v.checksum:016x}", v.files, v.order, v.problems
                )
            )
            flush()
            if not v.ok:
                break
            shutil.rmtree(out)
    except Exception as e:
        result.error = _error(e)
        traceback.print_exc()
    finally:
        try:
            stop(ctx)
        except Exception:
            traceback.print_exc()
        flush()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m riera_bench.peers SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    t0 = time.perf_counter()
    result = run_spec(spec)
    print(f"{result.engine} P={result.procs}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
