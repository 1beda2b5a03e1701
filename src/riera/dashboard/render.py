"""Document 000's live bar chart as a PNG, for reports: the same chart the dashboard draws in the
browser, drawn by Matplotlib as the document drew it.

*Treated* (the default) sorts by value, largest first, ties by key — the dashboard's order — and
keeps the top ``top_n`` (30, as the document kept); *untreated* draws every row in the order given
(the order keys first reached the sink), which the document showed becoming unreadable as the
words grow in number. Labels are rotated 90° like the document's, but kept readable: one line,
at most :data:`LABEL_MAX` characters (longer ones end in an ellipsis), never parsed as mathtext
(a word like ``$5`` is drawn as written).

Design choices:

- **No pyplot.** A :class:`~matplotlib.figure.Figure` with its own Agg canvas: no global figure
  registry, no display needed, safe in a server thread or a headless CI.
- **Missing glyphs are not errors.** A font without Arabic, Hebrew or emoji glyphs draws boxes;
  Matplotlib's per-glyph warnings are silenced around the drawing only (not process-wide) and
  summed up in one debug log line. How a right-to-left word is laid out is Matplotlib's: recent
  versions shape and order Arabic and Hebrew; older ones draw the letters in stored order.
- **Atomic writes.** The PNG is written to a hidden temporary file beside the target, flushed,
  and renamed over it: a reader sees the old report or the new one, never half of one, and a
  failure leaves no temporary file behind.
- **Optional dependency.** Matplotlib is the ``charts`` extra; without it the call raises
  :class:`ChartsMissingError` naming ``pip install 'riera[charts]'``. It is imported when a chart
  is drawn, so importing this module costs nothing.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import secrets
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from riera.errors import RieraError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ChartError", "ChartsMissingError", "build_figure", "chart_rows", "render_png"]

log = logging.getLogger(__name__)

TOP_N = 30  # the document's treated chart
LABEL_MAX = 24  # characters of a tick label; longer ones end in "…"
DPI = 100
HEIGHT_IN = 6.0
INCH_PER_BAR = 0.28
MIN_WIDTH_IN, MAX_WIDTH_IN = 6.4, 320.0  # Agg refuses images of 2**16 pixels or more a side
_GLYPH_WARNING = r"Glyph \d+ .* missing from font"


class ChartError(RieraError, ValueError):
    """Rows that cannot be charted (a row without a key or a numeric value; names the row), or
    a ``top_n`` that is not a positive integer."""


class ChartsMissingError(RieraError, ImportError):
    """Matplotlib, the ``charts`` extra, is not installed (the message names the install)."""


def chart_rows(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]], *, treated: bool = True, top_n: int = TOP_N
) -> list[tuple[str, float]]:
    """The ``(key, value)`` bars of a chart, in drawing order.

    ``rows`` are ``{"key", "value"}`` dicts or ``(key, value)`` pairs in arrival order. Treated:
    sorted by value, largest first, ties by key, the first ``top_n``; untreated: all, as given.

    >>> chart_rows([("b", 1), {"key": "a", "value": 3}, ("c", 3)], top_n=2)
    [('a', 3), ('c', 3)]
    >>> chart_rows([("b", 1), ("a", 3)], treated=False)
    [('b', 1), ('a', 3)]
    """
    if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
        raise ChartError(f"top_n must be a positive integer; got {top_n!r}")
    bars = [_bar(row, i) for i, row in enumerate(rows)]
    if not treated:
        return bars
    return sorted(bars, key=lambda b: (-b[1], b[0]))[:top_n]


def build_figure(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    *,
    treated: bool = True,
    top_n: int = TOP_N,
    title: str | None = None,
) -> Figure:
    """The chart as a Matplotlib figure with an Agg canvas (not drawn yet); see :func:`render_png`.

    One bar per key, at x = 0, 1, …; each tick label is the key as drawn (truncated past
    :data:`LABEL_MAX` characters).

    >>> fig = build_figure([("freezer", 2), ("microondas", 5)])
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['microondas', 'freezer']
    """
    given = list(rows)
    bars = chart_rows(given, treated=treated, top_n=top_n)
    figure_cls, canvas_cls = _matplotlib()
    width = min(MAX_WIDTH_IN, max(MIN_WIDTH_IN, INCH_PER_BAR * len(bars) + 1.5))
    fig = figure_cls(figsize=(width, HEIGHT_IN), dpi=DPI, layout="constrained")
    canvas_cls(fig)
    ax = fig.add_subplot()
    if title is None:
        title = (f"Top {len(bars)} of {len(given)} keys by value" if treated
                 else f"Every key ({len(bars)}) in arrival order")  # fmt: skip
    ax.set_title(title, parse_math=False)
    ax.set_ylabel("value")
    if not bars:
        ax.set_xticks([])
        ax.text(0.5, 0.5, "no rows yet", transform=ax.transAxes, ha="center", va="center",
                color="0.4", parse_math=False)  # fmt: skip
        return fig
    xs = list(range(len(bars)))
    drawn = ax.bar(xs, [v for _, v in bars], color="#3b6ea8", width=0.8)
    ax.set_xticks(xs, [_label(k) for k, _ in bars], rotation=90, parse_math=False,
                  fontsize=8 if len(bars) <= 60 else 6)  # fmt: skip
    ax.set_xlim(-0.6, len(bars) - 0.4)
    if treated:  # the exact values over the bars: a report is read, not hovered
        ax.bar_label(drawn, labels=[_number(v) for _, v in bars], fontsize=7, padding=1)
    ax.margins(y=0.08)
    return fig


def render_png(
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    path: str | os.PathLike[str],
    *,
    treated: bool = True,
    top_n: int = TOP_N,
    title: str | None = None,
) -> Path:
    """Draw document 000's bar chart of ``rows`` to the PNG file ``path``, atomically; returns
    the path written.

    ``rows``: ``{"key", "value"}`` dicts (what :func:`riera.dashboard.live.sink_rows` returns) or
    ``(key, value)`` pairs, in arrival order. ``treated``: the top ``top_n`` by value, largest
    first (ties by key); otherwise every row as given. ``title``: defaults to what the chart shows.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "words.png"
    >>> render_png([("freezer", 2), ("microondas", 5)], out).read_bytes()[:4]
    b'\\x89PNG'
    """
    target = Path(path)
    fig = build_figure(rows, treated=treated, top_n=top_n, title=title)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
        with os.fdopen(fd, "wb") as out, _quiet_missing_glyphs():
            fig.savefig(out, format="png", dpi=DPI)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return target


def _bar(row: Mapping[str, Any] | Sequence[Any], i: int) -> tuple[str, float]:
    try:
        if isinstance(row, Mapping):
            key, value = row["key"], row["value"]
        elif isinstance(row, Sequence) and not isinstance(row, str | bytes) and len(row) == 2:
            key, value = row
        else:
            raise TypeError
    except (KeyError, TypeError) as err:
        raise ChartError(
            f"row {i}: expected a {{'key', 'value'}} dict or a (key, value) pair; got {row!r}"
        ) from err
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ChartError(f"row {i} ({key!r}): the value must be a finite number; got {value!r}")
    return str(key), value


def _label(key: str) -> str:
    """One line, at most LABEL_MAX characters (an ellipsis marks the cut)."""
    text = " ".join(key.split()) or "(empty)"
    return text if len(text) <= LABEL_MAX else text[: LABEL_MAX - 1].rstrip() + "…"


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.4g}"


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ChartsMissingError(
            "PNG charts need Matplotlib, which is not installed: pip install 'riera[charts]'"
        ) from err
    return Figure, FigureCanvasAgg


@contextlib.contextmanager
def _quiet_missing_glyphs() -> Iterator[None]:
    """Matplotlib's "Glyph N missing from font(s) F" warnings, for this block only, as one debug
    log line; any other warning is emitted as usual."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("always", message=_GLYPH_WARNING, category=UserWarning)
        yield
    missing = [w for w in caught if issubclass(w.category, UserWarning)
               and re.match(_GLYPH_WARNING, str(w.message))]  # fmt: skip
    if missing:
        log.debug("%d glyphs missing from the chart's font, drawn as boxes: %s", len(missing),
                  "; ".join(sorted({str(w.message) for w in missing})))  # fmt: skip
    for w in caught:
        if w not in missing:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, source=w.source)
