"""Document 000's messages for the streaming tests, the batch engine's totals over them (the
oracle), and what a ``memory://`` sink holds."""

from __future__ import annotations

import json
import random

import riera
from riera import col
from riera.stream.connectors.memory import Broker

WORDS = ["Freezer", "Ar Condicionado", "Microondas", "Geladeira", "Fogão"]


def messages(n: int, seed: int, words: list[str] = WORDS) -> list[dict[str, str]]:
    rng = random.Random(seed)
    return [{"chave": str(i), "valorA": rng.choice(words), "valorB": "1"} for i in range(n)]


def oracle(rows: list[dict[str, str]]) -> dict[str, int]:
    totals = riera.from_items(rows).group_by("valorA").agg(total=col("valorB").cast("int64").sum())
    return {r["valorA"]: r["total"] for r in totals.collect()}


def wordcount_query(url: str) -> riera.Dataset:
    """Document 000's word count over the messages at ``url``: total of valorB per valorA."""
    schema = {"chave": "string", "valorA": "string", "valorB": "string"}
    return (
        riera.read_stream(url, schema=schema)
        .group_by("valorA")
        .agg(total=col("valorB").cast("int64").sum())
    )


def totals_and_log(name: str) -> tuple[dict[str, int], list[dict[str, object]]]:
    """The latest total per word in a ``memory://`` upsert sink, and every row it appended."""
    broker = Broker(name)
    try:
        latest = {json.loads(k)[0]: json.loads(r)["total"] for k, r in
                  broker.db.execute("SELECT k, row FROM latest").fetchall()}  # fmt: skip
        log = [json.loads(v) for (v,) in broker.db.execute("SELECT value FROM log ORDER BY off")]
    finally:
        broker.close()
    return latest, log
