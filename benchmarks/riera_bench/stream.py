"""``riera bench stream``: document 000's streaming word count on Riera and on its peers, same input.

**Workload.** The document's retail messages ``{"chave": "<n>", "valorA": "<product>", "valorB":
"1", "ts": <producer Unix ms>}`` over 3 products (Freezer, Ar Condicionado, Microondas) or 20
(:mod:`riera.apps.producers.retail`, seeded: every engine gets the same messages). The job sums
``valorB`` per ``valorA``; every run's final totals are compared with a plain ``Counter`` of the
messages sent, and a difference is reported in the table as a MISMATCH.

**Throughput.** ``messages`` are loaded into the row's transport first (untimed); the clock starts
when the query starts (Riera: when ``write_stream`` returned — its worker processes are up and it
reads, as a peer's session or JVM is up; a peer: its child's ``@START``, just before
``writeStream.start()`` / ``execute_sql`` / ``run_main``) and stops when the output that completes the final totals reaches the sink (Riera:
when the sink's ``write`` of it returned; a peer: when its line reached the benchmark). words/s =
messages / that time; it includes a peer's query planning and deployment, and for exactly-once
rows the wait for the commit that publishes the last totals.

**Latency.** The query starts on an empty input; a producer process (:mod:`riera_bench.stream_peers`)
sends ``warmup`` messages, and the timed phase starts once their totals reached the sink (so the
engine is up end to end); then ``rate`` messages per second for ``seconds``, each stamped with the
time it was sent. Latency of an event = when its effect was committed to the sink − its producer
timestamp; p50/p95/p99 over the timed events only, then the median of each over the repetitions.

- Riera: the query's own metrics (``riera.stream.metrics.Latency``, from the producer's ``ts`` to
  the return of the sink write holding the event: *committed*), the samples after the warm-up's.
  A count-based figure like the peers' (below) is computed from the sink as a cross-check.
- Peers: their running totals reach a pipe the benchmark reads (child stdout, unbuffered), each
  line stamped on arrival. Totals only grow, so the k-th event of a word (in production order) is
  reflected by the first output showing a total ≥ k; its latency is that output's arrival − the
  event's ``ts``. This assumes each word's events are counted in production order (true of one
  Redis stream; within one Spark micro-batch or one Flink discovery round, files may be read in
  another order, which moves single samples by at most that round's processing time).

**Rows.** Riera (in this process): continuous at-least-once, continuous exactly-once (checkpoint 1 s)
and micro-batch 1 s exactly-once, each on ``memory://`` (the embedded broker, a SQLite log in
/dev/shm; the producer is another process) and on ``redis://`` (Redis Streams); the sink is the
same transport (``memory://NAME-out``, ``redis://…/NAME-out``), as the document's pipeline writes
its totals to a topic. Peers, each in a child process started, checked ready and killed (its
process group) by the benchmark, are described in :mod:`riera_bench.stream_peers`; their sink is
a pipe to the benchmark, not a broker. Every row names its guarantee and transport; the ratio is
to the reference row (Riera continuous exactly-once on ``memory://``).
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from riera_bench import stream_peers as sp
from riera_bench.measure import Options, machine_info

Progress = Callable[[str], None]

RIERA_MODES = ("continuous-alo", "continuous-eo", "micro-batch")
TRANSPORTS = ("generator", "memory", "redis")
PEERS = ("bytewax", "spark", "flink")
FLINK_MODES = ("process", "thread", "sql")
REFERENCE = ("Riera", "continuous-eo", "memory")
PYFLINK_ENV = "RIERA_BENCH_PYFLINK_PYTHON"
WARM_UP_MESSAGES = 5_000  # the untimed first run of each row (not with --quick)
FILE_LINES = 10_000  # lines per pre-loaded input file (Spark, Flink)
DIR_BATCH_MS = 100  # the producer's batch interval into a directory (one file per batch)
BROKER_BATCH_MS = 1  # … into a broker (one send per batch: 5 messages at 5,000/s)
INSTALL = {
    "bytewax": "not installed: pip install 'bytewax>=0.21'",
    "spark": "not installed: pip install 'pyspark>=4' (and Java 17+)",
    "flink": (
        "not installed: pip install apache-flink — in a venv of its own (it pins old numpy, "
        f"pyarrow and pandas), then pass --pyflink-python PATH or set {PYFLINK_ENV}"
    ),
}
_RIERA_LABELS = {
    "continuous-alo": ("continuous (linger 0)", "at_least_once"),
    "continuous-eo": ("continuous (linger 0, checkpoint 1 s)", "exactly_once"),
    "micro-batch": ("micro_batch 1 s", "exactly_once"),
}
_TRANSPORT_LABELS = {
    "generator": "in-process generator (from_generator)",
    "memory": "memory:// (embedded broker)",
    "redis": "redis:// (Redis Streams)",
}


@dataclass(frozen=True)
class StreamConfig(Options):
    messages: int = 200_000
    rate: int = 5_000
    seconds: float = 10.0
    warmup: int = 1_000
    products: int = 3
    repeat: int = 3
    transports: tuple[str, ...] = TRANSPORTS
    riera_workers: tuple[int, ...] = (1, 2)  # worker processes of Riera's throughput rows
    riera_modes: tuple[str, ...] = RIERA_MODES
    peers: tuple[str, ...] = PEERS
    flink_modes: tuple[str, ...] = ("process", "thread")
    redis_url: str = "redis://127.0.0.1:6379/0"
    pyflink_python: str | None = None
    base_dir: Path | None = None
    timeout: float = 600.0
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_defaults(cls) -> StreamConfig:
        return cls(messages=2_000, rate=500, seconds=1.0, warmup=50, repeat=1, quick=True,
                   riera_workers=(1,))  # fmt: skip

    @property
    def timed(self) -> int:
        return int(self.rate * self.seconds)


@dataclass
class Row:
    engine: str
    key: str  # Riera mode, or peer variant
    mode: str
    guarantee: str
    transport: str
    measures: tuple[str, ...] = ("throughput", "latency")
    throughput: list[float] = field(default_factory=list)  # words/s, one per repetition
    latency: list[tuple[float, float, float]] = field(default_factory=list)  # p50/p95/p99 ms
    check: list[float] = field(default_factory=list)  # Riera: count-based p50, cross-check
    runs: int = 0
    exact: int = 0
    mismatches: list[str] = field(default_factory=list)
    problem: str | None = None  # why the row could not run at all
    errors: list[str] = field(default_factory=list)
    info: str = ""
    workers: int = 1  # Riera: processes reading the source

    @property
    def reference(self) -> bool:
        return (
            self.engine,
            self.key,
            self.transport.split(":")[0],
        ) == REFERENCE and self.workers == 1


@dataclass
class StreamReport:
    config: StreamConfig
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mismatched(self) -> list[Row]:
        return [r for r in self.rows if r.mismatches]


@dataclass
class Workload:
    """``count`` messages: their words in order, their JSON lines, their exact totals."""

    words: list[str]
    lines: list[bytes]
    totals: collections.Counter[str]

    @classmethod
    def make(cls, config: StreamConfig, count: int) -> Workload:
        from riera.apps.producers import encode
        from riera.apps.producers.retail import retail_messages

        now = time.time() * 1000
        msgs = list(retail_messages(config.products, count, config.seed))
        words = [m["valorA"] for m in msgs]
        return cls(words, [encode(m, now)[1] for m in msgs], collections.Counter(words))


def compare(got: dict[str, int], want: collections.Counter[str]) -> str | None:
    """None when the totals are exact, else what differs (a few words)."""
    wrong = [(w, got.get(w), n) for w, n in want.items() if got.get(w) != n]
    wrong += [(w, n, 0) for w, n in got.items() if w not in want]
    if not wrong:
        return None
    return "; ".join(f"{w}: {g} ≠ {n}" for w, g, n in sorted(wrong)[:3])


def count_latencies(
    words: Sequence[str], ts_ms: np.ndarray, log: Sequence[tuple[str, int, float]], skip: int
) -> tuple[np.ndarray, int]:
    """Per-event latencies (ms) of the events after the first ``skip``, from a log of running
    totals ``(word, total, arrival Unix s)`` in arrival order; and how many were never seen."""
    index: dict[str, list[int]] = collections.defaultdict(list)
    for i, w in enumerate(words):
        index[w].append(i)
    by_word = {w: np.asarray(v) for w, v in index.items()}
    seen: dict[str, int] = {}
    out: list[np.ndarray] = []
    for word, total, at in log:
        before = seen.get(word, 0)
        if total <= before or word not in by_word:
            continue
        idx = by_word[word][before:total]
        idx = idx[idx >= skip]
        out.append(at * 1000 - ts_ms[idx])
        seen[word] = total
    lat = np.concatenate(out) if out else np.zeros(0)
    return lat, (len(words) - skip) - len(lat)


def percentiles(samples: np.ndarray) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(samples, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def _one_line(e: BaseException) -> str:
    lines = f"{type(e).__name__}: {e}".strip().splitlines()
    return lines[0][:300] if lines else type(e).__name__


# -- Riera ----------------------------------------------------------------------------------------


class Watch:
    """A sink wrapper: forwards every write to the real sink and, once it returned (committed),
    records the running totals it carried and when."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.url, self.mode = inner, inner.url, inner.mode
        self.latest: dict[str, int] = {}
        self.log: list[tuple[str, int, float]] = []
        self.reached: list[tuple[int, float]] = []  # (sum of the totals, Unix s) after each write
        self.cond = threading.Condition()

    def open(self, job: str, key: Sequence[str]) -> None:
        self.inner.open(job, key)

    def committed(self) -> tuple[int, int]:
        committed: tuple[int, int] = self.inner.committed()
        return committed

    def write(self, rows: Any, epoch: int, seq: int, fence: int) -> bool:
        applied: bool = self.inner.write(rows, epoch, seq, fence)
        if applied and rows.num_rows:
            now = time.time()
            pairs = zip(rows.column("valorA").to_pylist(), rows.column("total").to_pylist(),
                        strict=True)  # fmt: skip
            with self.cond:
                for word, total in pairs:
                    if total > self.latest.get(word, 0):
                        self.latest[word] = total
                        self.log.append((word, total, now))
                self.reached.append((sum(self.latest.values()), now))
                self.cond.notify_all()
        return applied

    def wait_for(self, total: int, timeout: float) -> float | None:
        """When the totals first summed to ``total`` (Unix s), or None after ``timeout``."""
        with self.cond:
            if not self.cond.wait_for(lambda: bool(self.reached) and self.reached[-1][0] >= total,
                                      timeout):  # fmt: skip
                return None
            return next(t for s, t in self.reached if s >= total)

    def close(self) -> None:
        self.inner.close()


class _Names:
    """Unique stream names of this run, and their removal."""

    def __init__(self, config: StreamConfig) -> None:
        self.config, self.n = config, 0
        self.made: list[tuple[str, str]] = []

    def new(self, transport: str, partitions: int = 1) -> tuple[str, str]:
        self.n += 1
        name = f"riera-bench-stream-{os.getpid()}-{self.n}"
        self.made.append((transport, name))
        query = f"?partitions={partitions}" if partitions > 1 else ""
        if transport in ("memory", "generator"):  # a generator's totals go to memory://
            return f"memory://{name}-in{query}", f"memory://{name}-out"
        return f"{self.config.redis_url}/{name}-in{query}", f"{self.config.redis_url}/{name}-out"

    def drop(self) -> None:
        for transport, name in self.made:
            try:
                if transport in ("memory", "generator"):
                    from riera.stream.connectors.memory import Broker

                    Broker.drop(f"{name}-in")
                    Broker.drop(f"{name}-out")
                else:
                    drop_redis(self.config.redis_url, name)
            except Exception:  # cleaning up is best effort
                pass
        self.made = []


def drop_redis(url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _start_riera(key: str, source: str, sink: Any, checkpoint: Path, workers: int = 1) -> Any:
    import riera
    from riera import col
    from riera.apps.streamcount import SCHEMA
    from riera.stream import continuous, micro_batch

    trigger = micro_batch("1s") if key == "micro-batch" else continuous("0ms", checkpoint="1s")
    guarantee = _RIERA_LABELS[key][1]
    words = riera.read_stream(source, schema=SCHEMA)
    totals = words.group_by("valorA").agg(total=col("valorB").cast("int64").sum())
    return totals.write_stream(sink, trigger=trigger, checkpoint=checkpoint, guarantee=guarantee,
                               workers=workers, name=f"bench-{key}")  # fmt: skip


def _generator(work: Workload, partitions: int, name: str) -> str:
    """An in-process source of the workload's messages (as dicts), split over ``partitions``."""
    from riera.stream import from_generator

    words = work.words
    now = time.time() * 1000

    def make(part: int) -> Any:
        for i in range(part, len(words), partitions):
            yield {"chave": str(i), "valorA": words[i], "valorB": "1", "ts": now}

    return from_generator(make, partitions=partitions, name=name)


def _preload(url: str, lines: list[bytes]) -> None:
    from riera.stream.connectors.base import open_producer

    producer = open_producer(url)
    now = time.time() * 1000
    try:
        for i in range(0, len(lines), 10_000):
            producer.send([(None, v, now) for v in lines[i : i + 10_000]])
    finally:
        producer.close()


def _judge(row: Row, got: dict[str, int], want: collections.Counter[str], what: str) -> None:
    """Count the run's final totals as exact or not (a run that output nothing is not judged:
    its error says why)."""
    if not got:
        return
    row.runs += 1
    problem = compare(got, want)
    if problem is None:
        row.exact += 1
    else:
        row.mismatches.append(f"{what}: {problem}")


def riera_throughput(row: Row, work: Workload, names: _Names, root: Path, timeout: float) -> None:
    from riera.stream.connectors.base import open_sink

    transport = row.transport.split(" ")[0].split(":")[0]
    transport = "generator" if transport == "in-process" else transport
    source, sink_url = names.new(transport, row.workers)
    if transport == "generator":
        source = _generator(work, max(2, row.workers), f"bench-{names.n}")
    else:
        _preload(source, work.lines)
    watch = Watch(open_sink(sink_url))
    # Like the peers' engine start, the query's start (its worker processes, its checkpoint
    # directory) is not timed: write_stream returns once the query reads
    query = _start_riera(row.key, source, watch, root / f"cp-{names.n}", row.workers)
    t0 = time.time()
    try:
        done = watch.wait_for(len(work.words), timeout)
    finally:
        query.stop()
    if done is None:
        row.errors.append(f"throughput: no final totals within {timeout:.0f} s")
    else:
        row.throughput.append(len(work.words) / (done - t0))
    _judge(row, watch.latest, work.totals, "throughput run")


def riera_latency(row: Row, config: StreamConfig, work: Workload, names: _Names, root: Path
                  ) -> None:  # fmt: skip
    from riera.stream.connectors.base import open_sink

    transport = row.transport.split(":")[0]
    source, sink_url = names.new(transport)
    if transport == "memory":
        from riera.stream.connectors.memory import Broker

        Broker(source.removeprefix("memory://"), 1).close()
    watch = Watch(open_sink(sink_url))
    query = _start_riera(row.key, source, watch, root / f"cp-{names.n}")
    producer = None
    try:
        producer = Producer(config, {"url": source}, BROKER_BATCH_MS, root / f"prod-{names.n}")
        if watch.wait_for(config.warmup, config.timeout) is None:
            raise RuntimeError("the warm-up messages' totals never reached the sink")
        before = _settle(query, config.warmup)
        producer.go()
        ts = producer.finish(config.seconds + config.timeout)
        if watch.wait_for(len(work.words), config.timeout) is None:
            raise RuntimeError(f"no final totals within {config.timeout:.0f} s")
        _settle(query, len(work.words))
        samples = _latency_samples(query)
    finally:
        if producer is not None:
            producer.close()
        query.stop()
    if samples is not None and len(samples) >= len(work.words):
        row.latency.append(percentiles(samples[before:]))
    else:
        row.latency.append(percentiles(np.asarray([query.metrics["latency"][k] for k in
                                                   ("p50_ms", "p95_ms", "p99_ms")])))  # fmt: skip
        row.errors.append("latency: the query's samples were not readable; its summary "
                          "(warm-up included) is shown")  # fmt: skip
    check, _missing = count_latencies(work.words, ts, watch.log, config.warmup)
    if len(check):
        row.check.append(float(np.percentile(check, 50)))
    _judge(row, watch.latest, work.totals, "latency run")


def _settle(query: Any, count: int, timeout: float = 10.0) -> int:
    """Wait until the query's latency metric holds ``count`` samples (they are added after the
    sink write returns); returns the count seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = int(query.metrics["latency"]["count"])
        if seen >= count or time.monotonic() > deadline:
            return seen
        time.sleep(0.01)


def _latency_samples(query: Any) -> np.ndarray | None:
    """The query's latency samples in arrival order (its metrics' ring, not yet wrapped)."""
    latency = getattr(getattr(getattr(query, "engine", None), "metrics", None), "latency", None)
    samples = getattr(latency, "samples", None)
    if samples is None:
        return None
    out: np.ndarray = samples()
    return out


# -- the producer ---------------------------------------------------------------------------------


class Producer(sp.Child):
    """The paced producer (``stream_peers.py produce``): warm-up sent on start, ``go`` starts the
    timed phase, ``finish`` returns every message's producer timestamp (Unix ms)."""

    def __init__(self, config: StreamConfig, to: dict[str, str], batch_ms: int, tmp: Path) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.spec: dict[str, Any] = {"to": to, "products": config.products, "seed": config.seed,
                     "warmup": config.warmup, "timed": config.timed, "rate": config.rate,
                     "batch_ms": batch_ms, "ts_out": str(tmp / "ts.npy")}  # fmt: skip
        (tmp / "spec.json").write_text(json.dumps(self.spec))
        super().__init__([sys.executable, sp.__file__, "produce", str(tmp / "spec.json")],
                         tmp / "producer.log")  # fmt: skip
        if not self._expect("@WARM", 120):
            self.kill()
            raise RuntimeError("the producer did not start" + self._tail())

    def _expect(self, prefix: str, timeout: float) -> bool:
        return any(line.startswith(prefix) for _t, line in self.lines(time.monotonic() + timeout))

    def _tail(self) -> str:
        lines = Path(self.log_file.name).read_text(errors="replace").strip().splitlines()
        return f": {lines[-1][:300]}" if lines else ""

    def go(self) -> None:
        self.send("go")

    def finish(self, timeout: float) -> np.ndarray:
        if not self._expect("@DONE", timeout):
            raise RuntimeError("the producer did not finish" + self._tail())
        ts: np.ndarray = np.load(self.spec["ts_out"])
        return ts

    def close(self) -> None:
        self.kill()


# -- peers ----------------------------------------------------------------------------------------


def _peer_rows(config: StreamConfig) -> list[Row]:
    rows = []
    if "bytewax" in config.peers:
        mode, guarantee = "per record (stateful_map)", "at_least_once (recovery, 1 s epochs)"
        rows.append(Row("Bytewax", "bytewax-testing", mode, guarantee,
                        "in-process (TestingSource)", ("throughput",)))  # fmt: skip
        rows.append(Row("Bytewax", "bytewax-redis", mode, guarantee,
                        "redis:// (Redis Streams, XREAD source)"))  # fmt: skip
    if "spark" in config.peers:
        rows.append(Row("PySpark", "spark", "micro-batch, default trigger (ASAP), update mode",
                        "at_least_once (foreachBatch sink)", "files (directory)"))  # fmt: skip
    if "flink" in config.peers:
        for m in config.flink_modes:
            mode = (
                "Table API, SQL, json format" if m == "sql" else f"Table API, Python UDF, {m} mode"
            )
            rows.append(Row("PyFlink", f"flink-{m}", mode,
                            "at_least_once (checkpoints 1 s, print sink)",
                            f"files (directory, monitored {sp.FLINK_MONITOR})"))  # fmt: skip
    return rows


def pyflink_python(config: StreamConfig) -> str:
    return config.pyflink_python or os.environ.get(PYFLINK_ENV) or sys.executable


def peer_problem(row: Row, config: StreamConfig) -> str | None:
    """Why a peer row cannot run here (None if it may)."""
    engine = row.key.split("-")[0]
    if engine == "bytewax" and importlib.util.find_spec("bytewax") is None:
        return INSTALL["bytewax"]
    if engine == "spark" and importlib.util.find_spec("pyspark") is None:
        return INSTALL["spark"]
    if engine == "flink":
        python = pyflink_python(config)
        try:
            probe = subprocess.run([python, "-c", "import pyflink"], capture_output=True,
                                   timeout=120, check=False)  # fmt: skip
            ok = probe.returncode == 0
        except OSError:
            ok = False
        if not ok:
            return f"{INSTALL['flink']} (tried {python})"
    if engine in ("spark", "flink") and not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return "needs Java 17+ (no `java` on PATH and no JAVA_HOME)"
    if row.key == "bytewax-redis":
        from riera_bench.mapreduce import redis_problem

        return redis_problem(config.redis_url)
    return None


def _write_files(directory: Path, lines: list[bytes]) -> None:
    for i in range(0, len(lines), FILE_LINES):
        chunk = lines[i : i + FILE_LINES]
        (directory / f"part-{i // FILE_LINES:05d}.jsonl").write_bytes(b"\n".join(chunk) + b"\n")


class PeerRuns:
    """Runs one peer variant's queries in its child (:class:`stream_peers.PeerProcess`)."""

    def __init__(self, row: Row, config: StreamConfig, root: Path, names: _Names) -> None:
        self.row, self.config, self.root, self.names = row, config, root, names
        self.engine = row.key.split("-")[0]
        self.rid = 0
        tmp = sp.fresh_dir(root, row.key)
        spec = {"engine": self.engine, "mode": row.key.split("-")[-1], "tmp": str(tmp)}
        python = pyflink_python(config) if self.engine == "flink" else sys.executable
        self.peer = sp.PeerProcess(python, spec, tmp, config.timeout)
        row.info = f"{self.peer.info}; engine start {self.peer.start_seconds:.1f} s (untimed)"

    def _input(self, lines: list[bytes]) -> dict[str, Any]:
        """The next run's command, its input holding ``lines`` (more may come later)."""
        self.rid += 1
        run: dict[str, Any] = {"cmd": "run", "id": self.rid}
        if self.row.key == "bytewax-testing":
            path = self.peer.tmp / f"input-{self.rid}.jsonl"
            path.write_bytes(b"\n".join(lines) + b"\n")
            run.update(kind="testing", file=str(path))
        elif self.row.key == "bytewax-redis":
            source, _ = self.names.new("redis")
            stream = source.rsplit("/", 1)[1]
            if lines:
                _preload(source, lines)
            run.update(kind="redis", url=self.config.redis_url, stream=stream, source=source)
        else:
            directory = sp.fresh_dir(self.peer.tmp, f"input-{self.rid}")
            _write_files(directory, lines)
            run.update(
                dir=str(directory), staging=str(sp.fresh_dir(self.peer.tmp, f"stage-{self.rid}"))
            )
        return run

    def throughput(self, work: Workload, row: Row | None = None) -> None:
        row = row or self.row
        run = self._input(work.lines)
        self.peer.send(json.dumps(run))
        latest: dict[str, int] = {}
        done, error = self.peer.watch(self.rid, time.monotonic() + self.config.timeout, latest,
                                      len(work.words), None)  # fmt: skip
        self.peer.stop_run(self.rid)
        start = self.peer.started.get(self.rid)
        if done is None or start is None:
            row.errors.append(f"throughput: {error or 'no @START'}")
        else:
            row.throughput.append(len(work.words) / (done - start))
        _judge(row, latest, work.totals, "throughput run")

    def latency(self, work: Workload) -> None:
        c = self.config
        run = self._input([])
        self.peer.send(json.dumps(run))
        if "url" in run:
            to, batch_ms = {"url": run["source"]}, BROKER_BATCH_MS
        else:
            to, batch_ms = {"dir": run["dir"], "staging": run["staging"]}, DIR_BATCH_MS
        producer = Producer(c, to, batch_ms, self.peer.tmp / f"prod-{self.rid}")
        latest: dict[str, int] = {}
        log: list[tuple[str, int, float]] = []
        try:
            done, error = self.peer.watch(self.rid, time.monotonic() + c.timeout, latest,
                                          c.warmup, log)  # fmt: skip
            if done is None:
                raise RuntimeError(f"warm-up: {error}")
            producer.go()
            done, error = self.peer.watch(self.rid, time.monotonic() + c.seconds + c.timeout,
                                          latest, len(work.words), log)  # fmt: skip
            ts = producer.finish(c.timeout)
        finally:
            producer.close()
            self.peer.stop_run(self.rid)
        lat, missing = count_latencies(work.words, ts, log, c.warmup)
        if done is None or missing:
            self.row.errors.append(f"latency: {error}; {missing:,} event(s) never reflected")
        if len(lat):
            self.row.latency.append(percentiles(lat))
        _judge(self.row, latest, work.totals, "latency run")

    def close(self) -> None:
        self.peer.close()


# -- the study ------------------------------------------------------------------------------------


def _riera_rows(config: StreamConfig) -> list[Row]:
    rows = []
    for transport in config.transports:
        for workers in config.riera_workers:
            for key in config.riera_modes:
                mode, guarantee = _RIERA_LABELS[key]
                # latency: one process (what the per-record path costs); a generator has no
                # producer clock to measure from
                only = ("throughput",) if workers > 1 or transport == "generator" else None
                if workers > 1:
                    mode = f"{mode}, {workers} workers"
                row = Row(
                    "Riera", key, mode, guarantee, _TRANSPORT_LABELS[transport], workers=workers
                )
                if only:
                    row.measures = only
                rows.append(row)
    return rows


def _warm_up(row: Row, say: Progress, one: Callable[[Row], None]) -> None:
    """One untimed throughput run on a scratch row (engine caches, JIT, imports)."""
    scratch = Row(row.engine, row.key, row.mode, row.guarantee, row.transport, workers=row.workers)
    try:
        one(scratch)
    except Exception as e:
        scratch.errors.append(_one_line(e))
    problems = scratch.errors + scratch.mismatches
    if problems:
        row.errors.append(f"warm-up: {problems[0]}")
    say(f"  {row.engine} {row.key}: warm-up run" + (f" — {problems[0]}" if problems else ""))


def _repeat(row: Row, config: StreamConfig, say: Progress, one: Callable[[str], None]) -> None:
    for i in range(config.repeat):
        for measure in row.measures:
            try:
                one(measure)
            except Exception as e:
                row.errors.append(f"{measure}: {_one_line(e)}")
            say(f"  {row.engine} {row.key} {row.transport.split(' ')[0]}: {measure} "
                f"{i + 1}/{config.repeat}" + (f" — {row.errors[-1]}" if row.errors else ""))  # fmt: skip


def _exit_on_term(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def run(config: StreamConfig, progress: Progress | None = None) -> StreamReport:
    """Every row, every repetition; see the module docstring."""
    import riera

    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    report = StreamReport(config, machine_info())
    root = sp.temp_root(config.base_dir)
    names = _Names(config)
    say(f"working directory {root}")
    through = Workload.make(config, config.messages)
    lat = Workload.make(config, config.warmup + config.timed)
    warm = Workload.make(config, min(config.messages, WARM_UP_MESSAGES))
    # SIGTERM unwinds like Ctrl-C, so the peers' process groups are killed on the way out
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_term) if main else None
    try:
        for row in _riera_rows(config):
            report.rows.append(row)
            if row.transport.startswith("redis"):
                from riera_bench.mapreduce import redis_problem

                row.problem = redis_problem(config.redis_url)
                if row.problem:
                    continue
            row.info = f"riera {riera.__version__}, in this process"
            if not config.quick:
                _warm_up(row, say, lambda r: riera_throughput(r, warm, names, root, config.timeout))
                names.drop()

            def one(measure: str, row: Row = row) -> None:
                if measure == "throughput":
                    riera_throughput(row, through, names, root, config.timeout)
                else:
                    riera_latency(row, config, lat, names, root)
                names.drop()

            _repeat(row, config, say, one)
        for row in _peer_rows(config):
            report.rows.append(row)
            row.problem = peer_problem(row, config)
            if row.problem:
                say(f"  {row.engine} {row.key}: {row.problem}")
                continue
            say(f"  {row.engine} {row.key}: starting the engine")
            try:
                peer = PeerRuns(row, config, root, names)
            except Exception as e:
                row.problem = f"could not start: {_one_line(e)}"
                say(f"  {row.engine} {row.key}: {row.problem}")
                continue
            try:
                if not config.quick:
                    _warm_up(row, say, partial(peer.throughput, warm))
                    names.drop()

                def one_peer(measure: str, peer: PeerRuns = peer) -> None:
                    (peer.throughput if measure == "throughput" else peer.latency)(
                        through if measure == "throughput" else lat
                    )
                    names.drop()

                _repeat(row, config, say, one_peer)
            finally:
                peer.close()
    finally:
        names.drop()
        riera.shutdown()
        shutil.rmtree(root, ignore_errors=True)
        if main:
            signal.signal(signal.SIGTERM, previous)
    report.seconds = time.perf_counter() - started
    return report
