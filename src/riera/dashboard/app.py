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

from riera.dashboard.explorer import BadRequest, Explorer
from riera.dashboard.live import Streams
from riera.dashboard.security import Guard
from riera.errors import ProvenanceError, RieraError

STATIC = Path(__file__).parent / "static"


def create_app(store: Any, *, hosts: set[str], token: str | None, hz: float = 4.0,
               port: int | None = None) -> Any:  # fmt: skip
    """The ASGI app over a provenance store (read-only), behind :class:`Guard`."""
    streams = Streams(store, max_age_s=0.5 / hz)  # every tab of a query shares its reading
    explorer = Explorer(store)

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
        watch = Watch(explorer, streams, listed=request.query_params.get("list") == "1",
                      runs=request.query_params.get("runs") == "1",
                      run=request.query_params.get("run") or None)  # fmt: skip
        return StreamingResponse(_frames(request, streams, ids, hz, untreated, watch),
                                 media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})  # fmt: skip

    def q(request: Request, name: str) -> str | None:
        return request.query_params.get(name) or None

    def run_view(name: str) -> Any:
        def call(request: Request) -> Any:
            method = getattr(explorer, name)
            params = {k: q(request, k) for k in ("after", "limit")}
            if name == "elements":
                params.update(kind=q(request, "kind"), stage=q(request, "stage"))
            if name in ("run", "plan", "timeline"):
                params = {}
            return method(request.path_params["run_id"], **params)

        return call

    def runs(request: Request) -> Any:
        return explorer.runs(q(request, "after"), q(request, "limit"), status=q(request, "status"),
                             action=q(request, "action"))  # fmt: skip

    def lineage(request: Request) -> Any:
        return explorer.lineage(request.path_params["run_id"], q(request, "element") or "",
                                q(request, "direction") or "up", q(request, "limit"),
                                q(request, "after"))  # fmt: skip

    def domain_rows(request: Request) -> Any:
        filters = []
        for text in request.query_params.getlist("f"):
            parts = text.split(":", 2)
            if len(parts) != 3:
                raise BadRequest(f"a filter is column:operator:value, got {text!r}")
            filters.append((parts[0], parts[1], parts[2]))
        return explorer.domain_rows(request.path_params["dataset"], run_id=q(request, "run"),
                                    filters=filters, after=q(request, "after"),
                                    limit=q(request, "limit"))  # fmt: skip

    def console(request: Request) -> Any:
        return explorer.console(request.query_params.get("q", ""), q(request, "limit"))

    routes = [
        Route("/", index),
        Route("/api/streams", api_streams),
        Route("/api/streams/{run_id}", api_frame),
        Route("/api/events", events),
        Route("/api/runs", _json_view(runs)),
        Route("/api/runs/{run_id}", _json_view(run_view("run"))),
        *(
            Route(f"/api/runs/{{run_id}}/{name}", _json_view(run_view(name)))
            for name in ("plan", "timeline", "elements", "programs", "files", "epochs")
        ),
        Route("/api/runs/{run_id}/lineage", _json_view(lineage)),
        Route("/api/runs/{run_id}/export.{fmt}", export(store)),
        Route("/api/domains", _json_view(lambda request: explorer.domains())),
        Route("/api/domains/{dataset}", _json_view(domain_rows)),
        Route("/api/sql", _json_view(console)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        streams.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    return Guard(app, hosts=hosts, token=token, port=port)


def _json_view(call: Any) -> Any:
    """A GET answered with ``call(request)`` as JSON, run off the event loop, with its server
    time in a ``Server-Timing`` header; a missing record is 404, a refused request 400."""

    async def view(request: Request) -> Response:
        started = time.perf_counter()
        try:
            body = await anyio.to_thread.run_sync(call, request)
            status = 200
        except LookupError as err:
            body, status = {"error": str(err.args[0] if err.args else err)}, 404
        except (BadRequest, ProvenanceError) as err:
            body, status = {"error": str(err)}, 400
        took = 1000 * (time.perf_counter() - started)
        return Response(json.dumps(body, default=str), status_code=status,
                        media_type="application/json",
                        headers={"server-timing": f"app;dur={took:.1f}",
                                 "cache-control": "no-store"})  # fmt: skip

    return view


EXPORTS = {"json": ("prov-json", "application/json"), "provn": ("prov-n", "text/plain"),
           "dot": ("dot", "text/vnd.graphviz"), "png": ("png", "image/png")}  # fmt: skip


def export(store: Any) -> Any:
    """The run's PROV document as a download (the whole run, on request only)."""

    async def view(request: Request) -> Response:
        import tempfile

        from riera.provenance.export import export as write

        run_id, fmt = request.path_params["run_id"], request.path_params["fmt"]
        if fmt not in EXPORTS:
            return JSONResponse({"error": f"export as {', '.join(EXPORTS)}"}, status_code=404)
        kind, media = EXPORTS[fmt]

        def make() -> bytes:
            if kind != "png":
                return str(write(store, run_id, kind)).encode()
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run.png"
                write(store, run_id, kind, out)
                return out.read_bytes()

        try:
            body = await anyio.to_thread.run_sync(make)
        except (RieraError, LookupError) as err:
            return JSONResponse({"error": str(err)}, status_code=404)
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
        return Response(body, media_type=media, headers={
            "content-disposition": f'attachment; filename="{name}.{fmt}"'})  # fmt: skip

    return view


class Watch:
    """What the pages of a tab follow besides charts: the list of streaming queries, the first
    page of the run list and one run's summary, read once a second and sent when they change.
    A failed reading is sent as an ``error`` of that part; the tab's stream goes on."""

    def __init__(self, explorer: Explorer, streams: Streams, *, listed: bool, runs: bool,
                 run: str | None) -> None:  # fmt: skip
        self.explorer, self.streams = explorer, streams
        self.listed, self.runs, self.run = listed, runs, run
        self.last: dict[str, str] = {}
        self.read_at = 0.0

    def changes(self) -> list[tuple[str, Any]]:
        if not (self.listed or self.runs or self.run) or time.monotonic() - self.read_at < 1.0:
            return []
        self.read_at = time.monotonic()
        parts: list[tuple[str, Any]] = []
        if self.listed:
            parts.append(("streams", lambda: {"rows": self.streams.queries()}))
        if self.runs:
            parts.append(("runs", self.explorer.runs))
        if self.run:
            parts.append(("run", lambda: self.explorer.run(str(self.run))))
        out = []
        for name, read in parts:
            try:
                value = read()
            except LookupError as err:
                value = {"error": str(err.args[0] if err.args else err)}
            except Exception as err:  # a store that fails is shown, not fatal
                value = {"error": f"{type(err).__name__}: {err}"}
            body = json.dumps({k: v for k, v in value.items() if k != "now"}, default=str,
                              sort_keys=True)  # fmt: skip
            if self.last.get(name) != body:
                self.last[name] = body
                out.append((name, value))
        return out


class Pace:
    """The frame rate a tab gets: the configured ``hz``, stepped down (halved, to 1 Hz at
    least) while reading frames takes more than half of a frame's time or the machine's memory
    runs short, and back up once it has been easy for 10 s. Frames say the rate and why it is
    lower, so the page never slows down or freezes without saying so.

    Reading is slow when two passes in a row are: one slow pass is not pressure. The first pass
    after the dashboard starts imports the sink's connector and opens the sink (170-265 ms on a
    busy two-core machine, where the next passes took under 2 ms); taken alone, it halved the
    first viewer's frame rate for 10 s."""

    def __init__(self, hz: float) -> None:
        self.target = self.hz = hz
        self.reason: str | None = None
        self.easy_since = time.monotonic()
        self.was_slow = False

    def after(self, work_s: float, ram_free_percent: float | None) -> None:
        now = time.monotonic()
        short = ram_free_percent is not None and ram_free_percent < LOW_RAM_PERCENT
        slow = work_s > 0.5 / self.hz
        slow_twice, self.was_slow = slow and self.was_slow, slow
        if short or slow_twice:
            if self.hz > 1.0:
                self.hz = max(1.0, self.hz / 2)
            self.reason = (f"memory is short ({ram_free_percent:.0f}% free)" if short
                           else f"reading frames takes {1000 * work_s:.0f} ms")  # fmt: skip
            self.easy_since = now
        elif work_s > 0.2 / self.hz:
            self.easy_since = now
        elif self.hz < self.target and now - self.easy_since > 10:
            self.hz = min(self.target, self.hz * 2)
            self.easy_since = now
            if self.hz == self.target:
                self.reason = None


LOW_RAM_PERCENT = 5.0


async def _frames(request: Request, streams: Streams, ids: list[str], hz: float,
                  untreated: bool = False, watch: Watch | None = None) -> AsyncIterator[str]:  # fmt: skip
    """At most ``hz`` frames per second per query, each sent only when it changed: a client
    always gets the latest state, never a backlog (the display rate is decoupled from the event
    rate). The machine's figures go once a second as ``system`` events. A comment every 15 s
    keeps proxies from closing an idle stream."""
    from riera.dashboard.system import system_metrics

    last: dict[str, str] = {}
    pace = Pace(hz)
    system_at = 0.0
    quiet_since = time.monotonic()
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        started = time.monotonic()
        for run_id in ids:
            try:
                frame = await anyio.to_thread.run_sync(streams.frame, run_id, untreated)
            except Exception as err:  # one query's failure is its frame's error
                frame = {"run_id": run_id, "state": "unknown",
                         "error": f"cannot read this query: {type(err).__name__}: {err}"}  # fmt: skip
            body = json.dumps(frame, default=str, sort_keys=True)
            if last.get(run_id) != body:
                last[run_id] = body
                frame["sent_at"] = time.time()
                frame["interval_ms"] = round(1000 / pace.hz)
                frame["hz"], frame["step_down"] = pace.hz, pace.reason
                yield f"event: frame\ndata: {json.dumps(frame, default=str)}\n\n"
                quiet_since = time.monotonic()
        work = time.monotonic() - started
        ram_free = None
        if ids and time.monotonic() - system_at >= 1.0:  # the machine, beside the charts
            system_at = time.monotonic()
            system = await anyio.to_thread.run_sync(system_metrics)
            ram_free = 100.0 - float(system["ram"]["used_percent"])
            producers = {}
            for i in ids:
                try:
                    producers[i] = await anyio.to_thread.run_sync(streams.producers, i)
                except Exception:  # the producers are extra: none shown
                    producers[i] = []
            body = json.dumps({**system, "producers": producers}, default=str)
            yield f"event: system\ndata: {body}\n\n"
        pace.after(work, ram_free)
        if watch is not None:
            for name, value in await anyio.to_thread.run_sync(watch.changes):
                yield f"event: {name}\ndata: {json.dumps(value, default=str)}\n\n"
                quiet_since = time.monotonic()
        if time.monotonic() - quiet_since > 15:
            yield ": still here\n\n"
            quiet_since = time.monotonic()
        await anyio.sleep(max(0.0, 1 / pace.hz - (time.monotonic() - started)))
