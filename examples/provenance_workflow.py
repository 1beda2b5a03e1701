"""A scientific-style workflow of black-box programs, with its provenance queried during and after.

Run:  python examples/provenance_workflow.py [WORK_DIR] [--samples N] [--reads N]

Like SAMbA's use cases (document 001), the science happens in external programs that talk through
files; Riera stages each sample's files in memory, runs the programs, and records everything:

    reads/<sample>.L1.txt, .L2.txt   (generated here: read_id<TAB>DNA sequence)
      │  read_file_groups(by="stem")            one file group per sample
      ├─ concat     cat {inputs} > reads.txt     merge the two lanes
      ├─ split      split -l 5000 reads.txt      chunks, as a tool would shard work
      ├─ gc         awk … chunk_* > gc.tsv       per-read length and GC fraction
      ├─ rank       sort -k3,3gr gc.tsv          "align": order reads by GC
      ├─ summarize  python summarize_gc.py       a small script → summary.json
      │  .domain("gc_samples", {...})            attributes from summary.json, typed in SQL
      └─ sort by mean GC → summary CSV

While the run goes on, a watcher thread queries the provenance store with SQL (its own read-only
connection, as another process would) and prints what it sees. Afterwards the script queries the
domain table numerically, exports the run as PROV-JSON and a PNG graph, restores the files of one
step from Git and checks them against the run's output, and (with ``riera[raw]``) queries the
output CSV in place with DuckDB. From another terminal, the same while it runs:

    riera prov runs
    riera prov sql "SELECT group_key, step, seconds FROM programs ORDER BY started_at DESC"
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import riera
import riera.provenance as prov
from riera.errors import ProvenanceError

HERE = Path(__file__).resolve().parent
ATTRIBUTES = {
    "sample": "str",
    "reads": "int",
    "mean_len": "float",
    "mean_gc": "float",
    "gc_rich": "int",
}
# Braces that belong to the program are doubled: single braces are Riera's placeholders.
GC_AWK = '{{s=$2; n=length(s); g=gsub(/[GC]/,"",s); printf "%s\\t%d\\t%.4f\\n", $1, n, g/n}}'


def generate(reads_dir: Path, samples: int, reads: int) -> None:
    """Two lanes of random reads per sample; each sample has its own GC bias."""
    rng = random.Random(2026)
    reads_dir.mkdir(parents=True)
    for s in range(samples):
        gc = 0.35 + 0.3 * s / max(1, samples - 1)
        weights = [(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2]  # A C G T
        for lane in (1, 2):
            lines = []
            for r in range(reads):
                length = rng.randint(50, 150)
                seq = "".join(rng.choices("ACGT", weights, k=length))
                lines.append(f"S{s:02d}L{lane}R{r:06d}\t{seq}\n")
            (reads_dir / f"S{s:02d}.L{lane}.txt").write_text("".join(lines))


def summary_of(row: dict[str, Any]) -> dict[str, Any]:
    """The domain attributes of one sample: its program's summary.json, typed."""
    files = {f["name"]: f["data"] for f in row["files"]}
    summary = json.loads(files["summary.json"])
    return {"sample": row["sample"], **{k: summary[k] for k in ATTRIBUTES if k != "sample"}}


def pipeline(reads_dir: Path, out_dir: Path) -> dict[str, Any]:
    groups = riera.read_file_groups(
        str(reads_dir / "*.txt"),
        by="stem",
        metadata=lambda key, paths: {"sample": key, "lanes": len(paths)},
        partition_bytes=1,  # one task per sample: programs, not bytes, set the pace
    )
    analysed = (
        groups.run_program(["cat", "{inputs}"], stdout="reads.txt", name="concat")
        .run_program(
            ["split", "-l", "5000", "-d", "reads.txt", "chunk_"], outputs="chunk_*", name="split"
        )
        .run_program(["awk", "-F", "\t", GC_AWK, "{inputs}"], stdout="gc.tsv", name="gc")
        .run_program(
            ["sort", "-t", "\t", "-k3,3gr", "-k1,1", "gc.tsv"], stdout="ranked.tsv", name="rank"
        )
        .run_program(
            [
                sys.executable,
                str(HERE / "scripts" / "summarize_gc.py"),
                "ranked.tsv",
                "summary.json",
            ],
            outputs="summary.json",
            keep_inputs=False,
            name="summarize",
            timeout=120,
        )
        .domain("gc_samples", ATTRIBUTES, extract=summary_of)
    )
    table = analysed.map(summary_of).sort("mean_gc", descending=True)
    return table.write_csv(str(out_dir), mode="overwrite")


class Watcher(threading.Thread):
    """Polls the store while the run goes on and prints what changed."""

    def __init__(self, since: float) -> None:
        super().__init__(name="provenance-watcher", daemon=True)
        self.since = since
        self.stop = threading.Event()
        self.seen_running: list[tuple[int, int]] = []  # (programs, samples) seen mid-run

    def run(self) -> None:
        last = None
        while not self.stop.wait(0.1):
            try:
                found = prov.sql(
                    "SELECT run_id, status FROM runs ORDER BY started_at DESC LIMIT 1"
                ).rows
                if not found:
                    continue
                run_id, status = found[0]
                programs = prov.sql(
                    "SELECT count(*) FROM programs WHERE run_id = :r", {"r": run_id}
                ).rows[0][0]
                samples = prov.sql(
                    "SELECT sample, mean_gc FROM domain_gc_samples WHERE run_id = :r "
                    "ORDER BY mean_gc DESC",
                    {"r": run_id},
                ).rows
            except ProvenanceError:
                continue  # the run has not declared its tables yet
            now = (status, programs, len(samples))
            if now != last and status == "running":
                last = now
                self.seen_running.append((programs, len(samples)))
                best = (
                    f"; highest GC so far {samples[0][0]} ({samples[0][1]:.3f})" if samples else ""
                )
                print(
                    f"  [during the run, {time.time() - self.since:4.1f} s] {status}: "
                    f"{programs} program runs recorded, {len(samples)} sample(s) "
                    f"summarized{best}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("work", nargs="?", help="working directory (default: a new temp dir)")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--reads", type=int, default=20_000, help="reads per lane")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="riera-workflow-"))
    work.mkdir(parents=True, exist_ok=True)
    reads_dir = work / "reads"
    if not reads_dir.exists():
        generate(reads_dir, args.samples, args.reads)
    print(f"input: {args.samples} samples × 2 lanes × {args.reads:,} reads in {reads_dir}")

    riera.init(progress="off")
    watcher = Watcher(time.time())
    watcher.start()
    try:
        manifest = pipeline(reads_dir, work / "summary")
    finally:
        watcher.stop.set()
        watcher.join()
    print(f"output: {manifest['rows']} rows in {work / 'summary'}")

    run_id = prov.runs(1)[0]["run_id"]
    print(f"\nrun {run_id}: queried after the run")
    rich = prov.sql(
        "SELECT sample, reads, round(mean_gc, 3) AS mean_gc, gc_rich FROM domain_gc_samples "
        "WHERE run_id = :r AND mean_gc > 0.5 ORDER BY mean_gc DESC",
        {"r": run_id},
    )
    print("  samples with mean GC > 0.5 (domain_gc_samples, a typed SQL table):")
    for row in rich.to_dicts():
        print(f"    {row}")
    steps = prov.sql(
        "SELECT step, count(*) AS runs, round(avg(seconds), 3) AS avg_s, "
        "sum(CASE WHEN exit_code = 0 THEN 0 ELSE 1 END) AS failed FROM programs "
        "WHERE run_id = :r GROUP BY step ORDER BY min(started_at)",
        {"r": run_id},
    )
    print("  programs per step:")
    for row in steps.to_dicts():
        print(f"    {row}")

    from riera.provenance.export import export

    exports = work / "provenance"
    exports.mkdir(exist_ok=True)
    prov.on_run(run_id, lambda s, r: export(s, r, "prov-json", exports / "run.prov.json"))
    prov.on_run(run_id, lambda s, r: export(s, r, "png", exports / "run.png"))
    print(f"  exported {exports / 'run.prov.json'} and {exports / 'run.png'}")

    restored = work / "restored-summaries"
    paths = prov.checkout(run_id, "summarize", restored)
    produced = {r["sample"]: r for r in _read_csv(work / "summary")}
    for rel in paths:
        sample = rel.split("/", 1)[0]
        summary = json.loads((restored / rel).read_text())
        assert summary["reads"] == produced[sample]["reads"], rel
    print(
        f"  restored {len(paths)} summary.json file(s) of step 'summarize' from Git into "
        f"{restored}; they match the output"
    )

    try:
        from riera.provenance.raw import raw_query

        answer = raw_query(
            f"SELECT count(*) AS samples, round(max(mean_gc), 3) AS top_gc "
            f"FROM '{work / 'summary'}/*.csv'"
        )
        print(f"  in place with DuckDB over the output CSV: {answer.to_dicts()[0]}")
    except ImportError:
        print("  (pip install 'riera[raw]' to query the output files in place with DuckDB)")

    mid_run = [s for s in watcher.seen_running if s[0] > 0]
    print(
        f"\nthe watcher saw the run in progress {len(watcher.seen_running)} time(s), "
        f"{len(mid_run)} of them with programs already recorded"
    )
    riera.shutdown()
    return 0


def _read_csv(directory: Path) -> list[dict[str, Any]]:
    import pyarrow.csv as pc

    rows: list[dict[str, Any]] = []
    for part in sorted(directory.glob("part-*.csv")):
        rows += pc.read_csv(part).to_pylist()
    return rows


if __name__ == "__main__":
    sys.exit(main())
