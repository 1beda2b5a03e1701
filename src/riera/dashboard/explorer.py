"""The provenance explorer's queries: runs, one run's stages, plan, task timeline, elements,
programs, Git file versions, stream epochs, lineage one level at a time, domain tables with
filters, and a read-only SQL console.

Every query reads a bounded slice, so no view ever loads a whole graph:

- lists are paged by *keyset* (``WHERE key > :after ORDER BY key LIMIT n``), never ``OFFSET``:
  page 1,000 costs what page 1 does, and rows that arrive while a run goes never shift a page;
- lineage answers one level (up or down) and at most ``limit`` neighbours with the count of the
  rest ("+N more");
- the timeline sends at most :data:`TIMELINE_TASKS` task bars; a larger run's tasks are binned
  per worker lane into :data:`TIMELINE_BINS` time bins;
- the SQL console has a statement timeout and a row cap.

It works the same on SQLite and PostgreSQL (the store's :meth:`sql` takes named parameters on
both); timestamps leave as Unix milliseconds.
"""

from __future__ import annotations

import json
import math
import re
import time
from datetime import datetime
from typing import Any

from riera.errors import ProvenanceError
from riera.provenance.sqlguard import first_keyword
from riera.provenance.store import ProvenanceStore

PAGE = 100
TIMELINE_TASKS = 2000
TIMELINE_BINS = 120
PLAN_NODES = 400
SQL_ROWS = 1000
SQL_TIMEOUT_S = 2.0
OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}


class BadRequest(ValueError):
    """A request the explorer refuses (an unknown column, a bad cursor); answered with 400."""


def ms(value: Any) -> int | None:
    """A stored timestamp (aware datetime on PostgreSQL, ISO text on SQLite) as Unix ms."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return round(value.timestamp() * 1000)


def _page(rows: list[dict[str, Any]], limit: int, key: Any) -> dict[str, Any]:
    """``limit`` rows and the cursor of the next page (None on the last one)."""
    more = len(rows) > limit
    rows = rows[:limit]
    return {"rows": rows, "next": key(rows[-1]) if more and rows else None}


def _limit(value: Any, default: int = PAGE, cap: int = 500) -> int:
    try:
        n = int(value) if value not in (None, "") else default
    except (TypeError, ValueError) as err:
        raise BadRequest(f"limit must be a whole number, got {value!r}") from err
    return max(1, min(n, cap))


class Explorer:
    def __init__(self, store: ProvenanceStore) -> None:
        self.store = store

    def _q(
        self, query: str, params: dict[str, Any] | None = None, **kw: Any
    ) -> list[dict[str, Any]]:
        return self.store.sql(query, params or {}, **kw).to_dicts()

    # -- runs ----------------------------------------------------------------------------------

    def runs(self, after: str | None = None, limit: Any = None, status: str | None = None,
             action: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Runs, newest first, paged by ``(started_at, run_id)`` (a run row without a start
        time, written by hand, is not listed)."""
        n = _limit(limit, 50)
        where, params = ["started_at IS NOT NULL"], dict[str, Any](n=n + 1)
        if status:
            where.append("status = :status")
            params["status"] = status
        if action:
            where.append("action = :action")
            params["action"] = action
        if after:
            try:
                started, run_id = json.loads(after)
                params["s"], params["r"] = datetime.fromisoformat(started), str(run_id)
            except (ValueError, TypeError) as err:
                raise BadRequest(f"bad cursor {after!r}") from err
            where.append("(started_at < :s OR (started_at = :s AND run_id < :r))")
        rows = self._q(
            "SELECT run_id, status, action, user_name, host, started_at, ended_at, seconds, "
            "workers, executor, exchange, error FROM runs WHERE " + " AND ".join(where) +
            " ORDER BY started_at DESC, run_id DESC LIMIT :n", params)  # fmt: skip
        nxt = None
        if len(rows) > n:
            started = rows[n - 1]["started_at"]
            started = started if isinstance(started, str) else started.isoformat()
            nxt = json.dumps([started, rows[n - 1]["run_id"]])
        rows = rows[:n]
        for row in rows:
            row["started_at"], row["ended_at"] = ms(row["started_at"]), ms(row["ended_at"])
            row["error"] = (row["error"] or "")[:300] or None
        return {"rows": rows, "next": nxt, "now": round(time.time() * 1000)}

    def run(self, run_id: str) -> dict[str, Any]:
        """One run: its row, its stages with task counts by status, and how much of each kind of
        record it has (what the page's tabs show)."""
        found = self._q("SELECT * FROM runs WHERE run_id = :r", {"r": run_id})
        if not found:
            raise LookupError(f"no run {run_id!r} in the provenance store")
        run = found[0]
        run["started_at"], run["ended_at"] = ms(run["started_at"]), ms(run["ended_at"])
        for field in ("settings", "argv", "plan"):
            if isinstance(run.get(field), str):
                try:
                    run[field] = json.loads(run[field])
                except ValueError:
                    pass
        stages = self._q(
            "SELECT stage_id, label, num_tasks, status, started_at, ended_at, seconds, rows_out, "
            "bytes_out, retries, spilled_bytes FROM stages WHERE run_id = :r "
            "ORDER BY started_at, stage_id LIMIT 500", {"r": run_id})  # fmt: skip
        counts: dict[str, dict[str, int]] = {}
        for row in self._q(
            "SELECT stage_id, status, COUNT(*) AS n FROM tasks WHERE run_id = :r "
            "GROUP BY stage_id, status", {"r": run_id}):  # fmt: skip
            counts.setdefault(row["stage_id"], {})[row["status"] or "unknown"] = row["n"]
        for stage in stages:
            stage["started_at"], stage["ended_at"] = ms(stage["started_at"]), ms(stage["ended_at"])
            stage["tasks"] = counts.get(stage["stage_id"], {})
        totals = self._q(
            "SELECT (SELECT COUNT(*) FROM tasks WHERE run_id = :r) AS tasks, "
            "(SELECT COUNT(*) FROM elements WHERE run_id = :r) AS elements, "
            "(SELECT COUNT(*) FROM programs WHERE run_id = :r) AS programs, "
            "(SELECT COUNT(*) FROM file_versions WHERE run_id = :r) AS files, "
            "(SELECT COUNT(*) FROM stream_epochs WHERE run_id = :r) AS epochs",
            {"r": run_id})[0]  # fmt: skip
        return {"run": run, "stages": stages, "counts": totals, "now": round(time.time() * 1000)}

    def plan(self, run_id: str) -> dict[str, Any]:
        """The logical plan: operators as nodes, their inputs as edges (laid out by the page)."""
        ops = self._q(
            "SELECT op_id, kind, label, function, dataset, inputs, position FROM operators "
            "WHERE run_id = :r ORDER BY position, op_id LIMIT :n",
            {"r": run_id, "n": PLAN_NODES + 1})  # fmt: skip
        more = max(0, len(ops) - PLAN_NODES)
        ops = ops[:PLAN_NODES]
        known = {op["op_id"] for op in ops}
        edges = []
        for op in ops:
            try:
                inputs = json.loads(op.pop("inputs") or "[]")
            except ValueError:
                inputs = []
            edges += [{"from": str(i), "to": op["op_id"]} for i in inputs if str(i) in known]
        return {"nodes": ops, "edges": edges, "more": more}

    def timeline(self, run_id: str) -> dict[str, Any]:
        """Tasks in lanes (one per worker process); running tasks end at ``now``. Past
        :data:`TIMELINE_TASKS` tasks, each lane is binned: per bin, the busy fraction and the
        tasks that failed."""
        now = round(time.time() * 1000)
        rows = self._q(
            "SELECT task_id, stage_id, worker_pid, host, status, attempt, started_at, ended_at "
            "FROM tasks WHERE run_id = :r AND started_at IS NOT NULL ORDER BY host, worker_pid",
            {"r": run_id})  # fmt: skip
        lanes: dict[str, int] = {}
        bars = []
        for row in rows:
            lane = f"{row['host'] or ''} pid {row['worker_pid']}".strip()
            start = ms(row["started_at"]) or now
            end = ms(row["ended_at"])
            bars.append((lanes.setdefault(lane, len(lanes)), start, end, row))
        names = sorted(lanes, key=lanes.get)  # type: ignore[arg-type]
        lo = min((b[1] for b in bars), default=now)
        hi = max((b[2] if b[2] is not None else now for b in bars), default=now)
        out: dict[str, Any] = {"lanes": names, "start": lo, "end": hi, "now": now,
                               "tasks": len(bars)}  # fmt: skip
        if len(bars) <= TIMELINE_TASKS:
            out["bars"] = [
                {"lane": lane, "start": s, "end": e, "running": e is None,
                 "task_id": r["task_id"], "stage_id": r["stage_id"], "status": r["status"],
                 "attempt": r["attempt"]}
                for lane, s, e, r in sorted(bars, key=lambda b: b[1])
            ]  # fmt: skip
            return out
        width = max(1.0, (hi - lo) / TIMELINE_BINS)
        busy = [[0.0] * TIMELINE_BINS for _ in names]
        failed = [[0] * TIMELINE_BINS for _ in names]
        for index, begin, finish, row in bars:
            stop = now if finish is None else finish
            first = min(TIMELINE_BINS - 1, int((begin - lo) / width))
            last = min(TIMELINE_BINS - 1, int((stop - lo) / width))
            for b in range(first, last + 1):
                b_lo, b_hi = lo + b * width, lo + (b + 1) * width
                busy[index][b] += max(0.0, min(stop, b_hi) - max(begin, b_lo)) / width
            if row["status"] == "failed":
                failed[index][last] += 1
        out["bins"] = {"width_ms": width, "busy": [[round(min(v, 1.0), 3) for v in lane]
                       for lane in busy], "failed": failed}  # fmt: skip
        return out

    # -- paged lists -----------------------------------------------------------------------

    def elements(self, run_id: str, after: Any = None, limit: Any = None,
                 kind: str | None = None, stage: str | None = None) -> dict[str, Any]:  # fmt: skip
        """Data elements in ``element_no`` order, paged by keyset."""
        n = _limit(limit)
        where, params = ["run_id = :r"], dict[str, Any](r=run_id, n=n + 1)
        if after not in (None, ""):
            where.append("element_no > :after")
            params["after"] = _int(after, "after")
        if kind:
            where.append("kind = :kind")
            params["kind"] = kind
        if stage:
            where.append("stage_id = :stage")
            params["stage"] = stage
        rows = self._q(
            "SELECT element_no, element_id, kind, stage_id, task_index, partition, rows, bytes, "
            "location, backend, content_hash, git_commit FROM elements WHERE "
            + " AND ".join(where) + " ORDER BY element_no LIMIT :n", params)  # fmt: skip
        return _page(rows, n, lambda r: r["element_no"])

    def programs(self, run_id: str, after: str | None = None, limit: Any = None) -> dict[str, Any]:
        """External programs the run's tasks ran: argv, exit code, stdout/stderr tails."""
        n = _limit(limit, 50)
        where, params = ["run_id = :r"], dict[str, Any](r=run_id, n=n + 1)
        if after:
            task, no = _pair(after)
            where.append("(task_id > :t OR (task_id = :t AND program_no > :p))")
            params["t"], params["p"] = task, _int(no, "after")
        rows = self._q(
            "SELECT task_id, program_no, op_id, step, command, argv, exit_code, seconds, "
            "started_at, stdout_tail, stderr_tail, workdir FROM programs WHERE "
            + " AND ".join(where) + " ORDER BY task_id, program_no LIMIT :n", params)  # fmt: skip
        for row in rows:
            row["started_at"] = ms(row["started_at"])
            row["argv"] = _json(row["argv"])
        return _page(rows, n, lambda r: json.dumps([r["task_id"], r["program_no"]]))

    def files(self, run_id: str, after: str | None = None, limit: Any = None) -> dict[str, Any]:
        """File versions the run committed to Git."""
        n = _limit(limit)
        where, params = ["run_id = :r"], dict[str, Any](r=run_id, n=n + 1)
        if after:
            stage, path = _pair(after)
            where.append("(stage_id > :s OR (stage_id = :s AND path > :p))")
            params["s"], params["p"] = stage, str(path)
        rows = self._q(
            "SELECT stage_id, path, element_id, commit_sha, branch, blob, bytes, step, name "
            "FROM file_versions WHERE " + " AND ".join(where) +
            " ORDER BY stage_id, path LIMIT :n", params)  # fmt: skip
        return _page(rows, n, lambda r: json.dumps([r["stage_id"], r["path"]]))

    def epochs(self, run_id: str, after: Any = None, limit: Any = None) -> dict[str, Any]:
        """A streaming query's epochs, newest first."""
        n = _limit(limit)
        where, params = ["run_id = :r"], dict[str, Any](r=run_id, n=n + 1)
        if after not in (None, ""):
            where.append("epoch < :after")
            params["after"] = _int(after, "after")
        rows = self._q(
            "SELECT epoch, status, started_at, committed_at, seconds, records_in, records_out, "
            "late_records, dead_letters, watermark, checkpoint_seconds, state_keys FROM "
            "stream_epochs WHERE " + " AND ".join(where) + " ORDER BY epoch DESC LIMIT :n",
            params)  # fmt: skip
        for row in rows:
            row["started_at"], row["committed_at"] = ms(row["started_at"]), ms(row["committed_at"])
        return _page(rows, n, lambda r: r["epoch"])

    # -- lineage ---------------------------------------------------------------------------

    def lineage(self, run_id: str, element_id: str, direction: str = "up",
                limit: Any = None, after: Any = None) -> dict[str, Any]:  # fmt: skip
        """One level of lineage: the elements ``element_id`` came from (``up``: what its task
        used) or went into (``down``: what the tasks that used it generated); at most ``limit``
        of them past element number ``after``, how many more there are, and the cursor of the
        next page."""
        n = _limit(limit, 12, 200)
        found = self._q(
            "SELECT element_no, element_id, kind, stage_id, rows, bytes, location FROM elements "
            "WHERE run_id = :r AND element_id = :e", {"r": run_id, "e": element_id})  # fmt: skip
        if not found:
            raise LookupError(f"no element {element_id!r} in run {run_id!r}")
        # CROSS JOIN fixes SQLite's join order (from the element, through its task, to the
        # neighbours); left alone it walks every element of the run for the ORDER BY.
        if direction == "up":
            join = (
                "FROM generated g CROSS JOIN used u CROSS JOIN elements x "
                "WHERE g.run_id = :r AND g.element_id = :e AND u.run_id = g.run_id "
                "AND u.task_id = g.task_id AND x.run_id = u.run_id AND x.element_id = u.element_id"
            )
            task = "g.task_id"
        elif direction == "down":
            join = (
                "FROM used u CROSS JOIN generated g CROSS JOIN elements x "
                "WHERE u.run_id = :r AND u.element_id = :e AND g.run_id = u.run_id "
                "AND g.task_id = u.task_id AND x.run_id = g.run_id AND x.element_id = g.element_id"
            )
            task = "u.task_id"
        else:
            raise BadRequest(f"direction must be up or down, got {direction!r}")
        params: dict[str, Any] = {"r": run_id, "e": element_id, "n": n}
        if after not in (None, ""):
            join += " AND x.element_no > :after"
            params["after"] = _int(after, "after")
        items = self._q(
            f"SELECT DISTINCT x.element_no, x.element_id, x.kind, x.stage_id, x.rows, x.bytes, "
            f"x.location, {task} AS task_id {join} ORDER BY x.element_no LIMIT :n",
            params,
        )
        total = self._q(f"SELECT COUNT(DISTINCT x.element_id) AS n {join}", params)[0]["n"]
        more = max(0, int(total) - len(items))
        return {"element": found[0], "direction": direction, "items": items, "more": more,
                "next": items[-1]["element_no"] if more and items else None}  # fmt: skip

    # -- domain tables -----------------------------------------------------------------------

    def domains(self) -> list[dict[str, Any]]:
        rows = self._q("SELECT dataset, table_name, columns FROM domain_datasets ORDER BY dataset")
        for row in rows:
            row["columns"] = _json(row["columns"]) or {}
        return rows

    def domain_query(self, dataset: str, run_id: str | None = None,
                     filters: list[tuple[str, str, str]] | tuple[()] = (),
                     after: str | None = None, limit: Any = None) -> tuple[str, dict[str, Any], int]:  # fmt: skip
        """The SQL (and parameters) that the domain view runs: the rows of ``dataset``'s table
        matching every ``(column, operator, value)`` filter, in ``(run_id, element_id, row_no)``
        order. Column names come only from the dataset's declaration; values are parameters."""
        found = [d for d in self.domains() if d["dataset"] == dataset]
        if not found:
            raise LookupError(f"no domain dataset {dataset!r} declared in the provenance store")
        table, columns = found[0]["table_name"], found[0]["columns"]
        n = _limit(limit)
        where, params = ["1 = 1"], dict[str, Any](n=n + 1)
        if run_id:
            where.append("run_id = :run")
            params["run"] = run_id
        for i, (column, op, value) in enumerate(filters):
            if column not in columns:
                raise BadRequest(f"{dataset} has no column {column!r}; it has {', '.join(columns)}")
            if op not in OPERATORS:
                raise BadRequest(f"operator must be one of {' '.join(OPERATORS)}, got {op!r}")
            params[f"v{i}"] = _typed(value, columns[column], column)
            where.append(f'"{column}" {OPERATORS[op]} :v{i}')
        if after:
            run, element, row_no = _triple(after)
            where.append("(run_id > :ar OR (run_id = :ar AND (element_id > :ae OR "
                         "(element_id = :ae AND row_no > :an))))")  # fmt: skip
            params.update(ar=run, ae=element, an=_int(row_no, "after"))
        cols = ", ".join(f'"{c}"' for c in ("run_id", "element_id", "row_no", *columns))
        query = (f'SELECT {cols} FROM "{table}" WHERE ' + " AND ".join(where) +
                 " ORDER BY run_id, element_id, row_no LIMIT :n")  # fmt: skip
        return query, params, n

    def domain_rows(self, dataset: str, **kw: Any) -> dict[str, Any]:
        query, params, n = self.domain_query(dataset, **kw)
        rows = self._q(query, params)
        page = _page(rows, n, lambda r: json.dumps([r["run_id"], r["element_id"], r["row_no"]]))
        return {**page, "sql": query, "params": {k: v for k, v in params.items() if k != "n"}}

    # -- SQL console -------------------------------------------------------------------------

    def console(self, query: str, limit: Any = None) -> dict[str, Any]:
        """One read-only statement, at most :data:`SQL_ROWS` rows, cancelled after
        :data:`SQL_TIMEOUT_S` seconds. A query is wrapped in ``SELECT * FROM (…) LIMIT n`` so
        the database stops at the cap (a client-side cursor would hold every row first); on
        SQLite no value may grow past :data:`SQL_VALUE_BYTES`; values past
        :data:`SQL_CELL_CHARS` characters are cut. Server functions that act on other sessions
        or the server's files (``pg_terminate_backend``, advisory locks, ``pg_read_file``, …)
        are refused: a read-only transaction does not stop them."""
        text = query.strip().rstrip(";").rstrip()
        if not text:
            raise BadRequest("write a query, e.g. SELECT run_id, status FROM runs")
        banned = _BANNED.search(text)
        if banned:
            raise BadRequest(f"the console does not run {banned.group(1)}(): it acts beyond "
                             "reading the provenance store")  # fmt: skip
        n = _limit(limit, SQL_ROWS, SQL_ROWS)
        if first_keyword(text, nested_comments=self.store.dialect == "postgresql") in _WRAPPABLE:
            text = f"SELECT * FROM (\n{text}\n) AS riera_console LIMIT {n + 1}"
        started = time.perf_counter()
        result = self.store.sql(text, limit=n + 1, timeout_s=SQL_TIMEOUT_S,
                                max_value_bytes=SQL_VALUE_BYTES)  # fmt: skip
        rows = [[_cell(v) for v in row] for row in result.rows]
        return {"columns": result.columns, "rows": rows[:n], "truncated": len(rows) > n,
                "ms": round(1000 * (time.perf_counter() - started), 1)}  # fmt: skip


_WRAPPABLE = frozenset({"select", "with", "values", "table"})
_BANNED = re.compile(
    r"\b(pg_terminate_backend|pg_cancel_backend|pg_(?:try_)?advisory\w*|pg_read_\w+|pg_ls_\w+|"
    r"pg_stat_file|pg_file_\w+|lo_\w+|dblink\w*|pg_reload_conf|pg_rotate_logfile|pg_switch_wal|"
    r"pg_promote|pg_create_\w+|pg_drop_\w+|pg_logical_\w+|pg_replication_\w+|pg_notify|"
    r"set_config|pg_sleep\w*|query_to_xml\w*|table_to_xml\w*|cursor_to_xml\w*|"
    r"database_to_xml\w*|schema_to_xml\w*|load_extension|readfile|writefile|fts3_tokenizer)"
    r"\s*\(",
    re.IGNORECASE,
)
SQL_VALUE_BYTES = 10_000_000
SQL_CELL_CHARS = 10_000


def _int(value: Any, what: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as err:
        raise BadRequest(f"{what} must be a whole number, got {value!r}") from err


def _pair(text: str) -> tuple[Any, Any]:
    try:
        a, b = json.loads(text)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"bad cursor {text!r}") from err
    return a, b


def _triple(text: str) -> tuple[Any, Any, Any]:
    try:
        a, b, c = json.loads(text)
    except (ValueError, TypeError) as err:
        raise BadRequest(f"bad cursor {text!r}") from err
    return a, b, c


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _typed(value: str, kind: str, column: str) -> Any:
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            number = float(value)
            if math.isnan(number):
                raise ValueError("NaN")
            return number
        if kind == "bool":
            return value.lower() in ("1", "true", "yes")
        if kind == "timestamp":  # compared as a timestamp on both stores, not as text
            return datetime.fromisoformat(value)
    except ValueError as err:
        raise BadRequest(f"{column} is {kind}: {value!r} is not one") from err
    return value


def _cell(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int | float | bool) or value is None:
        return value
    text = str(value)
    if len(text) > SQL_CELL_CHARS:
        return text[:SQL_CELL_CHARS] + f"… ({len(text):,} characters)"
    return text


__all__ = ["BadRequest", "Explorer", "ProvenanceError", "ms"]
