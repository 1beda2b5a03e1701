"""The example workflow (examples/provenance_workflow.py) runs from a clean checkout, as a user runs
it: real Unix programs through files, provenance queried while it runs and after, exported to
PROV-JSON and PNG, files restored from Git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import riera.provenance as prov
from riera.config import load_settings

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "provenance_workflow.py"


def test_the_example_workflow_runs_and_its_provenance_answers(tmp_path: Path) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    env = {**os.environ, "RIERA_HOME": str(home), "RIERA_WORKERS": "2"}
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(work), "--samples", "4", "--reads", "3000"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "[during the run" in out and "the watcher saw the run in progress" in out
    assert "restored 4 summary.json file(s)" in out and "they match the output" in out

    settings = load_settings(home=str(home))
    run_id = prov.runs(1, settings=settings)[0]["run_id"]
    samples = prov.sql(
        "SELECT sample, reads, mean_gc FROM domain_gc_samples WHERE run_id = :r ORDER BY sample",
        {"r": run_id}, settings=settings,
    ).to_dicts()  # fmt: skip
    assert [s["sample"] for s in samples] == ["S00", "S01", "S02", "S03"]
    assert all(s["reads"] == 6000 for s in samples)
    gcs = [s["mean_gc"] for s in samples]
    assert gcs == sorted(gcs) and 0.3 < gcs[0] < gcs[-1] < 0.7  # the generator's GC ramp
    steps = prov.sql(
        "SELECT DISTINCT step FROM file_versions WHERE run_id = :r ORDER BY step",
        {"r": run_id}, settings=settings,
    ).rows  # fmt: skip
    assert [s[0] for s in steps] == ["concat", "gc", "input", "rank", "split", "summarize"]

    from prov.model import ProvDocument

    doc = ProvDocument.deserialize(work / "provenance" / "run.prov.json", format="json")
    assert len(list(doc.get_records())) > 50
    png = (work / "provenance" / "run.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    restored = sorted(p.relative_to(work / "restored-summaries").as_posix()
                      for p in (work / "restored-summaries").rglob("*.json"))  # fmt: skip
    assert restored == [f"S0{i}/summary.json" for i in range(4)]
    assert (
        json.loads((work / "restored-summaries" / "S00" / "summary.json").read_text())["reads"]
        == 6000
    )
