"""A synthetic provenance store of the explorer's size target: one run of 10,001 tasks on 8
workers that read and write 52,501 elements, with programs, Git file versions and a domain
table, beside 300 smaller runs (for paging the run list)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from riera.provenance.store import ProvenanceStore

BIG = "run-big"
STAGES, TASKS_PER_STAGE, OUT_PER_TASK, WORKERS = 4, 2500, 5, 8
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def fill(store: ProvenanceStore, runs: int = 300) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(runs):
        events.append(("put", "runs", {
            "run_id": f"run-{i:04d}", "status": "failed" if i % 50 == 7 else "ok",
            "action": "write_parquet", "started_at": T0 + timedelta(seconds=i),
            "ended_at": T0 + timedelta(seconds=i + 1), "seconds": 1.0, "workers": 2,
            "error": "ValueError: bad record" if i % 50 == 7 else None}))  # fmt: skip
    events.append(("put", "runs", {
        "run_id": BIG, "status": "ok", "action": "write_parquet", "workers": WORKERS,
        "started_at": T0 + timedelta(hours=1), "ended_at": T0 + timedelta(hours=2),
        "seconds": 3600.0}))  # fmt: skip
    for k in range(STAGES):
        events.append(("put", "operators", {
            "run_id": BIG, "op_id": f"op{k}", "kind": "map", "label": f"step {k}",
            "inputs": [f"op{k - 1}"] if k else [], "position": k}))  # fmt: skip
        events.append(("put", "stages", {
            "run_id": BIG, "stage_id": f"stage-{k}", "label": f"stage {k}",
            "num_tasks": TASKS_PER_STAGE, "status": "ok"}))  # fmt: skip
    element_no = 0
    previous: list[str] = []
    for k in range(STAGES):
        made: list[str] = []
        for t in range(TASKS_PER_STAGE):
            task = f"stage-{k}/t{t}"
            start = T0 + timedelta(hours=1, seconds=k * 900 + t * 0.36)
            events.append(("put", "tasks", {
                "run_id": BIG, "task_id": task, "stage_id": f"stage-{k}", "task_index": t,
                "attempt": 0, "worker_pid": 1000 + t % WORKERS, "host": "node-a",
                "status": "failed" if t % 997 == 3 else "ok", "started_at": start,
                "ended_at": start + timedelta(seconds=2.5), "seconds": 2.5}))  # fmt: skip
            if k == 0:
                split = f"split/{t}"
                events.append(("put", "elements", {"run_id": BIG, "element_id": split,
                               "element_no": element_no, "kind": "split", "rows": 100}))  # fmt: skip
                element_no += 1
                inputs = [split]
            else:
                inputs = previous[t * OUT_PER_TASK : (t + 1) * OUT_PER_TASK]
            for e in inputs:
                events.append(("put", "used", {"run_id": BIG, "task_id": task, "element_id": e}))
            for p in range(OUT_PER_TASK):
                out = f"{task}/p{p}"
                events.append(("put", "elements", {
                    "run_id": BIG, "element_id": out, "element_no": element_no,
                    "stage_id": f"stage-{k}", "task_index": t, "partition": p,
                    "kind": "output" if k == STAGES - 1 else "partition", "rows": 20,
                    "bytes": 800}))  # fmt: skip
                events.append(("put", "generated", {"run_id": BIG, "element_id": out,
                                                    "task_id": task}))  # fmt: skip
                element_no += 1
                made.append(out)
        previous = made
    # a report that read the first 100 outputs: its lineage up is "12 … +88 more"
    events.append(("put", "tasks", {"run_id": BIG, "task_id": "report/t0", "stage_id": "report",
                   "status": "ok", "worker_pid": 1000, "host": "node-a"}))  # fmt: skip
    for out in previous[:100]:
        events.append(("put", "used", {"run_id": BIG, "task_id": "report/t0", "element_id": out}))
    events.append(("put", "elements", {"run_id": BIG, "element_id": "report/summary",
                   "element_no": element_no, "kind": "output", "rows": 100}))  # fmt: skip
    events.append(("put", "generated", {"run_id": BIG, "element_id": "report/summary",
                                        "task_id": "report/t0"}))  # fmt: skip
    for i in range(1000):
        events.append(("put", "programs", {
            "run_id": BIG, "task_id": f"stage-1/t{i}", "program_no": 0, "command": "sort",
            "argv": ["sort", "-k1", f"chunk-{i}.txt", "<script>x</script>"],
            "exit_code": 0 if i % 100 else 2, "seconds": 0.1, "stdout_tail": "",
            "stderr_tail": "sort: cannot read" if i % 100 == 0 else ""}))  # fmt: skip
        events.append(("put", "file_versions", {
            "run_id": BIG, "stage_id": "stage-1", "path": f"chunks/chunk-{i:04d}.txt",
            "commit_sha": f"{i:040x}", "branch": "riera/run-big", "bytes": 1000 + i}))  # fmt: skip
    store.write(events)
    table = store.ensure_domain_table("reads", {"score": "float", "length": "int", "sample": "str"})
    store.write([("add", table, {
        "run_id": BIG, "element_id": f"stage-3/t{i // 20}/p0", "row_no": i % 20,
        "score": (i * 37 % 1000) / 10, "length": i % 300, "sample": f"s{i % 7}"})
        for i in range(50_000)])  # fmt: skip
