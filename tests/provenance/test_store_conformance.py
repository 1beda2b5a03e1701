"""The provenance store contract, checked on every store (SQLite and PostgreSQL, see conftest.py).

Covers: idempotent (and concurrent) table creation, ``put`` (upsert of the given columns) and
``add`` (insert, duplicates ignored on keyed tables), one transaction per batch, read-only queries,
WAL-style concurrency (readers are never blocked by a writer), typed domain tables, timestamps,
bulk volumes, and the errors raised when a store cannot be opened.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from riera.errors import ProvenanceError, ReadOnlyError
from riera.provenance.schema import SCHEMA_VERSION
from riera.provenance.store import (
    BULK_ROWS,
    Columns,
    Event,
    ProvenanceStore,
    QueryResult,
    open_store,
)

if TYPE_CHECKING:
    from pg_service import StoreTarget

T0 = datetime(2024, 5, 1, 10, 0, 0, tzinfo=UTC)


def count(store: ProvenanceStore, table: str) -> int:
    value = store.sql(f"SELECT count(*) FROM {table}").rows[0][0]
    return int(value)


def as_datetime(value: Any) -> datetime:
    """A timestamp as ``sql()`` returns it: aware datetime (PostgreSQL) or ISO text (SQLite)."""
    return value if isinstance(value, datetime) else datetime.fromisoformat(value)


def task(n: int, **columns: Any) -> dict[str, Any]:
    return {"run_id": "r1", "task_id": f"stage-1/t{n}/a0", **columns}


# -- opening ---------------------------------------------------------------------------------


def test_open_is_idempotent(store: ProvenanceStore, open_target: Callable[[], ProvenanceStore]):
    store.write([("put", "runs", {"run_id": "r1", "status": "ok"})])
    again = open_target()
    assert again.dialect == store.dialect
    assert again.sql("SELECT run_id, status FROM runs").rows == [("r1", "ok")]
    assert again.sql("SELECT version FROM schema_version").rows == [(SCHEMA_VERSION,)]
    tables = {
        "runs",
        "operators",
        "stages",
        "tasks",
        "elements",
        "used",
        "generated",
        "derivation_blocks",
        "derivations",  # a view over the blocks
        "domain_datasets",
        "programs",
        "file_versions",
        "schema_version",
    }
    for table in tables:
        assert count(again, table) >= 0


@contextlib.contextmanager
def _transaction(store_target: StoreTarget) -> Iterator[Any]:
    """A plain DB-API connection to the store's database, in one committed transaction (how an
    older Riera left the store, for the upgrade tests)."""
    conn = store_target.connect()
    try:
        if store_target.dialect == "sqlite":
            conn.execute("BEGIN")
        yield conn
        conn.commit() if store_target.dialect == "postgresql" else conn.execute("COMMIT")
    finally:
        conn.close()


def test_a_version_1_store_is_upgraded_in_place(
    store: ProvenanceStore, store_target: StoreTarget, open_target: Callable[[], ProvenanceStore]
):
    """Version 1 lacked the program and file-version columns added for run_program; opening
    such a store adds them and keeps every row."""
    store.write([("put", "programs", {"run_id": "r1", "task_id": "t", "program_no": 1})])
    added = {"programs": ["op_id", "step", "group_key", "command", "started_at"],
             "file_versions": ["op_id", "step", "group_key", "name"]}  # fmt: skip
    with _transaction(store_target) as conn:
        for table, columns in added.items():
            for column in columns:
                conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("UPDATE schema_version SET version = 1")
    again = open_target()
    assert again.sql("SELECT version FROM schema_version").rows == [(SCHEMA_VERSION,)]
    again.write([("put", "programs", {"run_id": "r1", "task_id": "t", "program_no": 1,
                                      "step": "sort", "command": "sort a"})])  # fmt: skip
    assert again.sql("SELECT program_no, step, command FROM programs").rows == [
        (1, "sort", "sort a")
    ]
    again.write([("put", "file_versions", {"run_id": "r1", "stage_id": "s", "path": "p",
                                           "name": "a.txt"})])  # fmt: skip
    assert again.sql("SELECT name FROM file_versions").rows == [("a.txt",)]


def test_a_version_3_store_gains_the_runs_executor_column(
    store: ProvenanceStore, store_target: StoreTarget, open_target: Callable[[], ProvenanceStore]
):
    """Version 4 records which executor ran each run; a version-3 store keeps its runs and gets
    the column, empty for the runs recorded before."""
    store.write([("put", "runs", {"run_id": "r1", "status": "ok", "workers": 2})])
    with _transaction(store_target) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN executor")
        conn.execute("UPDATE schema_version SET version = 3")
    again = open_target()
    assert again.sql("SELECT version FROM schema_version").rows == [(SCHEMA_VERSION,)]
    again.write([("put", "runs", {"run_id": "r2", "status": "ok", "executor": "inprocess"})])
    assert again.sql("SELECT run_id, workers, executor FROM runs ORDER BY run_id").rows == [
        ("r1", 2, None),
        ("r2", None, "inprocess"),
    ]


def test_a_version_2_store_moves_its_derivations_into_blocks(
    store: ProvenanceStore, store_target: StoreTarget, open_target: Callable[[], ProvenanceStore]
):
    """Version 2 kept one row per derivation in a ``derivations`` table; opening it moves the
    rows into ``derivation_blocks`` (cut per element pair) and puts the view in its place."""
    rows = [("r1", 1, 0, 7, 3), ("r1", 1, 1, 7, 4), ("r1", 1, 1, 8, 0), ("r2", 5, 2, 9, 9)]
    with _transaction(store_target) as conn:
        conn.execute("DROP VIEW derivations")
        conn.execute(
            "CREATE TABLE derivations (run_id TEXT NOT NULL, out_no BIGINT, out_row BIGINT, "
            "in_no BIGINT, in_row BIGINT)"
        )
        cur = conn.cursor()
        for r in rows:
            if store_target.dialect == "sqlite":
                cur.execute("INSERT INTO derivations VALUES (?, ?, ?, ?, ?)", r)
            else:
                cur.execute("INSERT INTO derivations VALUES (%s, %s, %s, %s, %s)", r)
        conn.execute("UPDATE schema_version SET version = 2")
    again = open_target()
    assert again.sql("SELECT version FROM schema_version").rows == [(SCHEMA_VERSION,)]
    got = again.sql(
        "SELECT run_id, out_no, out_row, in_no, in_row FROM derivations "
        "ORDER BY run_id, out_no, out_row, in_no"
    ).rows
    assert got == rows
    assert again.sql(
        "SELECT run_id, out_no, in_no, n FROM derivation_blocks ORDER BY run_id, in_no"
    ).rows == [("r1", 1, 7, 2), ("r1", 1, 8, 1), ("r2", 5, 9, 1)]


def test_concurrent_first_opens(
    store_target: StoreTarget, open_target: Callable[[], ProvenanceStore]
):
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_target(), range(4)))
    stores[0].write([("put", "runs", {"run_id": "r1"})])
    assert all(s.sql("SELECT count(*) FROM runs").rows == [(1,)] for s in stores)
    assert stores[3].sql("SELECT count(*) FROM schema_version").rows == [(1,)]


def test_url_and_dialect(store: ProvenanceStore, store_target: StoreTarget):
    assert store.dialect == store_target.dialect
    assert store.url in repr(store)
    if store.dialect == "sqlite":
        assert store.url == str(Path(store_target.target).absolute())


# -- put and add ------------------------------------------------------------------------------


def test_put_inserts_then_updates_only_given_columns(store: ProvenanceStore):
    store.write([("put", "tasks", task(1, status="running", worker_pid=42, started_at=T0))])
    store.write([("put", "tasks", task(1, status="ok", ended_at=T0 + timedelta(seconds=3)))])
    result = store.sql("SELECT status, worker_pid, started_at, ended_at FROM tasks")
    [(status, pid, started, ended)] = result.rows
    assert (status, pid) == ("ok", 42)
    assert as_datetime(started) == T0
    assert as_datetime(ended) == T0 + timedelta(seconds=3)


def test_put_applies_events_in_order_within_a_batch(store: ProvenanceStore):
    store.write(
        [
            ("put", "tasks", task(1, status="running", worker_pid=1)),
            ("put", "tasks", task(2, status="running", worker_pid=2)),
            ("put", "tasks", task(1, status="ok", worker_pid=1)),
            ("put", "tasks", task(2, status="failed")),
            ("put", "tasks", task(2, status="ok")),
        ]
    )
    rows = store.sql("SELECT task_id, status, worker_pid FROM tasks ORDER BY task_id").rows
    assert rows == [("stage-1/t1/a0", "ok", 1), ("stage-1/t2/a0", "ok", 2)]


def test_put_of_key_columns_only_inserts_once(store: ProvenanceStore):
    store.write([("put", "used", {"run_id": "r1", "task_id": "t", "element_id": "e"})] * 3)
    assert count(store, "used") == 1


def test_put_needs_the_key_and_a_keyed_table(store: ProvenanceStore):
    with pytest.raises(ProvenanceError, match="key column"):
        store.write([("put", "tasks", {"run_id": "r1", "status": "ok"})])
    with pytest.raises(ProvenanceError, match="use 'add'"):
        store.write([("put", "derivation_blocks", {"run_id": "r1", "out_no": 1})])


def test_add_ignores_duplicates_on_keyed_tables_and_appends_to_derivation_blocks(
    store: ProvenanceStore,
):
    element = {"run_id": "r1", "element_id": "p0", "element_no": 0, "rows": 10}
    store.write([("add", "elements", element)])
    store.write(
        [
            ("add", "elements", {**element, "rows": 99}),  # same key: ignored
            ("add", "elements", {**element, "element_id": "p1", "element_no": 1}),
            ("add", "generated", {"run_id": "r1", "element_id": "p0", "task_id": "t0"}),
            ("add", "generated", {"run_id": "r1", "element_id": "p0", "task_id": "t9"}),
        ]
    )
    assert store.sql("SELECT element_id, rows FROM elements ORDER BY element_id").rows == [
        ("p0", 10),
        ("p1", 10),
    ]
    assert store.sql("SELECT task_id FROM generated").rows == [("t0",)]
    block = {"run_id": "r1", "out_no": 1, "in_no": 0, "n": 1, "pairs": "[[0,5]]"}
    store.write([("add", "derivation_blocks", block)] * 2)
    store.write([("add", "derivation_blocks", block)])
    assert count(store, "derivation_blocks") == 3
    assert (
        store.sql("SELECT out_no, out_row, in_no, in_row FROM derivations").rows
        == [(1, 0, 0, 5)] * 3
    )


def test_add_ignores_a_duplicate_element_no(store: ProvenanceStore):
    store.write([("add", "elements", {"run_id": "r1", "element_id": "a", "element_no": 7})])
    store.write([("add", "elements", {"run_id": "r1", "element_id": "b", "element_no": 7})])
    assert store.sql("SELECT element_id FROM elements").rows == [("a",)]


def test_json_columns_take_strings_or_values(store: ProvenanceStore):
    store.write(
        [
            ("put", "runs", {"run_id": "r1", "settings": '{"workers": 2}', "argv": ["a", "b"]}),
            ("put", "operators", {"run_id": "r1", "op_id": "map#1", "params": {"n": 1}}),
        ]
    )
    assert store.sql("SELECT settings, argv FROM runs").rows == [('{"workers": 2}', '["a", "b"]')]
    assert store.sql("SELECT params FROM operators").rows == [('{"n": 1}',)]


def test_keyword_like_columns_work_unquoted(store: ProvenanceStore):
    store.write(
        [
            ("put", "elements", {"run_id": "r", "element_id": "e", "partition": 3, "rows": 5}),
            ("put", "operators", {"run_id": "r", "op_id": "o", "position": 1, "function": "f"}),
            ("put", "runs", {"run_id": "r", "action": "collect", "user_name": "ana"}),
        ]
    )
    assert store.sql("SELECT partition, rows FROM elements").rows == [(3, 5)]
    assert store.sql("SELECT position, function FROM operators").rows == [(1, "f")]
    assert store.sql("SELECT action, user_name FROM runs").rows == [("collect", "ana")]


# -- one transaction per batch ---------------------------------------------------------------

BAD_EVENTS: dict[str, tuple[Event, str]] = {
    "unknown table": (("put", "nope", {"run_id": "r1"}), "unknown provenance table 'nope'"),
    "unknown column": (("put", "tasks", task(9, colour="red")), r"no column\(s\) 'colour'"),
    "unknown verb": (("upsert", "tasks", task(9)), "unknown verb 'upsert'"),
    "empty row": (("add", "derivation_blocks", {}), "non-empty dict"),
    # run_id missing: refused by the database, half way through the batch
    "not null": (
        ("add", "derivation_blocks", {"out_no": 1}),
        "(?s)'derivation_blocks'.*rolled back",
    ),
    "unbindable value": (
        ("put", "tasks", task(9, worker_pid={"not": "an int"})),
        "(?s)'tasks'.*rolled back",
    ),
}


@pytest.mark.parametrize(("bad", "match"), BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
def test_a_bad_event_rolls_back_its_whole_batch(store: ProvenanceStore, bad: Event, match: str):
    store.write([("put", "runs", {"run_id": "r0"})])
    batch: list[Event] = [
        ("put", "runs", {"run_id": "r1", "status": "running"}),
        ("put", "tasks", task(1, status="ok")),
        ("add", "derivation_blocks", {"run_id": "r1", "out_no": 1, "n": 0}),
        bad,
        ("put", "tasks", task(2, status="ok")),
    ]
    with pytest.raises(ProvenanceError, match=match):
        store.write(batch)
    assert store.sql("SELECT run_id FROM runs").rows == [("r0",)]
    assert count(store, "tasks") == 0
    assert count(store, "derivation_blocks") == 0
    store.write(batch[:3])  # the store is still usable
    assert count(store, "tasks") == 1


def test_unknown_names_are_reported(store: ProvenanceStore):
    with pytest.raises(ProvenanceError, match="'colour'"):
        store.write([BAD_EVENTS["unknown column"][0]])
    with pytest.raises(ProvenanceError, match="unknown provenance table 'nope'"):
        store.write([BAD_EVENTS["unknown table"][0]])
    with pytest.raises(ProvenanceError, match="'schema_version' is written by the store itself"):
        store.write([("put", "schema_version", {"version": 9})])


def test_empty_batch_is_a_no_op(store: ProvenanceStore):
    store.write([])
    assert count(store, "runs") == 0


# -- queries ---------------------------------------------------------------------------------


def test_sql_returns_columns_and_rows(store: ProvenanceStore):
    store.write([("put", "tasks", task(n, stage_id="stage-1", rows_out=10 * n)) for n in range(5)])
    result = store.sql(
        "SELECT task_id, rows_out AS out FROM tasks WHERE rows_out >= :least ORDER BY rows_out",
        {"least": 20},
    )
    assert isinstance(result, QueryResult)
    assert result.columns == ["task_id", "out"]
    assert result.rows == [("stage-1/t2/a0", 20), ("stage-1/t3/a0", 30), ("stage-1/t4/a0", 40)]
    assert result.to_dicts()[0] == {"task_id": "stage-1/t2/a0", "out": 20}
    limited = store.sql("SELECT task_id FROM tasks ORDER BY task_id", limit=2)
    assert limited.rows == [("stage-1/t0/a0",), ("stage-1/t1/a0",)]
    assert store.sql("SELECT task_id FROM tasks", limit=0).rows == []
    assert store.sql("SELECT count(*) AS n FROM tasks WHERE task_id LIKE 'stage-1%'").rows == [(5,)]
    assert store.sql(
        "SELECT count(*) FROM tasks WHERE task_id LIKE :p AND stage_id = 'stage-1'",
        {"p": "stage-1/t%"},
    ).rows == [(5,)]


def test_sql_missing_parameter_is_reported(store: ProvenanceStore):
    with pytest.raises(ProvenanceError, match="missing"):
        store.sql("SELECT * FROM runs WHERE run_id = :missing AND status = :s", {"s": "ok"})


WRITES = {
    "insert": "INSERT INTO runs (run_id) VALUES ('evil')",
    "update": "UPDATE runs SET status = 'evil'",
    "delete": "DELETE FROM runs",
    "drop": "DROP TABLE runs",
    "create": "CREATE TABLE evil (a INTEGER)",
    "create index": "CREATE INDEX evil_ix ON runs (status)",
    "alter": "ALTER TABLE runs ADD COLUMN evil TEXT",
    "commented": "/* a note */ -- and a line\n  (DELETE FROM runs)",
    "cte insert": "WITH x AS (SELECT 1) INSERT INTO runs (run_id) SELECT 'evil' FROM x",
}


@pytest.mark.parametrize("statement", WRITES.values(), ids=WRITES.keys())
def test_sql_refuses_writes(store: ProvenanceStore, statement: str):
    store.write([("put", "runs", {"run_id": "r1", "status": "ok"})])
    with pytest.raises(ReadOnlyError, match="read-only") as info:
        store.sql(statement)
    assert store.url in str(info.value)
    assert statement in str(info.value)
    assert store.sql("SELECT run_id, status FROM runs").rows == [("r1", "ok")]
    columns = store.sql("SELECT * FROM runs").columns
    assert "evil" not in columns
    store.write([("put", "runs", {"run_id": "r2"})])  # the writer is unaffected
    assert count(store, "runs") == 2


def test_the_database_itself_refuses_writes(store: ProvenanceStore):
    """Statements that start like queries reach the database, which refuses to write."""
    store.write([("put", "runs", {"run_id": "r1", "status": "ok"})])
    statements = ["WITH x AS (SELECT 1) INSERT INTO runs (run_id) SELECT 'evil' FROM x"]
    if store.dialect == "sqlite":
        statements += ["EXPLAIN DELETE FROM runs", "PRAGMA user_version = 5"]
    else:
        statements += [
            "EXPLAIN ANALYZE DELETE FROM runs",
            "WITH d AS (DELETE FROM runs RETURNING 1) SELECT count(*) FROM d",
        ]
    for statement in statements:
        with pytest.raises(ReadOnlyError, match="would change the store") as info:
            store.sql(statement)
        assert statement in str(info.value)
    assert store.sql("SELECT run_id, status FROM runs").rows == [("r1", "ok")]


def test_sql_cannot_escape_read_only(store: ProvenanceStore, tmp_path: Path):
    """Tricks that would write through a read-only connection are refused, data unchanged."""
    store.write([("put", "runs", {"run_id": "r1", "status": "ok"})])
    copy = tmp_path / "copy.db"
    tricks = ["COMMIT; DELETE FROM runs", "SELECT 1; DROP TABLE runs"]
    if store.dialect == "sqlite":
        tricks += [
            f"ATTACH DATABASE '{tmp_path / 'other.db'}' AS other",
            f"VACUUM INTO '{copy}'",
            "PRAGMA user_version = 5",
            "PRAGMA query_only = OFF",
            "CREATE TEMP TABLE evil (a)",
        ]
    else:
        tricks += [
            "BEGIN READ WRITE",
            "SET TRANSACTION READ WRITE",
            "CREATE TEMP TABLE evil (a int)",
            "DO $$ BEGIN DELETE FROM runs; END $$",
        ]
    for trick in tricks:
        try:
            store.sql(trick)
        except ProvenanceError:
            pass
        with pytest.raises(ReadOnlyError):
            store.sql("DELETE FROM runs")
    assert not copy.exists()
    assert store.sql("SELECT run_id, status FROM runs").rows == [("r1", "ok")]
    if store.dialect == "sqlite":
        assert store.sql("PRAGMA user_version").rows == [(0,)]
        assert store.sql("SELECT count(*) FROM pragma_table_info('runs')").rows[0][0] > 10


def test_sql_error_names_the_query(store: ProvenanceStore):
    query = "SELEC run_id FROM runs"
    with pytest.raises(ProvenanceError) as info:
        store.sql(query)
    assert not isinstance(info.value, ReadOnlyError)
    assert query in str(info.value)
    assert store.url in str(info.value)
    with pytest.raises(ProvenanceError, match="no_such_table"):
        store.sql("SELECT * FROM no_such_table")


def test_reader_is_not_blocked_by_an_open_write_transaction(
    store: ProvenanceStore, store_target: StoreTarget
):
    store.write([("put", "runs", {"run_id": "committed"})])
    in_transaction, release, done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            conn = store_target.connect()
            try:
                cur = conn.cursor()
                if store_target.dialect == "sqlite":
                    cur.execute("BEGIN IMMEDIATE")
                cur.execute("INSERT INTO runs (run_id) VALUES ('pending')")
                in_transaction.set()
                release.wait(30)
                conn.commit()
                cur.close()
            finally:
                conn.close()
        except BaseException as err:
            errors.append(err)
            in_transaction.set()
        finally:
            done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert in_transaction.wait(30)
        started = time.monotonic()
        assert store.sql("SELECT run_id FROM runs").rows == [("committed",)]
        assert time.monotonic() - started < 2.0  # not waiting for the writer's lock
    finally:
        release.set()
        thread.join(30)
    assert not errors
    assert sorted(store.sql("SELECT run_id FROM runs").rows) == [("committed",), ("pending",)]


def test_reader_sees_whole_batches_while_a_writer_keeps_writing(store: ProvenanceStore):
    batches, size = 40, 25
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for b in range(batches):
                store.write([("put", "tasks", task(b * size + i)) for i in range(size)])
        except BaseException as err:
            errors.append(err)

    thread = threading.Thread(target=writer)
    thread.start()
    seen = []
    while thread.is_alive():
        seen.append(count(store, "tasks"))
    thread.join()
    assert not errors
    assert seen == sorted(seen)
    assert all(n % size == 0 for n in seen)  # a batch is visible entirely or not at all
    assert count(store, "tasks") == batches * size


# -- domain tables ---------------------------------------------------------------------------


def test_domain_table_is_typed_and_queryable(store: ProvenanceStore):
    columns = {
        "score": "float",
        "hits": "int",
        "name": "str",
        "ok": "bool",
        "blob": "bytes",
        "seen_at": "timestamp",
    }
    assert store.ensure_domain_table("reads", columns) == "domain_reads"
    assert store.ensure_domain_table("reads", columns) == "domain_reads"  # idempotent
    rows: list[Event] = [
        (
            "add",
            "domain_reads",
            {
                "run_id": "r1",
                "element_id": "p0",
                "row_no": i,
                "score": i / 10,
                "hits": i * 1000**3,
                "name": f"n{i}",
                "ok": i % 2 == 0,
                "blob": bytes([i, 0, 255]),
                "seen_at": T0 + timedelta(minutes=i),
            },
        )
        for i in range(10)
    ]
    store.write(rows)
    result = store.sql("SELECT row_no, hits FROM domain_reads WHERE score > 0.5 ORDER BY row_no")
    assert result.rows == [(i, i * 1000**3) for i in range(6, 10)]
    assert store.sql("SELECT count(*) FROM domain_reads WHERE hits > 5000000000").rows == [(4,)]
    [(name, ok, blob, seen_at)] = store.sql(
        "SELECT name, ok, blob, seen_at FROM domain_reads WHERE row_no = 3"
    ).rows
    assert (name, bool(ok), bytes(blob)) == ("n3", False, bytes([3, 0, 255]))
    assert as_datetime(seen_at) == T0 + timedelta(minutes=3)
    declared = store.sql("SELECT dataset, table_name, columns FROM domain_datasets").rows
    assert declared[0][:2] == ("reads", "domain_reads")


def test_domain_table_gains_new_attributes(
    store: ProvenanceStore, open_target: Callable[[], ProvenanceStore]
):
    other = open_target()  # another process, writing to the table this one declares
    store.ensure_domain_table("reads", {"score": "float"})
    store.write([("add", "domain_reads", {"run_id": "r1", "row_no": 0, "score": 0.9})])
    other.write([("add", "domain_reads", {"run_id": "r2", "row_no": 0, "score": 0.1})])
    store.ensure_domain_table("reads", {"score": "float", "label": "str"})
    store.write([("add", "domain_reads", {"run_id": "r1", "row_no": 1, "label": "x"})])
    other.write([("add", "domain_reads", {"run_id": "r2", "row_no": 1, "label": "y"})])
    rows = other.sql("SELECT run_id, row_no, score, label FROM domain_reads ORDER BY 1, 2").rows
    assert rows == [
        ("r1", 0, 0.9, None),
        ("r1", 1, None, "x"),
        ("r2", 0, 0.1, None),
        ("r2", 1, None, "y"),
    ]
    declared = store.sql("SELECT columns FROM domain_datasets WHERE dataset = 'reads'").rows
    assert json.loads(declared[0][0]) == {"score": "float", "label": "str"}


def test_domain_table_redeclared_with_another_type_errors(store: ProvenanceStore):
    store.ensure_domain_table("reads", {"score": "float", "name": "str"})
    with pytest.raises(ProvenanceError, match=r"'score'.*'float'.*'int'"):
        store.ensure_domain_table("reads", {"name": "str", "score": "int"})


@pytest.mark.parametrize(
    ("dataset", "columns", "match"),
    [
        ("Reads", {"a": "int"}, "'Reads' is not a valid name"),
        ("1st", {"a": "int"}, "'1st' is not a valid name"),
        ("my-data", {"a": "int"}, "not a valid name"),
        ("x; DROP TABLE runs", {"a": "int"}, "not a valid name"),
        ("", {"a": "int"}, "not a valid name"),
        ("d" * 60, {"a": "int"}, "at most 53"),
        ("reads", {"bad name": "int"}, "'bad name' is not a valid name"),
        ("reads", {"a": "decimal"}, "type 'decimal'; expected one of int, float"),
        ("reads", {"row_no": "int"}, "clashes with a fixed column"),
    ],
)
def test_domain_table_validates_names_and_types(
    store: ProvenanceStore, dataset: str, columns: dict[str, str], match: str
):
    with pytest.raises(ProvenanceError, match=match):
        store.ensure_domain_table(dataset, columns)


def test_write_to_an_undeclared_domain_table_errors(store: ProvenanceStore):
    with pytest.raises(ProvenanceError, match="ensure_domain_table"):
        store.write([("add", "domain_nothing", {"run_id": "r1"})])


# -- timestamps --------------------------------------------------------------------------------


def test_timestamps_round_trip_and_order(store: ProvenanceStore):
    plus_two = timezone(timedelta(hours=2))
    starts = {
        "a": T0 + timedelta(hours=1),
        "b": (T0 + timedelta(microseconds=1)).astimezone(plus_two),  # same instant, +02:00
        "c": T0.replace(tzinfo=None),  # naive: taken as UTC
        "d": T0 + timedelta(days=400),
    }
    store.write([("put", "runs", {"run_id": k, "started_at": v}) for k, v in starts.items()])
    ordered = store.sql("SELECT run_id, started_at FROM runs ORDER BY started_at").rows
    assert [r for r, _ in ordered] == ["c", "b", "a", "d"]
    for run_id, value in ordered:
        got = as_datetime(value)
        assert got.utcoffset() == timedelta(0)
        expected = starts[run_id]
        assert got == (expected if expected.tzinfo else expected.replace(tzinfo=UTC))
    since = store.sql(
        "SELECT run_id FROM runs WHERE started_at > :t ORDER BY run_id",
        {"t": T0 + timedelta(minutes=30)},
    )
    assert since.rows == [("a",), ("d",)]


def test_durations_can_be_computed_in_sql(store: ProvenanceStore):
    store.write(
        [
            (
                "put",
                "tasks",
                task(1, started_at=T0, ended_at=T0 + timedelta(seconds=90), seconds=90.0),
            )
        ]
    )
    if store.dialect == "sqlite":
        query = "SELECT (julianday(ended_at) - julianday(started_at)) * 86400 FROM tasks"
    else:
        query = "SELECT extract(epoch FROM ended_at - started_at) FROM tasks"
    [(elapsed,)] = store.sql(query).rows
    assert float(elapsed) == pytest.approx(90.0, abs=1e-3)


# -- bulk ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_bulk_elements_and_derivations(store: ProvenanceStore):
    now = datetime.now(UTC)
    for start in range(0, 100_000, 20_000):
        batch: list[Event] = []
        for i in range(start, start + 20_000):
            batch.append(
                (
                    "put",
                    "elements",
                    {
                        "run_id": "r1",
                        "element_id": f"stage-1/p{i}",
                        "element_no": i,
                        "stage_id": "stage-1",
                        "kind": "partition",
                        "rows": 100,
                        "bytes": 4096,
                    },
                )
            )
            batch.append(("put", "generated", {"run_id": "r1", "element_id": f"stage-1/p{i}"}))
        batch.append(("put", "tasks", task(start, started_at=now, ended_at=now)))
        store.write(batch)
    import numpy as np

    from riera.provenance import blocks

    i = np.arange(1_000_000, dtype=np.int64)
    encoded = blocks.encode(i // 10, i % 10, i % 1000, i)
    store.write(
        [
            ("add", "derivation_blocks", blocks.as_row(b, "r1", b["out_key"], b["in_key"]))
            for b in encoded
        ]
    )  # fmt: skip
    assert count(store, "elements") == 100_000
    assert count(store, "generated") == 100_000
    assert store.sql("SELECT sum(n) FROM derivation_blocks").rows == [(1_000_000,)]
    assert count(store, "derivations") == 1_000_000
    lineage = store.sql(
        "SELECT count(*) FROM derivations d JOIN elements e "
        "ON e.run_id = d.run_id AND e.element_no = d.out_no WHERE d.out_no = 4242"
    )
    assert lineage.rows == [(10,)]


def test_bulk_columns_events(store: ProvenanceStore):
    """A ``Columns`` event carries many rows column by column, with no dict per row; it is
    written in slices of ``BULK_ROWS`` and mixes with ordinary events in one batch."""
    import numpy as np

    n = BULK_ROWS * 2 + 7
    idx = np.arange(n, dtype=np.int64)
    store.write(
        [
            ("put", "runs", {"run_id": "r1", "status": "running"}),
            ("add", "derivation_blocks", Columns(run_id=["r1"] * n, out_no=idx // 10,
                                                 in_no=idx % 1000, n=idx)),
            ("add", "derivation_blocks", Columns(run_id=[], out_no=[], in_no=[], n=[])),
            ("put", "runs", {"run_id": "r1", "status": "ok"}),
        ]
    )  # fmt: skip
    assert count(store, "derivation_blocks") == n
    assert store.sql("SELECT n FROM derivation_blocks WHERE out_no = 40000 AND in_no = 3").rows == [
        (400003,)
    ]
    assert store.sql("SELECT status FROM runs").rows == [("ok",)]
    with pytest.raises(ProvenanceError, match="different lengths"):
        store.write([("add", "derivation_blocks", Columns(run_id=["r"], out_no=[1, 2]))])


# -- opening errors ----------------------------------------------------------------------------


def test_open_failure_names_the_store_and_the_setting(store_target: StoreTarget, tmp_path: Path):
    if store_target.dialect == "sqlite":
        blocker = tmp_path / "a-file"
        blocker.write_text("not a directory")
        target = str(blocker / "provenance.db")
        with pytest.raises(ProvenanceError) as info:
            open_store(target)
        assert target in str(info.value)
        assert "RIERA_HOME" in str(info.value)
        not_a_db = tmp_path / "garbage.db"
        not_a_db.write_bytes(b"this is not a database" * 100)
        with pytest.raises(ProvenanceError, match=r"garbage\.db"):
            open_store(not_a_db)
    else:
        started = time.monotonic()
        with pytest.raises(ProvenanceError) as info:
            open_store("postgresql://riera:s3cret@127.0.0.1:1/provenance")
        assert time.monotonic() - started < 10
        message = str(info.value)
        assert "127.0.0.1:1" in message
        assert "s3cret" not in message
        assert "RIERA_PROVENANCE_DSN" in message
        with pytest.raises(ProvenanceError, match="RIERA_PROVENANCE_DSN"):
            open_store("postgres://riera@127.0.0.1:notaport/db")


def test_bad_targets_are_refused(store_target: StoreTarget):
    with pytest.raises(ProvenanceError, match="in-memory"):
        open_store(":memory:")
    with pytest.raises(ProvenanceError, match="unsupported"):
        open_store("mysql://root@localhost/prov")
    if store_target.dialect == "sqlite":
        with pytest.raises(ProvenanceError, match="PostgreSQL stores only"):
            open_store(store_target.target, schema="prov_x")
    else:
        with pytest.raises(ProvenanceError, match="schema name"):
            open_store(store_target.target, schema="Bad-Schema")


def test_url_forms_open_the_same_store(store: ProvenanceStore, store_target: StoreTarget):
    store.write([("put", "runs", {"run_id": "r1"})])
    if store_target.dialect == "sqlite":
        same = open_store(f"sqlite:///{store_target.target}")
    else:
        alias = store_target.target.replace("postgresql://", "postgres://", 1)
        same = open_store(alias, schema=store_target.schema)
    with same:
        assert same.sql("SELECT run_id FROM runs").rows == [("r1",)]


def test_closed_store_refuses_work(store_target: StoreTarget):
    store = store_target.open()
    store.close()
    store.close()  # idempotent
    with pytest.raises(ProvenanceError, match="closed"):
        store.sql("SELECT 1")
    with pytest.raises(ProvenanceError, match="closed"):
        store.write([("put", "runs", {"run_id": "r1"})])
