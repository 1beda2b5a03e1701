"""The PNG renderer of document 000's bar chart (:mod:`riera.dashboard.render`): the bars and
labels of the figure exactly, the PNG read back, words in any script, atomic writes, the missing
extra, and ``riera stream chart`` against the sink of a real streaming word count."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

import riera
from riera.dashboard.live import sink_rows
from riera.dashboard.render import (
    LABEL_MAX,
    ChartError,
    ChartsMissingError,
    build_figure,
    render_png,
)
from riera.errors import RieraError
from riera.testing import send
from wordcount_data import WORDS, messages, oracle, wordcount_query

ARABIC, HEBREW, EMOJI = "مرحبا", "שלום", "😀 festa 🎉"
LONG = "pneumonoultramicroscopicsilicovolcanoconiosis-" * 3


def _bars(fig: Figure) -> tuple[list[str], list[float]]:
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    heights = [p.get_height() for p in ax.patches]
    return labels, heights


def _words(n: int) -> list[dict[str, object]]:
    """n keys with repeated values (ties broken by key), in a scrambled arrival order."""
    return [{"key": f"w{(i * 37) % n:03d}", "value": (i * 7) % 11} for i in range(n)]


def test_the_treated_chart_is_the_top_n_by_value_then_key() -> None:
    rows = _words(50)
    fig = build_figure(rows, top_n=30)
    expected = sorted(rows, key=lambda r: (-r["value"], r["key"]))[:30]  # type: ignore[operator]
    labels, heights = _bars(fig)
    assert labels == [r["key"] for r in expected]
    assert heights == [r["value"] for r in expected]
    assert len(heights) == 30 and heights == sorted(heights, reverse=True)
    assert all(t.get_rotation() == 90 for t in fig.axes[0].get_xticklabels())
    assert fig.axes[0].get_title() == "Top 30 of 50 keys by value"


def test_the_untreated_chart_is_every_key_in_arrival_order() -> None:
    rows = [(f"w{i}", float(i % 5) + 0.5) for i in (7, 3, 9, 1, 4, 8, 2, 6, 5, 0)] * 1
    fig = build_figure(rows, treated=False, top_n=3, title="arrival")
    labels, heights = _bars(fig)
    assert labels == [k for k, _ in rows] and heights == [v for _, v in rows]
    assert fig.axes[0].get_title() == "arrival"


def test_the_png_reads_back_at_the_figure_size(tmp_path: Path) -> None:
    rows = _words(40)
    out = render_png(rows, tmp_path / "top.png", top_n=12)
    assert out == tmp_path / "top.png"
    image = imread(out)
    fig = build_figure(rows, top_n=12)
    width, height = (fig.get_size_inches() * fig.dpi).round().astype(int)
    assert image.shape[:2] == (height, width)
    assert image[..., :3].std() > 0, "something is drawn"
    pil = pytest.importorskip("PIL.Image", reason="Pillow reads the PNG a second way")
    with pil.open(out) as im:
        im.verify()
    assert [p.name for p in tmp_path.iterdir()] == ["top.png"], "no temporary file is left"
    control = tmp_path / "control"
    control.write_bytes(b"")
    assert out.stat().st_mode == control.stat().st_mode, "the umask applies as to any new file"


def test_right_to_left_emoji_and_long_words_are_labels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = [(ARABIC, 5), (HEBREW, 4), (EMOJI, 3), (LONG, 2), ("$5 \\frac{a}{b}", 1), ("a\nb", 1)]
    fig = build_figure(rows, treated=False)
    labels, _ = _bars(fig)
    cut = LONG[: LABEL_MAX - 1] + "…"
    assert labels == [ARABIC, HEBREW, EMOJI, cut, "$5 \\frac{a}{b}", "a b"]
    assert len(cut) == LABEL_MAX
    filters = list(warnings.filters)
    # A font without Arabic, Hebrew or emoji glyphs: Matplotlib warns per glyph, which this
    # suite's filterwarnings=error would turn into a failure; the renderer logs them instead,
    # for the drawing only.
    with (
        caplog.at_level(logging.DEBUG, "riera.dashboard.render"),
        matplotlib.rc_context({"font.family": ["STIXGeneral"]}),
    ):
        render_png(rows, tmp_path / "words.png", treated=False)
        render_png(rows, tmp_path / "top.png")
    assert warnings.filters == filters, "the warning filters are left as they were"
    assert "missing from the chart's font" in caplog.text
    assert imread(tmp_path / "words.png").shape[0] > 0
    with pytest.warns(UserWarning, match="missing"):  # outside the drawing: warned as usual
        warnings.warn("Glyph 1575 (x) missing from font(s) STIXGeneral.", UserWarning, 1)


def test_a_failed_write_leaves_the_old_report_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "chart.png"
    render_png([("a", 1)], out)
    before = out.read_bytes()

    def full_disk(self: Figure, fname: object, **kwargs: object) -> None:
        fname.write(b"\x89PNG half a chart")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(OSError, match="No space left"):
        render_png([("a", 1), ("b", 2)], out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chart.png"]
    assert out.read_bytes() == before


def test_rows_and_top_n_are_checked_where_they_are_given() -> None:
    with pytest.raises(ChartError, match="row 1: expected a"):
        build_figure([("a", 1), "b"])
    with pytest.raises(ChartError, match=r"row 0 \('a'\): the value must be a finite number"):
        build_figure([{"key": "a", "value": "7"}])
    with pytest.raises(ChartError, match="finite"):
        build_figure([("a", float("nan"))])
    with pytest.raises(ChartError, match="top_n must be a positive integer; got 0"):
        build_figure([("a", 1)], top_n=0)
    empty = build_figure([])
    assert _bars(empty) == ([], [])
    assert [t.get_text() for t in empty.axes[0].texts] == ["no rows yet"]


def test_without_matplotlib_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import fails
    with pytest.raises(ChartsMissingError, match=r"pip install 'riera\[charts\]'") as info:
        build_figure([("a", 1)])
    assert isinstance(info.value, RieraError) and isinstance(info.value, ImportError)


# -- riera stream chart, against the sink of a real streaming word count -----------------------------


def _chart(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "riera", "stream", "chart", *args],
                          capture_output=True, text=True, env=env, timeout=120)  # fmt: skip


@pytest.mark.integration
def test_the_cli_charts_the_sink_of_a_running_word_count(
    runtime: dict[str, str], tmp_path: Path
) -> None:
    words = [*WORDS, ARABIC, HEBREW, EMOJI, LONG]
    rows = messages(600, seed=11, words=words)
    send("memory://chart-in", rows, key="chave")
    q = wordcount_query("memory://chart-in").write_stream(
        "memory://chart-out", checkpoint=tmp_path / "ck",
        trigger=riera.stream.continuous(checkpoint="100ms"))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while {r["key"]: r["value"] for r in sink_rows("memory://chart-out")} != oracle(rows):
            assert time.monotonic() < deadline, "the word count did not reach its totals"
            time.sleep(0.1)
    finally:
        q.stop()
    every = sink_rows("memory://chart-out")  # in the order the words first reached the sink

    top = tmp_path / "top.png"
    done = _chart(runtime, "memory://chart-out", "--out", str(top), "--top", "4")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and f"4 of {len(words)} keys" in done.stderr
    render_png(every, tmp_path / "expected-top.png", top_n=4)
    assert np.array_equal(imread(top), imread(tmp_path / "expected-top.png"))

    untreated = tmp_path / "every.png"
    done = _chart(runtime, "memory://chart-out", "--out", str(untreated), "--untreated",
                  "--title", "Every word")  # fmt: skip
    assert done.returncode == 0, done.stderr
    render_png(every, tmp_path / "expected-every.png", treated=False, title="Every word")
    assert np.array_equal(imread(untreated), imread(tmp_path / "expected-every.png"))
    assert not np.array_equal(imread(untreated), imread(tmp_path / "expected-top.png"))

    bad = _chart(runtime, "nosuch://x", "--out", str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and "no stream sink for nosuch://" in bad.stderr
    assert not (tmp_path / "bad.png").exists()
    zero = _chart(runtime, "memory://chart-out", "--out", str(tmp_path / "z.png"), "--top", "0")
    assert zero.returncode == 2
    unwritable = _chart(runtime, "memory://chart-out", "--out", str(tmp_path / "no" / "c.png"))
    assert unwritable.returncode == 1 and "No such file or directory" in unwritable.stderr
    assert os.listdir(tmp_path / "brokers")  # the sink was the embedded broker's, in this test
