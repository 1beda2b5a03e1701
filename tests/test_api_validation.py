"""Definition-time validation of the ``Dataset`` API, and ``explain()``.

A wrong argument must raise :class:`riera.PlanError` on the line that wrote it — before anything
runs — with a message that names the operator and says how to fix the call. ``explain()`` shows the
logical plan and the stages it becomes: consecutive narrow operators fuse into one stage, each
all-to-all operator adds a stage boundary.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd
import pytest

import riera
from riera.plan import nodes as n


def source() -> riera.Dataset:
    """A small in-memory dataset whose columns are known without running."""
    return riera.from_pandas(
        pd.DataFrame({"key": ["a", "b", "a"], "amount": [1, 2, 3]}), partitions=2
    )


def identity(batch: Any) -> Any:
    return batch


def double(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "amount": row["amount"] * 2}


def positive(row: dict[str, Any]) -> bool:
    return bool(row["amount"] > 0)


@pytest.fixture
def nothing_runs() -> Iterator[None]:
    """Asserts that the test started no run (validation happens where the call is written)."""
    rt = riera.get_runtime()  # creating a runtime starts no worker
    before = rt.last_run
    yield
    assert riera.get_runtime() is rt, "the runtime was replaced during a definition-time test"
    assert rt.last_run is before, f"something ran: {rt.last_run}"


# (id, the offending call, operator named at the start of the message, fragments of the message)
CASES: list[tuple[str, Callable[[], Any], str, list[str]]] = [
    (
        "map-non-callable",
        lambda: source().map(42),  # type: ignore[arg-type]
        "map",
        ["expected a callable", "got int 42", "pass a function taking a row dict"],
    ),
    (
        "flat_map-non-callable",
        lambda: source().flat_map("explode"),  # type: ignore[arg-type]
        "flat_map",
        ["expected a callable", "pass a function"],
    ),
    (
        "map_batches-numpy",
        lambda: source().map_batches(identity, batch_format="numpy"),  # type: ignore[arg-type]
        "map_batches",
        ["batch_format must be 'pandas' or 'pyarrow'", "got 'numpy'"],
    ),
    (
        "group_by-unknown-column",
        lambda: source().group_by("kye"),
        "group_by",
        ["no column 'kye'", "the dataset has ['key', 'amount']", "did you mean 'key'?"],
    ),
    (
        "agg-unknown-function",
        lambda: source().group_by("key").agg(total=("amount", "summ")),
        "group_by().agg",
        ["unknown aggregation 'summ' for total=", "or a callable", "did you mean 'sum'?"],
    ),
    (
        "agg-non-tuple-spec",
        lambda: source().group_by("key").agg(total="amount"),
        "group_by().agg",
        [
            "total= must be an aggregation expression or a (column, func) tuple",
            "got 'amount'",
            "e.g. total=('amount', 'sum')",
        ],
    ),
    (
        "agg-unknown-column",
        lambda: source().group_by("key").agg(total=("amout", "sum")),
        "group_by().agg",
        ["no column 'amout'", "did you mean 'amount'?"],
    ),
    (
        "agg-no-aggregation",
        lambda: source().group_by("key").agg(),
        "group_by().agg",
        ["give at least one aggregation", "agg(total=('amount', 'sum'))"],
    ),
    (
        "sort-descending-wrong-length",
        lambda: source().sort(["key", "amount"], descending=[True]),
        "sort",
        ["descending must be a bool or one bool per key (2)", "got [True]"],
    ),
    (
        "sort-unknown-column",
        lambda: source().sort("amonut"),
        "sort",
        ["no column 'amonut'", "did you mean 'amount'?"],
    ),
    (
        "join-non-dataset",
        lambda: source().join(pd.DataFrame({"key": ["a"]}), on="key"),  # type: ignore[arg-type]
        "join",
        ["other must be a `Dataset`", "got DataFrame", "riera.from_pandas(...)"],
    ),
    (
        "join-unknown-how",
        lambda: source().join(source(), on="key", how="natural"),  # type: ignore[arg-type]
        "join",
        ["how must be one of", "'outer'", "'cross'", "got 'natural'"],
    ),
    (
        "join-cross-with-keys",
        lambda: source().join(source(), on="key", how="cross"),
        "join",
        ["a cross join pairs every row", "takes no keys"],
    ),
    (
        "join-unknown-key-right",
        lambda: source().join(riera.from_pandas(pd.DataFrame({"k": [1]})), on="key"),
        "join (right side)",
        ["no column 'key'", "the dataset has ['k']"],
    ),
    (
        "repartition-zero",
        lambda: source().repartition(0),
        "repartition",
        ["partitions must be a positive integer", "got 0"],
    ),
    (
        "limit-negative",
        lambda: source().limit(-1),
        "limit",
        ["count must be a non-negative integer", "got -1"],
    ),
    (
        "from_items-mixed",
        lambda: riera.from_items([{"a": 1}, 2, {"a": 3}]),
        "from_items",
        ["mix of dicts and non-dicts", "give all rows as dicts"],
    ),
]


@pytest.mark.usefixtures("nothing_runs")
@pytest.mark.parametrize(
    ("call", "operator", "fragments"),
    [pytest.param(call, op, frags, id=case_id) for case_id, call, op, frags in CASES],
)
def test_invalid_call_raises_plan_error_at_definition(
    call: Callable[[], Any], operator: str, fragments: list[str]
) -> None:
    with pytest.raises(riera.PlanError) as info:
        call()
    message = str(info.value)
    assert isinstance(info.value, riera.RieraError)
    assert isinstance(info.value, ValueError)  # PlanError is also a ValueError
    assert message.startswith(f"{operator}: "), message  # names the operator first
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


@pytest.mark.usefixtures("nothing_runs")
def test_unknown_columns_are_not_checked_when_the_schema_is_unknown() -> None:
    # After a map the columns are unknown until it runs: definition must not guess.
    ds = source().map(double)
    assert ds.columns() is None
    ds.group_by("whatever").count()
    ds.sort("whatever")
    # …but a known schema carries through filter/sort/limit and group_by outputs
    known = source().filter(positive).sort("amount").limit(2)
    assert known.columns() == ("key", "amount")
    assert source().group_by("key").agg(total=("amount", "sum")).columns() == ("key", "total")
    with pytest.raises(riera.PlanError, match="did you mean 'total'"):
        source().group_by("key").agg(total=("amount", "sum")).sort("totl")


# -- explain() ------------------------------------------------------------------------------------


def stage_blocks(text: str) -> dict[str, str]:
    """The physical plan's stages: ``{"stage-1": "<its lines>", ...}``."""
    physical = text.split("Physical plan", 1)[1]
    blocks: dict[str, list[str]] = {}
    current = None
    for line in physical.splitlines():
        m = re.match(r"^  (stage-\d+): ", line)
        if m:
            current = m.group(1)
            blocks[current] = [line]
        elif current is not None and line.startswith("    "):
            blocks[current].append(line)
    return {sid: "\n".join(lines) for sid, lines in blocks.items()}


def applied(block: str) -> list[str]:
    """Names of the operators a stage applies, in order."""
    return [line.split("apply: ", 1)[1] for line in block.splitlines() if "apply: " in line]


def find(node: n.Node, kind: type[n.Node]) -> n.Node:
    return next(x for x in n.walk(node) if isinstance(x, kind))


@pytest.mark.usefixtures("nothing_runs")
def test_explain_fuses_consecutive_narrow_operators(capsys: pytest.CaptureFixture[str]) -> None:
    ds = source().map(double).filter(positive)
    assert ds.explain() is None  # printed, not returned (no double output in a REPL)
    text = ds.explain(show=False)
    assert capsys.readouterr().out == text + "\n"
    assert text.startswith("Logical plan:")
    assert "Physical plan: 1 stage(s)" in text
    map_name, filter_name = find(ds.node, n.MapRows).name, find(ds.node, n.FilterRows).name
    assert map_name.startswith("map(double)#")
    assert filter_name.startswith("filter(positive)#")
    logical = text.split("Physical plan", 1)[0]
    for name in (map_name, filter_name, find(ds.node, n.TableSource).name):
        assert name in logical
    blocks = stage_blocks(text)
    assert list(blocks) == ["stage-1"]
    assert applied(blocks["stage-1"]) == [map_name, filter_name]  # one stage, in order
    assert "read:  in-memory table (2 partitions)" in blocks["stage-1"]
    assert "stage-1: 2 task(s)" in blocks["stage-1"]


@pytest.mark.usefixtures("nothing_runs")
def test_explain_group_by_adds_a_stage_boundary() -> None:
    ds = source().map(double).filter(positive).group_by("key").count()
    text = ds.explain(show=False)
    assert "Physical plan: 2 stage(s)" in text
    group_name = find(ds.node, n.GroupByAgg).name
    assert group_name.startswith("group_by(key)#")
    blocks = stage_blocks(text)
    assert list(blocks) == ["stage-1", "stage-2"]
    # map side: the narrow ops and the partial aggregation, then a hash partitioning
    assert applied(blocks["stage-1"]) == [
        find(ds.node, n.MapRows).name,
        find(ds.node, n.FilterRows).name,
        f"{group_name} (partial)",
    ]
    assert "write: hash-partition by key" in blocks["stage-1"]
    # reduce side: reads stage-1 through the exchange, final aggregation
    assert "(after stage-1)" in blocks["stage-2"]
    assert "read:  exchange read of stage-1" in blocks["stage-2"]
    assert applied(blocks["stage-2"]) == [group_name]


@pytest.mark.usefixtures("nothing_runs")
def test_explain_narrow_op_after_a_shuffle_fuses_into_the_reduce_stage() -> None:
    ds = source().sort("amount").map(double).filter(positive)
    blocks = stage_blocks(ds.explain(show=False))
    assert list(blocks) == ["stage-1", "stage-2"]
    assert applied(blocks["stage-1"]) == []
    assert "write: sort by amount + exchange write + quantiles" in blocks["stage-1"]
    assert applied(blocks["stage-2"]) == [
        find(ds.node, n.Sort).name,
        find(ds.node, n.MapRows).name,
        find(ds.node, n.FilterRows).name,
    ]


@pytest.mark.usefixtures("nothing_runs")
def test_explain_join_has_one_stage_per_side_plus_the_join() -> None:
    left = source().filter(positive)
    ds = left.join(source().map(double), on="key", how="left")
    text = ds.explain(show=False)
    assert "Physical plan: 3 stage(s)" in text
    blocks = stage_blocks(text)
    assert list(blocks) == ["stage-1", "stage-2", "stage-3"]
    # the right side, which a left join may broadcast once sized, runs first (adaptive)
    assert "(after stage-2, stage-1)" in blocks["stage-3"]
    assert "planned again, adaptively" in blocks["stage-1"]
    assert applied(blocks["stage-3"]) == [find(ds.node, n.Join).name]
    assert find(ds.node, n.Join).name.startswith("join(key,left)#")
