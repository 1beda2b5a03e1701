"""Record-level lineage on real runs: every output row traced back to the exact input rows.

The inputs are ``riera.range`` sources, whose elements (``range:a-b``) make a row's value known
from its position (row ``i`` of ``range:a-b`` holds ``a + i``), so each derivation can be checked
against the data itself, through filters, flat_maps, sorts, aggregations and joins.
"""

from __future__ import annotations

import decimal
import json
import os
import subprocess
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import riera
import riera.provenance as prov
from riera.config import load_settings
from riera.provenance.lineage import record_lineage


def q(home: Path, query: str, **params: Any) -> list[dict[str, Any]]:
    return prov.sql(query, params, settings=load_settings(home=str(home))).to_dicts()


def sources(home: Path, element: str, row: int) -> set[int]:
    """The range values an output row came from, walking every stage up."""
    found = prov.on_run(
        "last",
        lambda s, r: record_lineage(s, r, element, row),
        settings=load_settings(home=str(home)),
    )
    values = set()
    for f in found:
        if f["element_id"].startswith("range:"):
            start = int(f["element_id"][len("range:") :].split("-")[0])
            values.add(start + f["row"])
    return values


def output_rows(out: Path) -> Iterator[tuple[str, int, dict[str, Any]]]:
    for part in sorted(out.glob("part-*.parquet")):
        for i, row in enumerate(pq.read_table(part).to_pylist()):
            yield f"output/{part.name}", i, row


def test_narrow_operators_trace_each_row_to_its_input_row(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (
        riera.range(600, partitions=3)
        .filter(lambda r: r["id"] % 3 == 0)
        .map(lambda r: {"id": r["id"], "half": r["id"] // 2})
        .flat_map(lambda r: [r, {"id": r["id"], "half": -1}])
        .select("id", "half")
        .provenance(records=True)
        .write_parquet(str(out))
    )
    # One SQL join checks every derivation: the output row's id is the range value it points at.
    derived = q(
        home,
        "SELECT o.element_id AS out_el, d.out_row, i.element_id AS in_el, d.in_row "
        "FROM derivations d JOIN elements o ON o.run_id = d.run_id AND o.element_no = d.out_no "
        "JOIN elements i ON i.run_id = d.run_id AND i.element_no = d.in_no",
    )
    by_out = {(d["out_el"], d["out_row"]): d for d in derived}
    rows = list(output_rows(out))
    assert len(rows) == 400 and len(by_out) == 400 == len(derived)
    for element, i, row in rows:
        d = by_out[(element, i)]
        start = int(d["in_el"][len("range:") :].split("-")[0])
        assert start + d["in_row"] == row["id"]


def test_lineage_crosses_sort_and_aggregation_stages(tmp_path: Path) -> None:
    home = tmp_path / "home"
    riera.init(workers=2, progress="off", home=str(home), provenance="records")
    try:
        out = tmp_path / "sorted"
        riera.range(300, partitions=3).map(lambda r: {"id": r["id"], "k": -r["id"]}).sort(
            "k"
        ).write_parquet(str(out))
        for element, i, row in list(output_rows(out))[::37]:
            assert sources(home, element, i) == {row["id"]}

        agg = tmp_path / "agg"
        riera.range(300, partitions=3).map(lambda r: {"g": r["id"] % 7, "id": r["id"]}).group_by(
            "g"
        ).agg(total=("id", "sum")).write_parquet(str(agg))
        for element, i, row in output_rows(agg):
            got = sources(home, element, i)
            assert got == {x for x in range(300) if x % 7 == row["g"]}
            assert sum(got) == row["total"]
    finally:
        riera.shutdown()


def test_lineage_through_a_sort_stored_in_pieces(tmp_path: Path) -> None:
    """Over an exchange that cannot slice in place, a sorted block is stored in pieces and each
    reducer reads a subset of them: every output row still leads to its input row."""
    home = tmp_path / "home"
    riera.init(
        workers=2,
        progress="off",
        home=str(home),
        provenance="records",
        exchange="shm-pickle",
        sort_piece_bytes=1,
    )
    try:
        out = tmp_path / "sorted"
        riera.range(600, partitions=3).map(lambda r: {"id": r["id"], "k": (r["id"] * 7) % 50}).sort(
            "k", descending=True, partitions=4
        ).write_parquet(str(out))
        rows = list(output_rows(out))
        assert [r["k"] for _, _, r in rows] == sorted((i * 7) % 50 for i in range(600))[::-1]
        for element, i, row in rows:
            assert sources(home, element, i) == {row["id"]}
    finally:
        riera.shutdown()


@pytest.mark.parametrize("renamed", [False, True])
def test_a_join_row_comes_from_one_row_of_each_side(tmp_path: Path, renamed: bool) -> None:
    """Also on differently named keys (``left_on``/``right_on``, with a suffix): those failed
    to trace ("no column(s) ['k']" on the right side) before the traced join passed the right
    keys and the suffix on."""
    home = tmp_path / "home"
    riera.init(workers=2, progress="off", home=str(home), provenance="records")
    key, other = ("key", "l") if renamed else ("k", "r")
    try:
        left = riera.range(0, 100, partitions=2).map(lambda r: {"k": r["id"] % 50, "l": r["id"]})
        right = riera.range(1000, 1050, partitions=2).map(
            lambda r: {key: r["id"] - 1000, other: r["id"]}
        )
        out = tmp_path / "joined"
        if renamed:
            left.join(right, left_on="k", right_on="key", suffix="_r").write_parquet(str(out))
        else:
            left.join(right, on="k").write_parquet(str(out))
        rows = list(output_rows(out))
        got = "l_r" if renamed else "r"
        assert len(rows) == 100 and set(rows[0][2]) == {"k", "l", got}
        for element, i, row in rows:
            assert sources(home, element, i) == {row["l"], row[got]}
    finally:
        riera.shutdown()


def test_sampling_keeps_a_fraction_and_opaque_operators_record_nothing(
    home: Path, tmp_path: Path
) -> None:
    riera.range(2000, partitions=2).map(lambda r: {"id": r["id"]}).provenance(
        records=True, sample=0.1
    ).write_parquet(str(tmp_path / "sampled"))
    n = q(home, "SELECT count(*) AS n FROM derivations")[0]["n"]
    assert 100 < n < 300  # about 10% of 2000, deterministic per task

    def halve(df: Any) -> Any:
        return df.iloc[::2]

    riera.range(100, partitions=2).map_batches(halve).provenance(records=True).write_parquet(
        str(tmp_path / "opaque")
    )
    (last,) = q(home, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
    assert q(home, "SELECT count(*) AS n FROM derivations WHERE run_id = :r", r=last["run_id"]) == [
        {"n": 0}
    ]
    # Element-level lineage still holds for the opaque stage.
    assert (
        q(home, "SELECT count(*) AS n FROM generated WHERE run_id = :r", r=last["run_id"])[0]["n"]
        >= 2
    )


def test_tasks_mode_records_no_derivations_unless_asked(home: Path, tmp_path: Path) -> None:
    riera.range(100, partitions=2).map(lambda r: r).write_parquet(str(tmp_path / "plain"))
    assert q(home, "SELECT count(*) AS n FROM derivations") == [{"n": 0}]


def test_row_lineage_from_the_cli(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    riera.range(10, partitions=1).filter(lambda r: r["id"] > 4).provenance(
        records=True
    ).write_parquet(str(out))
    part = next(out.glob("part-*.parquet")).name
    env = {**os.environ, "RIERA_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-m", "riera", "prov", "lineage", "last", f"output/{part}",
         "--up", "--row", "2", "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    found = json.loads(done.stdout)
    by_depth = defaultdict(list)
    for f in found:
        by_depth[f["depth"]].append((f["element_id"], f["row"]))
    assert by_depth[0] == [(f"output/{part}", 2)]
    assert by_depth[1] == [("range:0-10", 7)]  # the third row kept is id 7


def _doc_sql(starting: str) -> str:
    """The SQL example of docs/provenance.md that starts with ``starting``."""
    import re

    doc = (Path(__file__).parents[2] / "docs" / "provenance.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```sql\n(.*?)```", doc, re.S) if b.startswith(starting)]
    return block


def test_the_documented_lineage_sql_agrees_with_record_lineage(tmp_path: Path) -> None:
    home = tmp_path / "home"
    riera.init(workers=2, progress="off", home=str(home), provenance="records")
    try:
        _check_documented_sql(home, tmp_path)
    finally:
        riera.shutdown()


def _check_documented_sql(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "sorted"
    riera.range(500, partitions=2).map(lambda r: {"id": r["id"], "k": (r["id"] * 13) % 97}).sort(
        "k", partitions=3
    ).write_parquet(str(out))
    (run,) = q(home, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
    r = run["run_id"]
    for element, row, data in list(output_rows(out))[::41]:
        walked = prov.on_run(
            r,
            lambda s, rid, e=element, n=row: record_lineage(s, rid, e, n),
            settings=load_settings(home=str(home)),
        )
        (no,) = q(home, "SELECT element_no FROM elements WHERE run_id = :r AND element_id = :e",
                  r=r, e=element)  # fmt: skip
        step = q(home, _doc_sql("SELECT src.element_id, d.in_row"), run=r, element=element, row=row)
        first = {(f["element_id"], f["row"]) for f in walked if f["depth"] == 1}
        assert {(s["element_id"], s["in_row"]) for s in step} == first and len(first) == 1
        back = q(home, _doc_sql("WITH RECURSIVE back"), run=r, element_no=no["element_no"], row=row)
        assert {(b["element_id"], b["row_no"], b["depth"]) for b in back} == {
            (f["element_id"], f["row"], f["depth"]) for f in walked if f["depth"] > 0
        }
        (source,) = [b for b in back if b["element_id"].startswith("range:")]
        assert int(source["element_id"][6:].split("-")[0]) + source["row_no"] == data["id"]
    # Block level: every output row of an element is derived once.
    element = next(output_rows(out))[0]
    counts = q(home, _doc_sql("SELECT src.element_id, sum(b.n)"), run=r, element=element)
    (rows,) = q(home, "SELECT rows FROM elements WHERE run_id = :r AND element_id = :e",
                r=r, e=element)  # fmt: skip
    assert sum(c["derivations"] for c in counts) == rows["rows"]


def reverse_arrow(t: Any) -> Any:
    return t.take(list(range(t.num_rows - 1, -1, -1)))


def test_a_batch_function_that_reorders_rows_records_no_wrong_derivation(
    home: Path, tmp_path: Path
) -> None:
    """``map_batches`` keeping the row count used to be taken as one-to-one: a function that
    reversed its rows recorded every row as derived from the wrong input row."""
    out = tmp_path / "reversed"
    riera.range(100, partitions=2).map_batches(reverse_arrow, batch_format="pyarrow").provenance(
        records=True
    ).write_parquet(str(out))
    (last,) = q(home, "SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1")
    assert q(home, "SELECT count(*) AS n FROM derivations WHERE run_id = :r", r=last["run_id"]) == [
        {"n": 0}
    ]


def test_map_batches_lineage_declared_by_the_pandas_index(home: Path, tmp_path: Path) -> None:
    def odd_descending(df: Any) -> Any:
        return df[df["id"] % 2 == 1].sort_values("id", ascending=False).assign(x=lambda d: -d.id)

    out = tmp_path / "indexed"
    riera.range(200, partitions=2).map_batches(
        odd_descending, lineage="index", batch_size=30
    ).provenance(records=True).write_parquet(str(out))
    rows = list(output_rows(out))
    assert len(rows) == 100
    for element, i, row in rows:
        assert sources(home, element, i) == {row["id"]}


def test_map_batches_one_to_one_is_checked(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "same"
    riera.range(50, partitions=2).map_batches(
        lambda df: df.assign(y=df.id * 2), lineage="one_to_one"
    ).provenance(records=True).write_parquet(str(out))
    for element, i, row in output_rows(out):
        assert sources(home, element, i) == {row["id"]}
    with pytest.raises(riera.TaskError, match="one_to_one"):
        riera.range(10).map_batches(lambda df: df.iloc[:1], lineage="one_to_one").collect()
    with pytest.raises(riera.PlanError, match="batch_format='pandas'"):
        riera.range(10).map_batches(reverse_arrow, batch_format="pyarrow", lineage="index")


def _view_keys(t: pa.Table) -> pa.Table:
    """A ``string_view`` key and a decimal value per row (as Parquet from Polars reads back)."""
    ids = t.column("id").to_pylist()
    return pa.table(
        {
            "id": t.column("id"),
            "k": pa.array([f"group {i % 5} of a long name" for i in ids], pa.string_view()),
            "d": pa.array([decimal.Decimal(i).scaleb(-1) for i in ids], pa.decimal128(10, 1)),
        }
    )


def test_lineage_through_view_keys(tmp_path: Path) -> None:
    """Filter, group_by, sort and join on a string_view key trace every row (the traced paths
    filter, sort and relate keys themselves, and Arrow has no kernels for views there)."""
    home = tmp_path / "home"
    riera.init(workers=2, progress="off", home=str(home), provenance="records")
    try:
        base = riera.range(200, partitions=2).map_batches(
            _view_keys, batch_format="pyarrow", lineage="one_to_one"
        )
        kept = base.filter(lambda r: r["id"] % 2 == 0)
        agg = tmp_path / "agg"
        kept.group_by("k").agg(total=("d", "sum")).sort("k").write_parquet(str(agg))
        rows = list(output_rows(agg))
        assert len(rows) == 5
        for element, i, row in rows:
            group = int(row["k"].split()[1])
            got = sources(home, element, i)
            assert got == {x for x in range(0, 200, 2) if x % 5 == group}
            assert sum(decimal.Decimal(x).scaleb(-1) for x in got) == row["total"]
        joined = tmp_path / "joined"
        kept.join(base.select("k", "id").limit(5), on="k").write_parquet(str(joined))
        for element, i, row in output_rows(joined):
            assert sources(home, element, i) == {row["id"], row["id_right"]}
    finally:
        riera.shutdown()
