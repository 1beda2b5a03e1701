"""The user-facing test harness, riera.testing."""

from __future__ import annotations

import pytest

import riera
from riera import testing


def test_session_and_assert_rows_equal() -> None:
    with testing.session(workers=2):
        ds = riera.from_items([{"w": "a"}, {"w": "b"}, {"w": "a"}]).group_by("w").count()
        testing.assert_rows_equal(ds, [{"w": "b", "count": 1}, {"w": "a", "count": 2}])
        with pytest.raises(AssertionError, match="missing"):
            testing.assert_rows_equal(ds, [{"w": "a", "count": 3}, {"w": "b", "count": 1}])
        sorted_ds = ds.sort("w")
        testing.assert_rows_equal(
            sorted_ds, [{"w": "a", "count": 2}, {"w": "b", "count": 1}], ordered=True
        )
        with pytest.raises(AssertionError, match="different order"):
            testing.assert_rows_equal(
                sorted_ds, [{"w": "b", "count": 1}, {"w": "a", "count": 2}], ordered=True
            )
