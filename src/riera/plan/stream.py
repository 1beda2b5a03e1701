"""What a streaming query is told — triggers, windows, watermarks, the delivery guarantee — and
the plan nodes only streams have.

All of it is frozen plan data, validated where the user writes it. Durations are given as seconds
(``0.5``), :class:`datetime.timedelta` or strings (``"250ms"``, ``"10s"``, ``"5min"``, ``"1h"``)
and kept as integer milliseconds, the unit of event time inside the engine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import pyarrow as pa

from riera.errors import PlanError
from riera.plan.nodes import AggSpec, Node, walk

_UNITS = {"ms": 1, "s": 1000, "sec": 1000, "m": 60_000, "min": 60_000, "h": 3_600_000,
          "d": 86_400_000}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|m|min|h|d)\s*$")


def duration_ms(value: Any, what: str, *, allow_zero: bool = True) -> int:
    """``value`` (seconds, timedelta or ``"10s"``-style text) as whole milliseconds."""
    ms: float
    if isinstance(value, bool):
        raise PlanError(f"{what}: expected a duration, got {value!r}")
    if isinstance(value, timedelta):
        ms = value.total_seconds() * 1000
    elif isinstance(value, int | float):
        ms = float(value) * 1000
    elif isinstance(value, str):
        m = _DURATION.match(value)
        if not m:
            raise PlanError(
                f"{what}: cannot read the duration {value!r}; give seconds (0.5), a timedelta "
                f"or text such as '250ms', '10s', '5min', '1h'"
            )
        ms = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise PlanError(f"{what}: expected a duration, got {type(value).__name__} {value!r}")
    if ms < 0 or (ms == 0 and not allow_zero):
        raise PlanError(
            f"{what}: the duration must be {'≥' if allow_zero else '>'} 0; got {value!r}"
        )
    return round(ms)


# -- triggers ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Continuous:
    """Per record: each event is processed as it arrives; outputs leave in small batches at most
    ``linger_ms`` after their first record. Checkpoints (epochs) every ``checkpoint_ms``."""

    linger_ms: int = 0
    checkpoint_ms: int = 1000
    kind: Literal["continuous"] = "continuous"


@dataclass(frozen=True)
class MicroBatch:
    """Every ``interval_ms`` the records that arrived form one epoch, processed as one batch."""

    interval_ms: int = 1000
    kind: Literal["micro-batch"] = "micro-batch"

    @property
    def checkpoint_ms(self) -> int:
        return self.interval_ms


Trigger = Continuous | MicroBatch


def continuous(linger: Any = "0ms", *, checkpoint: Any = "1s") -> Continuous:
    """The per-record trigger: outputs are flushed ``linger`` after their first input at most
    (0: after each poll, which already holds whatever arrived while the previous one was being
    processed); a checkpoint (an epoch) every ``checkpoint``.

    >>> continuous("2ms", checkpoint="500ms")
    Continuous(linger_ms=2, checkpoint_ms=500, kind='continuous')
    """
    return Continuous(duration_ms(linger, "continuous(linger=)"),
                      duration_ms(checkpoint, "continuous(checkpoint=)", allow_zero=False))  # fmt: skip


def micro_batch(interval: Any = "1s") -> MicroBatch:
    """The micro-batch trigger: one epoch, processed as one batch, every ``interval``.

    >>> micro_batch("250ms")
    MicroBatch(interval_ms=250, kind='micro-batch')
    """
    return MicroBatch(duration_ms(interval, "micro_batch(interval=)", allow_zero=False))


def trigger_from(value: Any) -> Trigger:
    if isinstance(value, Continuous | MicroBatch):
        return value
    if value is None or value == "continuous":
        return Continuous()
    if value in ("micro-batch", "micro_batch"):
        return MicroBatch()
    raise PlanError(
        f"write_stream: trigger must be riera.stream.continuous(...) or "
        f"riera.stream.micro_batch(...); got {value!r}"
    )


Guarantee = Literal["exactly_once", "at_least_once"]


def guarantee_from(value: Any) -> Guarantee:
    v = str(value).replace("-", "_")
    if v not in ("exactly_once", "at_least_once"):
        raise PlanError(
            f"write_stream: guarantee must be 'exactly_once' or 'at_least_once'; got {value!r}"
        )
    return v  # type: ignore[return-value]


# -- event time -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatermarkSpec:
    """Event time comes from ``column``; the watermark trails the largest time seen by ``delay_ms``.
    A partition silent for ``idle_ms`` no longer holds the watermark back, and when every partition
    is silent the watermark follows the wall clock, so windows of an idle stream still close."""

    column: str
    delay_ms: int
    idle_ms: int | None


Emit = Literal["update", "close"]


@dataclass(frozen=True)
class Window:
    """A window over event time (``on`` a column) or processing time (``on=None``).

    ``emit="update"``: every change of a window's aggregates is emitted as it happens;
    ``emit="close"``: a window is emitted once, when the watermark passes its end, then again
    for each late record that arrives within ``lateness_ms``. Records later than that go to the
    query's late output (:meth:`StreamingQuery.late_records`), counted, never dropped silently.
    """

    kind: Literal["tumbling", "sliding", "session"]
    size_ms: int  # the window length; for sessions, the gap that closes one
    slide_ms: int
    on: str | None
    emit: Emit
    lateness_ms: int

    def describe(self) -> str:
        what = f"{self.kind}({self.size_ms}ms"
        if self.kind == "sliding":
            what += f", every {self.slide_ms}ms"
        return what + f", on {self.on or 'processing time'}, emit on {self.emit})"


def _emit(value: str, where: str) -> Emit:
    if value not in ("update", "close"):
        raise PlanError(f"{where}: emit must be 'update' or 'close'; got {value!r}")
    return value  # type: ignore[return-value]


def tumbling(size: Any, *, on: str | None = None, emit: str = "close",
             allowed_lateness: Any = 0) -> Window:  # fmt: skip
    """Fixed, non-overlapping windows of ``size``, aligned to the epoch (Unix time 0).

    >>> tumbling("10s", on="ts").size_ms
    10000
    """
    size_ms = duration_ms(size, "tumbling(size=)", allow_zero=False)
    lateness = duration_ms(allowed_lateness, "tumbling(allowed_lateness=)")
    return Window("tumbling", size_ms, size_ms, on, _emit(emit, "tumbling"), lateness)


def sliding(size: Any, every: Any, *, on: str | None = None, emit: str = "close",
            allowed_lateness: Any = 0) -> Window:  # fmt: skip
    """Windows of ``size`` starting every ``every``: each record falls into ``size/every`` of them.

    >>> sliding("10s", "5s", on="ts").slide_ms
    5000
    """
    size_ms = duration_ms(size, "sliding(size=)", allow_zero=False)
    slide_ms = duration_ms(every, "sliding(every=)", allow_zero=False)
    if slide_ms > size_ms:
        raise PlanError(
            f"sliding: every ({slide_ms} ms) is longer than size ({size_ms} ms): records between "
            f"windows would belong to none; use tumbling(size) for gapless windows"
        )
    lateness = duration_ms(allowed_lateness, "sliding(allowed_lateness=)")
    return Window("sliding", size_ms, slide_ms, on, _emit(emit, "sliding"), lateness)


def session(gap: Any, *, on: str | None = None, emit: str = "close",
            allowed_lateness: Any = 0) -> Window:  # fmt: skip
    """Per key, records closer than ``gap`` to each other form one window (merged as records
    arrive); the window closes ``gap`` after its last record.

    >>> session("30s", on="ts").kind
    'session'
    """
    gap_ms = duration_ms(gap, "session(gap=)", allow_zero=False)
    lateness = duration_ms(allowed_lateness, "session(allowed_lateness=)")
    return Window("session", gap_ms, gap_ms, on, _emit(emit, "session"), lateness)


# -- plan nodes -----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class StreamSource(Node):
    """An unbounded source (``riera.read_stream``): messages decoded as ``format`` (json: one
    object per message; text: a ``value`` column; raw: ``key``, ``value``, ``ts`` bytes)."""

    url: str
    format: Literal["json", "text", "raw"] = "json"
    schema: pa.Schema | None = None
    kind = "stream_source"

    def label(self) -> str:
        return f"read_stream({self.url})"

    def params(self) -> dict[str, Any]:
        return {"url": self.url, "format": self.format}


@dataclass(frozen=True, eq=False)
class Watermark(Node):
    """Event time from ``column``, the watermark trailing it by ``spec.delay_ms``."""

    spec: WatermarkSpec
    kind = "watermark"

    def label(self) -> str:
        return f"with_watermark({self.spec.column})"

    def params(self) -> dict[str, Any]:
        return {"column": self.spec.column, "delay_ms": self.spec.delay_ms,
                "idle_ms": self.spec.idle_ms}  # fmt: skip


@dataclass(frozen=True, eq=False)
class WindowAgg(Node):
    """``group_by(keys, window=...).agg(...)``: aggregations per key and window; adds the columns
    ``window_start`` and ``window_end`` (UTC timestamps, ms) after the keys."""

    keys: tuple[str, ...]
    aggs: tuple[AggSpec, ...]
    window: Window
    kind = "window_agg"

    def label(self) -> str:
        return f"window_agg({self.window.kind})"

    def params(self) -> dict[str, Any]:
        return {"keys": list(self.keys), "window": self.window.describe(),
                "aggs": [f"{a.out}={a.func}({a.column})" for a in self.aggs]}  # fmt: skip


def unbounded(root: Node) -> bool:
    """Whether a plan reads a stream (it then runs only through ``write_stream``)."""
    return any(isinstance(x, StreamSource) for x in walk(root))


@dataclass(frozen=True, eq=False)
class WindowJoin(Node):
    """Two streams joined on equal keys within the same window: each pair of rows whose event
    times fall into one window is emitted as soon as both have arrived; a ``left`` join also
    emits, when the window closes, the left rows that met no right row."""

    on: tuple[str, ...]
    right_on: tuple[str, ...]
    how: Literal["inner", "left"]
    window: Window
    suffix: str = "_right"
    kind = "window_join"

    def label(self) -> str:
        return f"window_join({','.join(self.on)},{self.how})"

    def params(self) -> dict[str, Any]:
        return {"on": list(self.on), "right_on": list(self.right_on), "how": self.how,
                "window": self.window.describe()}  # fmt: skip
