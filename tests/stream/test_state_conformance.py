"""The :class:`~riera.stream.state.StateStore` protocol, checked over every store in
``riera.stream.state.STORES`` that can be opened here (a store whose library is not installed is
skipped, saying which).

What recovery relies on: ``put`` makes one epoch's changes durable atomically; ``load(op, upto)``
gives, per key, the newest version at or before ``upto`` (tombstones hide the key); ``rollback``
forgets later epochs; ``compact(upto)`` keeps everything a restore at ``upto`` or later needs; key
groups filter loads and are fixed when the store is first created.
"""

from __future__ import annotations

import importlib.util
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from riera.stream.state import (
    STORES,
    Change,
    StateStore,
    decode_key,
    encode_key,
    key_group,
    open_state_store,
)

GROUPS = 8
OP = "agg#1"

_MODULES = {"rocksdict": "rocksdict"}  # the library each optional store needs


@pytest.fixture(params=list(STORES))
def kind(request: pytest.FixtureRequest) -> str:
    kind = str(request.param)
    needed = _MODULES.get(kind)
    if needed is not None and importlib.util.find_spec(needed) is None:
        pytest.skip(f"state store {kind!r}: the {needed} package is not installed")
    return kind


@pytest.fixture
def store(kind: str, tmp_path: Path) -> Iterator[StateStore]:
    s = open_state_store(kind, tmp_path, GROUPS)
    yield s
    s.close()


def _change(key: tuple[Any, ...], value: Any, op: str = OP) -> Change:
    raw = encode_key(key)
    return (op, key_group(raw, GROUPS), raw, value)


def _load(store: StateStore, upto: int, op: str = OP, groups: Any = None) -> dict[Any, Any]:
    return {decode_key(k): v for k, v in store.load(op, upto, groups)}


def test_is_a_state_store(store: StateStore) -> None:
    assert isinstance(store, StateStore)
    assert store.key_groups == GROUPS
    assert store.epoch() == -1
    assert _load(store, 100) == {}


def test_put_and_load_at_epochs(store: StateStore) -> None:
    store.put(0, [_change(("a",), [1]), _change(("b",), {"x": 2.5})])
    assert store.epoch() == 0
    store.put(1, [_change(("a",), [2])])
    store.put(2, [])  # an epoch without changes still counts as durable
    store.put(3, [_change(("c", 7), ("tuple", None))])
    assert store.epoch() == 3
    assert _load(store, -1) == {}
    assert _load(store, 0) == {("a",): [1], ("b",): {"x": 2.5}}
    assert _load(store, 1) == _load(store, 2) == {("a",): [2], ("b",): {"x": 2.5}}
    assert _load(store, 3) == {("a",): [2], ("b",): {"x": 2.5}, ("c", 7): ("tuple", None)}
    assert _load(store, 10**9) == _load(store, 3)


def test_operators_are_separate(store: StateStore) -> None:
    store.put(0, [_change(("a",), 1, op="one"), _change(("a",), 2, op="two")])
    assert _load(store, 0, op="one") == {("a",): 1}
    assert _load(store, 0, op="two") == {("a",): 2}
    assert _load(store, 0, op="three") == {}


def test_tombstones_hide_a_key_from_their_epoch_on(store: StateStore) -> None:
    store.put(0, [_change(("a",), 1), _change(("b",), 1)])
    store.put(1, [_change(("a",), None)])
    store.put(2, [_change(("a",), 3)])
    assert _load(store, 0) == {("a",): 1, ("b",): 1}
    assert _load(store, 1) == {("b",): 1}
    assert _load(store, 2) == {("a",): 3, ("b",): 1}


def test_rollback_forgets_later_epochs(store: StateStore) -> None:
    store.put(0, [_change(("a",), 1)])
    store.put(1, [_change(("a",), 2), _change(("b",), 1)])
    store.put(2, [_change(("a",), None)])
    store.rollback(0)
    assert store.epoch() == 0
    assert _load(store, 10) == {("a",): 1}
    store.put(1, [_change(("a",), 20)])  # the epoch is written again, differently
    assert _load(store, 1) == {("a",): 20}
    store.rollback(-1)
    assert store.epoch() == -1
    assert _load(store, 10) == {}


def test_rollback_beyond_the_last_epoch_changes_nothing(store: StateStore) -> None:
    store.put(0, [_change(("a",), 1)])
    store.rollback(5)
    assert store.epoch() == 0
    assert _load(store, 5) == {("a",): 1}


def test_compact_keeps_what_restores_need(store: StateStore) -> None:
    store.put(0, [_change(("a",), 1), _change(("b",), 1), _change(("c",), 1)])
    store.put(1, [_change(("a",), 2), _change(("b",), None)])
    store.put(2, [_change(("a",), 3), _change(("c",), None)])
    store.put(3, [_change(("a",), 4), _change(("c",), 5)])
    before = {e: _load(store, e) for e in range(2, 6)}
    size = store.stats()["keys"]
    store.compact(2)
    assert {e: _load(store, e) for e in range(2, 6)} == before
    assert store.stats()["keys"] == size
    store.rollback(2)  # what recovery does: restore an epoch >= the compacted one
    assert _load(store, 2) == before[2] == {("a",): 3}


def test_compact_drops_replaced_versions(store: StateStore, kind: str, tmp_path: Path) -> None:
    for epoch in range(50):
        store.put(epoch, [_change(("k", i), "x" * 200 + str(epoch)) for i in range(20)])
    store.compact(49)
    assert _load(store, 49) == {("k", i): "x" * 200 + "49" for i in range(20)}
    if kind == "sqlite":  # one version per key remains
        import sqlite3

        db = sqlite3.connect(tmp_path / "state.sqlite")
        try:
            assert db.execute("SELECT COUNT(*) FROM state").fetchone()[0] == 20
        finally:
            db.close()


def test_key_group_filtering(store: StateStore) -> None:
    keys = [("w", i) for i in range(64)]
    store.put(0, [_change(k, i) for i, k in enumerate(keys)])
    by_group: dict[int, set[Any]] = {}
    for k in keys:
        by_group.setdefault(key_group(encode_key(k), GROUPS), set()).add(k)
    assert len(by_group) > 1
    for g, members in by_group.items():
        assert set(_load(store, 0, groups=[g])) == members
    some = sorted(by_group)[:2]
    assert set(_load(store, 0, groups=some)) == by_group[some[0]] | by_group[some[1]]
    assert _load(store, 0, groups=[]) == {}
    assert set(_load(store, 0, groups=iter(range(GROUPS)))) == set(keys)


def test_key_groups_are_fixed_at_creation(kind: str, tmp_path: Path) -> None:
    first = open_state_store(kind, tmp_path, 16)
    first.put(0, [("op", 3, encode_key(("a",)), 1)])
    first.close()
    again = open_state_store(kind, tmp_path, 4)
    try:
        assert again.key_groups == 16
        assert again.epoch() == 0
        assert {decode_key(k): v for k, v in again.load("op", 0, [3])} == {("a",): 1}
    finally:
        again.close()


def test_state_survives_reopening(kind: str, tmp_path: Path) -> None:
    s = open_state_store(kind, tmp_path, GROUPS)
    s.put(0, [_change(("a",), [1, 2])])
    s.put(1, [_change(("a",), None), _change(("b",), 2)])
    s.close()
    s = open_state_store(kind, tmp_path, GROUPS)
    try:
        assert s.epoch() == 1
        assert _load(s, 0) == {("a",): [1, 2]}
        assert _load(s, 1) == {("b",): 2}
    finally:
        s.close()


def test_stats(store: StateStore) -> None:
    empty = store.stats()
    assert empty["keys"] == 0 and empty["bytes"] >= 0
    store.put(0, [_change(("k", i), "v" * 100) for i in range(30)])
    store.put(1, [_change(("k", 0), None), _change(("k", 1), "w")])
    stats = store.stats()
    assert stats["keys"] == 29
    assert stats["bytes"] > 30 * 100
    assert set(stats) >= {"keys", "bytes"}


def test_put_is_atomic(store: StateStore) -> None:
    store.put(0, [_change(("a",), 1)])

    def failing() -> Iterator[Change]:
        yield _change(("a",), 2)
        yield _change(("b",), 2)
        raise RuntimeError("the operator failed mid-epoch")

    with pytest.raises(RuntimeError, match="mid-epoch"):
        store.put(1, failing())
    assert store.epoch() == 0
    assert _load(store, 1) == {("a",): 1}

    class Unpicklable:
        def __reduce__(self) -> Any:
            raise pickle.PicklingError("no")

    with pytest.raises(pickle.PicklingError):
        store.put(1, [_change(("c",), 3), _change(("d",), Unpicklable())])
    assert store.epoch() == 0
    assert _load(store, 5) == {("a",): 1}
    store.put(1, [_change(("a",), 9)])  # the store is usable after a failed put
    assert _load(store, 1) == {("a",): 9}


_ops = st.lists(
    st.tuples(st.sampled_from("abcdef"), st.one_of(st.none(), st.integers(0, 9))),
    max_size=6,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(epochs=st.lists(_ops, min_size=1, max_size=8), data=st.data())
def test_versions_match_a_model(kind: str, tmp_path_factory: pytest.TempPathFactory,
                                epochs: list[list[tuple[str, int | None]]],
                                data: st.DataObject) -> None:  # fmt: skip
    """Random epochs of puts and deletes, then a compaction and a rollback: every load equals a
    dict-of-versions model."""
    folder = tmp_path_factory.mktemp("model")
    store = open_state_store(kind, folder, GROUPS)
    try:
        history: list[dict[str, int | None]] = []
        for epoch, changes in enumerate(epochs):
            store.put(epoch, [_change((k,), v) for k, v in changes])
            history.append(dict(changes))

        def model(upto: int) -> dict[Any, Any]:
            out: dict[str, int | None] = {}
            for changes in history[: upto + 1]:
                out.update(changes)
            return {(k,): v for k, v in out.items() if v is not None}

        last = len(epochs) - 1
        for upto in range(-1, last + 2):
            assert _load(store, upto) == model(upto)
        low = data.draw(st.integers(0, last), label="compact")
        store.compact(low)
        for upto in range(low, last + 2):
            assert _load(store, upto) == model(upto)
        back = data.draw(st.integers(low, last), label="rollback")
        store.rollback(back)
        assert store.epoch() == back
        assert _load(store, last + 5) == model(back)
    finally:
        store.close()
