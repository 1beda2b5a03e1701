"""``riera stream …``: the streaming commands — produce test messages, run the word count, watch.

``riera stream produce retail | comments`` sends document 000's test messages to a stream URL
(``memory://NAME``, the embedded broker every process of the machine shares, or
``redis://HOST:PORT/DB/STREAM``), paced as the document paced them, with the producer's timestamp
in every message. Like every ``riera`` command, results go to stdout (a producer has none) and
progress, the summary and errors to stderr: a progress line every :data:`PROGRESS_EVERY_S` seconds
on long runs, one summary line at the end. A URL, option or missing extra that cannot work exits
2 before anything is sent; a failure while sending exits 1, after the messages already sent;
Ctrl-C says how many were sent and exits 130.

The commands import their app (:mod:`riera.apps.producers`) when they run, so ``riera --help``
stays fast. ``produce`` is a sub-app of its own, so other generators join it as commands.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any

import typer

from riera.cli import err, fail
from riera.errors import RieraError

app = typer.Typer(help="Streaming: produce, word count, counts, status", no_args_is_help=True)
produce_app = typer.Typer(
    help="Send document 000's test messages (retail purchases, product comments) to a stream.",
    no_args_is_help=True,
)
app.add_typer(produce_app, name="produce")

PROGRESS_EVERY_S = 5.0

To = Annotated[
    str,
    typer.Option(
        "--to",
        help="stream URL: memory://NAME, redis://HOST:PORT/DB/STREAM, kafka://HOST:PORT/TOPIC",
        show_default=False,
    ),
]
Seed = Annotated[
    int | None, typer.Option("--seed", help="random seed: one seed, the same messages")
]


class _Progress:
    """Prints a progress line to stderr at most every :data:`PROGRESS_EVERY_S` seconds."""

    def __init__(self) -> None:
        self.last = time.monotonic()
        self.sent = 0  # so far: what an interrupted run reports
        self.seconds = 0.0

    def __call__(self, sent: int, seconds: float) -> None:
        self.sent, self.seconds = sent, seconds
        now = time.monotonic()
        if now - self.last >= PROGRESS_EVERY_S:
            self.last = now
            rate = sent / seconds if seconds > 0 else 0.0
            err.print(
                f"[dim]… {sent:,} messages sent in {seconds:.1f} s ({rate:,.1f} messages/s)[/]",
                highlight=False,
            )


def _produce(to: str, make: Callable[[], Iterable[Mapping[str, Any]]], interval: float) -> None:
    """Open the producer and build the messages (errors: exit 2), then send them (errors: exit 1)
    and print the summary."""
    from riera.apps.producers import produce
    from riera.stream.announce import announce
    from riera.stream.connectors.base import open_producer

    try:
        producer = open_producer(to)
    except RieraError as e:
        fail(e, 2)
        return
    try:
        try:
            messages = make()
        except RieraError as e:
            fail(e, 2)
            return
        progress = _Progress()
        try:
            with announce(to):  # the dashboard lists it among the processes of to's readers
                done = produce(producer, messages, interval, progress)
        except RieraError as e:
            fail(e)
            return
        except KeyboardInterrupt:  # Ctrl-C: say how far it got; main() exits 130
            err.print(
                f"interrupted: sent {progress.sent:,} messages to {to} in {progress.seconds:.2f} s",
                highlight=False,
                soft_wrap=True,
            )
            raise
    finally:
        producer.close()
    err.print(
        f"sent {done.sent:,} messages to {to} in {done.seconds:.2f} s "
        f"({done.rate:,.1f} messages/s)",
        highlight=False,
        soft_wrap=True,
    )


@produce_app.command("retail")
def produce_retail(
    to: To,
    products: Annotated[
        int, typer.Option("--products", help="3 or 20 products, the document's lists")
    ] = 3,
    count: Annotated[int, typer.Option("--count", min=0, help="purchases to send")] = 500,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="seconds between purchases (0: at once)")
    ] = 0.5,
    seed: Seed = None,
) -> None:
    """Retail purchases: one random product per message, one message every INTERVAL seconds."""
    from riera.apps.producers.retail import retail_messages

    _produce(to, lambda: retail_messages(products, count, seed), interval)


@produce_app.command("comments")
def produce_comments(
    to: To,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="a GGUF model file for llama-cpp-python (pip install 'riera[llm]'); "
            "default: the built-in generator recombining the document's example comments",
            show_default=False,
        ),
    ] = None,
    count: Annotated[int, typer.Option("--count", min=0, help="comments to generate")] = 50,
    interval: Annotated[
        float, typer.Option("--interval", min=0.0, help="seconds between words (0: at once)")
    ] = 0.0,
    seed: Seed = None,
) -> None:
    """Product comments, one message per word (lower-cased, punctuation removed)."""
    from riera.apps.producers.comments import comment_messages

    _produce(to, lambda: comment_messages(count, seed, model), interval)


# -- a PNG report of a sink: document 000's bar chart, drawn by Matplotlib (riera[charts]) ---------
@app.command("chart")
def chart(
    url: Annotated[
        str,
        typer.Argument(
            metavar="SINK_URL", help="the sink URL the query writes to (memory://, redis://)"
        ),
    ],
    out_path: Annotated[str, typer.Option("--out", help="the PNG file to write")],
    top: Annotated[int, typer.Option("--top", min=1, help="bars of the sorted chart")] = 30,
    untreated: Annotated[
        bool, typer.Option("--untreated", help="every key in arrival order, unsorted")
    ] = False,
    title: Annotated[
        str | None, typer.Option("--title", help="the chart's title", show_default=False)
    ] = None,
) -> None:
    """Draw the sink's latest value per key as a bar chart PNG: the top N by value, or with
    --untreated every key in the order it arrived (document 000's two charts)."""
    from riera.dashboard.live import sink_rows
    from riera.dashboard.render import ChartsMissingError, render_png

    try:
        rows = sink_rows(url)
    except RieraError as e:
        fail(e, 2)
        return
    try:
        written = render_png(rows, out_path, treated=not untreated, top_n=top, title=title)
    except ChartsMissingError as e:
        fail(e, 2)
        return
    except (RieraError, OSError) as e:
        fail(f"{out_path}: {e}")
        return
    shown = len(rows) if untreated else min(top, len(rows))
    err.print(f"wrote {written}: {shown} of {len(rows)} keys from {url}",
              highlight=False, soft_wrap=True)  # fmt: skip


# -- the streaming engine's commands ----------------------------------------------------------------
# `riera stream wordcount`, `counts` and `status` live in riera.cli.streamjobs (imported lazily
# there: the engine loads only when a query runs).
from riera.cli import streamjobs  # noqa: E402

app.command("wordcount")(streamjobs.wordcount)
app.command("counts")(streamjobs.counts)
app.command("status")(streamjobs.status)
