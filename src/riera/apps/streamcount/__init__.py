"""Document 000's streaming word count, on Riera's public API.

The document's pipeline is ``producer → topic → group-by word sum → topic → consumer``: messages
``{"chave": "<n>", "valorA": "<word>", "valorB": "1"}``, summed per ``valorA``. Here it is one
query: :func:`wordcount` reads the messages from any stream URL, sums ``valorB`` (text in the
document's messages, so it is cast) per ``valorA`` into ``total``, and commits the running totals to
a sink URL keyed by the word, resumable from its checkpoint directory after any crash.
:func:`counts` reads the latest total per word back from a sink.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import riera
from riera import col
from riera.stream import StreamingQuery, continuous, micro_batch
from riera.stream.leased import LeasedQuery

SCHEMA = {"chave": "string", "valorA": "string", "valorB": "string", "ts": "float64"}


def wordcount(
    source: str,
    sink: str,
    checkpoint: str,
    *,
    trigger: str = "continuous",
    interval_ms: int = 1000,
    guarantee: str = "exactly_once",
    until_idle: float | None = None,
    workers: int = 1,
    coordinator: str | None = None,
    shards: int = 8,
    name: str = "wordcount",
    lease_ttl_ms: int = 3000,
) -> StreamingQuery | LeasedQuery:
    """Start the word count; returns its query handle.

    ``interval_ms`` is the micro-batch interval, or the checkpoint interval of the continuous
    trigger; ``until_idle``: stop once the source has been idle that many seconds;
    ``coordinator``/``shards``: run it with the other drivers started with the same coordinator
    (see :meth:`riera.Dataset.write_stream`).
    """
    words = riera.read_stream(source, schema=SCHEMA)
    totals = words.group_by("valorA").agg(total=col("valorB").cast("int64").sum())
    if trigger == "continuous":
        trig: Any = continuous("0ms", checkpoint=interval_ms / 1000)
    elif trigger in ("micro-batch", "micro_batch"):
        trig = micro_batch(interval_ms / 1000)
    else:
        raise riera.PlanError(
            f"wordcount: trigger must be continuous or micro-batch; got {trigger!r}"
        )
    return totals.write_stream(
        sink,
        trigger=trig,
        checkpoint=checkpoint,
        guarantee=guarantee,
        stop_when_idle=until_idle,
        workers=workers,
        name=name,
        coordinator=coordinator,
        shards=shards,
        lease_ttl=f"{lease_ttl_ms}ms",
    )


def latest(url: str) -> dict[str, dict[str, Any]]:
    """The latest row per key that a sink holds: its upsert table where it keeps one, else the
    last row per key of what it appended, read back as a stream."""
    from riera.stream import open_sink, open_source

    sink = open_sink(url)
    try:
        table = getattr(sink, "latest", None)
        if table is not None:
            rows: dict[str, dict[str, Any]] = table()
            return rows
    finally:
        sink.close()
    out: dict[str, dict[str, Any]] = {}
    source = open_source(url)
    try:
        reader = source.reader(dict.fromkeys(range(source.partitions())))
        while batch := reader.poll(10_000, 0.0):
            for m in batch:
                row = json.loads(m.value)
                key = m.key.decode() if m.key else json.dumps(row)
                out[key] = row
    finally:
        source.close()
    return out


def counts(url: str) -> Iterator[tuple[str, Any]]:
    """``(word, total)`` pairs from a word-count sink, most frequent first (ties by word)."""
    pairs = []
    for key, row in latest(url).items():
        try:
            parts = json.loads(key)
            word = " ".join(str(p) for p in parts) if isinstance(parts, list) else str(parts)
        except ValueError:
            word = key
        values = [
            v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        total = row.get("total", values[-1] if values else None)
        pairs.append((word, total))
    pairs.sort(key=lambda p: (-(p[1] or 0), p[0]))
    return iter(pairs)
