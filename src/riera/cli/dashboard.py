"""``riera dashboard``: live charts of streaming queries over the provenance store."""

from __future__ import annotations

from typing import Annotated

import typer

from riera.cli import fail
from riera.errors import RieraError


def dashboard(
    host: Annotated[
        str,
        typer.Option("--host", help="address to listen on; beyond loopback a token is required"),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="port to listen on")] = 8765,
    token: Annotated[
        str | None,
        typer.Option("--token", help="access token (default: none on loopback, else generated)"),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="provenance store (default: the configured one)"),
    ] = None,
    hz: Annotated[float, typer.Option("--hz", help="frames per second per chart (2-5)")] = 4.0,
) -> None:
    """Serve the dashboard until Ctrl-C: the URL to open is printed first."""
    from riera.dashboard import serve

    if not 0.5 <= hz <= 10:
        fail(f"--hz must be between 0.5 and 10; got {hz}", 2)
    try:
        serve(host, port, token=token, store=store, hz=hz,
              on_ready=lambda line: print(line, flush=True))  # fmt: skip
    except RieraError as e:
        fail(e, 2)
