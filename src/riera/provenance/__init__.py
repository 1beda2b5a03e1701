"""Provenance of every run: what ran, on which data, producing what — queryable during and after.

Capture is on by default (setting ``provenance``: ``off`` | ``tasks`` | ``records``) and goes to a
SQLite file under the Riera home (``~/.riera/provenance.db``) or to PostgreSQL
(``provenance_dsn``). See ``docs/provenance.md`` for the schema and its W3C PROV mapping.

The same queries as ``riera prov …``::

    import riera.provenance as prov

    prov.runs()[:3]                       # newest first
    prov.show(run_id)                     # the run, its stages, tasks and failures
    prov.sql("SELECT stage_id, avg(seconds) FROM tasks WHERE run_id = :r GROUP BY 1",
             {"r": run_id}).rows

Every query opens a read-only connection: it works while a run is writing, from another process.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from riera.config import Settings, load_settings
from riera.errors import ProvenanceError

if TYPE_CHECKING:
    from riera.provenance.store import ProvenanceStore, QueryResult

__all__ = ["checkout", "on_run", "open_default_store", "resolve_run", "runs", "show", "sql"]

T = TypeVar("T")


def open_default_store(settings: Settings | None = None) -> ProvenanceStore:
    """The store the settings name (``provenance_dsn``, else ``<home>/provenance.db``)."""
    from riera.provenance.store import open_store

    settings = settings or load_settings()
    return open_store(settings.provenance_target)


def _with_store(settings: Settings | None, fn: Callable[[ProvenanceStore], T]) -> T:
    store = open_default_store(settings)
    try:
        return fn(store)
    finally:
        store.close()


def sql(
    query: str, params: Mapping[str, Any] | None = None, *, settings: Settings | None = None
) -> QueryResult:
    """Run a read-only SQL query on the provenance store; a statement that writes fails."""
    return _with_store(settings, lambda s: s.sql(query, params))


def runs(limit: int | None = None, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Runs, newest first. A run still marked ``running`` whose driver process on this host is
    gone is reported as ``interrupted`` (killed before it could record its end)."""
    query = (
        "SELECT run_id, status, action, started_at, ended_at, seconds, user_name, host, pid, "
        "workers, exchange, capture, script, error FROM runs ORDER BY started_at DESC"
    )
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    rows = sql(query, settings=settings).to_dicts()
    for row in rows:
        row["status"] = _live_status(row)
    return rows


def show(run_id: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """One run: its record, operators, stages, tasks and failed tasks. ``run_id`` may be a unique
    prefix, or ``last`` for the newest run."""

    def collect(store: ProvenanceStore) -> dict[str, Any]:
        rid = resolve_run(store, run_id)
        p = {"r": rid}
        run = store.sql("SELECT * FROM runs WHERE run_id = :r", p).to_dicts()[0]
        run["status"] = _live_status(run)
        return {
            "run": run,
            "operators": store.sql(
                "SELECT op_id, kind, label, function, source_hash, params, inputs "
                "FROM operators WHERE run_id = :r ORDER BY position",
                p,
            ).to_dicts(),
            "stages": store.sql(
                "SELECT stage_id, label, num_tasks, status, seconds, rows_out, bytes_out, "
                "retries, spilled_bytes FROM stages WHERE run_id = :r ORDER BY started_at",
                p,
            ).to_dicts(),
            "tasks": store.sql(
                "SELECT task_id, stage_id, task_index, attempt, worker_pid, status, seconds, "
                "rows_in, rows_out, bytes_in, bytes_out, error FROM tasks WHERE run_id = :r "
                "ORDER BY started_at, task_id",
                p,
            ).to_dicts(),
            "programs": store.sql(
                "SELECT task_id, program_no, step, group_key, command, exit_code, seconds, "
                "stderr_tail FROM programs WHERE run_id = :r ORDER BY started_at, task_id",
                p,
            ).to_dicts(),
            "files": store.sql(
                "SELECT stage_id, step, count(*) AS files, sum(bytes) AS bytes, "
                "max(commit_sha) AS commit_sha, max(branch) AS branch FROM file_versions "
                "WHERE run_id = :r GROUP BY stage_id, step ORDER BY stage_id, step",
                p,
            ).to_dicts(),
            "elements": store.sql(
                "SELECT count(*) AS n, coalesce(sum(rows), 0) AS rows, "
                "coalesce(sum(bytes), 0) AS bytes FROM elements WHERE run_id = :r",
                p,
            ).to_dicts()[0],
        }

    return _with_store(settings, collect)


def checkout(
    run_id: str, stage: str, directory: str | os.PathLike[str], *, settings: Settings | None = None
) -> list[str]:
    """Restore from Git the files ``run_id`` versioned for ``stage`` into ``directory``.

    ``stage``: a stage id (``stage-2`` or ``2``; files land as ``<step>/<group>/<file>``) or a
    step name (``input``, or a ``run_program`` name; files land as ``<group>/<file>``). Returns
    the restored paths, relative to ``directory`` (which must not exist or be empty)."""
    from riera.blackbox.versioning import restore

    settings = settings or load_settings()
    repo = settings.versions_dir or settings.home / "versions.git"
    return on_run(
        run_id, lambda store, rid: restore(store, rid, stage, directory, repo), settings=settings
    )


def on_run(
    run_id: str, fn: Callable[[ProvenanceStore, str], T], *, settings: Settings | None = None
) -> T:
    """``fn(store, full_run_id)`` on the default store, for a run id, prefix or ``last``."""
    return _with_store(settings, lambda store: fn(store, resolve_run(store, run_id)))


def resolve_run(store: ProvenanceStore, run_id: str) -> str:
    """The full id of ``run_id`` (a unique prefix, or ``last``); errors list what exists."""
    if run_id == "last":
        rows = store.sql("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").rows
        if not rows:
            raise ProvenanceError(f"no run recorded in {store.url} yet")
        return str(rows[0][0])
    rows = store.sql(
        "SELECT run_id FROM runs WHERE run_id LIKE :p ORDER BY run_id", {"p": f"{run_id}%"}
    ).rows
    if len(rows) == 1:
        return str(rows[0][0])
    if not rows:
        raise ProvenanceError(
            f"no run {run_id!r} in {store.url}; `riera prov runs` lists the recorded runs"
        )
    ids = ", ".join(str(r[0]) for r in rows[:5])
    raise ProvenanceError(f"{run_id!r} matches {len(rows)} runs ({ids}…); give more characters")


def _live_status(row: Mapping[str, Any]) -> str:
    status = str(row.get("status"))
    if status != "running" or row.get("host") != socket.gethostname():
        return status
    pid = row.get("pid")
    if not pid:
        return status
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return "interrupted"
    except PermissionError:
        pass
    return status
