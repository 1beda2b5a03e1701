"""``riera bench exchange``: document 002's exchange micro-study, redone on Riera's backends.

Terasort-like CSVs (a 10-character key and a 90-character value) and Brain-like CSVs (int32,
float64, float64) are loaded into pandas with each dtype variant of the document and exchanged
through each backend. Per (dataset, size, variant, backend, repeat), a fresh writer process
(forked from a ``forkserver`` that only imported the libraries) loads the CSV, serializes
(DataFrame → Arrow table) and writes (``put``); a fresh reader opens (``get``), scans every byte
of the opened table (a zero-copy open's deferred page faults) and decodes (``to_pandas`` to the
same variant). Both first run the same steps untimed on a 1,000-row slice (lazy imports), then
record per step the time and the change of RSS, USS and anonymous RSS, and the step's peak RSS
(the kernel's high-water mark, reset before it). Every read is compared with what was written
(rows, dtypes, hash of every value); a difference aborts: no timing of a wrong result is reported.
:func:`run` measures, :func:`render` writes markdown with document 002's figures
(:mod:`riera_bench.doc002`) beside ours, :func:`plot` draws one PNG per dataset.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import logging
import multiprocessing as mp
import os
import pickle
import secrets
import shutil
import statistics
import tempfile
import time
import traceback
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import psutil
import pyarrow as pa
import pyarrow.csv as pacsv

from riera.exchange.base import Ref, SegmentKey
from riera_bench import doc002
from riera_bench.core import BenchmarkError, _scan
from riera_bench.core_report import _table
from riera_bench.measure import MB, Options, Stats, fmt_bytes, machine_info, timed

Progress = Callable[[str], None]
MiB = 2**20
DATASETS = ("terasort", "brain")
COLUMNS = {"terasort": ["0", "1"], "brain": ["0", "1", "2"]}
WRITE_STEPS = ("serialize", "write")
READ_STEPS = ("open", "scan", "decode")
KEY_CHARS, VALUE_CHARS = 10, 90
ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "u1")
HEX = np.frombuffer(b"0123456789ABCDEF", "u1")
CHUNK_ROWS = 500_000
WARM_ROWS = 1_000

# -- dtype variants ----------------------------------------------------------------------------------


def _strings_as(dtype: Any) -> Callable[[pa.DataType], Any]:
    return lambda t: dtype if pa.types.is_string(t) or pa.types.is_large_string(t) else None


def _decode_object(table: pa.Table) -> pd.DataFrame:
    """Python ``str`` objects in ``object`` columns (pandas ≥ 3 would infer its ``str`` dtype)."""
    cols = {
        name: pd.Series(table.column(name).to_numpy(zero_copy_only=False), dtype=object, copy=False)
        for name in table.column_names
    }
    return pd.DataFrame(cols, copy=False)


@dataclass(frozen=True)
class Variant:
    label: str
    read_dtype: Callable[[], Any]  # the ``dtype=`` of ``read_csv``
    decode: Callable[[pa.Table], pd.DataFrame]


_ARROW_NUMBERS = (pa.int32(), pa.float64(), pa.float64())
VARIANTS: dict[str, dict[str, Variant]] = {
    "terasort": {
        "object": Variant("`object` (Python str)", lambda: object, _decode_object),
        "string": Variant(
            "`string[python]`",
            lambda: pd.StringDtype("python"),
            lambda t: t.to_pandas(types_mapper=_strings_as(pd.StringDtype("python"))),
        ),
        "str": Variant("pandas' default `str`", lambda: "str", lambda t: t.to_pandas()),
        "arrow": Variant(
            "`pd.ArrowDtype(pa.string())`",
            lambda: pd.ArrowDtype(pa.string()),
            lambda t: t.to_pandas(types_mapper=pd.ArrowDtype),
        ),
    },
    "brain": {
        "numpy": Variant(
            "NumPy int32/float64",
            lambda: dict(zip(COLUMNS["brain"], ("int32", "float64", "float64"), strict=True)),
            lambda t: t.to_pandas(),
        ),
        "arrow": Variant(
            "`pd.ArrowDtype` int32/double",
            lambda: dict(zip(COLUMNS["brain"], map(pd.ArrowDtype, _ARROW_NUMBERS), strict=True)),
            lambda t: t.to_pandas(types_mapper=pd.ArrowDtype),
        ),
    },
}

# -- configuration -----------------------------------------------------------------------------------


S3_LABELS = ("s3", "s3-parquet", "s3fs", "s3fs-parquet")


@dataclass(frozen=True)
class BackendSpec:
    """A study backend: a registered exchange plus setting overrides (``s3-parquet``)."""

    label: str
    name: str
    overrides: tuple[tuple[str, Any], ...] = ()


def backend_spec(label: str) -> BackendSpec:
    if label in S3_LABELS:  # -parquet: the document's format (Parquet + snappy); s3fs: its client
        fmt = "parquet" if label.endswith("-parquet") else "ipc"
        client = "s3fs" if label.startswith("s3fs") else "boto3"
        return BackendSpec(label, "s3", (("s3_format", fmt), ("s3_client", client)))
    return BackendSpec(label, label)


@dataclass(frozen=True)
class ExchangeConfig(Options):
    terasort_sizes_mb: tuple[int, ...] = doc002.TERASORT_SIZES_MB
    brain_sizes_mb: tuple[int, ...] = doc002.BRAIN_SIZES_MB
    datasets: tuple[str, ...] = DATASETS
    variants: tuple[str, ...] | None = None  # None: every variant of each dataset
    backends: tuple[str, ...] = ("shm", "shm-pickle", "disk")
    repeats: int = 3
    base_dir: Path | None = None
    plots_dir: Path | None = None
    s3_endpoint: str | None = None  # None: start moto's S3 server on 127.0.0.1 when needed
    quick: bool = False
    child_timeout: float = 3600.0

    @classmethod
    def quick_defaults(cls) -> ExchangeConfig:
        return cls(terasort_sizes_mb=(5, 10), brain_sizes_mb=(5, 10), repeats=1, quick=True)

    def sizes(self, dataset: str) -> tuple[int, ...]:
        return self.terasort_sizes_mb if dataset == "terasort" else self.brain_sizes_mb

    def variants_of(self, dataset: str) -> list[str]:
        return [v for v in VARIANTS[dataset] if self.variants is None or v in self.variants]


# -- the data ----------------------------------------------------------------------------------------


def write_terasort_csv(path: Path, target: int, seed: int) -> int:
    """``key,value`` lines, at most ``target`` bytes; returns the row count.

    The key is 10 random letters/digits (no comma to quote); the value is gensort's ASCII record
    after its key, 90 characters: two spaces, the row number in 32 hex digits, two spaces, 13
    random hex digits each written 4 times, two spaces (so it compresses like TeraSort data).
    """
    line = KEY_CHARS + 1 + VALUE_CHARS + 1
    rows, rng, done = target // line, np.random.default_rng(seed), 0
    shifts = np.arange(15, -1, -1, dtype=np.uint64) * np.uint64(4)  # the low 16 hex digits
    with open(path, "wb") as fh:
        while done < rows:
            n = min(CHUNK_ROWS, rows - done)
            out = np.full((n, line), ord(" "), dtype=np.uint8)
            out[:, :KEY_CHARS] = ALPHABET[rng.integers(0, ALPHABET.size, (n, KEY_CHARS), "u1")]
            out[:, KEY_CHARS], out[:, -1], out[:, 13:29] = ord(","), ord("\n"), ord("0")
            ids = np.arange(done, done + n, dtype=np.uint64)[:, None]
            out[:, 29:45] = HEX[((ids >> shifts) & np.uint64(15)).astype(np.intp)]
            out[:, 47:99] = np.repeat(HEX[rng.integers(0, 16, (n, 13), "u1")], 4, axis=1)
            fh.write(out.tobytes())
            done += n
    return rows


def write_brain_csv(path: Path, target: int, seed: int) -> int:
    """``int32,float64,float64`` lines (about 31 bytes each), at most ``target`` bytes; rows."""
    rng, written, rows = np.random.default_rng(seed), 0, 0
    options = pacsv.WriteOptions(include_header=False)
    with open(path, "wb") as fh:
        while written < target:
            n = CHUNK_ROWS
            ints, normal = rng.integers(0, 10**8, n, dtype=np.int32), rng.normal(0.0, 50.0, n)
            chunk = pa.table([ints, np.round(normal, 7), rng.integers(0, 10**8, n) / 10**8],
                             names=COLUMNS["brain"])  # fmt: skip
            sink = pa.BufferOutputStream()
            pacsv.write_csv(chunk, sink, write_options=options)
            data = sink.getvalue().to_pybytes()
            if len(data) > target - written:
                data = data[: data.rfind(b"\n", 0, target - written) + 1]
                if not data:
                    break
            fh.write(data)
            written, rows = written + len(data), rows + data.count(b"\n")
    return rows


def load_csv(path: str, dataset: str, variant: str) -> pd.DataFrame:
    dtype = VARIANTS[dataset][variant].read_dtype()
    return pd.read_csv(path, header=None, names=COLUMNS[dataset], dtype=dtype, na_filter=False)


# -- measuring, in the child processes ---------------------------------------------------------------


def _settle() -> None:
    """Return freed memory to the OS so a step's increment is not hidden by an earlier free."""
    gc.collect()
    pa.default_memory_pool().release_unused()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _snapshot() -> dict[str, int]:
    """RSS, its anonymous part and high-water mark (``/proc/self/status``), and USS."""
    out = {"rss": 0, "anon": -1, "hwm": -1}
    names = {"VmRSS": "rss", "RssAnon": "anon", "VmHWM": "hwm"}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in names:
                    out[names[key]] = int(rest.split()[0]) * 1024
    except OSError:
        out["rss"] = psutil.Process().memory_info().rss
    out["uss"] = psutil.Process().memory_full_info().uss
    return out


def _step(steps: dict[str, dict[str, float]], name: str, fn: Callable[[], Any]) -> Any:
    gc.collect()
    before, peak_ok = _snapshot(), False
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the peak RSS (VmHWM) to the current RSS (Linux ≥ 4.0)
        peak_ok = before["hwm"] >= 0
    result, seconds = timed(fn)
    after = _snapshot()
    steps[name] = {
        "s": seconds,
        "rss": after["rss"] - before["rss"],
        "uss": after["uss"] - before["uss"],
        "anon": after["anon"] - before["anon"] if before["anon"] >= 0 else float("nan"),
        "peak": after["hwm"] - before["rss"] if peak_ok else float("nan"),
    }
    return result


def _digest(df: pd.DataFrame) -> str:
    """A hash of every value, in order (pandas' per-row hashes, then BLAKE2b over them)."""
    rows = pd.util.hash_pandas_object(df, index=False).to_numpy()
    return hashlib.blake2b(rows.tobytes(), digest_size=16).hexdigest()


def _dtypes(df: pd.DataFrame) -> list[str]:
    return [f"{c}:{d!r}" for c, d in df.dtypes.items()]


@dataclass(frozen=True)
class Job:
    dataset: str
    variant: str
    csv: str
    backend: BackendSpec
    settings: dict[str, Any]
    key: SegmentKey
    doc_encode: bool = False  # also time the document's encoding, pickle.dumps(DataFrame)


def _exchange(job: Job) -> Any:
    from riera.config import load_settings
    from riera.exchange import create

    return create(job.backend.name, load_settings(**job.settings, **dict(job.backend.overrides)))


def _read_once(ex: Any, ref: Ref, decode: Callable[[pa.Table], Any]) -> None:
    table = ex.get(ref)
    _scan(table)
    decode(table)
    del table
    ex.release([ref])


def _writer(job: Job) -> dict[str, Any]:
    ex = _exchange(job)
    decode = VARIANTS[job.dataset][job.variant].decode
    df = load_csv(job.csv, job.dataset, job.variant)
    warm = pa.Table.from_pandas(df.head(WARM_ROWS))  # warm-up: the same steps on a slice
    _read_once(ex, ex.put(warm, replace(job.key, stage=job.key.stage + "w")), decode)
    warm_ref = ex.put(warm, replace(job.key, stage=job.key.stage + "r"))  # the reader's warm-up
    del warm
    _settle()
    steps: dict[str, dict[str, float]] = {}
    table = _step(steps, "serialize", partial(pa.Table.from_pandas, df))
    rb = table.nbytes
    ref = _step(steps, "write", partial(ex.put, table, job.key))
    del table
    out = {
        "steps": steps, "ref": ref, "warm_ref": warm_ref, "rows": len(df), "rb": rb,
        "csv": os.path.getsize(job.csv), "df_deep": int(df.memory_usage(deep=True).sum()),
        "stored": stored_bytes(ex, ref),
        "dtypes": _dtypes(df), "digest": _digest(df),
    }  # fmt: skip
    if job.doc_encode:
        out["doc_encode"] = timed(partial(pickle.dumps, df))[1]
    return out


def _reader(job: Job, ref: Ref, warm_ref: Ref) -> dict[str, Any]:
    ex = _exchange(job)
    decode = VARIANTS[job.dataset][job.variant].decode
    _read_once(ex, warm_ref, decode)
    _settle()
    steps: dict[str, dict[str, float]] = {}
    table = _step(steps, "open", partial(ex.get, ref))
    _step(steps, "scan", partial(_scan, table))
    df = _step(steps, "decode", partial(decode, table))
    out = {"steps": steps, "rows": len(df), "dtypes": _dtypes(df), "digest": _digest(df)}
    del df, table
    ex.release([ref])
    return out


def stored_bytes(ex: Any, ref: Ref) -> int | None:
    """Bytes stored for ``ref``: the file, or (best effort, through the backend's client) the
    S3 object or the Redis value(s); ``None`` when unknown."""
    path = Path(ref.location)
    if path.is_absolute() and path.is_file():
        return path.stat().st_size
    with contextlib.suppress(Exception):
        if ex.name == "s3":
            return int(ex.stored_bytes(ref))
        client: Any = ex._client  # redis-py
        if ex.name == "redis":  # a value above the chunk size is a header "riera-chunks:<n>"
            head = bytes(client.getrange(ref.location, 0, 40))
            n = int(head.split(b":")[1]) if head.startswith(b"riera-chunks:") else 0
            names = [f"{ref.location}:c{i}" for i in range(n)] or [ref.location]
            return sum(int(client.strlen(name)) for name in names)
    return None


def _child(conn: Any, fn: Callable[..., dict[str, Any]], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", fn(*args)))
    except BaseException as err:  # reported to the parent, which aborts the study
        conn.send(("error", f"{type(err).__name__}: {err}", traceback.format_exc()))
    finally:
        conn.close()


def _context() -> Any:
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__])  # children start with the libraries imported
        return ctx
    return mp.get_context("spawn")


def _call(
    ctx: Any, fn: Callable[..., Any], args: tuple[Any, ...], what: str, timeout: float
) -> Any:
    """Run ``fn(*args)`` in a fresh process; its result, or :class:`BenchmarkError`."""
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, fn, args), name="riera-bench-exchange")
    proc.start()
    sender.close()
    deadline = time.monotonic() + timeout
    try:
        while not receiver.poll(0.2):
            if not proc.is_alive() and not receiver.poll(0):
                raise BenchmarkError(
                    f"{what}: the measuring process exited with code {proc.exitcode} without a "
                    f"result (killed, or out of memory?)"
                )
            if time.monotonic() > deadline:
                proc.terminate()
                raise BenchmarkError(f"{what}: no result within {timeout:.0f} s")
        message = receiver.recv()
    finally:
        receiver.close()
        proc.join(10)
    if message[0] != "ok":
        raise BenchmarkError(f"{what}: {message[1]}\n{message[2]}")
    return message[1]


# -- running -----------------------------------------------------------------------------------------


@dataclass
class Run:
    dataset: str
    size_mb: int
    variant: str
    backend: str
    repeat: int
    writer: dict[str, Any]
    reader: dict[str, Any]


@dataclass
class ExchangeReport:
    config: ExchangeConfig
    machine: dict[str, Any]
    start_method: str = ""
    memcopy_threads: int = 0
    s3_endpoint: str | None = None
    runs: list[Run] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    seconds: float = 0.0


def _check(config: ExchangeConfig) -> list[BackendSpec]:
    from riera.exchange import available

    backends = set(available()) | (set(S3_LABELS) if "s3" in available() else set())
    variants = {v for d in DATASETS for v in VARIANTS[d]}
    for what, given, known in (("dataset", config.datasets, set(DATASETS)),
                               ("variant", config.variants or (), variants),
                               ("backend", config.backends, backends)):  # fmt: skip
        if bad := [x for x in given if x not in known]:
            raise BenchmarkError(f"unknown {what}(s) {bad}; available: {', '.join(sorted(known))}")
    if not config.backends or not any(config.variants_of(d) for d in config.datasets):
        raise BenchmarkError("nothing to measure: no backend, or no variant of the datasets chosen")
    if any(s < 1 for d in config.datasets for s in config.sizes(d)) or config.repeats < 1:
        raise BenchmarkError("sizes and repeats must be positive")
    return [backend_spec(b) for b in dict.fromkeys(config.backends)]


def _start_s3(
    stack: contextlib.ExitStack, config: ExchangeConfig, overrides: dict[str, Any]
) -> str:
    """The S3 endpoint: ``--s3-endpoint``, or moto's server started here on 127.0.0.1."""
    endpoint = config.s3_endpoint
    if endpoint is None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as err:
            raise BenchmarkError(
                "the s3 backends need an S3 server: pass --s3-endpoint, or install moto's "
                "server to start one on 127.0.0.1: pip install 'moto[server]>=5'"
            ) from err
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        stack.callback(server.stop)
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        overrides.update(s3_access_key="testing", s3_secret_key="testing")
    overrides.update(s3_endpoint=endpoint, s3_bucket=f"riera-bench-{secrets.token_hex(4)}")
    return endpoint


def run(config: ExchangeConfig, progress: Progress | None = None) -> ExchangeReport:
    """Run the study; raises :class:`BenchmarkError` on any wrong read or failed step."""
    from riera.config import load_settings
    from riera.exchange import create

    say = progress or (lambda _msg: None)
    specs = _check(config)
    if config.plots_dir is not None:
        require_matplotlib()
    report = ExchangeReport(config, machine_info(load_settings().shm_dir))
    if config.base_dir is not None:
        config.base_dir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="riera-bench-exchange-", dir=config.base_dir))
    say(f"working directory {root}")
    run_id, owner = f"xbench{secrets.token_hex(3)}", os.getpid()
    overrides: dict[str, Any] = {"spill_dir": str(root / "spill"), "spill": False}
    parents: dict[str, Any] = {}
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, True)
        if any(s.name == "s3" for s in specs):
            report.s3_endpoint = _start_s3(stack, config, overrides)
            say(f"S3 endpoint {report.s3_endpoint}")

        def sweep() -> None:  # whatever a failed run left behind
            for ex in parents.values():
                with contextlib.suppress(Exception):
                    ex.release_run(SegmentKey(owner, run_id, "", 0))

        stack.callback(sweep)
        for spec in specs:  # fail early, with the backend's own message, if one cannot work
            try:
                parents[spec.label] = create(
                    spec.name, load_settings(**overrides, **dict(spec.overrides))
                )
            except Exception as err:
                raise BenchmarkError(f"backend {spec.label!r} is not usable: {err}") from err
        report.memcopy_threads = load_settings(**overrides).memcopy_threads
        ctx = _context()
        report.start_method = ctx.get_start_method()
        for dataset in config.datasets:
            for size in config.sizes(dataset):
                path = root / f"{dataset}-{size}mb.csv"
                make = write_terasort_csv if dataset == "terasort" else write_brain_csv
                seed = zlib.crc32(f"{dataset}-{size}".encode())
                rows, dt = timed(partial(make, path, size * MB, seed))
                say(f"{dataset} {size} MB: {rows:,} rows, {path.stat().st_size:,} B in {dt:.1f} s")
                for variant in config.variants_of(dataset):
                    for spec in specs:
                        for i in range(config.repeats):
                            key = SegmentKey(owner, run_id, f"{dataset}{size}{variant}", i)
                            job = Job(dataset, variant, str(path), spec, overrides, key,
                                      doc_encode=spec.label == "shm-pickle")  # fmt: skip
                            what = f"{dataset} {size} MB, {variant}, {spec.label}, run {i + 1}"
                            report.runs.append(_measure(ctx, job, i, size, what, parents, config))
                            rs = report.runs[-1].reader["steps"]
                            say(f"  {what}: open {rs['open']['s'] * 1e3:.3f} ms, scan "
                                f"{rs['scan']['s']:.4f} s, decode {rs['decode']['s']:.4f} s")  # fmt: skip
                path.unlink()
    report.seconds = time.perf_counter() - t0
    if config.plots_dir is not None:
        report.plots = plot(report, config.plots_dir)
    return report


def _measure(ctx: Any, job: Job, i: int, size: int, what: str, parents: dict[str, Any],
             config: ExchangeConfig) -> Run:  # fmt: skip
    w = _call(ctx, _writer, (job,), what + " (write)", config.child_timeout)
    try:
        r = _call(ctx, _reader, (job, w["ref"], w["warm_ref"]), what + " (read)",
                  config.child_timeout)  # fmt: skip
    finally:
        with contextlib.suppress(Exception):
            parents[job.backend.label].release([w["ref"], w["warm_ref"]])
    problems = []
    if r["rows"] != w["rows"]:
        problems.append(f"{r['rows']:,} rows instead of {w['rows']:,}")
    if r["dtypes"] != w["dtypes"]:
        problems.append(f"dtypes {r['dtypes']} instead of {w['dtypes']}")
    if r["digest"] != w["digest"]:
        problems.append(f"value hash {r['digest']} instead of {w['digest']}")
    if problems:
        raise BenchmarkError(
            f"{what}: the read differs from what was written: {'; '.join(problems)}"
        )
    return Run(job.dataset, size, job.variant, job.backend.label, i, w, r)


# -- aggregation -------------------------------------------------------------------------------------

Key = tuple[str, int, str, str]  # dataset, size, variant, backend


def groups(report: ExchangeReport) -> dict[Key, list[Run]]:
    out: dict[Key, list[Run]] = {}
    for r in report.runs:
        out.setdefault((r.dataset, r.size_mb, r.variant, r.backend), []).append(r)
    return out


def times(runs: Sequence[Run], *steps: str) -> Stats:
    """Seconds of the sum of ``steps``, one sample per run."""
    side = ["writer" if s in WRITE_STEPS else "reader" for s in steps]
    pairs = list(zip(side, steps, strict=True))
    return Stats([sum(getattr(r, d)["steps"][s]["s"] for d, s in pairs) for r in runs])


def memory(runs: Sequence[Run], step: str, what: str) -> float:
    """Median over runs of one memory figure of ``step`` (bytes)."""
    side = "writer" if step in WRITE_STEPS else "reader"
    return statistics.median(getattr(r, side)["steps"][step][what] for r in runs)


# -- markdown ----------------------------------------------------------------------------------------


def _mib(n: float) -> str:
    return "–" if n != n else f"{n / MiB:+.1f}"


def _b(n: int | None) -> str:
    return "–" if n is None else f"{n:,}"


def render(report: ExchangeReport) -> str:
    """The report as markdown."""
    c, m, g = report.config, report.machine, groups(report)
    backends = list(dict.fromkeys(r.backend for r in report.runs))
    load = " / ".join(f"{x:.2f}" for x in m["load"])
    opts = [
        f"datasets {','.join(c.datasets)}, Terasort sizes {','.join(map(str, c.terasort_sizes_mb))}"
        f" MB, Brain sizes {','.join(map(str, c.brain_sizes_mb))} MB, backends {','.join(backends)}"
        f", repeats {c.repeats}, fresh processes by {report.start_method}, shm memcopy threads "
        f"{report.memcopy_threads}"
        + (f", S3 endpoint {report.s3_endpoint}" if report.s3_endpoint else "")
    ]
    if c.quick:
        opts.append("**quick (smoke-test sizes; not comparable with document 002)**")
    parts = [
        "# Riera exchange study (document 002)",
        "",
        f"{m['date']} · {m['cores']} cores ({m['usable_cores']} usable), {fmt_bytes(m['ram'])} RAM"
        f" · Python {m['python']} · pandas {pd.__version__} · pyarrow {m['pyarrow']} · numpy "
        f"{m['numpy']} · riera {m['riera']} · {m['shm_dir']} {fmt_bytes(m['shm_total'])} · "
        f"{m['platform']} · load average at start {load}",
        "",
        f"Options: {', '.join(opts)}. Total time {report.seconds:.0f} s. Medians over fresh "
        "process pairs (writer, reader); MB = 10⁶ bytes, memory in MiB. **doc 002** marks the "
        "document's figures, in its units, at its sizes (Terasort 500 MB, Brain 150 MB). Every "
        "read equalled what was written (rows, dtypes, hash of every value). See "
        "benchmarks/README.md for what each figure means.",
    ]
    sections = [
        ("Sizes", _sizes_section(report, g, backends)),
        ("Memory while writing", _memory_section(report, g, "write")),
        ("Memory while reading", _memory_section(report, g, "read")),
        ("Times", _times_section(report, g)),
        ("Ratios", _ratios_section(g)),
    ]
    if report.plots:
        sections.append(("Plots", "\n".join(f"- `{p}`" for p in report.plots)))
    for title, body in sections:
        parts += ["", f"## {title}", "", body]
    return "\n".join(parts) + "\n"


def _sizes_section(report: ExchangeReport, g: dict[Key, list[Run]], backends: list[str]) -> str:
    variants = "; ".join(
        f"`{v}` = {VARIANTS[d][v].label}"
        + (f" (doc “{doc002.VARIANT_LABELS[(d, v)]}”)" if (d, v) in doc002.VARIANT_LABELS else "")
        for d in report.config.datasets
        for v in report.config.variants_of(d)
    )
    out = [
        f"Variants: {variants}. *Record batch*: the Arrow table's `nbytes`; *stored*: the segment "
        "or file, the Redis value(s) or the S3 object. **doc 002**: tables 3–8 — an Arrow IPC "
        "stream (T3/T4) or a pickled DataFrame (T5/T6) in shared memory, Parquet + snappy in S3 "
        "(T7/T8, under `s3-parquet`, else `s3`); its rows are derived (tables 1–2, the CSV "
        "excerpts, are not in its text). Riera's `shm-pickle` pickles the Arrow table."
    ]
    headers = ["size (MB)", "variant", "source", "CSV (B)", "rows", "DataFrame deep (B)",
               "record batch (B)", "DataFrame / CSV"] + [f"stored: {b} (B)" for b in backends]  # fmt: skip
    for dataset in report.config.datasets:
        rows = []
        for (d, size, variant, backend), runs in g.items():
            if d == dataset and backend == backends[0]:
                w = runs[0].writer
                stored = [_b(g[(d, size, variant, b)][0].writer["stored"]) for b in backends]
                rows.append([str(size), variant, "ours", _b(w["csv"]), _b(w["rows"]),
                             _b(w["df_deep"]), _b(w["rb"]), f"{w['df_deep'] / w['csv']:.3f}",
                             *stored])  # fmt: skip
        rows += doc002.size_rows(dataset, report.config.variants_of(dataset), backends)
        out += ["", f"### {dataset}", "", _table(headers, rows, "lll" + "r" * (len(headers) - 3))]
    return "\n".join(out)


def _memory_section(report: ExchangeReport, g: dict[Key, list[Run]], direction: str) -> str:
    steps = WRITE_STEPS if direction == "write" else READ_STEPS
    process = "writer" if direction == "write" else "reader"
    out = [
        f"Per step, in a fresh {process} process: Δ = after − before the step, *peak* = the "
        f"step's highest RSS − RSS before, *anon* = heap (copies; not shared-memory or file "
        f"pages), *copies* = peak ÷ record-batch bytes. Medians over runs, largest size. **doc "
        f"002**: `memory_profiler` increments of the matching lines (tables "
        f"{'9–16' if direction == 'write' else '17–24'}, MiB; in parentheses, in copies of its "
        f"record batch)."
    ]
    if direction == "write":
        out[0] += (" Riera's shm `put` unmaps its segment before returning, like the document's "
                   "`close()`: compare its `write_batch` with our peak. With Arrow dtypes our "
                   "serialize copies nothing; the document's copy was its `combine_chunks()`.")  # fmt: skip
    else:
        out[0] += (" `open` is `get` (for `shm-pickle`: read and unpickle, like the document's "
                   "`pickle.loads`); `scan` reads every byte of the opened table.")  # fmt: skip
    headers = ["variant", "backend", "step", "Δ RSS (MiB)", "Δ USS (MiB)", "Δ anon (MiB)",
               "peak Δ (MiB)", "copies", "doc 002 (MiB, copies)"]  # fmt: skip
    for dataset in report.config.datasets:
        size = max((k[1] for k in g if k[0] == dataset), default=None)
        rows = []
        for (d, s, variant, backend), runs in g.items():
            if d != dataset or s != size:
                continue
            for step in steps:
                peak = memory(runs, step, "peak")
                rows.append([
                    variant, backend, step, *(_mib(memory(runs, step, f)) for f in
                    ("rss", "uss", "anon", "peak")), f"{peak / runs[0].writer['rb']:.2f}",
                    doc002.memory_lines(dataset, direction, backend, variant, step),
                ])  # fmt: skip
        if rows:
            title = f"### {dataset}, {size} MB (doc 002: {doc002.SIZE_MB[dataset]} MB)"
            out += ["", title, "", _table(headers, rows, "lll" + "r" * 5 + "l")]
    return "\n".join(out)


def _times_section(report: ExchangeReport, g: dict[Key, list[Run]]) -> str:
    out = [
        "Seconds (open: ms), medians and min–max over runs. *read* = open + decode (what the "
        "document timed); *read + scan* adds the first full scan, which a zero-copy open leaves "
        "to the first access. **doc 002 read**: its zero-copy read of the Terasort frame with "
        "Arrow dtypes from shared memory (section 4.2.2.3; figures 6–15 are images)."
    ]
    headers = ["size (MB)", "variant", "backend", "serialize", "write", "serialize + write",
               "min–max", "open (ms)", "first scan", "decode", "read", "min–max",
               "read + scan", "doc 002 read"]  # fmt: skip
    for dataset in report.config.datasets:
        rows = []
        for (d, size, variant, backend), runs in g.items():
            if d != dataset:
                continue
            write, read = times(runs, "serialize", "write"), times(runs, "open", "decode")
            doc = None
            if (dataset, variant, backend) == ("terasort", "arrow", "shm"):
                doc = doc002.READ_SHM_ARROW_S.get(size)
            rows.append([
                str(size), variant, backend, *(f"{times(runs, s).median:.4f}" for s in
                ("serialize", "write")), f"{write.median:.4f}", write.range_str(digits=4),
                f"{times(runs, 'open').median * 1e3:.3f}", f"{times(runs, 'scan').median:.4f}",
                f"{times(runs, 'decode').median:.4f}", f"{read.median:.4f}",
                read.range_str(digits=4), f"{times(runs, 'open', 'scan', 'decode').median:.4f}",
                "–" if doc is None else f"{doc:.3f}",
            ])  # fmt: skip
        out += ["", f"### {dataset}", "", _table(headers, rows, "lll" + "r" * 11)]
    return "\n".join(out)


def _ratios_section(g: dict[Key, list[Run]]) -> str:
    sizes = [k[1] for k in g if k[0] == "terasort" and k[2] == "arrow"]
    if not sizes:
        return "Needs the Terasort dataset with the `arrow` variant."
    size = max(sizes)
    shm, pkl = ("terasort", size, "arrow", "shm"), ("terasort", size, "arrow", "shm-pickle")
    s3s = [k for k in (("terasort", size, "arrow", b) for b in S3_LABELS) if k in g]

    def ratio(others: Sequence[Key], *steps: str) -> str:
        if shm not in g or not all(k in g for k in others) or not others:
            return "–"
        best = min(times(g[k], *steps).median for k in others)
        return f"{best / times(g[shm], *steps).median:.2f}×"

    enc = "–"
    if shm in g and pkl in g:
        doc_encode = statistics.median(x.writer["doc_encode"] for x in g[pkl])
        enc = f"{doc_encode / times(g[shm], 'serialize').median:.2f}×"
    w, r, rs = ("serialize", "write"), ("open", "decode"), ("open", "scan", "decode")
    ours = {
        "write_pickle": (ratio([pkl], *w), "–"),
        "encode_pickle": (enc, "–"),
        "write_s3": (ratio(s3s, *w), "–"),
        "read_pickle": (ratio([pkl], *r), ratio([pkl], *rs)),
        "read_s3": (ratio(s3s, *r), ratio(s3s, *rs)),
    }
    rows = [[x.figure, f"{x.doc:.2f}×", *ours[x.key]] for x in doc002.RATIOS]
    return (
        f"Ours: Terasort {size} MB, variant `arrow`, medians; *write* = serialize + `put`, "
        f"*read* = open + decode (last column: + first scan). Encoding: the document's "
        f"`pickle.dumps(DataFrame)` against `Table.from_pandas`. S3: the fastest of the S3 variants measured (`s3`, "
        f"`s3-parquet`, `s3fs`, `s3fs-parquet`), on 127.0.0.1 unless --s3-endpoint. The document's pickle read of 100 MB "
        f"(0.006 s less than its 500 MB Arrow read): ≈{doc002.READ_PICKLE_100MB_S:.3f} s.\n\n"
        + _table(["figure", "doc 002 (× faster)", "ours", "ours incl. first scan"], rows)
    )


# -- plots -------------------------------------------------------------------------------------------


def require_matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise BenchmarkError(
            "plots need matplotlib, which is not installed: pip install 'riera-bench[plots]'"
        ) from err
    matplotlib.use("Agg")
    return matplotlib


def plot(report: ExchangeReport, directory: Path) -> list[Path]:
    """One PNG per dataset: write time, read time and peak memory vs size, per backend/variant."""
    require_matplotlib()
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    g, written = groups(report), []
    panels: list[tuple[str, Callable[[list[Run]], float]]] = [
        ("write: serialize + put (s)", lambda rs: times(rs, "serialize", "write").median),
        ("read: open + decode (s)", lambda rs: times(rs, "open", "decode").median),
        ("peak memory increment while writing (MiB)",
         lambda rs: max(memory(rs, s, "peak") for s in WRITE_STEPS) / MiB),
        ("peak memory increment while reading (MiB)",
         lambda rs: max(memory(rs, s, "peak") for s in READ_STEPS) / MiB),
    ]  # fmt: skip
    for dataset in report.config.datasets:
        series = sorted({(k[3], k[2]) for k in g if k[0] == dataset})
        if not series:
            continue
        backends = list(dict.fromkeys(b for b, _ in series))
        variants = list(dict.fromkeys(v for _, v in series))
        fig, axes = plt.subplots(2, 2, figsize=(13, 9))
        for ax, (title, value) in zip(axes.flat, panels, strict=True):
            for backend, variant in series:
                pts = sorted((k[1], value(rs)) for k, rs in g.items()
                             if k[0] == dataset and k[3] == backend and k[2] == variant)  # fmt: skip
                ax.plot(*zip(*pts, strict=True), marker="o", label=f"{backend} · {variant}",
                        color=f"C{backends.index(backend) % 10}",
                        linestyle=("-", "--", ":", "-.")[variants.index(variant) % 4])  # fmt: skip
            measured = max(k[1] for k in g if k[0] == dataset)
            if title.startswith("read") and dataset == "terasort" and measured >= 100:
                doc = sorted(doc002.READ_SHM_ARROW_S.items())
                ax.plot(*zip(*doc, strict=True), "kx", markersize=9,
                        label="doc 002: shm · PyArrow String")  # fmt: skip
            if title.endswith("(s)"):
                ax.set_yscale("log")
            ax.set(title=title, xlabel="CSV size (MB)")
            ax.grid(True, alpha=0.3)
        handles, labels = axes.flat[1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="center right", fontsize=8)
        quick = " (quick: smoke-test sizes)" if report.config.quick else ""
        fig.suptitle(f"Riera exchange study: {dataset}{quick}")
        fig.tight_layout(rect=(0, 0, 0.8, 1))
        path = directory / f"exchange-{dataset}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
