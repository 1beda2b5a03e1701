"""Word count of one text file with Polars (POLARS_MAX_THREADS threads), with Riera's word rule:
split on ASCII whitespace and control characters, lower-case, strip leading and trailing
punctuation, drop empty tokens. Prints the 10 most frequent words."""

import string
import sys

import polars as pl

PUNCT = string.punctuation + "“”‘’«»—–…¡¿"
lines = pl.scan_csv(
    sys.argv[1], has_header=False, separator="\x00", quote_char=None, new_columns=["line"]
)
words = (
    lines.select(pl.col("line").str.replace_all(r"[\x00-\x20]+", " ").str.split(" ").alias("w"))
    .explode("w")
    .select(pl.col("w").str.to_lowercase().str.strip_chars(PUNCT))
    .filter(pl.col("w").str.len_bytes() > 0)
    .group_by("w")
    .agg(pl.len().alias("n"))
    .sort(["n", "w"], descending=[True, False])
    .head(10)
)
print([tuple(r) for r in words.collect().rows()])
