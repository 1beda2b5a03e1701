"""Test your own dataflows the way Riera tests its own.

>>> import riera
>>> from riera import testing
>>> with testing.session(workers=2):
...     ds = riera.from_items([{"w": "a"}, {"w": "b"}, {"w": "a"}]).group_by("w").count()
...     testing.assert_rows_equal(ds, [{"w": "a", "count": 2}, {"w": "b", "count": 1}])

``session`` starts a runtime with progress bars off and shuts it down afterwards, checking that the
run left no shared-memory segment behind; ``assert_rows_equal`` compares a dataset's rows with the
rows you expect, in order or as a multiset.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import riera
from riera.dataset import Dataset
from riera.runtime import Runtime


@contextlib.contextmanager
def session(workers: int = 2, **settings: Any) -> Iterator[Runtime]:
    """A runtime for the ``with`` block; fails if it leaves a shared-memory segment behind."""
    from riera.exchange.shm import list_segments

    rt = riera.init(workers=workers, progress="off", **settings)
    try:
        yield rt
    finally:
        shm_dir = rt.settings.shm_dir
        riera.shutdown()
        left = [p for p in list_segments(shm_dir) if p.name.startswith(f"riera-{os.getpid()}-")]
        if left:
            raise AssertionError(f"shared-memory segments left behind: {[p.name for p in left]}")


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(sorted((k, repr(v)) for k, v in row.items()))


def assert_rows_equal(
    ds: Dataset, expected: Iterable[dict[str, Any]], *, ordered: bool = False
) -> None:
    """Run ``ds`` and compare its rows with ``expected`` (as a multiset unless ``ordered``)."""
    got = ds.collect()
    want = list(expected)
    if not ordered:
        got, want = sorted(got, key=_key), sorted(want, key=_key)
    if got != want:
        missing = [r for r in want if r not in got][:5]
        extra = [r for r in got if r not in want][:5]
        raise AssertionError(
            f"{ds.name}: {len(got)} row(s), expected {len(want)}; missing e.g. {missing}; "
            f"unexpected e.g. {extra}"
            + ("" if not ordered or missing or extra else "; same rows, different order")
        )
