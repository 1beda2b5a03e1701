"""Operator ids come from the plan's structure: the same pipeline has the same ids in every
process (so provenance can compare runs), different pipelines differ, a user's name= wins."""

from __future__ import annotations

import subprocess
import sys

import pytest

import riera
from riera import col
from riera.plan import nodes as n

PIPELINE = """
import riera
from riera import col
ds = (riera.range(100).with_columns(k=col("id") % 7).filter(lambda r: r["k"] > 2)
      .group_by("k").agg(total=col("id").sum()).sort("total"))
print([x.name for x in riera.plan.nodes.walk(ds.node)])
"""


def names_in_a_fresh_process() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import riera.plan.nodes\n" + PIPELINE],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout


def test_the_same_pipeline_has_the_same_ids_in_every_process() -> None:
    first, second = names_in_a_fresh_process(), names_in_a_fresh_process()
    assert first == second and "group_by(k)#" in first and "filter(<lambda>)#" in first


def test_different_parameters_or_code_give_different_ids() -> None:
    assert riera.range(10).filter(col("id") > 1).name != riera.range(10).filter(col("id") > 2).name
    assert (
        riera.range(10).map(lambda r: {"x": r["id"]}).name
        != riera.range(10).map(lambda r: {"x": -r["id"]}).name
    )
    assert riera.range(10).filter(col("id") > 1).name == riera.range(10).filter(col("id") > 1).name


def test_identical_subplans_in_one_plan_are_told_apart() -> None:
    a = riera.range(5).filter(col("id") > 1)
    b = riera.range(5).filter(col("id") > 1)
    assert a.name == b.name
    renamed = n.unique_names(a.union(b).node)
    names = [x.name for x in n.walk(renamed)]
    assert len(names) == len(set(names)) and any(x.endswith("~2") for x in names)
    assert a.union(b).count() == 6


def test_a_user_name_replaces_the_derived_id() -> None:
    ds = riera.range(4).map(lambda r: {"x": r["id"]}, name="parse").filter(col("x") > 0)
    assert ds.node.inputs[0].name == "parse"
    assert "parse" in (ds.explain(show=False) or "")
    assert ds.named("positive").name == "positive" and ds.named("positive").count() == 3
    with pytest.raises(riera.PlanError, match="without '#'"):
        ds.named("a#b")
