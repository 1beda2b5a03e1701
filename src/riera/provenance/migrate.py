"""Upgrading an older provenance store in place (see :meth:`ProvenanceStore._create`): columns
added since, and the ``derivations`` view that replaced version 2's one-row-per-derivation table."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from riera.provenance import schema as s

BULK_ROWS = 200_000  # derivations moved into blocks per fetch (as the store's bulk writes)


def add_missing_columns(conn: Connection) -> None:
    """Upgrade an older store: every version so far only added nullable columns."""
    inspector = sa.inspect(conn)
    dialect = conn.dialect
    preparer = dialect.identifier_preparer
    for table in s.metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        for column in table.columns:
            if column.name not in have:
                ddl = column.type.compile(dialect=dialect)
                conn.exec_driver_sql(
                    f"ALTER TABLE {preparer.format_table(table)} "
                    f"ADD COLUMN {preparer.quote(column.name)} {ddl}"
                )


def derivations_view(conn: Connection, dialect: str) -> None:
    """The ``derivations`` view over ``derivation_blocks``. A version-2 store kept one row per
    derivation in a ``derivations`` table: its rows move into blocks, then the table goes."""
    if dialect == "postgresql":
        kind = conn.exec_driver_sql(
            "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('derivations')"
        ).scalar()
        is_table = kind in ("r", "p")
    else:
        kind = conn.exec_driver_sql(
            "SELECT type FROM sqlite_master WHERE name = 'derivations'"
        ).scalar()
        is_table = kind == "table"
    if is_table:
        _move_derivations_into_blocks(conn)
        conn.exec_driver_sql("DROP TABLE derivations")
    conn.exec_driver_sql(s.DERIVATIONS_VIEW[dialect])


def _move_derivations_into_blocks(conn: Connection) -> None:
    import numpy as np

    from riera.provenance import blocks

    result = conn.exec_driver_sql(
        "SELECT run_id, out_no, out_row, in_no, in_row FROM derivations "
        "WHERE out_no IS NOT NULL AND out_row IS NOT NULL AND in_no IS NOT NULL "
        "AND in_row IS NOT NULL ORDER BY run_id, out_no, in_no, out_row, in_row",
        execution_options={"stream_results": True},  # a server-side cursor on PostgreSQL
    )
    insert = sa.insert(s.derivation_blocks)
    while chunk := result.fetchmany(BULK_ROWS):
        runs = [r[0] for r in chunk]
        cols = np.array([r[1:] for r in chunk], dtype=np.int64)
        start = 0
        for end in [i for i in range(1, len(runs)) if runs[i] != runs[i - 1]] + [len(runs)]:
            part = cols[start:end]
            rows = [
                blocks.as_row(b, runs[start], b["out_key"], b["in_key"])
                for b in blocks.encode(part[:, 0], part[:, 1], part[:, 2], part[:, 3])
            ]
            conn.execute(insert, rows)
            start = end
