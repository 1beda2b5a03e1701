"""Capture: execution hooks turned into provenance events, written by one collector thread.

Why this shape (SAMbA, document 001): provenance must be complete — every run, stage, task and
data element — yet never slow the run down. So nothing here touches the database on the
scheduler's path. The hook runs in the driver between scheduling decisions and only *describes*
what happened as ``(verb, table, row)`` events on a queue; one :class:`Collector` thread batches
them (every ``FLUSH_SECONDS`` or ``FLUSH_EVENTS``) into one transaction each. Workers never talk to
the store: what they know (pids, rows, bytes, content hashes, phases) already comes back in their
task results.

Queries *during* a run see every batch committed so far (SQLite in WAL mode lets readers in while
the collector writes; PostgreSQL's MVCC does the same). A run killed with ``kill -9`` leaves its
provenance readable up to the last flushed batch with status ``running``; queries report such a
run as ``interrupted`` once its driver process is gone (:func:`riera.provenance.runs`).

What is captured:

- *prospective*, when the run starts and before any task runs: each operator of the logical plan
  (name, kind, the user function's qualified name and a hash of its source, parameters, inputs);
- *retrospective*: the run (user, host, pid, script and its hash, argv, settings, versions), its
  stages, every task attempt (worker pid, times, rows/bytes in and out, status, error, phase times),
  and data elements — input splits, exchanged partitions (with a content hash), output files —
  linked to tasks by ``used`` and ``generated``.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import inspect
import json
import logging
import marshal
import os
import platform
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from riera.config import Settings
from riera.exec.hooks import Hooks, RunInfo, StageInfo, TaskInfo

log = logging.getLogger(__name__)

Event = tuple[str, str, dict[str, Any]]

FLUSH_SECONDS = 0.25
FLUSH_EVENTS = 5000
WRITE_PATIENCE = 600.0  # seconds the end of a run waits for one batch still being written


def utc(ts: float) -> datetime | None:
    """Epoch seconds as an aware UTC datetime (``None`` for 0: not yet)."""
    return datetime.fromtimestamp(ts, UTC) if ts else None


# -- the collector -----------------------------------------------------------------------------


class Collector:
    """One thread that owns the store's writing connection and commits events in batches.

    :meth:`emit` never blocks on the database. :meth:`flush` waits until everything emitted so
    far is committed (the end of a run calls it, so queries after a run see all of it). A store
    that fails to write (PostgreSQL restarting…) keeps the events and retries at the next flush;
    the run goes on.
    """

    def __init__(self, open_store: Callable[[], Any]) -> None:
        self.store = open_store()
        self._lock = threading.Lock()  # the store's writing connection: this thread or declare()
        self._queue: queue.SimpleQueue[Event | threading.Event | None] = queue.SimpleQueue()
        self._failed: list[Event] = []
        self.last_error: str | None = None
        self.written = 0  # events committed so far (flush watches it for progress)
        self._writing_since: float | None = None  # monotonic start of the write in progress
        self._thread = threading.Thread(target=self._loop, name="riera-provenance", daemon=True)
        self._thread.start()

    def emit(self, events: list[Event]) -> None:
        for e in events:
            self._queue.put(e)

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything emitted so far is written; ``False`` if it was not.

        Gives up after ``timeout`` seconds *without progress*: a batch of record lineage can take
        longer to commit, and is waited for while the store is writing (up to
        :data:`WRITE_PATIENCE` seconds for one batch) and while batches keep completing."""
        if not self._thread.is_alive():
            return False
        done = threading.Event()
        self._queue.put(done)
        progress, since = self.written, time.monotonic()
        while not done.wait(min(1.0, timeout)):
            now = time.monotonic()
            writing = self._writing_since is not None and now - self._writing_since < WRITE_PATIENCE
            if self.written != progress or writing:
                progress, since = self.written, now
            elif now - since >= timeout or not self._thread.is_alive():
                return False
        return not self._failed

    def declare(self, dataset: str, columns: dict[str, str]) -> None:
        """Create the domain table of ``dataset`` now (a conflict fails the run before it starts)."""
        with self._lock:
            self.store.ensure_domain_table(dataset, columns)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(30)
        self.store.close()

    def _loop(self) -> None:
        batch: list[Event] = []
        waiters: list[threading.Event] = []
        deadline = time.monotonic() + FLUSH_SECONDS
        stop = False
        while not stop:
            try:
                item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    waiters.append(item)
                else:
                    batch.append(item)
                    if len(batch) < FLUSH_EVENTS:
                        continue
            except queue.Empty:
                pass
            if batch or waiters or self._failed:
                self._write(batch)
                batch = []
                for w in waiters:
                    w.set()
                waiters = []
            deadline = time.monotonic() + FLUSH_SECONDS

    def _write(self, batch: list[Event]) -> None:
        events = self._failed + batch
        if not events:
            return
        try:
            self._writing_since = time.monotonic()
            try:
                with self._lock:
                    self.store.write(events)
            finally:
                self._writing_since = None
            self.written += len(events)
        except Exception as err:  # keep them; the next flush tries again
            if self.last_error is None:
                log.warning("provenance: cannot write to %s (%s); retrying", self.store.url, err)
            self.last_error = str(err)
            self._failed = events
        else:
            self._failed = []
            self.last_error = None


# -- the hook ----------------------------------------------------------------------------------


class ProvenanceHook(Hooks):
    """Describes each run, stage and task as store events (see the module docstring)."""

    def __init__(self, settings: Settings, collector: Collector) -> None:
        self.settings = settings
        self.collector = collector
        self.host = socket.gethostname()
        self._elements: dict[tuple[str, str, Any], str] = {}  # (backend, location, batches) -> id
        self._element_no = 0
        self._numbers: dict[str, int] = {}  # element id -> element_no as stored
        self._run_id = ""
        self._output_dir = ""  # where the run's output files are committed, if it writes files
        self._capture: dict[str, str] = {}  # stage id -> off | tasks | records
        self._readers: dict[str, Any] = {}  # stage id -> its reader (names what tasks read)
        self._versions: Versions | None = None

    # run ------------------------------------------------------------------------------------
    def on_run_start(self, run: RunInfo) -> None:
        self._elements.clear()
        self._numbers.clear()
        self._readers.clear()
        self._element_no = 0
        self._run_id = run.run_id
        self._output_dir = (
            str(getattr(run.root, "path", "")) if run.action.startswith("write") else ""
        )
        self._capture = run.stage_capture  # live: an adaptive plan adds stages as it goes
        self._versions = Versions.start(self.settings, run)
        script, script_hash = _script()
        events: list[Event] = [
            (
                "put",
                "runs",
                {
                    "run_id": run.run_id,
                    "status": "running",
                    "action": run.action,
                    "user_name": _user(),
                    "host": self.host,
                    "pid": os.getpid(),
                    "started_at": utc(run.started),
                    "workers": run.workers,
                    "exchange": run.exchange,
                    "executor": run.executor,
                    "capture": self.settings.provenance,
                    "settings": self.settings.model_dump_json(),
                    "riera_version": _riera_version(),
                    "python_version": platform.python_version(),
                    "script": script,
                    "script_hash": script_hash,
                    "argv": json.dumps(sys.argv),
                    "plan": json.dumps(run.plan),
                },
            )
        ]
        if run.root is not None:
            events += [("put", "operators", row) for row in operator_rows(run.run_id, run.root)]
        self.collector.emit(events)

    def on_run_end(self, run: RunInfo) -> None:
        if self._versions is not None:
            for stage_id in list(self._versions.pending):
                self.collector.emit(self._versions.commit(stage_id, "unfinished"))
            self._versions.close()
            self._versions = None
        self.collector.emit(
            [
                (
                    "put",
                    "runs",
                    {
                        "run_id": run.run_id,
                        "status": run.status,
                        "ended_at": utc(run.ended),
                        "seconds": run.seconds,
                        "exchange": run.exchange,
                        "error": run.error,
                    },
                )
            ]
        )
        if not self.collector.flush():
            log.warning(
                "provenance of run %s may be incomplete in %s: %s",
                run.run_id,
                self.collector.store.url,
                self.collector.last_error or "the collector did not answer",
            )

    # stage ----------------------------------------------------------------------------------
    def on_stage_start(self, stage: StageInfo) -> None:
        self._readers[stage.stage_id] = stage.reader
        self.collector.emit([("put", "stages", self._stage_row(stage))])

    def on_stage_end(self, stage: StageInfo) -> None:
        events: list[Event] = [("put", "stages", self._stage_row(stage))]
        if self._versions is not None:
            events += self._versions.commit(stage.stage_id, stage.status)
        self.collector.emit(events)

    def _stage_row(self, stage: StageInfo) -> dict[str, Any]:
        return {
            "run_id": stage.run_id,
            "stage_id": stage.stage_id,
            "label": stage.label,
            "num_tasks": stage.num_tasks,
            "status": stage.status,
            "started_at": utc(stage.started),
            "ended_at": utc(stage.ended),
            "seconds": max(0.0, stage.ended - stage.started) if stage.ended else None,
            "rows_out": stage.rows_out,
            "bytes_out": stage.bytes_out,
            "retries": stage.retries,
            "spilled_bytes": stage.spilled_bytes,
        }

    # task -----------------------------------------------------------------------------------
    def on_task_start(self, task: TaskInfo) -> None:
        self.collector.emit([("put", "tasks", self._task_row(task))])

    def on_task_end(self, task: TaskInfo) -> None:
        events: list[Event] = [("put", "tasks", self._task_row(task))]
        if task.status == "ok" and self._capture.get(task.stage_id) != "off":
            tid = task_id(task)
            for element in self._inputs(task):
                events += element.events(self)
                events.append(
                    (
                        "put",
                        "used",
                        {"run_id": task.run_id, "task_id": tid, "element_id": element.id},
                    )
                )
            for i, ref in enumerate(task.refs):
                eid = f"{task.stage_id}/t{task.index}/p{i}"
                self._elements[(ref.backend, ref.location, ref.batches)] = eid
                digest = task.hashes[i] if i < len(task.hashes) else None
                events.append(("put", "elements", self._element_row(
                    task.run_id, eid, "partition", task.stage_id, task.index, i, ref.rows,
                    ref.nbytes, digest, ref.location, ref.backend,
                )))  # fmt: skip
                events.append(("put", "generated", {
                    "run_id": task.run_id, "element_id": eid, "task_id": tid,
                }))  # fmt: skip
            if task.part:
                name = str(task.part.get("file", task.index))
                eid = f"output/{name}"
                events.append(("put", "elements", self._element_row(
                    task.run_id, eid, "output", task.stage_id, task.index, None,
                    task.part.get("rows"), task.part.get("bytes"), None,
                    os.path.join(self._output_dir, name), "file",
                )))  # fmt: skip
                events.append(("put", "generated", {
                    "run_id": task.run_id, "element_id": eid, "task_id": tid,
                }))  # fmt: skip
        if task.records:  # after the elements they may update
            events += self._records(task)
        self.collector.emit(events)

    def _records(self, task: TaskInfo) -> list[Event]:
        """Store events for what the task's operators recorded (see :mod:`.taskctx`)."""
        tid = task_id(task)
        out_element = self._single_output(task)
        events: list[Event] = []
        for kind, rec in task.records:
            if kind == "program":
                row = dict(rec)
                row.update(run_id=task.run_id, task_id=tid, started_at=utc(rec["started_at"]))
                events.append(("put", "programs", row))
            elif kind == "file":
                events += self._file(task, tid, rec)
            elif kind == "derivations":
                events += self._derivations(task, rec)
            elif kind == "domain":
                row = {k: v for k, v in rec.items() if k != "dataset"}
                row.update(run_id=task.run_id, element_id=out_element)
                events.append(("add", f"domain_{rec['dataset']}", row))
        return events

    def _file(self, task: TaskInfo, tid: str, rec: dict[str, Any]) -> list[Event]:
        path = f"{rec['step']}/{rec['group']}/{rec['name']}"
        branch = self._versions.branch if self._versions is not None else None
        if rec.get("source"):  # a file read from disk: the element the task used
            eid = f"file:{rec['source']}"
            events: list[Event] = []
            if rec.get("blob"):
                events.append(("put", "elements", {"run_id": task.run_id, "element_id": eid,
                                                   "content_hash": f"git:{rec['blob']}"}))  # fmt: skip
        else:  # a program's output: a new element the task generated
            eid = f"file:{task.stage_id}/{path}"
            events = [
                ("put", "elements", self._element_row(
                    task.run_id, eid, "file", task.stage_id, task.index, None, None,
                    rec["bytes"], f"git:{rec['blob']}", f"{branch}:{task.stage_id}/{path}", "git",
                )),
                ("put", "generated", {"run_id": task.run_id, "element_id": eid, "task_id": tid}),
            ]  # fmt: skip
        if self._versions is not None and rec.get("blob"):
            self._versions.add(task.stage_id, {
                "run_id": task.run_id, "stage_id": task.stage_id, "path": path,
                "element_id": eid, "blob": rec["blob"], "bytes": rec["bytes"],
                "op_id": rec["op_id"], "step": rec["step"], "group_key": rec["group"],
                "name": rec["name"], "branch": branch,
            })  # fmt: skip
        return events

    def _derivations(self, task: TaskInfo, blocks: list[dict[str, Any]]) -> list[Event]:
        """Record lineage in blocks: slots and partitions of the task become element numbers."""
        inputs = [self._numbers.get(e.id, 0) for e in self._inputs(task)]
        if task.part:
            outputs = [self._numbers.get(f"output/{task.part.get('file', task.index)}", 0)]
        else:
            outputs = [
                self._numbers.get(f"{task.stage_id}/t{task.index}/p{i}", 0)
                for i in range(len(task.refs))
            ]
        if not inputs or not outputs:
            return []
        from riera.provenance.blocks import as_row

        return [
            ("add", "derivation_blocks",
             as_row(b, task.run_id, outputs[b["out_key"]], inputs[b["in_key"]]))
            for b in blocks
        ]  # fmt: skip

    @staticmethod
    def _single_output(task: TaskInfo) -> str | None:
        """The element a task wrote, when it wrote exactly one (domain rows point at it)."""
        if task.part:
            return f"output/{task.part.get('file', task.index)}"
        if len(task.refs) == 1:
            return f"{task.stage_id}/t{task.index}/p0"
        return None

    def _task_row(self, task: TaskInfo) -> dict[str, Any]:
        return {
            "run_id": task.run_id,
            "task_id": task_id(task),
            "stage_id": task.stage_id,
            "task_index": task.index,
            "attempt": task.attempt,
            "worker_pid": task.worker_pid,
            "host": task.host or self.host,
            "status": task.status,
            "started_at": utc(task.started),
            "ended_at": utc(task.ended),
            "seconds": task.seconds if task.ended else None,
            "rows_in": task.rows_in,
            "rows_out": task.rows_out,
            "bytes_in": task.bytes_in,
            "bytes_out": task.bytes_out,
            "error": task.error,
            "read_seconds": task.phases.get("read"),
            "ops_seconds": task.phases.get("ops"),
            "write_seconds": task.phases.get("write"),
        }

    def _element_row(
        self,
        run_id: str,
        element_id: str,
        kind: str,
        stage_id: str | None,
        task_index: int | None,
        partition: int | None,
        rows: int | None,
        nbytes: int | None,
        digest: str | None,
        location: str,
        backend: str,
    ) -> dict[str, Any]:
        self._element_no += 1
        self._numbers[element_id] = self._element_no
        return {
            "run_id": run_id,
            "element_id": element_id,
            "element_no": self._element_no,
            "stage_id": stage_id,
            "task_index": task_index,
            "partition": partition,
            "kind": kind,
            "rows": rows,
            "bytes": nbytes,
            "content_hash": digest,
            "location": location,
            "backend": backend,
        }

    def _inputs(self, task: TaskInfo) -> Iterator[_Input]:
        """The data elements a task read, as its stage's reader names them."""
        reader = self._readers.get(task.stage_id)
        if reader is None:
            return
        for e in reader.elements(task.input):
            ref = e.ref
            if ref is None:  # data from outside the run: a split, a file, a range
                yield _Input(e.id, (e.kind, e.rows, e.nbytes, e.where, e.backend))
                continue
            key = (ref.backend, ref.location, ref.batches)
            known = self._elements.get(key)
            if known is not None:
                yield _Input(known, None)
            else:  # a driver-side put (in-memory source data): an element of its own
                eid = f"source/{ref.location.rsplit('/', 1)[-1]}"
                if ref.batches:
                    eid += f"[{ref.batches[0]}:{ref.batches[1]}]"
                self._elements[key] = eid
                yield _Input(eid, ("source", ref.rows, ref.nbytes, ref.location, ref.backend))


@dataclasses.dataclass
class _Input:
    id: str
    new: tuple[str, int | None, int | None, str, str] | None  # kind, rows, bytes, where, backend

    def events(self, hook: ProvenanceHook) -> list[Event]:
        if self.new is None:
            return []
        kind, rows, nbytes, location, backend = self.new
        stored = hook._numbers.get(self.id)
        row = hook._element_row(
            hook._run_id, self.id, kind, None, None, None, rows, nbytes, None, location, backend
        )
        if stored is not None:  # "add" keeps the first row (and number) of an element
            hook._numbers[self.id] = stored
        self.new = None
        return [("add", "elements", row)]


class Versions:
    """The Git side of one run: file versions pending per stage, committed when the stage ends."""

    def __init__(self, repo: Any, run_id: str) -> None:
        import tempfile

        from riera.blackbox.versioning import branch_of

        self.repo = repo
        self.run_id = run_id
        self.branch = branch_of(run_id)
        self.pending: dict[str, list[dict[str, Any]]] = {}
        fd, self.index = tempfile.mkstemp(prefix=f"riera-index-{run_id}-")
        os.close(fd)
        os.unlink(self.index)  # git creates it; an empty file is not a valid index

    @classmethod
    def start(cls, settings: Settings, run: RunInfo) -> Versions | None:
        """Versions for ``run`` when it has file groups and versioning is on (else None)."""
        from riera.blackbox.versioning import GitRepo, git_available
        from riera.plan import nodes as n

        repo_path = settings.versions_repo
        if repo_path is None or run.root is None:
            return None
        if not any(isinstance(x, n.FileGroupSource | n.RunProgram) for x in n.walk(run.root)):
            return None
        if not git_available():
            log.warning("provenance: git is not on PATH, so file groups are not versioned")
            return None
        return cls(GitRepo(repo_path).ensure(), run.run_id)

    def add(self, stage_id: str, row: dict[str, Any]) -> None:
        self.pending.setdefault(stage_id, []).append(row)

    def commit(self, stage_id: str, status: str) -> list[Event]:
        """Commit a stage's files; the file_versions rows and element links, with the commit.

        A stage that failed still commits what its tasks wrote (that is what one debugs), and
        its commit message says so: a branch never passes partial files off as a finished stage.
        """
        rows = self.pending.pop(stage_id, [])
        if not rows:
            return []
        from riera.errors import ProvenanceError

        entries = [("100644", r["blob"], f"{stage_id}/{r['path']}") for r in rows]
        try:
            commit = self.repo.commit(
                self.run_id,
                entries,
                f"run {self.run_id}, {stage_id} ({status}): {len(rows)} file(s)",
                self.index,
            )
        except ProvenanceError as err:
            log.warning("provenance: cannot commit the files of %s: %s", stage_id, err)
            commit = None
        events: list[Event] = [("put", "file_versions", {**r, "commit_sha": commit}) for r in rows]
        events += [
            ("put", "elements", {"run_id": r["run_id"], "element_id": r["element_id"],
                                 "git_commit": commit})
            for r in rows
        ]  # fmt: skip
        return events

    def close(self) -> None:
        for leftover in (self.index, self.index + ".lock"):
            if os.path.exists(leftover):
                os.unlink(leftover)


def domain_declarations(root: Any) -> list[tuple[str, dict[str, str]]]:
    """The ``Dataset.domain`` declarations of a plan (merged per dataset name)."""
    from riera.plan import nodes as n

    found: dict[str, dict[str, str]] = {}
    if root is None:
        return []
    for node in n.walk(root):
        if isinstance(node, n.Domain):
            found.setdefault(node.dataset, {}).update(dict(node.columns))
    return list(found.items())


def task_id(task: TaskInfo) -> str:
    return f"{task.stage_id}/t{task.index}/a{task.attempt}"


# -- prospective: the plan's operators ---------------------------------------------------------


def operator_rows(run_id: str, root: Any) -> list[dict[str, Any]]:
    """One row per logical operator, sources first."""
    from riera.plan import nodes as n

    rows = []
    for position, node in enumerate(n.walk(root)):  # sources first
        fn = _user_function(node)
        qualname, source_hash = function_identity(fn) if fn is not None else (None, None)
        rows.append(
            {
                "run_id": run_id,
                "op_id": node.name,
                "kind": node.kind,
                "label": node.label(),
                "function": qualname,
                "source_hash": source_hash,
                "params": json.dumps({k: _jsonable(v) for k, v in node.params().items()}),
                "inputs": json.dumps([i.name for i in node.inputs]),
                "dataset": getattr(node, "dataset_name", None),
                "position": position,
            }
        )
    return rows


def _user_function(node: Any) -> Callable[..., Any] | None:
    fn = getattr(node, "fn", None)
    if callable(fn):
        return fn
    for spec in getattr(node, "aggs", ()) or ():
        func = getattr(spec, "func", None)
        if callable(func):
            return func
    return None


def function_identity(fn: Callable[..., Any]) -> tuple[str, str | None]:
    """``module.qualname`` of a user function and a hash of its source (or bytecode).

    >>> function_identity(len)[0]
    'builtins.len'
    """
    target = getattr(fn, "__func__", fn)
    module = getattr(target, "__module__", None) or type(target).__module__
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    try:
        source = inspect.getsource(target).encode()
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        source = marshal.dumps(code) if code is not None else b""
    digest = "sha256:" + hashlib.sha256(source).hexdigest()[:16] if source else None
    return f"{module}.{qualname}", digest


def _jsonable(v: Any) -> Any:
    if isinstance(v, int | float | bool | str) or v is None:
        return v
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    s = repr(v)
    return s if len(s) <= 200 else s[:197] + "..."


def _script() -> tuple[str | None, str | None]:
    """The main script's path and content hash (``None`` in a REPL or ``python -c``)."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path:
        return None, None
    p = Path(path).resolve()
    try:
        return str(p), "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError:
        return str(p), None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _riera_version() -> str:
    from riera.version import __version__

    return __version__
