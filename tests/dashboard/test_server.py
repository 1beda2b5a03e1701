"""``riera dashboard`` as a real server process (uvicorn on a free port), driven over HTTP:
its security rules, and live frames of a streaming query that runs in this process, read back
through the server-sent-event stream and checked against the batch engine's totals.

(The browser tests — Chromium through Playwright — come with the page's chart.)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import riera
from dashboard_server import Server
from riera.testing import send
from wordcount_data import messages, oracle, wordcount_query

pytestmark = pytest.mark.integration

STATIC = Path(riera.__file__).parent / "dashboard" / "static"


@pytest.fixture
def server(runtime: dict[str, str], tmp_path: Path) -> Iterator[Server]:
    s = Server(runtime, tmp_path / "home" / "provenance.db")
    try:
        yield s
    finally:
        s.stop()


def test_the_page_is_read_only_pinned_to_its_hosts_and_self_contained(server: Server) -> None:
    page = httpx.get(server.base + "/")
    assert page.status_code == 200 and "<title>Riera dashboard</title>" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert httpx.head(server.base + "/").status_code == 200
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        refused = httpx.request(method, server.base + "/api/streams")
        assert refused.status_code == 405, method
        assert refused.headers["allow"] == "GET, HEAD"
    rebound = httpx.get(server.base + "/", headers={"host": "attacker.example"})
    assert rebound.status_code == 421, "DNS rebinding: another Host is refused, even on loopback"
    assert httpx.get(f"http://localhost:{server.port}/").status_code == 200
    # every asset comes from the package: no URL of another site in the page or its files
    for path in STATIC.iterdir():
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # SVG's name, no URL
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path.name
    assert (
        httpx.get(server.base + "/static/app.js")
        .headers["content-type"]
        .startswith(("text/javascript", "application/javascript"))
    )


def test_beyond_loopback_the_printed_token_is_traded_for_a_strict_cookie(
    runtime: dict[str, str], tmp_path: Path
) -> None:
    s = Server(runtime, tmp_path / "home" / "provenance.db", "--host", "0.0.0.0")
    try:
        token = re.search(r"token=([\w-]+)", s.url)
        assert token, f"no token printed for a non-loopback address: {s.url}"
        assert httpx.get(s.base + "/").status_code == 401
        assert httpx.get(s.base + "/api/streams").status_code == 401
        assert httpx.get(s.base + "/?token=wrong").status_code == 401
        signed = httpx.get(s.base + f"/?token={token.group(1)}&run=x")
        assert signed.status_code == 303 and signed.headers["location"] == "/?run=x"
        cookie = signed.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        name, value = cookie.split(";")[0].split("=", 1)
        assert name == f"riera_dashboard_{s.port}", "one cookie per dashboard port"
        assert value != token.group(1), "the cookie holds an HMAC of the token, not the token"
        assert httpx.get(s.base + "/api/streams", cookies={name: value}).status_code == 200
        assert httpx.get(s.base + "/", cookies={name: "nope"}).status_code == 401
        assert httpx.get(s.base + "/", cookies={name: token.group(1)}).status_code == 401
        # other machines reach it by this machine's addresses, which the printed URL uses
        shown = re.match(r"http://([^/]+)/", s.url)
        assert shown and not shown.group(1).startswith("127."), s.url
        res = httpx.get(s.base + "/api/streams", cookies={name: value},
                        headers={"host": shown.group(1)})  # fmt: skip
        assert res.status_code == 200, res.text
    finally:
        s.stop()


def test_a_short_token_is_refused(runtime: dict[str, str], tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "riera", "dashboard", "--host", "0.0.0.0", "--token", "",
         "--store", str(tmp_path / "p.db")],
        env=runtime, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode != 0 and "16 characters" in done.stderr, done.stderr


def test_cross_site_requests_are_refused_but_a_link_to_the_page_opens_it(server: Server) -> None:
    sql = server.base + "/api/sql?q=SELECT%201"
    assert httpx.get(sql).status_code == 200, "no browser headers: a same-machine client"
    for headers in ({"sec-fetch-site": "cross-site", "sec-fetch-mode": "no-cors"},
                    {"sec-fetch-site": "same-site", "sec-fetch-mode": "cors"},
                    {"origin": "http://evil.example"},
                    {"origin": "null"}):  # fmt: skip
        res = httpx.get(sql, headers=headers)
        assert res.status_code == 403, (headers, res.status_code)
    same = {"sec-fetch-site": "same-origin", "origin": f"http://127.0.0.1:{server.port}"}
    assert httpx.get(sql, headers=same).status_code == 200
    link = {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
    }
    assert httpx.get(server.base + "/", headers=link).status_code == 200
    assert httpx.get(server.base + "/api/streams", headers=link).status_code == 403


def _frames(base: str, run_id: str, until: dict[str, int], timeout: float) -> list[dict]:  # type: ignore[type-arg]
    """Frames from the event stream until one shows ``until`` as its top (or the timeout)."""
    got = []
    with httpx.stream("GET", f"{base}/api/events?streams={run_id}", timeout=timeout) as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        deadline = time.monotonic() + timeout
        for line in events.iter_lines():
            if line.startswith("data: "):
                frame = json.loads(line[len("data: ") :])
                got.append(frame)
                if {r["key"]: r["value"] for r in frame.get("top", [])} == until:
                    break
            assert time.monotonic() < deadline, got[-1:] if got else "no frame"
    return got


def test_live_frames_carry_the_exact_totals_of_a_running_query(
    runtime: dict[str, str], server: Server, tmp_path: Path
) -> None:
    rows = messages(3000, seed=4)
    send("memory://dash-in", rows[:1000], key="chave")
    totals = wordcount_query("memory://dash-in")
    q = totals.write_stream("memory://dash-out", checkpoint=tmp_path / "ck",
                            trigger=riera.stream.continuous(checkpoint="100ms"))  # fmt: skip
    try:
        assert q.wait_for_epoch(0, 30)
        riera.runtime.get_runtime().provenance.flush()
        listed = httpx.get(server.base + "/api/streams").json()
        mine = [r for r in listed if r["run_id"] == q.run_id]
        assert mine and mine[0]["sink"] == "memory://dash-out" and mine[0]["status"] == "running"
        first = _frames(server.base, q.run_id, oracle(rows[:1000]), timeout=30)
        assert first[-1]["state"] == "running" and first[-1]["keys"] == len(oracle(rows[:1000]))
        send("memory://dash-in", rows[1000:], key="chave")
        frames = _frames(server.base, q.run_id, oracle(rows), timeout=30)
        last = frames[-1]
        assert [r["value"] for r in last["top"]] == sorted(oracle(rows).values(), reverse=True)
        assert last["metrics"]["records_in"] >= 1000  # from the query's status file
        bodies = [json.dumps({k: v for k, v in f.items() if k != "sent_at"}, sort_keys=True)
                  for f in frames]  # fmt: skip
        assert len(bodies) == len(set(bodies)), "a frame is sent only when something changed"
    finally:
        q.stop()
    riera.runtime.get_runtime().provenance.flush()
    frame = httpx.get(server.base + f"/api/streams/{q.run_id}").json()
    assert frame["state"] == "ok", "the explorer sees the query end without a reload"


def test_a_query_whose_sink_fails_is_an_error_in_its_frame_not_the_end_of_the_stream(
    runtime: dict[str, str], tmp_path: Path
) -> None:
    import json as _json
    from datetime import UTC, datetime

    from riera.provenance.store import open_store

    store_path = tmp_path / "store.db"
    with open_store(store_path) as store:
        for run_id, sink in (("down", "redis://127.0.0.1:1/0/nothing-listens"),
                             ("gone", "memory://never-made")):  # fmt: skip
            store.write([("put", "runs", {
                "run_id": run_id, "status": "running", "action": "write_stream",
                "started_at": datetime.now(UTC), "plan": _json.dumps({"sink": sink})})])  # fmt: skip
    s = Server(runtime, store_path)
    try:
        seen: dict[str, object] = {}
        with httpx.stream("GET", s.base + "/api/events?streams=down,gone&list=1",
                          timeout=30) as res:  # fmt: skip
            event = ""
            for line in res.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    data = _json.loads(line[6:])
                    key = f"frame:{data['run_id']}" if event == "frame" else event
                    seen[key] = data
                if {"frame:down", "frame:gone", "system", "streams"} <= set(seen):
                    break  # both errors reported, and the stream went on with the rest
        assert "redis://127.0.0.1:1" in seen["frame:down"]["error"]  # type: ignore[index]
        assert "no embedded broker 'never-made'" in seen["frame:gone"]["error"]  # type: ignore[index]
        broker = Path(runtime["RIERA_BROKER_DIR"]) / "never-made.sqlite"
        assert not broker.exists(), "the dashboard created a broker it only reads"
        listed = {q["run_id"] for q in seen["streams"]["rows"]}  # type: ignore[index]
        assert listed == {"down", "gone"}
    finally:
        s.stop()
