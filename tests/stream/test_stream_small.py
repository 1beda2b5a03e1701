"""Small batches aggregate in Python (riera.stream.small) only where Python gives exactly what the
batch kernels give: checked against PartialAggOp/FinalAggOp on random batches."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from riera.physical import ops
from riera.plan.nodes import AggSpec
from riera.stream import small

AGGS = (AggSpec("n", "*", "count"), AggSpec("c", "v", "count"), AggSpec("s", "v", "sum"),
        AggSpec("lo", "v", "min"), AggSpec("hi", "v", "max"), AggSpec("m", "v", "mean"))  # fmt: skip

rows = st.lists(
    st.fixed_dictionaries({
        "k": st.one_of(st.none(), st.sampled_from(["a", "b", "ç", "🙂"])),
        "v": st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    }),
    min_size=1, max_size=small.SMALL,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(rows)
def test_python_partial_and_finish_equal_the_batch_kernels(data: list[dict[str, object]]) -> None:
    table = pa.Table.from_pylist(data, schema=pa.schema([("k", pa.string()), ("v", pa.int64())]))
    assert small.simple(table.schema, ("k",), AGGS)
    arrow_partial = ops.PartialAggOp("p", ("k",), AGGS).apply(table)
    py_partial = small.partial(table, ("k",), AGGS, arrow_partial.schema)
    key = lambda r: (r["k"] is None, r["k"] or "")  # noqa: E731
    assert sorted(py_partial.to_pylist(), key=key) == sorted(arrow_partial.to_pylist(), key=key)
    final = ops.FinalAggOp("f", ("k",), AGGS).apply(arrow_partial)
    states = {
        (r["k"],): [r[c] for c in arrow_partial.column_names[1:]] for r in arrow_partial.to_pylist()
    }
    mine = small.finish(list(states), states, AGGS, final.schema)
    assert sorted(mine.to_pylist(), key=key) == sorted(final.to_pylist(), key=key)


def test_what_python_cannot_match_keeps_the_kernels() -> None:
    floats = pa.schema([("k", pa.string()), ("v", pa.float64())])
    assert not small.simple(floats, ("k",), (AggSpec("s", "v", "sum"),))  # addition order
    ints = pa.schema([("k", pa.string()), ("v", pa.int64())])
    assert not small.simple(ints, ("k",), (AggSpec("l", "v", "list"),))
    assert not small.simple(pa.schema([("k", pa.float64()), ("v", pa.int64())]), ("k",), AGGS)
