"""The synthetic text of ``riera demo`` and of the benchmarks: exact counts, deterministic."""

from __future__ import annotations

import collections
from pathlib import Path

from riera.apps.wordcount import corpus


def test_text_generator_counts_are_exact(tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    stats = corpus.TextGenerator(vocab_size=2_000).write(path, 300_000)
    data = path.read_bytes()
    assert len(data) == stats.nbytes <= 300_000 and data.endswith(b"\n")
    lines = data.decode("utf-8").splitlines()
    assert len(lines) == stats.lines
    assert 60 <= sum(map(len, lines)) / len(lines) <= 130
    assert collections.Counter(stats.counts) == corpus.reference_counts(data.decode("utf-8"))
    # Deterministic.
    again = corpus.TextGenerator(vocab_size=2_000).write(tmp_path / "again.txt", 300_000)
    assert (tmp_path / "again.txt").read_bytes() == data and again.counts == stats.counts
