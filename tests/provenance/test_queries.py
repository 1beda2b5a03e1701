"""Queries over captured provenance: lineage, PROV export, and the ``riera prov`` CLI.

One real run (2 workers, map → group_by → write Parquet) is recorded once per module in a home of
its own; every test reads it back.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import riera
import riera.provenance as prov
from riera.config import load_settings
from riera.errors import ProvenanceError
from riera.provenance.export import export
from riera.provenance.lineage import lineage


def bump(row: dict[str, Any]) -> dict[str, Any]:
    return {"k": row["k"], "v": row["v"] + 1}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("prov-queries")
    home, out = tmp / "home", tmp / "out"
    riera.init(workers=2, progress="off", home=str(home))
    try:
        ds = riera.from_items([{"k": i % 3, "v": i} for i in range(300)], partitions=3)
        ds.map(bump).group_by("k").agg(total=("v", "sum")).write_parquet(str(out))
        info = riera.get_runtime().last_run
        assert info is not None
    finally:
        riera.shutdown()
    store = prov.open_default_store(load_settings(home=str(home)))
    try:
        yield {"home": home, "out": out, "run": info.run_id, "store": store, "tmp": tmp}
    finally:
        store.close()


def elements(rec: dict[str, Any], kind: str) -> list[str]:
    got = rec["store"].sql(
        "SELECT element_id FROM elements WHERE run_id = :r AND kind = :k ORDER BY element_id",
        {"r": rec["run"], "k": kind},
    )
    return [str(r[0]) for r in got.rows]


def test_lineage_up_from_an_output_file_reaches_the_sources(recorded: dict[str, Any]) -> None:
    [first, *_] = sorted(recorded["out"].glob("part-*"))
    up = lineage(recorded["store"], recorded["run"], str(first), "up")
    assert up[0]["depth"] == 0 and up[0]["element_id"] == f"output/{first.name}"
    reached = {r["element_id"] for r in up}
    assert set(elements(recorded, "source")) <= reached  # the in-memory input slices
    assert any(e.startswith("stage-") for e in reached)  # through the exchanged partitions
    assert [r["depth"] for r in up] == sorted(r["depth"] for r in up)


def test_lineage_down_from_a_source_reaches_every_output(recorded: dict[str, Any]) -> None:
    source = elements(recorded, "source")[0]
    down = lineage(recorded["store"], recorded["run"], source, "down")
    outputs = {r["element_id"] for r in down if r["kind"] == "output"}
    assert outputs == set(elements(recorded, "output"))  # a group-by mixes every source


def test_lineage_depth_cap_and_unknown_elements(recorded: dict[str, Any]) -> None:
    source = elements(recorded, "source")[0]
    assert [r["element_id"] for r in lineage(recorded["store"], recorded["run"], source, "down",
                                             depth=0)] == [source]  # fmt: skip
    one = lineage(recorded["store"], recorded["run"], source, "down", depth=1)
    assert {r["depth"] for r in one} == {0, 1}
    with pytest.raises(ProvenanceError, match=r"no data element 'nope'.*look like"):
        lineage(recorded["store"], recorded["run"], "nope")


def test_export_prov_json_is_a_prov_document(recorded: dict[str, Any]) -> None:
    from prov.model import ProvDocument

    text = export(recorded["store"], recorded["run"], "prov-json")
    assert text is not None
    data = json.loads(text)
    for relation in ("entity", "activity", "agent", "used", "wasGeneratedBy",
                     "wasAssociatedWith", "wasInformedBy", "wasDerivedFrom", "hadMember"):  # fmt: skip
        assert data.get(relation), relation
    doc = ProvDocument.deserialize(content=text, format="json")
    n_elements = (
        recorded["store"]
        .sql("SELECT count(*) FROM elements WHERE run_id = :r", {"r": recorded["run"]})
        .rows[0][0]
    )
    n_tasks = (
        recorded["store"]
        .sql("SELECT count(*) FROM tasks WHERE run_id = :r", {"r": recorded["run"]})
        .rows[0][0]
    )
    records = doc.get_records()
    activities = [r for r in records if r.get_type().localpart == "Activity"]
    assert len(activities) == n_tasks + 1  # the tasks and the run
    assert len(data["entity"]) >= n_elements + 1  # elements, the plan and its operators


def test_export_prov_n_dot_and_png(recorded: dict[str, Any], tmp_path: Path) -> None:
    provn = export(recorded["store"], recorded["run"], "prov-n")
    assert provn is not None and provn.startswith("document") and "wasGeneratedBy(" in provn
    dot = export(recorded["store"], recorded["run"], "dot", tmp_path / "run.dot")
    assert dot is not None and dot.startswith("digraph") and dot.rstrip().endswith("}")
    assert (tmp_path / "run.dot").read_text() == dot
    n_edges = (
        recorded["store"]
        .sql(
            "SELECT (SELECT count(*) FROM used WHERE run_id = :r) + "
            "(SELECT count(*) FROM generated WHERE run_id = :r)",
            {"r": recorded["run"]},
        )
        .rows[0][0]
    )
    assert dot.count(" -> ") == n_edges + 1  # and the run's association with the user
    png = tmp_path / "run.png"
    assert export(recorded["store"], recorded["run"], "png", png) is None
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ProvenanceError, match="unknown format"):
        export(recorded["store"], recorded["run"], "svg")


# -- the CLI, as a user runs it ------------------------------------------------------------------


def cli(rec: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RIERA_HOME": str(rec["home"]), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "riera", "prov", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_runs_show_sql(recorded: dict[str, Any]) -> None:
    got = cli(recorded, "runs", "--json")
    assert got.returncode == 0, got.stderr
    [run] = json.loads(got.stdout)
    assert run["run_id"] == recorded["run"] and run["status"] == "ok"
    assert {"run_id", "status", "started_at", "ended_at"} <= set(run)
    assert run["started_at"] < run["ended_at"]

    shown = cli(recorded, "show", recorded["run"][:12])
    assert shown.returncode == 0, shown.stderr
    assert recorded["run"] in shown.stdout and "stages" in shown.stdout

    q = cli(recorded, "sql", "SELECT count(*) AS n FROM tasks WHERE status = 'ok'", "--json")
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout)[0]["n"] > 0

    for statement in ("DELETE FROM runs", "DROP TABLE tasks", "UPDATE runs SET status = 'x'"):
        bad = cli(recorded, "sql", statement)
        assert bad.returncode == 1 and "read-only" in bad.stderr, bad.stderr
    assert cli(recorded, "runs", "--json").stdout == got.stdout  # nothing changed


def test_cli_lineage_and_export(recorded: dict[str, Any], tmp_path: Path) -> None:
    [first, *_] = sorted(recorded["out"].glob("part-*"))
    up = cli(recorded, "lineage", "last", str(first), "--up", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)[0]["element_id"] == f"output/{first.name}"
    png = tmp_path / "graph.png"
    exported = cli(recorded, "export", "last", "--format", "png", "-o", str(png))
    assert exported.returncode == 0, exported.stderr
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = cli(recorded, "export", "last", "--format", "prov-json")
    assert text.returncode == 0 and json.loads(text.stdout)["activity"]
    bad = cli(recorded, "export", "nope")
    assert bad.returncode == 1 and "no run 'nope'" in bad.stderr
