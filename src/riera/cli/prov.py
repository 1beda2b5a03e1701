"""``riera prov runs | show | sql``: query the provenance store, during or after a run."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from datetime import date, datetime
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from riera.cli import err, fail
from riera.errors import RieraError

if TYPE_CHECKING:
    from riera.provenance.store import QueryResult

T = TypeVar("T")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2})?$")

app = typer.Typer(
    help="Provenance of runs: list, show, query with SQL (read-only).", no_args_is_help=True
)
out = Console(soft_wrap=True)

Json = Annotated[bool, typer.Option("--json", help="JSON output")]


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date | dtime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes | memoryview):
        return bytes(value).hex()
    return value


def _dump(data: Any) -> None:
    typer.echo(json.dumps(data, default=_plain, indent=2))


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, str) and _TIMESTAMP.match(value):  # SQLite keeps timestamps as text
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _table(
    rows: Sequence[dict[str, Any]], columns: Sequence[str], title: str | None = None
) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c, overflow="fold")
    for row in rows:
        t.add_row(*(_cell(row.get(c)) for c in columns))
    out.print(t)


def _call(fn: Callable[[], T]) -> T:
    """``fn()``; a Riera error ends the command with its message and exit code 1."""
    try:
        return fn()
    except RieraError as e:
        fail(e)
        raise  # unreachable: fail() exits


def _emit(rows: Sequence[dict[str, Any]], columns: Sequence[str], as_json: bool) -> None:
    """Rows as JSON, or as a table of ``columns``."""
    if as_json:
        _dump(rows)
        return
    _table(rows, columns)


def _emit_result(result: QueryResult, as_json: bool) -> None:
    _emit(result.to_dicts(), result.columns, as_json)
    if not as_json:
        out.print(f"{len(result.rows)} row(s)")


@app.command("runs")
def runs_cmd(
    as_json: Json = False,
    limit: Annotated[int | None, typer.Option("--limit", "-n", help="only the newest N")] = None,
) -> None:
    """Recorded runs, newest first."""
    import riera.provenance as prov

    rows = _call(lambda: prov.runs(limit))
    columns = ["run_id", "status", "action", "started_at", "seconds", "workers", "exchange"]
    _emit(rows, columns, as_json)


@app.command("show")
def show_cmd(
    run: Annotated[str, typer.Argument(help="run id (a unique prefix, or 'last')")],
    as_json: Json = False,
) -> None:
    """One run: settings, operators, stages, tasks and failures."""
    import riera.provenance as prov

    data = _call(lambda: prov.show(run))
    if as_json:
        _dump(data)
        return
    r = data["run"]
    out.print(
        f"[bold]run {r['run_id']}[/] {r['status']} · {r['action']} · "
        f"{_cell(r.get('seconds'))} s · {r['workers']} worker(s) · exchange {r['exchange']} · "
        f"{r['user_name']}@{r['host']} pid {r['pid']}"
    )
    if r.get("script"):
        out.print(f"script {r['script']} ({r.get('script_hash')})")
    if r.get("error"):
        out.print(f"[red]error:[/] {r['error']}")
    el = data["elements"]
    out.print(f"data elements: {el['n']} ({el['rows']:,} rows, {el['bytes']:,} bytes)")
    _table(data["operators"], ["op_id", "kind", "function", "source_hash"], "operators")
    _table(
        data["stages"],
        ["stage_id", "label", "num_tasks", "status", "seconds", "rows_out", "retries"],
        "stages",
    )
    _table(
        data["tasks"],
        ["task_id", "worker_pid", "status", "seconds", "rows_in", "rows_out", "bytes_out"],
        "tasks",
    )
    failed = [t for t in data["tasks"] if t["status"] not in ("ok", "running")]
    if failed:
        _table(failed, ["task_id", "status", "error"], "failures")
    if data["programs"]:
        _table(
            data["programs"],
            ["task_id", "step", "group_key", "command", "exit_code", "seconds"],
            "programs",
        )
    if data["files"]:
        _table(data["files"], ["stage_id", "step", "files", "bytes", "commit_sha"], "file versions")


@app.command("sql")
def sql_cmd(
    query: Annotated[str, typer.Argument(help="a SELECT statement (the store is read-only)")],
    as_json: Json = False,
) -> None:
    """Run a read-only SQL query on the provenance store."""
    import riera.provenance as prov

    _emit_result(_call(lambda: prov.sql(query)), as_json)


@app.command("lineage")
def lineage_cmd(
    run: Annotated[str, typer.Argument(help="run id (a unique prefix, or 'last')")],
    element: Annotated[str, typer.Argument(help="element id, or the path of an output file")],
    up: Annotated[bool, typer.Option("--up", help="what the element came from (default)")] = False,
    down: Annotated[bool, typer.Option("--down", help="what came from the element")] = False,
    depth: Annotated[int, typer.Option("--depth", min=0, help="steps to follow")] = 20,
    row: Annotated[
        int | None,
        typer.Option("--row", min=0, help="one row of the element: record-level lineage"),
    ] = None,
    as_json: Json = False,
) -> None:
    """The data elements an element was derived from (--up) or that derive from it (--down).

    With --row, the rows one row came from (or went into), for stages that captured record-level
    lineage (Dataset.provenance(records=True), or the setting provenance=records)."""
    import riera.provenance as prov
    from riera.provenance.lineage import Direction, lineage, record_lineage

    if up and down:
        fail("choose one of --up and --down")
    direction: Direction = "down" if down else "up"
    if row is not None:
        found = _call(
            lambda: prov.on_run(
                run, lambda s, rid: record_lineage(s, rid, element, row, direction, depth)
            )
        )
        _emit(found, ["depth", "element_id", "row", "kind", "location"], as_json)
        return
    rows = _call(
        lambda: prov.on_run(run, lambda s, rid: lineage(s, rid, element, direction, depth))
    )
    columns = ["depth", "element_id", "via_task", "kind", "rows", "bytes", "content_hash"]
    _emit(rows, columns, as_json)


@app.command("export")
def export_cmd(
    run: Annotated[str, typer.Argument(help="run id (a unique prefix, or 'last')")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="prov-json | prov-n | dot | png")
    ] = "prov-json",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="file to write (needed for png)")
    ] = None,
) -> None:
    """Export a run as W3C PROV (PROV-JSON, PROV-N), a Graphviz DOT graph or a PNG drawing."""
    import riera.provenance as prov
    from riera.provenance.export import export

    text = _call(lambda: prov.on_run(run, lambda s, rid: export(s, rid, fmt, output)))
    if output is None and text is not None:
        typer.echo(text, nl=False)
    elif output is not None:
        err.print(f"wrote {output}")


@app.command("checkout")
def checkout_cmd(
    run: Annotated[str, typer.Argument(help="run id (a unique prefix, or 'last')")],
    stage: Annotated[str, typer.Argument(help="stage id (stage-2 or 2) or a step name")],
    directory: Annotated[
        Path, typer.Argument(help="where to restore (must not exist or be empty)")
    ],
) -> None:
    """Restore from Git the file groups a run's stage (or one of its steps) produced."""
    import riera.provenance as prov

    paths = _call(lambda: prov.checkout(run, stage, directory))
    err.print(f"restored {len(paths)} file(s) into {directory}")


@app.command("raw")
def raw_cmd(
    query: Annotated[str, typer.Argument(help="SELECT … FROM 'path/*.csv' (CSV, Parquet, JSON)")],
    as_json: Json = False,
) -> None:
    """Query the raw files a run produced, in place, with DuckDB (nothing is loaded first)."""
    from riera.provenance.raw import raw_query

    _emit_result(_call(lambda: raw_query(query)), as_json)
