"""Word count of one text file with DuckDB (2 threads), with Riera's word rule and a split on
single spaces (see wordcount_polars.py). Prints the 10 most frequent words."""

import string
import sys


def main() -> None:
    import duckdb

    PUNCT = (string.punctuation + "“”‘’«»—–…¡¿").replace("'", "''")
    con = duckdb.connect()
    con.execute("SET threads = 2")
    rows = con.execute(
        f"""
        WITH lines AS (
            SELECT line FROM read_csv('{sys.argv[1]}', columns={{'line': 'VARCHAR'}}, header=false,
                                      delim='\\0', quote='', escape='', auto_detect=false)
        ),
        words AS (
            SELECT trim(lower(w), '{PUNCT}') AS w
            FROM lines, unnest(string_split(line, ' ')) AS t(w)
        )
        SELECT w, count(*) AS n FROM words WHERE length(w) > 0
        GROUP BY w ORDER BY n DESC, w LIMIT 10
        """
    ).fetchall()
    print(rows)


if __name__ == "__main__":
    main()
