"""File groups from files on disk: which files go together, read as one row each.

The driver only lists and groups paths (:func:`make_groups`); tasks read the bytes
(:func:`read_groups`), so a group's files travel through the exchange as one Arrow row — a
``files`` list of ``{name, data}`` — and a program stages them in memory, never re-reading disk.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from riera import taskctx
from riera.blackbox.programs import FILES, check_name
from riera.errors import PlanError, SourceError

GroupBy = str | re.Pattern[str] | Callable[[str], str] | None


@dataclass(frozen=True)
class GroupSpec:
    """One file group: its key, its files ``(name, path, size)`` and metadata columns."""

    key: str
    files: tuple[tuple[str, str, int], ...]
    meta: tuple[tuple[str, Any], ...] = ()

    @property
    def size(self) -> int:
        return sum(s for _, _, s in self.files)

    def describe(self) -> str:
        return f"file group {self.key!r} ({len(self.files)} files)"


def _key_of(path: str, by: GroupBy, base: str) -> str:
    name = os.path.basename(path)
    if by is None:
        return os.path.relpath(path, base)
    if by == "dir":
        return (
            os.path.relpath(os.path.dirname(path), base) if os.path.dirname(path) != base else "."
        )
    if by == "stem":
        return name.split(".", 1)[0]
    if isinstance(by, re.Pattern):
        m = by.search(name)
        if m is None:
            raise PlanError(f"read_file_groups: the pattern {by.pattern!r} does not match {path}")
        return (
            m.group("group")
            if "group" in by.groupindex
            else (m.group(1) if by.groups else m.group(0))
        )
    key = by(path)  # type: ignore[operator]
    if not isinstance(key, str) or not key:
        raise PlanError(
            f"read_file_groups: by({path!r}) must return a non-empty str group key; got {key!r}"
        )
    return key


def make_groups(
    files: tuple[tuple[str, int], ...],
    by: GroupBy,
    names: str,
    metadata: Callable[[str, list[str]], Mapping[str, Any]] | None,
) -> tuple[GroupSpec, ...]:
    """Group ``files`` (from ``expand_paths``) and name each file inside its group."""
    if isinstance(by, str) and by not in ("dir", "stem"):
        raise PlanError(
            f"read_file_groups: by={by!r}; use None (a group per file), 'dir', 'stem', "
            f"a compiled regular expression, or a function path -> key"
        )
    if names not in ("basename", "relative"):
        raise PlanError(f"read_file_groups: names must be 'basename' or 'relative'; got {names!r}")
    base = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p, _ in files])
    grouped: dict[str, list[tuple[str, str, int]]] = {}
    for path, size in files:
        absolute = os.path.abspath(path)
        key = _key_of(absolute, by, base)
        if names == "basename" or by is None:
            name = os.path.basename(absolute)
        else:
            group_dir = os.path.join(base, key) if by == "dir" else base
            name = os.path.relpath(absolute, group_dir)
        name = check_name(name, key, "read_file_groups")
        members = grouped.setdefault(key, [])
        if any(n == name for n, _, _ in members):
            other = next(p for n, p, _ in members if n == name)
            raise PlanError(
                f"read_file_groups: group {key!r} would hold two files named {name!r} "
                f"({other} and {path}); use names='relative' or another by="
            )
        members.append((name, path, size))
    out = []
    for key in sorted(grouped):
        members = grouped[key]
        meta: tuple[tuple[str, Any], ...] = ()
        if metadata is not None:
            got = metadata(key, [p for _, p, _ in members])
            if not isinstance(got, Mapping):
                raise PlanError(
                    f"read_file_groups: metadata({key!r}, …) must return a dict of columns; "
                    f"got {type(got).__name__}"
                )
            clash = {"group", "files"} & set(got)
            if clash:
                raise PlanError(f"read_file_groups: metadata cannot set {sorted(clash)} (reserved)")
            meta = tuple(sorted(got.items()))
        out.append(GroupSpec(key, tuple(members), meta))
    return tuple(out)


def split_groups(
    groups: tuple[GroupSpec, ...], target: int, workers: int
) -> list[tuple[GroupSpec, ...]]:
    """Whole groups per task, about ``target`` bytes each, and at least ``workers`` tasks when
    there are that many groups (a program's run time, not its bytes, usually dominates)."""
    if not groups:
        return [()]
    tasks = max(min(len(groups), workers), -(-sum(g.size for g in groups) // max(1, target)))
    tasks = min(tasks, len(groups))
    out: list[list[GroupSpec]] = [[] for _ in range(tasks)]
    for i, g in enumerate(groups):  # round robin keeps neighbours apart and sizes even
        out[i % tasks].append(g)
    return [tuple(t) for t in out]


def read_groups(groups: tuple[GroupSpec, ...]) -> pa.Table:
    """One row per group: ``group``, ``files`` and the metadata columns."""
    ctx = taskctx.current()
    rows = []
    for g in groups:
        files = []
        for name, path, _ in g.files:
            try:
                with open(path, "rb") as fh:
                    files.append({"name": name, "data": fh.read()})
            except OSError as err:
                raise SourceError(
                    f"read_file_groups: cannot read {path} (group {g.key!r}): {err.strerror}"
                ) from err
        rows.append({"group": g.key, "files": files, **dict(g.meta)})
        if ctx is not None and ctx.versions is not None and g.files:
            from riera.blackbox.versioning import store_or_warn

            blobs = store_or_warn(ctx.versions, [p for _, p, _ in g.files])
            for (name, path, _), blob, f in zip(g.files, blobs, files, strict=True):
                ctx.record(
                    "file",
                    {
                        "step": "input",
                        "op_id": "input",
                        "group": g.key,
                        "name": name,
                        "blob": blob,
                        "bytes": len(f["data"]),
                        "source": path,
                    },
                )
    if not rows:
        return pa.table({"group": pa.array([], pa.string()), "files": pa.array([], FILES)})
    meta_names = list(dict.fromkeys(k for g in groups for k, _ in g.meta))
    table = pa.Table.from_pylist(
        [{k: r.get(k) for k in ("group", "files", *meta_names)} for r in rows],
    )
    return table.cast(
        pa.schema(
            [
                pa.field("group", pa.string()),
                pa.field("files", FILES),
                *(table.schema.field(m) for m in meta_names),
            ]
        )
    )
