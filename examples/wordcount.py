"""Word count, written the readable way: rows in, rows out.

Run:  riera run examples/wordcount.py [PATH ...]    (default: this repository's README and docs)

`riera wordcount PATH` runs the fast version (Arrow kernels over whole partitions, see
riera/apps/wordcount/job.py); this example shows the same dataflow with row functions.
"""

import re
import string
import sys
from pathlib import Path

import riera

paths = sys.argv[1:] or [str(p) for p in Path(__file__).resolve().parent.parent.glob("*.md")]


def words(row):
    for token in re.split(r"\s+", row["text"]):
        word = token.lower().strip(string.punctuation)
        if word:
            yield {"word": word}


counts = (
    riera.read_text(paths)
    .flat_map(words)  # fused with the read into one task per partition
    .group_by("word")
    .count()  # partial counts per partition, then a hash shuffle
    .sort(["count", "word"], descending=[True, False])
)
counts.explain()
for row in counts.take(15):
    print(f"{row['word']}\t{row['count']}")
