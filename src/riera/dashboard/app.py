"""The dashboard's routes: the page and its assets, the JSON API (plain GETs) and one
server-sent-event stream per tab that multiplexes every chart of the page."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from riera.dashboard.live import Streams
from riera.dashboard.security import Guard

STATIC = Path(__file__).parent / "static"


def create_app(store: Any, *, hosts: set[str], token: str | None, hz: float = 4.0) -> Any:
    """The ASGI app over a provenance store (read-only), behind :class:`Guard`."""
    streams = Streams(store, max_age_s=0.5 / hz)  # every tab of a query shares its reading

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})

    async def api_streams(request: Request) -> Response:
        rows = await anyio.to_thread.run_sync(streams.queries)
        return JSONResponse(json.loads(json.dumps(rows, default=str)))

    async def api_frame(request: Request) -> Response:
        frame = await anyio.to_thread.run_sync(streams.read, request.path_params["run_id"])
        return JSONResponse(json.loads(json.dumps(frame, default=str)))

    async def events(request: Request) -> Response:
        ids = [i for i in request.query_params.get("streams", "").split(",") if i][:16]
        untreated = request.query_params.get("untreated") == "1"
        return StreamingResponse(_frames(request, streams, ids, hz, untreated),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})  # fmt: skip

    routes = [
        Route("/", index),
        Route("/api/streams", api_streams),
        Route("/api/streams/{run_id}", api_frame),
        Route("/api/events", events),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        streams.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    return Guard(app, hosts=hosts, token=token)


async def _frames(request: Request, streams: Streams, ids: list[str], hz: float,
                  untreated: bool = False) -> AsyncIterator[str]:  # fmt: skip
    """At most ``hz`` frames per second per query, each sent only when it changed: a client
    always gets the latest state, never a backlog (the display rate is decoupled from the event
    rate). A comment every 15 s keeps proxies from closing an idle stream."""
    last: dict[str, str] = {}
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        started = time.monotonic()
        for run_id in ids:
            frame = await anyio.to_thread.run_sync(streams.frame, run_id, untreated)
            body = json.dumps(frame, default=str, sort_keys=True)
            if last.get(run_id) != body:
                last[run_id] = body
                frame["sent_at"] = time.time()
                frame["interval_ms"] = round(1000 / hz)
                yield f"event: frame\ndata: {json.dumps(frame, default=str)}\n\n"
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since > 15:
            yield ": still here\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(max(0.0, 1 / hz - (time.monotonic() - started)))
