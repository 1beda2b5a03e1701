"""In-situ queries of the raw files a run produced (document 001's PostgresRaw idea), with DuckDB.

``SELECT … FROM 'out/*.csv'`` reads CSV, Parquet and JSON files where they lie: nothing is loaded
into the provenance store first, so the first answer comes as soon as the files are scanned. This
complements the store: provenance says *which* files a step produced; a raw query says what is
*in* them.

Queries are read-only: DuckDB parses the text first and only one statement of type ``SELECT`` is
run (``WITH``, DuckDB's ``FROM``-first form, ``DESCRIBE``, ``SUMMARIZE``, ``SHOW`` and ``VALUES``
are ``SELECT`` too), so a query cannot ``COPY … TO`` a file, ``ATTACH`` a database or chain a
second statement.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from riera.errors import ProvenanceError, ReadOnlyError
from riera.provenance.store import QueryResult


def raw_query(
    query: str, params: Mapping[str, Any] | None = None, *, threads: int | None = None
) -> QueryResult:
    """Run ``query`` with DuckDB over files named in it; returns columns and rows.

    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.csv").write_text("k,v\\nx,1\\ny,2\\n")
    >>> raw_query(f"SELECT sum(v) AS total FROM '{d}/*.csv'").rows
    [(3,)]
    """
    try:
        import duckdb
    except ImportError as err:
        raise ProvenanceError(
            "`riera prov raw` needs DuckDB, which is not installed: pip install 'riera[raw]'"
        ) from err
    try:
        kinds = [st.type for st in duckdb.extract_statements(query)]
    except duckdb.Error as err:
        raise ProvenanceError(f"raw query failed: {err}\nquery: {query}") from err
    if len(kinds) != 1:
        raise ReadOnlyError(f"a raw query is one statement; got {len(kinds)}: {query}")
    if kinds[0] != duckdb.StatementType.SELECT:
        raise ReadOnlyError(
            f"raw queries only read files; a {kinds[0].name} statement is not allowed "
            f"(use SELECT … FROM 'path/*.csv', DESCRIBE or SUMMARIZE)"
        )
    con = duckdb.connect(":memory:")
    try:
        if threads is not None:
            con.execute(f"SET threads = {int(threads)}")
        try:
            cursor = con.execute(query, dict(params) if params else None)
            columns = [d[0] for d in cursor.description or ()]
            rows = [tuple(r) for r in cursor.fetchall()]
        except duckdb.Error as err:
            raise ProvenanceError(f"raw query failed: {err}\nquery: {query}") from err
    finally:
        con.close()
    return QueryResult(columns, rows)
