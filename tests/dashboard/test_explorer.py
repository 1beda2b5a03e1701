"""The provenance explorer's HTTP API, on a real dashboard process over SQLite and PostgreSQL
stores holding the synthetic run of :mod:`riera_bench.explorer_data` (10,001 tasks, 52,501 elements, 50,000
domain rows): keyset paging walks every row once, even while runs arrive; lineage answers one
level with "+N more"; a domain filter returns what the same SQL returns; the SQL console is
read-only, capped and timed out; exports are whole PROV documents."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dashboard_server import Server
from riera.provenance.store import ProvenanceStore, open_store
from riera_bench.explorer_data import BIG, fill

pytestmark = pytest.mark.integration


class Site:
    def __init__(self, store: ProvenanceStore, server: Server) -> None:
        self.store, self.server = store, server

    def get(self, path: str, **params: Any) -> Any:
        res = httpx.get(self.server.base + path, params=params, timeout=30)
        assert res.status_code == 200, (path, res.status_code, res.text[:500])
        assert res.headers["server-timing"].startswith("app;dur=")
        return res.json()

    def refused(self, path: str, code: int = 400, **params: Any) -> str:
        res = httpx.get(self.server.base + path, params=params, timeout=30)
        assert res.status_code == code, (path, res.status_code, res.text[:500])
        message: str = res.json()["error"]
        return message


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("explorer")
    schema = None
    if request.param == "sqlite":
        target: str = str(tmp / "provenance.db")
        store = open_store(target)
    else:
        import psycopg

        dsn: str = request.getfixturevalue("pg_dsn")
        schema = f"explorer_{uuid.uuid4().hex[:12]}"
        store = open_store(dsn, schema=schema)
        sep = "&" if "?" in dsn else "?"
        target = f"{dsn}{sep}options=-csearch_path%3D{schema}"
    fill(store)
    server = Server(dict(os.environ), target, log_dir=tmp)
    try:
        yield Site(store, server)
    finally:
        server.stop()
        store.close()
        if schema is not None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_runs_page_by_keyset_once_each_even_while_runs_arrive(site: Site) -> None:
    seen: list[str] = []
    page = site.get("/api/runs", limit=40)
    seen += [r["run_id"] for r in page["rows"]]
    # a run that starts now goes on top: the pages already cut do not shift under the reader
    site.store.write([("put", "runs", {"run_id": "run-new", "status": "running",
                                       "started_at": datetime.now(UTC)})])  # fmt: skip
    while page["next"]:
        page = site.get("/api/runs", limit=40, after=page["next"])
        seen += [r["run_id"] for r in page["rows"]]
    assert len(seen) == len(set(seen)) == 301
    assert seen[0] == BIG and seen[-1] == "run-0000"
    assert site.get("/api/runs", limit=1)["rows"][0]["run_id"] == "run-new"
    failed = site.get("/api/runs", status="failed", limit=100)["rows"]
    assert [r["run_id"] for r in failed] == [
        f"run-{i:04d}" for i in range(299, -1, -1) if i % 50 == 7
    ]
    assert failed[0]["error"] == "ValueError: bad record"


def test_a_run_has_its_stages_counts_plan_and_binned_timeline(site: Site) -> None:
    run = site.get(f"/api/runs/{BIG}")
    assert run["run"]["status"] == "ok" and run["run"]["workers"] == 8
    assert run["counts"] == {"tasks": 10_001, "elements": 52_501, "programs": 1000,
                             "files": 1000, "epochs": 0}  # fmt: skip
    stages = {s["stage_id"]: s["tasks"] for s in run["stages"]}
    assert stages["stage-0"] == {"ok": 2497, "failed": 3}  # t % 997 == 3: t = 3, 1000, 1997
    plan = site.get(f"/api/runs/{BIG}/plan")
    assert [n["op_id"] for n in plan["nodes"]] == ["op0", "op1", "op2", "op3"]
    assert plan["edges"] == [{"from": f"op{k}", "to": f"op{k + 1}"} for k in range(3)]
    timeline = site.get(f"/api/runs/{BIG}/timeline")
    assert timeline["tasks"] == 10_000  # the report task never started
    assert "bars" not in timeline, "10,000 tasks are binned, not sent one by one"
    assert len(timeline["lanes"]) == 8 and len(timeline["bins"]["busy"][0]) == 120
    assert sum(map(sum, timeline["bins"]["failed"])) == 12
    assert site.refused("/api/runs/nope", 404) == "no run 'nope' in the provenance store"


def test_a_small_run_timeline_has_bars_and_running_tasks_grow(site: Site) -> None:
    now = datetime.now(UTC)
    site.store.write([
        ("put", "runs", {"run_id": "run-live", "status": "running", "started_at": now}),
        ("put", "tasks", {"run_id": "run-live", "task_id": "s/t0", "stage_id": "s",
                          "worker_pid": 7, "status": "running", "started_at": now}),
    ])  # fmt: skip
    t = site.get("/api/runs/run-live/timeline")
    assert [(b["task_id"], b["running"], b["end"]) for b in t["bars"]] == [("s/t0", True, None)]
    assert t["now"] >= t["bars"][0]["start"]


def test_elements_page_by_keyset_through_the_whole_run(site: Site) -> None:
    numbers: list[int] = []
    page: dict[str, Any] = {"next": None}
    first = True
    while first or page["next"] is not None:
        page = site.get(f"/api/runs/{BIG}/elements", limit=500, after=page["next"])
        numbers += [r["element_no"] for r in page["rows"]]
        first = False
    assert numbers == list(range(52_501))
    outputs = site.get(f"/api/runs/{BIG}/elements", kind="output", limit=5, after=40_000)
    assert [r["element_id"] for r in outputs["rows"]][:2] == ["stage-3/t0/p1", "stage-3/t0/p2"]
    assert "whole number" in site.refused(f"/api/runs/{BIG}/elements", after="x")


def test_programs_files_and_epochs_page_by_keyset(site: Site) -> None:
    got, after = [], None
    while True:
        page = site.get(f"/api/runs/{BIG}/programs", limit=300, after=after)
        got += [(r["task_id"], r["program_no"]) for r in page["rows"]]
        if not (after := page["next"]):
            break
    assert len(got) == len(set(got)) == 1000 and got == sorted(got)
    row = site.get(f"/api/runs/{BIG}/programs", limit=1)["rows"][0]
    assert row["argv"][-1] == "<script>x</script>"  # data, as given: the page escapes it
    files = site.get(f"/api/runs/{BIG}/files", limit=1000)  # capped at 500 a page
    files_rows = files["rows"] + site.get(f"/api/runs/{BIG}/files", after=files["next"],
                                          limit=500)["rows"]  # fmt: skip
    assert [f["path"] for f in files_rows] == [f"chunks/chunk-{i:04d}.txt" for i in range(1000)]
    assert site.get(f"/api/runs/{BIG}/epochs")["rows"] == []


def test_lineage_answers_one_level_with_the_count_of_the_rest(site: Site) -> None:
    up = site.get(f"/api/runs/{BIG}/lineage", element="report/summary", direction="up")
    assert [i["element_id"] for i in up["items"]] == [f"stage-3/t{t}/p{p}" for t in range(3)
                                                       for p in range(5)][:12]  # fmt: skip
    assert up["more"] == 88 and {i["task_id"] for i in up["items"]} == {"report/t0"}
    wider = site.get(f"/api/runs/{BIG}/lineage", element="report/summary", direction="up",
                     limit=100)  # fmt: skip
    assert len(wider["items"]) == 100 and wider["more"] == 0
    walked, after = [], None  # page by page: every neighbour once, in element order
    while True:
        page = site.get(f"/api/runs/{BIG}/lineage", element="report/summary", direction="up",
                        limit=30, after=after)  # fmt: skip
        walked += [i["element_id"] for i in page["items"]]
        if not (after := page["next"]):
            break
    assert walked == [i["element_id"] for i in wider["items"]] and page["more"] == 0
    down = site.get(f"/api/runs/{BIG}/lineage", element="stage-1/t5/p0", direction="down")
    assert [i["element_id"] for i in down["items"]] == [f"stage-2/t5/p{p}" for p in range(5)]
    assert down["more"] == 0
    source = site.get(f"/api/runs/{BIG}/lineage", element="split/3", direction="up")
    assert source["items"] == [] and source["more"] == 0
    assert "no element" in site.refused(f"/api/runs/{BIG}/lineage", 404, element="nope")
    assert "direction" in site.refused(f"/api/runs/{BIG}/lineage", element="split/3",
                                       direction="sideways")  # fmt: skip


def test_a_domain_filter_returns_what_the_same_sql_returns(site: Site) -> None:
    assert [d["dataset"] for d in site.get("/api/domains")] == ["reads"]
    rows: list[dict[str, Any]] = []
    after = None
    while True:
        page = site.get("/api/domains/reads", run=BIG, f=["score:>=:50", "length:<:100"],
                        limit=500, after=after)  # fmt: skip
        rows += page["rows"]
        if not (after := page["next"]):
            break
    table = site.get("/api/domains")[0]["table_name"]
    direct = site.store.sql(
        f'SELECT run_id, element_id, row_no, score, length, sample FROM "{table}" '
        "WHERE run_id = :r AND score >= 50 AND length < 100 ORDER BY run_id, element_id, row_no",
        {"r": BIG},
    ).to_dicts()
    assert len(direct) > 1000 and rows == direct
    assert page["sql"].startswith("SELECT") and page["params"]["v0"] == 50.0
    # names come only from the declaration; values only as parameters
    assert "no column" in site.refused("/api/domains/reads", f='score" OR 1=1 --:=:1')
    assert "not one" in site.refused("/api/domains/reads", f="score:>:fifty")
    assert "operator" in site.refused("/api/domains/reads", f="score:LIKE:1")
    injected = site.get("/api/domains/reads", f="sample:=:s1' OR '1'='1")
    assert injected["rows"] == []
    assert "no domain dataset" in site.refused("/api/domains/nope", 404)


def test_the_sql_console_is_read_only_capped_and_timed_out(site: Site) -> None:
    res = site.get("/api/sql", q="SELECT stage_id, COUNT(*) AS n FROM tasks WHERE run_id = "
                   f"'{BIG}' GROUP BY stage_id ORDER BY stage_id")  # fmt: skip
    assert res["columns"] == ["stage_id", "n"]
    assert res["rows"] == [["report", 1]] + [[f"stage-{k}", 2500] for k in range(4)]
    capped = site.get("/api/sql", q="SELECT element_id FROM elements")
    assert len(capped["rows"]) == 1000 and capped["truncated"] is True
    for statement in ("DELETE FROM runs", "DROP TABLE runs", "UPDATE runs SET status = 'x'",
                      "CREATE TABLE t (x INT)"):  # fmt: skip
        assert "read-only" in site.refused("/api/sql", q=statement), statement
    endless = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"
    )
    assert "timeout" in site.refused("/api/sql", q=endless)
    assert site.get("/api/sql", q="SELECT COUNT(*) FROM runs")["rows"][0][0] >= 301
    assert "write a query" in site.refused("/api/sql", q="  ")
    # a read-only transaction does not stop functions that act on other sessions or files
    for call in (
        "SELECT pg_terminate_backend(1)",
        "select PG_ADVISORY_LOCK(1)",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT set_config('a.b', 'c', false)",
    ):
        assert "does not run" in site.refused("/api/sql", q=call), call
    # the database stops at the cap: the query is wrapped in a LIMIT
    many = site.get("/api/sql", q="WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 "
                    "FROM c WHERE x < 5000000) SELECT x FROM c;")  # fmt: skip
    assert len(many["rows"]) == 1000 and many["truncated"]
    wide = site.get("/api/sql", q="SELECT 'a' || substr(hex(zeroblob(20000)), 1, 20000) AS w"
                    if site.store.dialect == "sqlite" else "SELECT repeat('a', 20001) AS w")  # fmt: skip
    assert wide["rows"][0][0].endswith("… (20,001 characters)")
    if site.store.dialect == "sqlite":  # no value may grow past 10 MB
        assert "too big" in site.refused("/api/sql", q="SELECT length(hex(randomblob(150000000)))")


def test_exports_are_whole_prov_documents(site: Site, tmp_path: Path) -> None:
    site.store.write([
        ("put", "runs", {"run_id": "run-small", "status": "ok", "started_at": datetime.now(UTC)}),
        ("put", "tasks", {"run_id": "run-small", "task_id": "s/t0", "stage_id": "s",
                          "status": "ok"}),
        ("put", "elements", {"run_id": "run-small", "element_id": "out/0", "element_no": 0,
                             "kind": "output"}),
        ("put", "generated", {"run_id": "run-small", "element_id": "out/0", "task_id": "s/t0"}),
    ])  # fmt: skip
    res = httpx.get(site.server.base + "/api/runs/run-small/export.json", timeout=30)
    assert res.status_code == 200 and "attachment" in res.headers["content-disposition"]
    doc = json.loads(res.text)
    assert "activity" in doc and "entity" in doc and "wasGeneratedBy" in doc
    png = httpx.get(site.server.base + "/api/runs/run-small/export.png", timeout=60)
    assert png.status_code == 200 and png.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert httpx.get(site.server.base + "/api/runs/run-small/export.exe").status_code == 404


def test_a_timestamp_filter_compares_times_on_both_stores(site: Site) -> None:
    from datetime import timedelta

    table = site.store.ensure_domain_table("visits", {"at": "timestamp", "n": "int"})
    t0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    site.store.write([("add", table, {"run_id": "run-ts", "element_id": "e", "row_no": i,
                                      "at": t0 + timedelta(hours=i), "n": i})
                      for i in range(4)])  # fmt: skip
    rows = site.get("/api/domains/visits", run="run-ts", f="at:>:2024-05-01T09:00")["rows"]
    assert [r["n"] for r in rows] == [2, 3], "10:00 and 11:00 are after 09:00, whatever the text"
    assert "not one" in site.refused("/api/domains/visits", f="at:>:yesterday")
