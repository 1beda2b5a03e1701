"""Word count of one text file with Riera (2 workers); prints the 10 most frequent words.
Used beside wordcount_polars.py and wordcount_duckdb.py under farm-bench (docs/benchmarks.md)."""

import sys


def main() -> None:
    import riera
    from riera.apps.wordcount.job import top_words

    riera.init(workers=int(sys.argv[2]) if len(sys.argv) > 2 else 2, progress="off")
    print(top_words(sys.argv[1], 10))


if __name__ == "__main__":
    main()
