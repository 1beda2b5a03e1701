"""The streaming face of :class:`~riera.Dataset`: ``riera.read_stream``, ``with_watermark``,
``write_stream``, and the checks that keep unbounded plans to what can run forever.

A stream is a ``Dataset`` whose plan starts at :class:`~riera.plan.stream.StreamSource`: the same
expressions, ``map``/``filter``/``flat_map``, joins with bounded datasets and ``group_by().agg()``
(running aggregates, or per window with ``group_by(..., window=tumbling("10s", on="ts"))``).
Operators that need the whole input — a global sort, ``limit``, an unbounded ``distinct`` — raise
:class:`~riera.errors.PlanError` where they are written, naming what to use instead; actions
(``collect``…) name ``write_stream``.

>>> import riera
>>> from riera import col
>>> words = riera.read_stream("memory://doc-words", schema={"word": "string"})
>>> counts = words.group_by("word").agg(n=col("word").count())
>>> counts.sort("n")
Traceback (most recent call last):
...
riera.errors.PlanError: sort: a stream has no end to sort at; use a live view sink, which keeps a top-N sorted as it changes (or sort a batch Dataset)
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from riera.errors import PlanError
from riera.expr import to_type
from riera.plan import stream as st

if TYPE_CHECKING:
    from riera.dataset import Dataset
    from riera.plan import nodes as n
    from riera.stream.leased import LeasedQuery
    from riera.stream.query import StreamingQuery


def read_stream(
    source: str,
    *,
    schema: pa.Schema | Mapping[str, Any] | None = None,
    format: str = "json",
) -> Dataset:
    """An unbounded dataset over a stream source, decoded as ``format``:

    - ``json`` (default): one JSON object per message, columns from ``schema`` (recommended:
      fields it does not name are ignored, and a message that does not fit goes to the dead
      letters) or inferred per batch;
    - ``text``: a ``value`` column of strings; ``raw``: ``key``, ``value`` (bytes), ``ts``.

    ``source`` is a URL: ``memory://NAME`` (embedded broker), ``redis://HOST:PORT/DB/STREAM``,
    ``kafka://HOST:PORT/TOPIC``, ``file:///DIR`` (a tailed directory), ``tcp://HOST:PORT``.

    >>> import riera
    >>> riera.read_stream("memory://doc-example", schema={"word": "string", "n": "int64"}).schema
    word: string
    n: int64
    """
    from riera.dataset import Dataset
    from riera.stream.connectors.base import Url

    if not isinstance(source, str):
        raise PlanError(f"read_stream: source must be a URL string; got {type(source).__name__}")
    Url.parse(source)
    if format not in ("json", "text", "raw"):
        raise PlanError(f"read_stream: format must be json, text or raw; got {format!r}")
    arrow_schema: pa.Schema | None
    if schema is None or isinstance(schema, pa.Schema):
        arrow_schema = schema
    elif isinstance(schema, Mapping):
        try:
            arrow_schema = pa.schema([(k, to_type(v, "read_stream")) for k, v in schema.items()])
        except (TypeError, ValueError, PlanError) as err:
            raise PlanError(f"read_stream: bad schema {dict(schema)!r}: {err}") from err
    else:
        raise PlanError(f"read_stream: schema must be a pyarrow Schema or a dict; got {schema!r}")
    if format != "json" and arrow_schema is not None:
        raise PlanError(f"read_stream: schema= is for format='json'; {format} has fixed columns")
    return Dataset(st.StreamSource((), source, format, arrow_schema))  # type: ignore[arg-type]


def stream_join(left: Dataset, right: Dataset, keys: tuple[str, ...], rkeys: tuple[str, ...],
                how: str, suffix: str, window: Any) -> Dataset:  # fmt: skip
    """``join`` of two streams: windowed, or refused with the fix."""
    from riera.dataset import Dataset

    if not (left.is_streaming() and right.is_streaming()):
        raise PlanError("join(window=): windows join two streams; a stream joins a bounded Dataset "
                        "without one")  # fmt: skip
    if window is None:
        raise PlanError(
            "join: joining two streams without a window would keep every row forever; join "
            "within windows: left.join(right, on=..., window=riera.stream.tumbling('10s')) (each "
            "side with .with_watermark(...))"
        )
    if not isinstance(window, st.Window) or window.kind == "session":
        raise PlanError(
            f"join: window= must be riera.stream.tumbling(...) or sliding(...); got {window!r}"
        )
    if how not in ("inner", "left"):
        raise PlanError(f"join of two streams: how must be 'inner' or 'left'; got {how!r}")
    marked = [_has_watermark(left.node), _has_watermark(right.node)]
    if (any(marked) and not all(marked)) or (window.on is not None and not all(marked)):
        side = "left" if not marked[0] else "right"
        raise PlanError(
            f"join: the {side} stream needs .with_watermark(column, delay=...): an event-time "
            f"window joins rows by each side's event time (without watermarks on either side, "
            f"the window is on processing time)"
        )
    node = st.WindowJoin((left.node, right.node), keys, rkeys or keys, how, window, suffix)  # type: ignore[arg-type]
    return Dataset(node)


def _has_watermark(node: Any) -> bool:
    from riera.plan import nodes as n

    return any(isinstance(x, st.Watermark) for x in n.walk(node))


def check_window(ds: Dataset, window: Any) -> None:
    if not isinstance(window, st.Window):
        raise PlanError(
            f"group_by: window= must be riera.stream.tumbling(...), sliding(...) or session(...); "
            f"got {window!r}"
        )
    if window.on is not None:
        ds._require_columns("group_by(window=)", [window.on])


class StreamMethods:
    """Streaming methods of :class:`~riera.Dataset` (a mixin; ``Dataset`` supplies ``_node``)."""

    __slots__ = ()
    _node: n.Node

    def is_streaming(self) -> bool:
        """Whether this dataset reads a stream (it then runs only through :meth:`write_stream`)."""
        return st.unbounded(self._node)

    def _bounded_only(self, op: str, instead: str) -> None:
        if st.unbounded(self._node):
            raise PlanError(
                f"{op}: a stream has no end to {op} at; use {instead} (or {op} a batch Dataset)"
            )

    def with_watermark(
        self, column: str, *, delay: Any = "0s", idle_timeout: Any = None
    ) -> Dataset:
        """Event time comes from ``column`` (a timestamp, or Unix milliseconds); the watermark —
        "no record older than this is still expected" — trails the largest time seen by
        ``delay``. ``idle_timeout``: a partition silent that long stops holding the watermark
        back; when all are silent, it follows the wall clock, so windows of an idle stream close.

        >>> import riera
        >>> s = riera.read_stream("memory://doc-wm", schema={"ts": "int64", "w": "string"})
        >>> s.with_watermark("ts", delay="2s", idle_timeout="5s").node.spec
        WatermarkSpec(column='ts', delay_ms=2000, idle_ms=5000)
        """
        from riera.dataset import Dataset

        if not st.unbounded(self._node):
            raise PlanError(
                "with_watermark: only streams have watermarks; read with riera.read_stream"
            )
        ds = Dataset(self._node)
        ds._require_columns("with_watermark", [column])
        idle = None if idle_timeout is None else st.duration_ms(idle_timeout, "with_watermark(idle_timeout=)",
                                                                 allow_zero=False)  # fmt: skip
        spec = st.WatermarkSpec(column, st.duration_ms(delay, "with_watermark(delay=)"), idle)
        return Dataset(st.Watermark((self._node,), spec))

    def write_stream(
        self,
        sink: Any,
        *,
        trigger: Any = None,
        checkpoint: str | os.PathLike[str] | None = None,
        guarantee: str = "exactly_once",
        dead_letter: Any = None,
        late: Any = None,
        key_groups: int = 128,
        state_store: str = "sqlite",
        stop_when_idle: Any = None,
        workers: int = 1,
        name: str | None = None,
        coordinator: str | None = None,
        shards: int = 8,
        member: str | None = None,
        lease_ttl: Any = "3s",
        lineage: bool = False,
    ) -> StreamingQuery | LeasedQuery:
        """Start the query: read the stream, run the plan, commit to ``sink``; returns its
        :class:`~riera.stream.query.StreamingQuery` handle at once.

        - ``sink``: a URL (``memory://NAME``, ``redis://…``, ``file:///DIR``,
          ``sqlite:///PATH?table=T``, ``postgresql://…?table=T``, ``kafka://…``), a sink object
          (``riera.stream.LiveView()``, ``riera.testing.CollectSink()``…) or a function called
          with each committed Arrow table.
        - ``trigger``: ``riera.stream.continuous(linger=…)`` (default: per record) or
          ``riera.stream.micro_batch(interval)``.
        - ``checkpoint``: the directory that makes the query resumable; the same directory after
          a crash resumes where the last commit left off. Default: a new temporary directory
          (nothing to resume from).
        - ``guarantee``: ``exactly_once`` (default: each epoch's output is committed once, with
          the state and the source positions) or ``at_least_once`` (outputs leave at once as
          upserts, lowest latency; after a crash some are written again, never older).
        - ``dead_letter``/``late``: sinks for bad records and for records later than the
          allowed lateness (default: a SQLite file in the checkpoint directory for dead letters;
          late records are counted and kept in ``query.late_records()``).
        - ``stop_when_idle``: end the query once the source has been idle that long and all is
          committed.
        - ``workers``: processes that read the source's partitions (decoding, operators, the
          map side of aggregates) while the driver keeps the state and commits; 1: the driver
          alone. A restart may use another number: nothing is lost or counted twice.
        - ``coordinator``: ``redis://HOST:PORT/DB`` to run the query with other drivers (on this
          machine or others) that start it with the same ``name``: the key groups are cut into
          ``shards`` (fixed at the first start), each driver runs the shards it leases
          (``lease_ttl``) and takes over those of a driver that dies; returns a
          :class:`~riera.stream.leased.LeasedQuery`. ``checkpoint`` must then be a directory
          every driver reaches, and the sinks URLs (see :mod:`riera.stream.leased`).
        - ``lineage``: per-window lineage: each window row emitted is recorded in the provenance
          table ``stream_window_lineage`` with the epochs whose records reached the window (and
          so, through ``stream_epochs``, the source ranges that hold them).

        >>> import riera, riera.testing, tempfile
        >>> from riera import col
        >>> from riera.stream.connectors.memory import Broker
        >>> Broker.drop("doc-in"); Broker("doc-in").append([(None, b'{"w": "a"}', None)] * 3)
        >>> counts = riera.read_stream("memory://doc-in", schema={"w": "string"}).group_by("w").agg(
        ...     n=col("w").count())
        >>> out = riera.testing.CollectSink()
        >>> q = counts.write_stream(out, checkpoint=tempfile.mkdtemp(), stop_when_idle=0.2)
        >>> q.await_termination(30)
        True
        >>> out.rows()[-1]
        {'w': 'a', 'n': 3}
        >>> Broker.drop("doc-in")  # a broker outlives its processes until dropped
        """
        from riera.runtime import get_runtime
        from riera.stream.compile import compile_plan
        from riera.stream.connectors.base import open_sink
        from riera.stream.connectors.python import Callback
        from riera.stream.engine import Engine, Options, SinkSlot
        from riera.stream.metrics import QueryMetrics
        from riera.stream.query import StreamingQuery

        if not st.unbounded(self._node):
            raise PlanError(
                "write_stream: this Dataset reads no stream; use write_parquet/collect…"
            )
        trig = st.trigger_from(trigger)
        guar = st.guarantee_from(guarantee)
        if not isinstance(key_groups, int) or key_groups < 1:
            raise PlanError(
                f"write_stream: key_groups must be a positive integer; got {key_groups!r}"
            )
        idle = (
            None
            if stop_when_idle is None
            else st.duration_ms(stop_when_idle, "write_stream(stop_when_idle=)") / 1000
        )

        def as_sink(value: Any, what: str) -> Any:
            if isinstance(value, str):
                return open_sink(value)
            if callable(value) and not hasattr(value, "write"):
                return Callback(value)
            if hasattr(value, "write") and hasattr(value, "committed"):
                return value
            raise PlanError(
                f"write_stream: {what} must be a URL, a sink or a function; got {value!r}"
            )

        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise PlanError(f"write_stream: workers must be a positive integer; got {workers!r}")
        directory = (
            Path(checkpoint)
            if checkpoint is not None
            else Path(tempfile.mkdtemp(prefix="riera-stream-"))
        )
        runtime = get_runtime()
        plan = compile_plan(self._node, runtime.settings)
        job = name or f"stream-{plan.describe()}"

        def start(here: Path, qname: str, shard: int | None = None, token: int | None = None,
                  groups: range | None = None) -> StreamingQuery:  # fmt: skip
            def opened(value: Any, what: str) -> Any:
                if shard is not None and isinstance(value, str) and value.startswith("file:"):
                    value = value.split("?")[0].rstrip("/") + f"/shard-{shard}"  # one job per dir
                return as_sink(value, what)

            slots = [SinkSlot(opened(sink, "sink"), "output")]
            dead = dead_letter or (
                f"sqlite:///{here.resolve()}/dead_letters.sqlite?table=dead_letters&mode=append"
            )
            slots.append(SinkSlot(opened(dead, "dead_letter"), "dead_letter"))
            if late is not None:
                slots.append(SinkSlot(opened(late, "late"), "late"))
            options = Options(trig, guar, here, key_groups, state_store, idle, workers=workers,
                              shard=shard, shards=shards, groups=groups, lease_token=token,
                              lineage=lineage)  # fmt: skip
            engine = Engine(compile_plan(self._node, runtime.settings), slots, options,
                            QueryMetrics())  # fmt: skip
            query = StreamingQuery(engine, qname, self._node, runtime.settings)
            query._begin()
            return query

        if coordinator is None:
            return start(directory, job)
        if coordinator is not None and getattr(plan.stateful, "keys", None) == ():
            raise PlanError(
                "write_stream(coordinator=): an aggregate without group_by keys has one key for "
                "the whole stream, so it cannot be cut into shards; run it on one driver"
            )
        fingerprint = f"{plan.describe()} -> {sink if isinstance(sink, str) else type(sink)}"
        return _leased(coordinator, job, fingerprint, directory, start, sink=sink,
                       dead_letter=dead_letter, late=late, checkpoint=checkpoint, shards=shards,
                       key_groups=key_groups, member=member, lease_ttl=lease_ttl,
                       until_idle=idle is not None, state_store=state_store)  # fmt: skip


def _leased(coordinator: str, job: str, plan: str, directory: Path, start: Callable[..., Any],
            *, sink: Any, dead_letter: Any, late: Any, checkpoint: Any, shards: int,
            key_groups: int, member: str | None, lease_ttl: Any, until_idle: bool,
            state_store: str) -> LeasedQuery:  # fmt: skip
    """``write_stream`` with a coordinator: this driver's part of a job run by several."""
    from riera.stream.lease import ShardLeases
    from riera.stream.leased import LeasedQuery, default_member

    for value, what in ((sink, "sink"), (dead_letter, "dead_letter"), (late, "late")):
        if value is not None and not isinstance(value, str):
            raise PlanError(
                f"write_stream(coordinator=): the {what} must be a URL: drivers on other "
                f"machines write to it too, and a Python object lives in this process only"
            )
    if checkpoint is None:
        raise PlanError(
            "write_stream(coordinator=): give checkpoint= a directory every driver reaches (a "
            "shared file system): a shard taken over resumes from its checkpoint"
        )
    if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= key_groups:
        raise PlanError(
            f"write_stream: shards must be an integer from 1 to key_groups ({key_groups}); "
            f"got {shards!r}"
        )
    if state_store != "sqlite":
        raise PlanError(
            f"write_stream(coordinator=): state_store={state_store!r} locks its files to one "
            f"process, so a shard could not be taken over from a paused driver; use 'sqlite'"
        )
    ttl = st.duration_ms(lease_ttl, "write_stream(lease_ttl=)")
    import uuid

    identity = f"{member or default_member()}/{uuid.uuid4().hex[:8]}"  # one per incarnation
    leases = ShardLeases(coordinator, job, identity, shards=shards,
                         key_groups=key_groups, plan=plan, ttl_ms=int(ttl))  # fmt: skip

    def start_shard(shard: int, token: int) -> Any:
        return start(directory / f"shard-{shard}", f"{job}/shard-{shard}", shard, token,
                     leases.groups(shard))  # fmt: skip

    return LeasedQuery(leases, start_shard, until_idle=until_idle, name=job)


Sinkish = str | Callable[..., Any] | Any
