"""How fast the provenance explorer answers: every endpoint of a real ``riera dashboard`` process,
over the synthetic store of :mod:`riera_bench.explorer_data` (10,001 tasks, 52,501 elements,
50,000 domain rows, 301 runs), on SQLite and (when given) PostgreSQL.

Each endpoint is asked ``repeats`` times; the report gives the median and min–max of the server
time (the ``Server-Timing`` header: the query and its JSON, without the network) and of the
whole request as the client saw it. The issue's target: < 200 ms server time.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from riera_bench.explorer_data import BIG, fill

TARGET_MS = 200.0
ENDPOINTS: list[tuple[str, str, dict[str, Any]]] = [
    ("runs, first page", "/api/runs", {}),
    ("runs, page 5 (keyset)", "/api/runs", {"pages": 5}),
    ("runs, failed only", "/api/runs", {"status": "failed"}),
    ("run summary", f"/api/runs/{BIG}", {}),
    ("plan", f"/api/runs/{BIG}/plan", {}),
    ("task timeline (10,000 tasks, binned)", f"/api/runs/{BIG}/timeline", {}),
    ("elements, page after 40,000", f"/api/runs/{BIG}/elements", {"after": 40_000}),
    ("elements, kind=output", f"/api/runs/{BIG}/elements", {"kind": "output", "after": 30_000}),
    ("programs", f"/api/runs/{BIG}/programs", {}),
    ("file versions", f"/api/runs/{BIG}/files", {}),
    ("lineage up (12 of 100, +88 more)", f"/api/runs/{BIG}/lineage",
     {"element": "report/summary", "direction": "up"}),
    ("lineage down", f"/api/runs/{BIG}/lineage", {"element": "stage-1/t5/p0", "direction": "down"}),
    ("domain filter (2 predicates)", "/api/domains/reads",
     {"run": BIG, "f": ["score:>=:50", "length:<:100"]}),
    ("SQL console (GROUP BY over tasks)", "/api/sql",
     {"q": "SELECT stage_id, COUNT(*) FROM tasks GROUP BY stage_id"}),
]  # fmt: skip


@dataclass
class Row:
    store: str
    endpoint: str
    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)


def _serve(target: str, log: Path) -> tuple[subprocess.Popen[str], str]:
    import httpx

    with socket_port() as port:
        pass
    cmd = [sys.executable, "-m", "riera", "dashboard", "--port", str(port), "--store", target]
    with log.open("w") as errors:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, text=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(base + "/static/app.css", timeout=1)
            return proc, base
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(
                    f"the dashboard did not start: {log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.05)


class socket_port:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def _measure(store: str, base: str, repeats: int, rows: list[Row]) -> None:
    import httpx

    with httpx.Client(base_url=base, timeout=30) as client:
        for name, path, params in ENDPOINTS:
            row = Row(store, name)
            params = dict(params)
            pages = params.pop("pages", 0)
            if pages:
                after = None
                for _ in range(pages):
                    after = client.get(path, params={"after": after} if after else {}).json()[
                        "next"
                    ]
                params["after"] = after
            client.get(path, params=params)  # warm: the first call pays for connections
            for _ in range(repeats):
                started = time.perf_counter()
                res = client.get(path, params=params)
                row.client_ms.append(1000 * (time.perf_counter() - started))
                if res.status_code != 200:
                    raise RuntimeError(f"{name}: {res.status_code} {res.text[:300]}")
                match = re.match(r"app;dur=([\d.]+)", res.headers.get("server-timing", ""))
                row.server_ms.append(float(match.group(1)) if match else float("nan"))
            rows.append(row)


def run(repeats: int = 20, postgres: str | None = None,
        progress: Callable[[str], None] = print) -> list[Row]:  # fmt: skip
    from riera.provenance.store import open_store

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="riera-bench-explorer-") as tmp:
        targets: list[tuple[str, str, Any]] = [("SQLite", str(Path(tmp) / "p.db"), None)]
        if postgres:
            targets.append(("PostgreSQL", postgres, f"bench_explorer_{uuid.uuid4().hex[:10]}"))
        for label, target, schema in targets:
            progress(f"filling the {label} store")
            store = open_store(target, schema=schema)
            try:
                fill(store)
                url = target
                if schema:
                    url += ("&" if "?" in target else "?") + f"options=-csearch_path%3D{schema}"
                proc, base = _serve(url, Path(tmp) / f"{label}.log")
                try:
                    progress(f"asking every endpoint {repeats} times ({label})")
                    _measure(label, base, repeats, rows)
                finally:
                    proc.terminate()
                    proc.wait(15)
            finally:
                if schema:
                    with store._engine.begin() as conn:
                        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                store.close()
    return rows


def render(rows: list[Row]) -> str:
    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values):.1f} ({min(values):.1f}–{max(values):.1f})"

    lines = [
        "# The provenance explorer's endpoints",
        "",
        f"Synthetic store: 301 runs, one of 10,001 tasks and 52,501 elements, 50,000 domain "
        f"rows. Median (min–max) of {len(rows[0].server_ms) if rows else 0} requests each, "
        f"in ms; target < {TARGET_MS:.0f} ms server time. Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} cores.",
        "",
        "| store | endpoint | server ms | client ms | target |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        met = "met" if statistics.median(r.server_ms) < TARGET_MS else "missed"
        lines.append(
            f"| {r.store} | {r.endpoint} | {fmt(r.server_ms)} | {fmt(r.client_ms)} | {met} |"
        )
    return "\n".join(lines) + "\n"
