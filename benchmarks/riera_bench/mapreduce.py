"""``riera bench mapreduce``: document 002's Terasort-style MapReduce, on Riera and on its peers.

The job, the same for every engine: read ``key,value`` CSV files, range-partition by key and sort
(sort by ``key``), write the sorted rows as Parquet files into an output directory. Every output is
read back and verified (untimed) before its time counts: files sorted and in key order, the input's
row count, and an order-independent checksum of the rows equal to the input's
(:func:`riera_bench.peers.verify_output`). A wrong result is reported as such, never as a timing.

- **Riera**, in this process, once per exchange backend (``shm``, ``shm-pickle``, ``disk``,
  ``redis``, ``s3``): ``riera.init(workers=P, exchange=backend)`` then
  ``read_csv(files).sort("key").write_parquet(out)``. ``s3`` talks to a moto server started here on
  127.0.0.1; ``redis`` to the server at ``--redis-url``.
- **Peers**, each in a child process per P (``riera_bench.peers``): Lithops (localhost backend and
  storage: mappers range-partition, reducers sort, as the document did), Dask (a ``LocalCluster``
  of P processes), Ray Data (``num_cpus=P``), PySpark (``local[P]``), and Polars and DuckDB (one
  process, P threads) as the single-process bars. A peer that is not installed or does not start
  is reported and the study goes on.

Each engine is started (timed apart: the *start* column) and warmed up by an untimed job on the
first input file; then ``repeats`` timed jobs. Input: gensort records converted to 100-byte CSV
lines (:func:`riera_bench.peers.make_lines`), split into files of about 128 MB (at least one per
process).

:func:`run` measures and returns a :class:`MapReduceReport`; :func:`render` makes it markdown.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil

from riera_bench.measure import (
    GB,
    MB,
    Options,
    PeakMemory,
    Stats,
    fmt_bytes,
    machine_info,
    stop_process,
    timed,
)
from riera_bench.peers import (
    INSTALL_HINT,
    PEER_LABELS,
    PEER_MODULES,
    PEERS,
    InputSet,
    Verification,
    environment,
    generate,
    verify_output,
)

BACKENDS = ("shm", "disk", "shm-pickle", "redis", "s3")
# Study labels beyond the exchange names: ``s3fs`` is the s3 exchange through the s3fs client.
EXTRA_BACKENDS = ("s3fs",)
REDIS_URL = "redis://127.0.0.1:6379/0"
S3_BUCKET = "riera-bench-mapreduce"
FILE_BYTES = 128 * MB  # target size of an input file

Progress = Callable[[str], None]

# Document 002, section 4.3.2 (32-core EC2 VM; Terasort CSV of 1, 3 and 5 GB; 4–32 processes).
# Only percentages are given in the text; the absolute times are in figures 16–19 (images).
DOC_DOUBLING = {  # time saved when doubling the processes, shared memory, per size in GB
    (4, 8): {1: 41.35, 3: 42.79, 5: 42.74},
    (8, 16): {1: 31.48, 3: 34.44, 5: 35.49},
    (16, 32): {1: 11.20, 3: 14.62, 5: 14.23},
}
DOC_SHM_FASTER_5GB = {  # shared memory's time saved against another intermediate store, 5 GB
    "disk (Lithops storage, localhost)": {4: 49.33, 8: 47.77, 16: 48.14, 32: 54.04},
    "S3 (s3fs, AWS)": {4: 47.93, 8: 48.48, 16: 56.60, 32: 65.22},
}


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MapReduceConfig(Options):
    sizes: tuple[int, ...] = (1 * GB, 3 * GB, 5 * GB)  # bytes of input
    procs: tuple[int, ...] = (1, 2, 4)
    backends: tuple[str, ...] = BACKENDS
    peers: tuple[str, ...] = PEERS
    repeats: int = 3
    base_dir: Path | None = None
    timeout: float = 3600.0  # seconds per peer and process count
    redis_url: str = REDIS_URL
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> MapReduceConfig:
        """A few MB, P = 1 and 2, one repeat: a smoke run."""
        return cls(sizes=(4 * MB,), procs=(1, 2), repeats=1, timeout=600.0, quick=True)


# -- results -----------------------------------------------------------------------------------------


@dataclass
class EngineResult:
    """One engine (and exchange backend) at one process count on one input."""

    engine: str  # "riera" or a peer name
    exchange: str  # Riera's backend; "" for peers
    procs: int
    stats: Stats = field(default_factory=Stats)
    rss: int = 0  # peak summed RSS of the process tree over the runs
    start_seconds: float | None = None
    info: str = ""
    error: str | None = None  # did not run (or not to the end)
    wrong: str | None = None  # a run produced a wrong result: no timing is reported
    order: str = "file names"
    note: str = ""

    @property
    def label(self) -> str:
        return "Riera" if self.engine == "riera" else PEER_LABELS.get(self.engine, self.engine)

    @property
    def timed(self) -> bool:
        return self.wrong is None and self.stats.n > 0


@dataclass
class SizeResult:
    requested: int
    nbytes: int
    rows: int
    files: int
    gen_seconds: float
    results: list[EngineResult] = field(default_factory=list)


@dataclass
class MapReduceReport:
    config: MapReduceConfig
    machine: dict[str, Any]
    sizes: list[SizeResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)  # engine or backend -> why
    seconds: float = 0.0

    def results(self) -> Iterator[EngineResult]:
        for s in self.sizes:
            yield from s.results

    @property
    def riera_wrong(self) -> list[EngineResult]:
        return [r for r in self.results() if r.engine == "riera" and r.wrong]


# -- input sizes -------------------------------------------------------------------------------------


def fitting_sizes(config: MapReduceConfig, base: Path) -> tuple[list[int], list[str]]:
    """The requested sizes that fit this machine, else the largest that does; and notes why.

    A size S fits when 4·S is free under ``base`` (input, output, spilled or stored intermediate
    data) and 3·S of RAM is available (the engines hold the data and a sorted copy).
    """
    disk = shutil.disk_usage(base).free
    ram = psutil.virtual_memory().available
    limit = min(disk / 4, ram / 3)
    sizes, notes = [], []
    for s in config.sizes:
        if s <= limit:
            sizes.append(s)
            continue
        step = GB if limit >= GB else 100 * MB
        fit = int(limit // step) * step
        notes.append(
            f"{_size(s)} does not fit (needs {fmt_bytes(4 * s)} free under {base} and "
            f"{fmt_bytes(3 * s)} of RAM; {fmt_bytes(disk)} and {fmt_bytes(ram)} available)"
            + (f"; measured {_size(fit)} instead" if fit > 0 else "")
        )
        if fit > 0:
            sizes.append(fit)
    return sorted(set(sizes)), notes


# -- servers for the remote backends -----------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _PeakMemory(PeakMemory):
    """:class:`PeakMemory` leaving out some child processes (the moto server: it holds the s3
    exchange's objects only while the s3 backend runs, and is no part of the other runs)."""

    def __init__(self, exclude: set[int], **kwargs: Any) -> None:
        self._exclude = exclude
        super().__init__(**kwargs)

    def _refresh_children(self) -> None:
        super()._refresh_children()
        if self._exclude:
            self._procs = [p for p in self._procs if p.pid not in self._exclude]


_SERVERS: set[int] = set()  # pids of the servers this study started


@contextlib.contextmanager
def moto_server(log: Path, timeout: float = 15.0) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 in a subprocess (like tests/exchange/conftest.py)."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _SERVERS.add(proc.pid)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"moto.server exited with code {proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"moto.server did not start within {timeout:.0f} s")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(proc)
        _SERVERS.discard(proc.pid)


def redis_problem(url: str) -> str | None:
    """Why the Redis backend cannot run (None when a server answers PING at ``url``)."""
    if importlib.util.find_spec("redis") is None:
        return INSTALL_HINT
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as e:
        return f"no Redis server answers at {url} ({e}); start one or pass --redis-url"
    finally:
        client.close()
    return None


# -- running -----------------------------------------------------------------------------------------


def _sync() -> None:
    """Flush dirty pages so a previous run's write-back does not land in the next timing."""
    if hasattr(os, "sync"):
        os.sync()


def _one_line(e: BaseException) -> str:
    lines = f"{type(e).__name__}: {e}".strip().splitlines()
    return lines[0][:400] if lines else type(e).__name__


def riera_job(files: list[str], out: Path) -> None:
    """The job on Riera's public API."""
    import pyarrow as pa

    import riera

    schema = {"key": pa.string(), "value": pa.string()}
    riera.read_csv(files, schema=schema).sort("key").write_parquet(out)


def _judge(v: Verification, res: EngineResult) -> bool:
    if v.ok:
        res.order = v.order
        return True
    res.wrong = "; ".join(v.problems[:3])
    return False


def measure_riera(
    backend: str,
    procs: int,
    inp: InputSet,
    root: Path,
    config: MapReduceConfig,
    settings: dict[str, Any],
    say: Progress,
) -> EngineResult:
    import riera

    res = EngineResult("riera", backend, procs)
    try:
        t0 = time.perf_counter()
        rt = riera.init(workers=procs, progress="off", **{"exchange": backend, **settings})
        if riera.range(procs * 4, partitions=procs).count() != procs * 4:
            raise RuntimeError("the warm-up riera.range(...).count() returned a wrong count")
        res.start_seconds = time.perf_counter() - t0
        client = f", s3_client={settings['s3_client']!r}" if "s3_client" in settings else ""
        exchange = settings.get("exchange", backend)
        res.info = f"riera {riera.__version__}, init(workers=P, exchange={exchange!r}{client})"
        warm = root / f"out-riera-{backend}-p{procs}-warm"
        riera_job(inp.files[:1], warm)
        if not _judge(verify_output(warm).expect(inp.first_rows, inp.first_checksum), res):
            res.wrong = "warm-up job: " + (res.wrong or "")
            return res
        shutil.rmtree(warm)
        for i in range(config.repeats):
            out = root / f"out-riera-{backend}-p{procs}-{i}"
            _sync()
            exclude = set() if backend.startswith("s3") else set(_SERVERS)
            with _PeakMemory(exclude, shm_dir=rt.settings.shm_dir) as mem:
                _, dt = timed(partial(riera_job, inp.files, out))
            if not _judge(verify_output(out).expect(inp.rows, inp.checksum), res):
                say(f"  riera {backend} P={procs} run {i + 1}: WRONG RESULT: {res.wrong}")
                return res
            used = rt.last_run.exchange if rt.last_run is not None else backend
            if used != settings.get("exchange", backend):
                res.note = f"the run reported exchange {used!r}"
            res.stats.add(dt)
            res.rss = max(res.rss, mem.peak.rss_sum)
            say(f"  riera {backend} P={procs} run {i + 1}/{config.repeats}: {dt:.3f} s (verified)")
            shutil.rmtree(out)
    except Exception as e:
        res.error = _one_line(e)
        say(f"  riera {backend} P={procs}: error: {res.error}")
    finally:
        riera.shutdown()
    return res


def peer_problem(name: str) -> str | None:
    """Why a peer cannot run here, known before starting it (None if it may)."""
    if any(importlib.util.find_spec(m) is None for m in PEER_MODULES[name]):
        return INSTALL_HINT
    if name == "spark" and shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "needs Java 17+ (no `java` on PATH and no JAVA_HOME)"
    return None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End the child's process group (it was started in a session of its own)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        if sig == signal.SIGTERM:
            time.sleep(0.5)


def measure_peer(
    name: str, procs: int, inp: InputSet, root: Path, config: MapReduceConfig, say: Progress
) -> EngineResult:
    res = EngineResult(name, "", procs)
    tmp = root / f"peer-{name}-p{procs}"
    tmp.mkdir()
    spec = {
        "engine": name,
        "procs": procs,
        "files": inp.files,
        "rows": inp.rows,
        "checksum": f"{inp.checksum:016x}",
        "warm_rows": inp.first_rows,
        "warm_checksum": f"{inp.first_checksum:016x}",
        "repeats": config.repeats,
        "tmp": str(tmp),
        "out": str(tmp / "out"),
        "result": str(tmp / "result.json"),
        "ram": psutil.virtual_memory().total,
        "short_tmp": tempfile.mkdtemp(prefix="riera-ray-") if name == "ray" else None,
    }
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, **environment(name, procs, tmp)}
    log = tmp / "log.txt"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "riera_bench.peers", str(tmp / "spec.json")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp,
            start_new_session=True,
        )
    timed_out = False
    try:
        proc.wait(timeout=config.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        _kill_group(proc)
        proc.wait()
    result_file = Path(spec["result"])
    data = json.loads(result_file.read_text()) if result_file.exists() else {}
    res.info = data.get("info", "")
    res.start_seconds = data.get("start_seconds")
    for run in data.get("runs", []):
        if run["problems"]:
            res.wrong = "; ".join(run["problems"][:3])
            break
        res.stats.add(run["seconds"])
        res.rss = max(res.rss, run["rss"])
        res.order = run["order"]
    if data.get("error"):
        res.error = data["error"]
        if res.error.startswith("wrong result"):
            res.error, res.wrong = None, res.error
    if timed_out:
        res.error = f"timed out after {config.timeout:.0f} s (--timeout)"
    elif proc.returncode and not res.error:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        res.error = (
            f"the child process ended with code {proc.returncode} after {res.stats.n} of "
            f"{config.repeats} run(s)" + (f": {tail[0][:300]}" if tail[0] else "")
        )
    if res.timed:
        say(
            f"  {name} P={procs}: median {res.stats.median:.3f} s over {res.stats.n} run(s) "
            f"(verified)"
        )
    else:
        say(f"  {name} P={procs}: {res.wrong or res.error or 'no runs'}")
    shutil.rmtree(tmp, ignore_errors=True)
    if spec["short_tmp"]:
        shutil.rmtree(spec["short_tmp"], ignore_errors=True)
    return res


def run(config: MapReduceConfig, progress: Progress | None = None) -> MapReduceReport:
    """Generate each input size and run every engine on it; see the module docstring."""
    from riera.config import load_settings

    say = progress or (lambda _msg: None)
    base = config.base_dir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="riera-bench-mapreduce-", dir=base))
    say(f"working directory {root}")
    report = MapReduceReport(config, machine_info(load_settings().shm_dir))
    t0 = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            settings = _backend_settings(config, root, report, stack, say)
            peers = []
            for name in config.peers:
                why = peer_problem(name)
                if why:
                    report.unavailable[PEER_LABELS[name]] = why
                    say(f"{name}: {why}")
                else:
                    peers.append(name)
            sizes, report.notes = fitting_sizes(config, root)
            for note in report.notes:
                say(note)
            for nbytes in sizes:
                report.sizes.append(_measure_size(nbytes, config, root, settings, peers, say))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report.seconds = time.perf_counter() - t0
    return report


def _backend_settings(
    config: MapReduceConfig,
    root: Path,
    report: MapReduceReport,
    stack: contextlib.ExitStack,
    say: Progress,
) -> dict[str, dict[str, Any]]:
    """Riera's settings per usable backend; the others go to ``report.unavailable``."""
    common = {"spill_dir": root / "spill", "spill": False}
    out: dict[str, dict[str, Any]] = {}
    endpoint: str | None = None  # one moto server for s3 and s3fs
    for b in config.backends:
        if b == "redis":
            why = redis_problem(config.redis_url)
            if why:
                report.unavailable["Riera redis"] = why
                say(f"redis: {why}")
                continue
            out[b] = {**common, "redis_url": config.redis_url}
        elif b in ("s3", "s3fs"):
            needs = ("boto3", "moto") if b == "s3" else ("s3fs", "moto")
            if not all(importlib.util.find_spec(m) for m in needs):
                report.unavailable[f"Riera {b}"] = INSTALL_HINT
                say(f"{b}: {INSTALL_HINT}")
                continue
            if endpoint is None:
                try:
                    endpoint = stack.enter_context(moto_server(root / "moto.log"))
                except RuntimeError as e:
                    report.unavailable[f"Riera {b}"] = str(e)
                    say(f"{b}: {e}")
                    continue
                say(f"s3: moto server at {endpoint}")
            out[b] = {
                **common,
                "exchange": "s3",
                "s3_client": "boto3" if b == "s3" else "s3fs",
                "s3_endpoint": endpoint,
                "s3_bucket": S3_BUCKET,
                "s3_access_key": "testing",
                "s3_secret_key": "testing",
            }
        else:
            out[b] = dict(common)
    return out


def _measure_size(
    nbytes: int,
    config: MapReduceConfig,
    root: Path,
    settings: dict[str, dict[str, Any]],
    peers: Sequence[str],
    say: Progress,
) -> SizeResult:
    files = max(max(config.procs), math.ceil(nbytes / FILE_BYTES))
    say(f"{_size(nbytes)}: generating {files} CSV file(s)")
    inp = generate(root / f"input-{nbytes}", nbytes, files)
    say(f"  {inp.rows:,} rows, {inp.nbytes / MB:,.1f} MB in {inp.gen_seconds:.1f} s")
    res = SizeResult(nbytes, inp.nbytes, inp.rows, len(inp.files), inp.gen_seconds)
    for p in config.procs:
        for backend, extra in settings.items():
            say(f"{_size(nbytes)}, P={p}: Riera, exchange {backend}")
            res.results.append(measure_riera(backend, p, inp, root, config, extra, say))
        for name in peers:
            say(f"{_size(nbytes)}, P={p}: {name}")
            res.results.append(measure_peer(name, p, inp, root, config, say))
    shutil.rmtree(inp.directory)
    return res


# -- markdown ----------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    marks = {"l": ":--", "r": "--:", "c": ":-:"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _size(nbytes: float) -> str:
    if nbytes >= GB and nbytes % (GB // 10) == 0:
        return f"{nbytes / GB:g} GB"
    return f"{nbytes / GB:.2f} GB" if nbytes >= GB else f"{nbytes / MB:g} MB"


def _s(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 100 else f"{seconds:.1f}"


def _pct(value: float, digits: int = 1) -> str:
    return f"{value:.{digits}f}%"


def _baseline(size: SizeResult, procs: int) -> EngineResult | None:
    for r in size.results:
        if r.engine == "riera" and r.exchange == "shm" and r.procs == procs and r.timed:
            return r
    return None


def _ratio(r: EngineResult, size: SizeResult) -> str:
    base = _baseline(size, r.procs)
    if not r.timed or base is None:
        return "–"
    return f"{r.stats.median / base.stats.median:.2f}"


def _status(r: EngineResult) -> str:
    if r.wrong:
        return f"**WRONG RESULT**: {r.wrong}"
    if r.error and r.stats.n:
        return f"yes ({r.stats.n}/{r.stats.n}), then error: {r.error}"
    if r.error:
        return f"error: {r.error}"
    notes = [r.note] if r.note else []
    if r.order != "file names":
        notes.append("files in key order by first key, not by name")
    return f"yes ({r.stats.n}/{r.stats.n})" + (f" ({'; '.join(notes)})" if notes else "")


def _groups(size: SizeResult) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in size.results:
        if (r.engine, r.exchange) not in seen:
            seen.append((r.engine, r.exchange))
    return seen


def _find(size: SizeResult, engine: str, exchange: str, procs: int) -> EngineResult | None:
    for r in size.results:
        if (r.engine, r.exchange, r.procs) == (engine, exchange, procs):
            return r
    return None


def _saved(slow: EngineResult | None, fast: EngineResult | None) -> str:
    """The document's "x% faster": time saved, (t_slow − t_fast) / t_slow."""
    if slow is None or fast is None or not slow.timed or not fast.timed:
        return "–"
    return _pct((1 - fast.stats.median / slow.stats.median) * 100)


def render(report: MapReduceReport) -> str:
    """The report as markdown."""
    c, m = report.config, report.machine
    load = " / ".join(f"{x:.2f}" for x in m["load"])
    parts = ["# Riera MapReduce study (document 002's Terasort-style job)", ""]
    parts.append(
        f"{m['date']} · {m['cores']} cores ({m['usable_cores']} usable), {fmt_bytes(m['ram'])} RAM"
        f" · Python {m['python']} · pyarrow {m['pyarrow']} · riera {m['riera']} · "
        f"{m['shm_dir']} {fmt_bytes(m['shm_total'])} · {m['platform']} · load average at start "
        f"{load}"
    )
    opts = [
        f"sizes {', '.join(_size(s.requested) for s in report.sizes) or '–'}",
        f"P = {','.join(map(str, c.procs))}",
        f"exchanges {','.join(c.backends) or '–'}",
        f"peers {','.join(c.peers) or '–'}",
        f"repeats {c.repeats}",
    ]
    if c.quick:
        opts.append("**quick (smoke-test sizes; the numbers mean little)**")
    parts += [
        "",
        "Options: " + ", ".join(opts) + f". Total time {report.seconds:.0f} s.",
        "",
        "The job, for every engine: read the `key,value` CSV files, range-partition by key and "
        "sort, write Parquet files into an output directory. Times are wall-clock medians of the "
        "timed runs, after the engine was started (*start*, not included) and warmed up by an "
        "untimed job on one input file. Every output was read back and verified before its time "
        "counted: files sorted and in key order, the input's row count and row checksum. *Ratio* "
        "is the time divided by Riera's with the shm exchange at the same P (above 1: slower "
        "than Riera). MB/s = input CSV bytes (10⁶) / median. Peak RSS sums the engine's process "
        "tree. P is worker processes (Riera, Dask, Lithops), CPUs (Ray), `local[P]` threads "
        "(Spark) or threads (Polars and DuckDB, one process).",
    ]
    if report.notes:
        parts += [""] + [f"- {n}" for n in report.notes]
    for size in report.sizes:
        parts += _render_size(size, c)
    parts += _render_document(report)
    parts += ["", "## Engines", ""]
    rows = []
    infos: dict[str, str] = {}
    for r in report.results():
        if r.info:
            name = f"{r.label} ({r.exchange})" if r.engine == "riera" else r.label
            infos.setdefault(name, r.info)
    rows += [[name, info, "ran"] for name, info in infos.items()]
    rows += [[name, "–", why] for name, why in report.unavailable.items()]
    parts.append(_table(["engine", "version and settings", "status"], rows, "lll"))
    timed = [r for r in report.results() if r.timed]
    runs = sum(r.stats.n for r in timed)
    wrong = [r for r in report.results() if r.wrong]
    parts.append("")
    if wrong:
        parts.append(
            f"**{len(wrong)} engine configuration(s) produced a wrong result** (no timing "
            f"reported for them): "
            + "; ".join(f"{r.label} {r.exchange} P={r.procs}: {r.wrong}" for r in wrong)
        )
    parts.append(
        f"Verification: {runs} timed job(s) in {len(timed)} configuration(s) verified "
        f"(sorted, row count and checksum equal to the input's)."
    )
    return "\n".join(parts) + "\n"


def _render_size(size: SizeResult, c: MapReduceConfig) -> list[str]:
    parts = [
        "",
        f"## {_size(size.requested)}",
        "",
        f"{size.rows:,} rows of 100 bytes in {size.files} CSV file(s), {size.nbytes / MB:,.1f} "
        f"MB (generated in {size.gen_seconds:.1f} s).",
        "",
    ]
    headers = ["engine", "exchange", *[f"P={p}: median (s), ratio" for p in c.procs]]
    rows = []
    for engine, exchange in _groups(size):
        label = "Riera" if engine == "riera" else PEER_LABELS.get(engine, engine)
        cells = [label, exchange or "–"]
        for p in c.procs:
            r = _find(size, engine, exchange, p)
            if r is None:
                cells.append("–")
            elif r.timed:
                cells.append(f"{_s(r.stats.median)} ({_ratio(r, size)})")
            else:
                cells.append("wrong result" if r.wrong else "error")
        rows.append(cells)
    parts.append(_table(headers, rows, "ll" + "r" * len(c.procs)))
    parts += ["", "Detail:", ""]
    rows = []
    for r in size.results:
        t = r.timed
        rows.append(
            [
                r.label,
                r.exchange or "–",
                str(r.procs),
                _s(r.stats.median) if t else "–",
                r.stats.range_str() if t else "–",
                str(r.stats.n) if t else "0",
                f"{r.stats.rate(size.nbytes):,.1f}" if t else "–",
                _ratio(r, size),
                _s(r.start_seconds) if r.start_seconds is not None else "–",
                fmt_bytes(r.rss) if t else "–",
                _status(r),
            ]
        )
    headers = [
        "engine",
        "exchange",
        "P",
        "median (s)",
        "min–max (s)",
        "runs",
        "MB/s",
        "ratio to Riera shm",
        "start (s)",
        "peak RSS",
        "verified",
    ]
    parts.append(_table(headers, rows, "llrrrrrrrrl"))
    return parts


def _render_document(report: MapReduceReport) -> list[str]:
    c = report.config
    parts = ["", "## Beside document 002", ""]
    parts.append(
        "Document 002 ran its MapReduce on a 32-core EC2 VM over Terasort CSVs of 1, 3 and 5 GB "
        "with 4, 8, 16 and 32 processes; its text gives only these percentages (the times are "
        "in figures). *x% faster* is the time saved: (t_slow − t_fast) / t_slow. Its disk store "
        "was Lithops' storage API in localhost mode, its S3 was AWS through s3fs; ours is Riera's "
        "disk exchange and a local moto server."
    )
    doubling = [(a, b) for a in c.procs for b in c.procs if b == 2 * a]
    if doubling:
        headers = ["size", "engine", "exchange", *[f"P {a}→{b}" for a, b in doubling]]
        rows = []
        for size in report.sizes:
            for engine, exchange in _groups(size):
                label = "Riera" if engine == "riera" else PEER_LABELS.get(engine, engine)
                cells = [_size(size.requested), label, exchange or "–"]
                for a, b in doubling:
                    cells.append(
                        _saved(_find(size, engine, exchange, a), _find(size, engine, exchange, b))
                    )
                rows.append(cells)
        parts += [
            "",
            "Time saved by doubling the processes (ours):",
            "",
            _table(headers, rows, "lll" + "r" * len(doubling)),
        ]
    rows = [[f"{a}→{b}", *[_pct(v[g], 2) for g in (1, 3, 5)]] for (a, b), v in DOC_DOUBLING.items()]
    parts += [
        "",
        "Document 002, shared memory, time saved by doubling the processes:",
        "",
        _table(["processes", "1 GB", "3 GB", "5 GB"], rows, "lrrr"),
    ]
    others = [b for b in ("disk", "shm-pickle", "redis", "s3", "s3fs") if b in c.backends]
    if "shm" in c.backends and others:
        rows = []
        for size in report.sizes:
            for p in c.procs:
                shm = _find(size, "riera", "shm", p)
                cells = [_size(size.requested), str(p)]
                cells += [_saved(_find(size, "riera", b, p), shm) for b in others]
                lithops = _find(size, "lithops", "", p)
                cells.append(_saved(lithops, shm))
                rows.append(cells)
        headers = ["size", "P", *[f"than {b}" for b in others], "than Lithops"]
        parts += [
            "",
            "Riera with the shm exchange, x% faster than (ours):",
            "",
            _table(headers, rows, "lr" + "r" * (len(others) + 1)),
        ]
    rows = [
        [name, *[_pct(v[p], 2) for p in (4, 8, 16, 32)]] for name, v in DOC_SHM_FASTER_5GB.items()
    ]
    parts += [
        "",
        "Document 002, 5 GB, shared memory x% faster than:",
        "",
        _table(["store", "4 processes", "8", "16", "32"], rows, "lrrrr"),
    ]
    return parts
