"""Streaming: the same operators as batch, run per record or in micro-batches, exactly once.

Start with :func:`riera.read_stream` and :meth:`riera.Dataset.write_stream`; this package holds
the triggers and windows they take, the live view, and the engine (``engine.py`` explains the
epoch protocol; ``connectors/`` the sources and sinks; ``state.py`` the keyed state).
"""

from __future__ import annotations

from riera.plan.stream import (
    Continuous,
    MicroBatch,
    Window,
    continuous,
    micro_batch,
    session,
    sliding,
    tumbling,
)
from riera.stream.connectors.base import open_producer, open_sink, open_source, register
from riera.stream.connectors.generator import from_generator
from riera.stream.connectors.python import Callback, Collect, LiveView
from riera.stream.query import StreamingQuery

__all__ = [
    "Callback",
    "Collect",
    "Continuous",
    "LiveView",
    "MicroBatch",
    "StreamingQuery",
    "Window",
    "continuous",
    "from_generator",
    "micro_batch",
    "open_producer",
    "open_sink",
    "open_source",
    "register",
    "session",
    "sliding",
    "tumbling",
]
