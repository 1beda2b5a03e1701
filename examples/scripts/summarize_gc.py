"""Summarize a ranked GC table: the black-box "analysis tool" of examples/provenance_workflow.py.

Usage: summarize_gc.py RANKED_TSV SUMMARY_JSON

RANKED_TSV has one read per line: ``read_id<TAB>length<TAB>gc_fraction``. The summary holds the
number of reads, mean length, mean GC fraction, how many reads are GC-rich (> 0.6) and the top
read. Exits with code 2 (and a message on stderr) on a malformed line, like a real tool would.
"""

import json
import sys


def main(src: str, dst: str) -> int:
    reads = 0
    total_len = 0
    total_gc = 0.0
    rich = 0
    top = None
    with open(src, encoding="ascii") as fh:
        for n, line in enumerate(fh, 1):
            parts = line.rstrip("\n").split("\t")
            try:
                read_id, length, gc = parts[0], int(parts[1]), float(parts[2])
            except (IndexError, ValueError):
                print(f"{src}:{n}: malformed line {line!r}", file=sys.stderr)
                return 2
            reads += 1
            total_len += length
            total_gc += gc
            rich += gc > 0.6
            if top is None:
                top = read_id
    summary = {
        "reads": reads,
        "mean_len": total_len / reads if reads else 0.0,
        "mean_gc": total_gc / reads if reads else 0.0,
        "gc_rich": rich,
        "top_read": top,
    }
    with open(dst, "w", encoding="ascii") as fh:
        json.dump(summary, fh)
    print(f"summarized {reads} reads")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        sys.exit(64)
    sys.exit(main(sys.argv[1], sys.argv[2]))
