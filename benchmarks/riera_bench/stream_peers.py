"""The peers of ``riera bench stream`` (Bytewax, PySpark, PyFlink) and the paced producer, each run
as a child process of the benchmark; and :class:`PeerProcess`, the benchmark's end of a peer.

This file also runs as a script under another interpreter (``python stream_peers.py engine
SPEC.json``): PyFlink pins old numpy/pyarrow/pandas, so it lives in a venv of its own without
Riera. Its top level therefore imports the standard library only; each engine imports itself.

**One child per engine variant.** The child starts the engine once (SparkSession, Flink table
environment; ``start_seconds``, untimed), says ``@HELLO``, then runs one query per ``run`` command
read from stdin and stops it on ``stop``; every query is new (new input, checkpoint, tables). The
child's stdout is the sink the benchmark controls:

- ``@START <id> <unix s>``: stamped just before the query is submitted (the throughput clock);
- ``@D <id> ["word", total]``: one running total, written with one ``write(2)`` per batch, as the
  engine's sink emits it (Bytewax: a ``DynamicSink``; Spark: ``foreachBatch``, the rows of each
  micro-batch, update mode); Flink's ``print`` connector writes ``r<id>> +U[word, total]`` itself;
- ``@STOPPED <id>``; ``@FAILED <id> <cause>`` when a query fails; ``@ERROR <text>`` when a
  command does.

The benchmark reads these lines in a thread and stamps each with ``time.time()`` as it arrives:
that is when the output reached the sink (a pipe to the benchmark; child stdout is unbuffered).

**The queries** sum ``valorB`` per ``valorA`` (document 000's word count):

- *Bytewax*: ``input → map(json.loads) → stateful_map`` (running sum per word, one output per
  record) ``→ sink``; recovery on (SQLite, 1 s epochs), so at-least-once. Input: ``TestingSource``
  over the pre-loaded lines (in-process, batches of 1000 as Bytewax's Kafka source delivers), or a
  small custom source reading a Redis stream by ``XREAD`` (1000 entries at a time).
- *Spark*: ``readStream.json(DIR)`` (the files source, replayable) ``.groupBy("valorA")
  .agg(sum(valorB cast long))``, update mode, default trigger (a micro-batch as soon as the last
  one ends), checkpoint location set; ``foreachBatch`` is an at-least-once sink. ``local[2]``.
- *Flink*: Table API in streaming mode, ``filesystem`` source on DIR (monitored every 100 ms),
  ``print`` sink (a changelog; not transactional: at-least-once), checkpoints every 1 s,
  parallelism 1. Modes ``process``/``thread`` parse each line with a Python UDF run in
  ``python.execution-mode`` process (a Beam worker) or thread (PEMJA, in the JVM); ``sql`` reads
  the ``json`` format with no Python in the data path.

**The producer** (``produce SPEC.json``) sends ``warmup`` messages at once, says ``@WARM``, waits
for ``go`` on stdin, then sends ``timed`` messages at ``rate`` per second: every ``batch_ms`` the
messages due by then leave together (one ``send`` to a Riera URL, or one file renamed into a
directory), stamped with the time of sending (``ts``, Unix ms). It saves every message's ``ts`` to
``ts_out`` (``.npy``), says ``@DONE`` and exits.
"""

from __future__ import annotations

import json
import os
import queue
import re
import select
import shutil
import signal
import site
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SCHEMA_FIELDS = (("chave", "string"), ("valorA", "string"), ("valorB", "string"), ("ts", "double"))
TESTING_BATCH = 1000  # items per TestingSource batch, as Bytewax's KafkaSource's default
REDIS_COUNT = 1000  # entries per XREAD of the Bytewax Redis source
FLINK_MONITOR = "100 ms"


def _say(line: str) -> None:
    """One protocol line on stdout, in a single write (atomic beside the JVM's own lines)."""
    os.write(1, (line + "\n").encode())


def _data(run: int, pairs: Any) -> None:
    out = "".join(f"@D {run} {json.dumps([w, int(n)])}\n" for w, n in pairs)
    if out:
        os.write(1, out.encode())


def _cause(err: BaseException) -> str:
    """The innermost ``Caused by:`` of a (Java) error, else its first line."""
    text = str(err)
    causes = [
        ln.split("Caused by:", 1)[1].strip() for ln in text.splitlines() if "Caused by:" in ln
    ]
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return (causes[-1] if causes else first)[:300]


def _commands(poll: Callable[[], None], every: float = 1.0) -> Iterator[dict[str, Any]]:
    """stdin's commands, one per line; ``poll()`` runs whenever none came for ``every`` s. Runs
    in the main thread: py4j hands another thread's calls to another JVM thread, and Flink's
    planner keeps per-thread state, so every engine call stays on this one."""
    buffer = b""
    while True:
        while b"\n" not in buffer:
            ready, _, _ = select.select([0], [], [], every)
            if not ready:
                try:
                    poll()
                except Exception as err:  # the engine's own state is reported, never fatal
                    _say(f"@LOG poll: {_cause(err)}")
                continue
            chunk = os.read(0, 65536)
            if not chunk:
                return
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        if line.strip():
            yield json.loads(line)


# -- the engines (child side) -------------------------------------------------------------------


class SparkEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        from pyspark.sql import SparkSession

        self.tmp = Path(spec["tmp"])
        self.spark = (
            SparkSession.builder.master("local[2]")
            .appName("riera-bench-stream")
            .config("spark.sql.shuffle.partitions", "2")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
            .config("spark.local.dir", str(self.tmp))
            .getOrCreate()
        )
        self.spark.sparkContext.setLogLevel("ERROR")
        self.query: Any = None
        self.rid = 0
        import pyspark

        self.info = f"PySpark {pyspark.__version__}, local[2], files source, foreachBatch"

    def start(self, run: dict[str, Any]) -> None:
        from pyspark.sql import functions as F
        from pyspark.sql import types as T

        kinds = {"string": T.StringType(), "double": T.DoubleType()}
        schema = T.StructType([T.StructField(n, kinds[k]) for n, k in SCHEMA_FIELDS])
        rid = run["id"]
        words = self.spark.readStream.schema(schema).json(run["dir"])
        totals = words.groupBy("valorA").agg(F.sum(F.col("valorB").cast("long")).alias("total"))

        def emit(batch: Any, _batch_id: int) -> None:
            _data(rid, ((r["valorA"], r["total"]) for r in batch.collect()))

        _say(f"@START {rid} {time.time():.6f}")
        self.query = (
            totals.writeStream.outputMode("update")
            .foreachBatch(emit)
            .option("checkpointLocation", str(self.tmp / f"checkpoint-{rid}"))
            .start()
        )
        self.rid = rid

    def poll(self) -> None:
        error = self.query.exception() if self.query is not None else None
        if error is not None:
            _say(f"@FAILED {self.rid} spark query failed: {_cause(error)}")
            self.query = None

    def stop(self) -> None:
        if self.query is not None:
            self.query.stop()
            self.query = None

    def close(self) -> None:
        self.stop()
        self.spark.stop()


class FlinkEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment
        from pyflink.table.udf import udf
        from pyflink.version import __version__

        self.mode = spec["mode"]
        # thread mode runs the UDF in CPython embedded in the JVM (PEMJA), which sees this venv's
        # packages only through PYTHONPATH
        paths = [*site.getsitepackages(), os.environ.get("PYTHONPATH", "")]
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
        conf = self.env.get_config()
        conf.set("parallelism.default", "1")
        conf.set("execution.checkpointing.interval", "1 s")
        conf.set("restart-strategy.type", "none")  # a failure ends the job, and is reported
        io_tmp = Path(spec["tmp"]) / "flink-io"
        io_tmp.mkdir(exist_ok=True)
        conf.set("io.tmp.dirs", str(io_tmp))
        if self.mode != "sql":
            conf.set("python.execution-mode", self.mode)
            conf.set("python.executable", sys.executable)

            @udf(result_type=DataTypes.ROW([DataTypes.FIELD("valorA", DataTypes.STRING()),
                                            DataTypes.FIELD("valorB", DataTypes.BIGINT())]))  # fmt: skip
            def parse(line: str) -> Any:
                from pyflink.common import Row

                m = json.loads(line)
                return Row(m["valorA"], int(m["valorB"]))

            self.env.create_temporary_function("parse", parse)
        self.result: Any = None
        self.rid = 0
        how = "SQL over the json format" if self.mode == "sql" else f"Python UDF, {self.mode} mode"
        self.info = f"PyFlink {__version__}, Table API, {how}, parallelism 1, print sink"

    def start(self, run: dict[str, Any]) -> None:
        rid = run["id"]
        path = Path(run["dir"]).resolve().as_uri()
        source = f"'connector'='filesystem', 'path'='{path}', 'source.monitor-interval'='{FLINK_MONITOR}'"
        if self.mode == "sql":
            columns = ", ".join(f"`{n}` {k.upper()}" for n, k in SCHEMA_FIELDS)
            self.env.execute_sql(f"CREATE TABLE src_{rid} ({columns}) WITH ({source}, "
                                 f"'format'='json', 'json.ignore-parse-errors'='false')")  # fmt: skip
            select = f"SELECT valorA, SUM(CAST(valorB AS BIGINT)) FROM src_{rid} GROUP BY valorA"
        else:
            self.env.execute_sql(f"CREATE TABLE src_{rid} (line STRING) WITH ({source}, "
                                 f"'format'='raw')")  # fmt: skip
            select = (f"SELECT p.valorA, SUM(p.valorB) FROM (SELECT parse(line) AS p "
                      f"FROM src_{rid}) GROUP BY p.valorA")  # fmt: skip
        self.env.execute_sql(f"CREATE TABLE out_{rid} (valorA STRING, total BIGINT) WITH "
                             f"('connector'='print', 'print-identifier'='r{rid}')")  # fmt: skip
        _say(f"@START {rid} {time.time():.6f}")
        self.result = self.env.execute_sql(f"INSERT INTO out_{rid} {select}")
        self.rid = rid

    def poll(self) -> None:
        """Report a failed job: ``TableResult.wait`` raises its cause (or times out)."""
        if self.result is None:
            return
        try:
            self.result.wait(10)
            return  # ended (an unbounded source does not)
        except Exception as err:
            if "TimeoutException" in str(err):
                return  # still running
            cause = _cause(err)
        _say(f"@FAILED {self.rid} flink job failed: {cause}")
        self.result = None

    def stop(self) -> None:
        if self.result is not None:
            client = self.result.get_job_client()
            if client is not None:
                try:
                    client.cancel().result()
                except Exception as err:  # an ended job cannot be cancelled: nothing to stop
                    _say(f"@LOG cancel: {str(err).splitlines()[0][:200]}")
            self.result = None

    def close(self) -> None:
        self.stop()


class _RedisPartition:
    """Reads one Redis stream by ``XREAD`` from an entry ID (the resume state)."""

    def __init__(self, url: str, stream: str, start: str | None, stop: threading.Event) -> None:
        import redis

        self.client = redis.Redis.from_url(url)
        self.stream, self.pos, self.stop = stream, start or "0-0", stop
        self.idle = False

    def next_batch(self) -> list[bytes]:
        if self.stop.is_set():
            raise StopIteration
        reply: Any = self.client.xread({self.stream: self.pos}, count=REDIS_COUNT) or []
        out = []
        for _stream, entries in reply:
            for entry_id, fields in entries:
                self.pos = entry_id.decode()
                out.append(fields[b"v"])
        self.idle = not out
        return out

    def next_awake(self) -> Any:
        from datetime import UTC, datetime, timedelta

        return datetime.now(UTC) + timedelta(milliseconds=1) if self.idle else None

    def snapshot(self) -> str:
        return self.pos

    def close(self) -> None:
        self.client.close()


class BytewaxEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        import importlib.metadata

        self.tmp = Path(spec["tmp"])
        self.thread: threading.Thread | None = None
        self.stop_flag = threading.Event()
        self.error: str | None = None
        version = importlib.metadata.version("bytewax")
        self.info = f"Bytewax {version}, 1 worker, stateful_map, recovery every 1 s"

    def _flow(self, run: dict[str, Any]) -> Any:
        from bytewax import operators as op
        from bytewax.dataflow import Dataflow
        from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
        from bytewax.outputs import DynamicSink, StatelessSinkPartition
        from bytewax.testing import TestingSource

        rid, stop = run["id"], self.stop_flag

        class Partition(_RedisPartition, StatefulSourcePartition):
            pass

        class RedisSource(FixedPartitionedSource):
            def list_parts(self) -> list[str]:
                return ["0"]

            def build_part(self, step_id: str, for_part: str, resume_state: Any) -> Any:
                return Partition(run["url"], run["stream"], resume_state, stop)

        class Lines(StatelessSinkPartition):
            def write_batch(self, items: list[Any]) -> None:
                _data(rid, items)

        class Sink(DynamicSink):
            def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
                return Lines()

        if run["kind"] == "testing":
            lines = Path(run["file"]).read_bytes().splitlines()
            source: Any = TestingSource(lines, batch_size=TESTING_BATCH)
        else:
            source = RedisSource()

        def parse(line: bytes) -> tuple[str, int]:
            m = json.loads(line)
            return m["valorA"], int(m["valorB"])

        def add(total: int | None, n: int) -> tuple[int, int]:
            total = (total or 0) + n
            return total, total

        flow = Dataflow(f"wordcount-{rid}")
        words = op.map("parse", op.input("in", flow, source), parse)
        op.output("out", op.stateful_map("sum", words, add), Sink())
        return flow

    def start(self, run: dict[str, Any]) -> None:
        from datetime import timedelta

        from bytewax.recovery import RecoveryConfig, init_db_dir
        from bytewax.testing import run_main

        db = self.tmp / f"recovery-{run['id']}"
        db.mkdir()
        init_db_dir(db, 1)
        self.stop_flag.clear()
        flow = self._flow(run)  # a TestingSource's lines are read here, before the clock

        def main() -> None:
            try:
                run_main(flow, epoch_interval=timedelta(seconds=1),
                         recovery_config=RecoveryConfig(str(db)))  # fmt: skip
            except Exception as err:
                _say(f"@FAILED {run['id']} bytewax: {type(err).__name__}: {_cause(err)}")

        _say(f"@START {run['id']} {time.time():.6f}")
        self.thread = threading.Thread(target=main, name="bytewax", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_flag.set()
        if self.thread is not None:
            self.thread.join(60)
            self.thread = None

    def close(self) -> None:
        self.stop()


ENGINES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "spark": SparkEngine,
    "flink": FlinkEngine,
    "bytewax": BytewaxEngine,
}


def serve(spec: dict[str, Any]) -> int:
    """The child's loop: start the engine, then obey stdin's commands until ``quit``."""
    t0 = time.perf_counter()
    try:
        engine = ENGINES[spec["engine"]](spec)
    except Exception as err:
        traceback.print_exc()
        _say(f"@ERROR start: {type(err).__name__}: {_cause(err)}")
        return 1
    _say("@HELLO " + json.dumps({"start_seconds": time.perf_counter() - t0, "info": engine.info}))
    try:
        for cmd in _commands(getattr(engine, "poll", lambda: None)):
            try:
                if cmd["cmd"] == "run":
                    engine.start(cmd)
                elif cmd["cmd"] == "stop":
                    engine.stop()
                    _say(f"@STOPPED {cmd['id']}")
                elif cmd["cmd"] == "quit":
                    break
            except Exception as err:
                traceback.print_exc()
                _say(f"@ERROR {cmd['cmd']}: {type(err).__name__}: {_cause(err)}")
    finally:
        engine.close()
    return 0


# -- the producer (child side; the benchmark's interpreter, with Riera) --------------------------


def produce(spec: dict[str, Any]) -> int:
    import numpy as np

    from riera.apps.producers import encode
    from riera.apps.producers.retail import retail_messages

    total = spec["warmup"] + spec["timed"]
    messages = list(retail_messages(spec["products"], total, spec["seed"]))
    ts = np.zeros(total, dtype=np.float64)
    to = spec["to"]
    producer: Any = None
    if "url" in to:
        from riera.stream.connectors.base import open_producer

        producer = open_producer(to["url"])
    seq = 0

    def send(lo: int, hi: int) -> None:
        nonlocal seq
        now = time.time() * 1000
        ts[lo:hi] = now
        batch = [encode(m, now) for m in messages[lo:hi]]
        if producer is not None:
            producer.send(batch)
            return
        staging = Path(to["staging"]) / f"b-{seq:07d}.jsonl"
        staging.write_bytes(b"".join(value + b"\n" for _k, value, _t in batch))
        os.rename(staging, Path(to["dir"]) / staging.name)  # appears whole
        seq += 1

    if spec["warmup"]:
        send(0, spec["warmup"])
    _say(f"@WARM {spec['warmup']}")
    if sys.stdin.readline().strip() != "go":
        return 1
    sent, step, rate = spec["warmup"], spec["batch_ms"] / 1000, spec["rate"]
    t0 = time.monotonic()
    tick = t0
    while sent < total:
        due = min(total, spec["warmup"] + int((time.monotonic() - t0) * rate) + 1)
        if due > sent:
            send(sent, due)
            sent = due
        tick += step
        time.sleep(max(0.0, tick - time.monotonic()))
    seconds = time.monotonic() - t0
    if producer is not None:
        producer.close()
    np.save(spec["ts_out"], ts)
    _say(f"@DONE {total} {seconds:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("engine", "produce"):
        print("usage: stream_peers.py engine|produce SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[1]).read_text())
    return serve(spec) if args[0] == "engine" else produce(spec)


# -- the benchmark's end of a child -------------------------------------------------------------

_FLINK = re.compile(r"^r(\d+)(?::\d+)?> \+[IU]\[(.*), (-?\d+)\]$")


class Child:
    """A child process started in a session of its own; its stdout read line by line in a
    thread, each line stamped with ``time.time()`` on arrival (:meth:`lines`)."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log_file = log.open("ab")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log_file, env=full_env, cwd=log.parent,
                                     start_new_session=True)  # fmt: skip
        self.queue: queue.Queue[tuple[float, str] | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, name="bench-child-reader", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.queue.put((time.time(), raw.decode(errors="replace").rstrip("\n")))
        self.queue.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass

    def lines(self, deadline: float) -> Iterator[tuple[float, str]]:
        """Lines as they come until ``deadline`` (monotonic) or the end of the child's output."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                item = self.queue.get(timeout=min(left, 0.5))
            except queue.Empty:
                continue
            if item is None:
                self.queue.put(None)  # stays ended for the next caller
                return
            yield item

    def kill(self) -> None:
        """End the child's whole process group (its JVM and Python workers with it)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        self.proc.wait()
        self.log_file.close()


def parse_output(line: str) -> tuple[int, str, int] | None:
    """``(run id, word, total)`` from an ``@D`` line or a Flink print line; None otherwise."""
    if line.startswith("@D "):
        _, rid, payload = line.split(" ", 2)
        word, total = json.loads(payload)
        return int(rid), str(word), int(total)
    m = _FLINK.match(line)
    if m:
        return int(m.group(1)), m.group(2), int(m.group(3))
    return None


class PeerProcess(Child):
    """A peer engine's child (``stream_peers.py engine SPEC``): start it, wait for ``@HELLO``."""

    def __init__(self, python: str, spec: dict[str, Any], tmp: Path, timeout: float) -> None:
        (tmp / "spec.json").write_text(json.dumps(spec))
        super().__init__([python, __file__, "engine", str(tmp / "spec.json")], tmp / "log.txt")
        self.tmp = tmp
        self.info, self.start_seconds = "", 0.0
        self.started: dict[int, float] = {}  # run id → the child's @START time (Unix s)
        try:
            for _t, line in self.lines(time.monotonic() + timeout):
                if line.startswith("@HELLO "):
                    hello = json.loads(line[7:])
                    self.info, self.start_seconds = hello["info"], hello["start_seconds"]
                    return
                if line.startswith("@ERROR"):
                    raise RuntimeError(line[7:] + self.tail())
            raise RuntimeError(f"the engine did not start within {timeout:.0f} s" + self.tail())
        except BaseException:
            self.kill()
            raise

    def tail(self) -> str:
        """The last meaningful line of the child's log (its stderr), for an error message."""
        text = (self.tmp / "log.txt").read_text(errors="replace").strip().splitlines()
        useful = [t for t in text if "Error" in t or "Exception" in t] or text
        return f" ({useful[-1].strip()[:300]})" if useful else ""

    def watch(self, rid: int, deadline: float, latest: dict[str, int], target: int,
              log: list[tuple[str, int, float]] | None) -> tuple[float | None, str | None]:  # fmt: skip
        """Read run ``rid``'s outputs into ``latest`` (and ``log``: word, total, arrival) until
        the totals sum to ``target``: the arrival time (Unix s) of the output that got there, or
        None and why not."""
        if sum(latest.values()) >= target:
            return time.time(), None
        for t, line in self.lines(deadline):
            if line.startswith("@ERROR"):
                return None, line[7:]
            if line.startswith(f"@FAILED {rid} "):
                return None, line.split(" ", 2)[2]
            if line.startswith("@START "):
                _, r, at = line.split()
                self.started[int(r)] = float(at)
                continue
            got = parse_output(line)
            if got is None or got[0] != rid:
                continue
            _, word, total = got
            if total > latest.get(word, 0):
                latest[word] = total
                if log is not None:
                    log.append((word, total, t))
                if sum(latest.values()) >= target:
                    return t, None
        if self.proc.poll() is not None:
            return None, f"the engine exited with code {self.proc.returncode}" + self.tail()
        return None, "timed out" + self.tail()

    def stop_run(self, rid: int, timeout: float = 120.0) -> None:
        self.send(json.dumps({"cmd": "stop", "id": rid}))
        for _t, line in self.lines(time.monotonic() + timeout):
            if line == f"@STOPPED {rid}":
                return

    def close(self) -> None:
        self.send(json.dumps({"cmd": "quit"}))
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.kill()


def fresh_dir(parent: Path, name: str) -> Path:
    path = parent / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def temp_root(base: Path | None) -> Path:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="riera-bench-stream-", dir=base))


if __name__ == "__main__":
    sys.exit(main())
