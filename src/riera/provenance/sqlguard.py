"""Keeping provenance queries read-only: what is refused before a statement reaches the database,
and the SQLite authorizer that refuses the rest (see :mod:`riera.provenance.store`)."""

from __future__ import annotations

import re
import sqlite3

__all__ = ["NOT_QUERIES", "first_keyword", "is_read_only_violation", "read_only_authorizer"]

# PRAGMAs that take an argument yet only read (table_info(tasks), …); any other PRAGMA with an
# argument is an assignment and refused on the query connection.
_READ_PRAGMAS = frozenset(
    {
        "table_info",
        "table_xinfo",
        "table_list",
        "index_list",
        "index_info",
        "index_xinfo",
        "foreign_key_list",
        "foreign_key_check",
        "integrity_check",
        "quick_check",
    }
)
# First keywords of statements that are not queries: sql() refuses them up front with a clear
# message. The database enforces read-only access on its own (see the module docstring); this list
# also stops what a read-only transaction allows, such as PostgreSQL's COPY … TO a file, DO and
# CALL, and transaction control.
# fmt: off
NOT_QUERIES = frozenset({
    "abort", "alter", "analyze", "attach", "begin", "call", "checkpoint", "close", "cluster",
    "comment", "commit", "copy", "create", "deallocate", "declare", "delete", "detach", "discard",
    "do", "drop", "end", "execute", "fetch", "grant", "import", "insert", "listen", "load",
    "lock", "merge", "move", "notify", "prepare", "refresh", "reindex", "release", "replace",
    "reset", "revoke", "rollback", "savepoint", "security", "set", "start", "truncate",
    "unlisten", "update", "upsert", "vacuum",
})
# fmt: on
_SQLITE_WRITES = frozenset(
    getattr(sqlite3, name)
    for name in dir(sqlite3)
    if name.startswith(("SQLITE_CREATE_", "SQLITE_DROP_"))
) | {
    sqlite3.SQLITE_INSERT,
    sqlite3.SQLITE_DELETE,
    sqlite3.SQLITE_ATTACH,
    sqlite3.SQLITE_DETACH,
    sqlite3.SQLITE_ALTER_TABLE,
    sqlite3.SQLITE_REINDEX,
    sqlite3.SQLITE_ANALYZE,
}


def first_keyword(query: str, *, nested_comments: bool) -> str:
    """The statement's first keyword, lowercased, past whitespace, comments and parentheses."""
    i, n = 0, len(query)
    while i < n:
        if query[i].isspace() or query[i] == "(":
            i += 1
        elif query.startswith("--", i):
            end = query.find("\n", i)
            i = n if end < 0 else end + 1
        elif query.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if nested_comments and query.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif query.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        else:
            break
    match = re.match(r"[A-Za-z_]+", query[i:])
    return match.group(0).lower() if match else ""


def is_read_only_violation(err: Exception) -> bool:
    if getattr(err, "sqlstate", None) == "25006":  # PostgreSQL read_only_sql_transaction
        return True
    name = getattr(err, "sqlite_errorname", "") or ""
    return (
        name == "SQLITE_AUTH" or name.startswith("SQLITE_READONLY") or "not authorized" in str(err)
    )


def read_only_authorizer(
    action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
) -> int:
    """Deny every statement that would change a database on the query connection."""
    if action in _SQLITE_WRITES:
        return sqlite3.SQLITE_DENY
    if action == sqlite3.SQLITE_UPDATE and arg1 not in ("sqlite_master", "sqlite_temp_master"):
        return sqlite3.SQLITE_DENY  # SQLite itself "updates" the schema table when it loads it
    if action == sqlite3.SQLITE_PRAGMA and arg2 is not None and arg1 not in _READ_PRAGMAS:
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK
