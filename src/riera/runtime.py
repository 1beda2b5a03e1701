"""The session runtime: settings, the exchange, the warm worker pool, hooks — and one run at a time.

``riera.init()`` creates it (actions create a default one on first use); ``riera.shutdown()`` stops
the workers. A run builds the physical plan, computes each stage's task inputs from the results of
the stages it reads, runs the stage on the pool, and releases a stage's segments as soon as the last
stage reading them has finished. Whatever happens — success, a user exception, Ctrl-C, a worker
killed — everything the run put in the exchange is released by its run prefix before control
returns, and a write that did not complete is rolled back.
"""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from riera.config import Settings, load_settings
from riera.errors import ExchangeError, RieraError, RunCancelled, Terminated
from riera.exchange import available as available_exchanges
from riera.exchange import policy
from riera.exchange.base import SegmentKey
from riera.exec import base as executors
from riera.exec.hooks import HookList, Hooks, RunInfo, StageInfo
from riera.exec.worker import TaskResult
from riera.io import sinks
from riera.physical import ops, planner
from riera.physical import stage as ph
from riera.plan import nodes as n
from riera.version import __version__

if TYPE_CHECKING:
    from riera.provenance.capture import Collector

log = logging.getLogger(__name__)


@dataclass
class RunOutput:
    info: RunInfo
    table: pa.Table | None = None
    manifest: dict[str, Any] | None = None


class Runtime:
    """One per session: settings, exchange, worker pool and hooks."""

    def __init__(self, settings: Settings, hooks: list[Hooks] | None = None) -> None:
        if settings.exchange != "auto" and settings.exchange not in available_exchanges():
            raise ExchangeError(
                f"unknown exchange {settings.exchange!r}; available: auto, "
                f"{', '.join(available_exchanges())}"
            )
        # One budget for the whole session, fixed now so that every worker applies the same.
        self.shm_budget = policy.default_shm_budget(settings)
        settings = settings.replace(shm_budget=self.shm_budget)
        self.settings = settings
        self.exchanges = policy.Exchanges(settings)
        # The current run's exchange (writes to its chosen backend, reads any ref).
        self.exchange = self.exchanges.writer(policy.choose(settings, 0, self.shm_budget))
        self._owned_dirs = _local_dirs(settings)
        from riera.exchange import shm

        for d in self._owned_dirs:  # sweep what dead drivers left, then mark this one alive
            shm.sweep_dead_owners(d)
            shm.claim_owner(d)
        _handle_sigterm()
        # The configured executor; small runs of built-in operators use the in-process one
        # (``executors.choose``). Each is built on first use: a session of small runs never
        # starts a worker process.
        self._executors: dict[str, executors.Executor] = {}
        self.hooks = HookList(hooks or [])
        if _progress_enabled(settings):
            from riera.exec.progress import ProgressHook

            self.hooks.hooks.append(ProgressHook())
        self.provenance: Collector | None = None
        try:
            if settings.provenance != "off":
                self.provenance = _start_provenance(settings, self.hooks)
        except BaseException:  # a half-built runtime gives back what it took
            for d in self._owned_dirs:
                shm.release_owner(d)
            raise
        self.last_run: RunInfo | None = None
        self.cached: dict[str, pa.Table] = {}  # cache() results by node name, for the session
        self.closed = False
        self._lock = threading.Lock()

    def add_hooks(self, *hooks: Hooks) -> None:
        self.hooks.hooks.extend(hooks)

    @property
    def executor(self) -> executors.Executor:
        """The configured executor (``settings.executor``)."""
        return self.executor_named(self.settings.executor)

    def executor_named(self, name: str) -> executors.Executor:
        ex = self._executors.get(name)
        if ex is None:
            ex = self._executors[name] = executors.create(self.settings, name)
        return ex

    def shutdown(self) -> None:
        self.closed = True
        for ex in self._executors.values():
            ex.shutdown()
        if self.provenance is not None:
            self.provenance.close()
        from riera.exchange import shm

        for d in self._owned_dirs:
            shm.release_owner(d)

    # -- a run -----------------------------------------------------------------------------------
    def execute(
        self,
        root: n.Node,
        action: str,
        final_op: ops.Op | None = None,
        *,
        preview: int | None = None,
    ) -> RunOutput:
        if self.closed:
            raise RieraError(
                "this runtime was shut down (riera.shutdown() or a later riera.init()); "
                "run through riera.get_runtime() or the runtime riera.init() returned last"
            )
        with self._lock:
            return self._execute(self._with_caches(root), action, final_op, preview)

    # -- cache() -------------------------------------------------------------------------------
    def _with_caches(self, root: n.Node) -> n.Node:
        """``root`` with every ``cache()`` node replaced by its kept result, computing (and
        keeping) the results not kept yet — inner caches first."""

        def replace(node: n.Node) -> n.Node | None:
            if not isinstance(node, n.Cache):
                return None
            table = self.cached.get(node.name)
            if table is None:
                inner = n.substitute(node.inputs[0], replace)
                table = self._execute(inner, "cache", None).table
                assert table is not None
                self.cached[node.name] = table
            partitions = max(1, min(self.settings.workers, table.num_rows))
            return n.TableSource((), table, partitions, "cache", name=node.name)

        return n.substitute(root, replace)

    def unpersist(self, name: str) -> bool:
        """Forget a cached result (its memory is freed when no table refers to it any more)."""
        return self.cached.pop(name, None) is not None

    def _execute(
        self, root: n.Node, action: str, final_op: ops.Op | None, preview: int | None = None
    ) -> RunOutput:
        run_id = time.strftime("%Y%m%dT%H%M%S") + secrets.token_hex(2)
        owner = os.getpid()
        size = n.source_bytes(root)
        chosen = policy.choose(self.settings, size, self.shm_budget)
        self.exchange = self.exchanges.writer(chosen)
        executor = executors.choose(self.settings, size, n.user_code(root))
        workers = 1 if executor == executors.INLINE else self.settings.workers
        info = RunInfo(run_id, action, workers, chosen, time.time(), executor=executor)
        write = root if isinstance(root, n.Write) else None
        temp = str(sinks.prepare(write.path, write.mode, run_id)) if write else None
        out = RunOutput(info)
        try:
            plan = planner.build(
                root, self.settings, temp_dir=temp, final_op=final_op, exchange=chosen
            )
            plan = _instrumented(plan)
            info.plan = planner.plan_json(plan.root)
            info.root = plan.root
            info.stage_ops = {s.id: list(s.nodes) for s in plan.stages}
            info.stage_capture = {s.id: s.capture for s in plan.stages}
            self.hooks.on_run_start(info)
            if self.provenance is not None:  # a declaration conflict fails before any task runs
                from riera.provenance.capture import domain_declarations

                for dataset, columns in domain_declarations(plan.root):
                    self.provenance.declare(dataset, columns)
            build = {"temp_dir": temp, "final_op": final_op, "exchange": chosen}
            plan, results = self._run_stages(
                plan, run_id, owner, info, self.executor_named(executor), preview, build
            )
            final = results[plan.final.id]
            if write is not None:
                parts = [r.part for r in final if r.part is not None]
                out.manifest = sinks.commit(write.path, write.mode, run_id, parts)
            else:
                out.table = self._gather(final, root)
            info.status = "ok"
            if info.spilled_bytes:
                log.warning(
                    "run %s: %.1f MiB did not fit the shared-memory budget (%.1f MiB) and went "
                    "to disk in %s",
                    run_id,
                    info.spilled_bytes / 2**20,
                    self.shm_budget / 2**20,
                    self.settings.spill_path,
                )
            return out
        except KeyboardInterrupt:
            info.status, info.error = "cancelled", "KeyboardInterrupt"
            raise RunCancelled(f"run {run_id} cancelled; workers stopped, data released") from None
        except Terminated:
            info.status, info.error = "cancelled", "SIGTERM"
            raise
        except BaseException as err:
            info.status, info.error = "failed", f"{type(err).__name__}: {err}"
            raise
        finally:
            # Results already read stay valid: the segments are mapped, unlinking frees the names.
            self.exchange.release_run(SegmentKey(owner, run_id, "", 0))
            if write is not None and info.status != "ok":
                sinks.abort(write.path, run_id)
            info.ended = time.time()
            self.last_run = info
            self.hooks.on_run_end(info)

    def _gather(self, final: list[TaskResult], root: n.Node) -> pa.Table:
        try:
            return ops.concat([self.exchange.get(ref) for r in final for ref in r.refs])
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise RieraError(
                f"{root.name}: partitions produced incompatible column types ({err}); make the "
                f"function return the same types for every row (e.g. cast in map_batches)"
            ) from err

    def _run_stages(
        self,
        plan: planner.PhysicalPlan,
        run_id: str,
        owner: int,
        info: RunInfo,
        executor: executors.Executor,
        preview: int | None,
        build: dict[str, Any],
    ) -> tuple[planner.PhysicalPlan, dict[str, list[TaskResult]]]:
        """Run the plan's stages in order; after a stage that sizes an adaptive join, go on
        with the plan made again for what remains, if the stage turned out small. Returns the
        plan that ran last and every stage's results."""
        results: dict[str, list[TaskResult]] = {}
        readers_left = Counter(up for s in plan.stages for up in s.upstream)
        pending = list(plan.stages)
        while pending:
            stage = pending.pop(0)
            # A preview (head/take of a Limit) stops the stage whose partitions hold the
            # answer's first rows as soon as they do; the stages before it run whole.
            cut = preview if preview is not None and plan.prefix_stage == stage.id else None
            inputs, own_refs = self._inputs(stage, plan, results, run_id, owner)
            if stage.sides:  # broadcast joins: every task reads these stages whole
                sides = tuple(
                    (sid, tuple(ref for res in results[sid] for ref in res.refs))
                    for sid in stage.sides
                )
                inputs = [ph.WithSides(i, sides) for i in inputs]
            sinfo = StageInfo(
                run_id, stage.id, stage.label, len(inputs), time.time(), reader=stage.reader
            )
            info.stages.append(sinfo)
            self.hooks.on_stage_start(sinfo)
            stage_key = f"{run_id}/{stage.id}"

            def make_key(index: int, attempt: int, _sid: str = stage.id) -> SegmentKey:
                return SegmentKey(owner, run_id, _sid, index, attempt)

            try:
                results[stage.id] = executor.run_stage(
                    stage,
                    stage_key,
                    inputs,
                    make_key,
                    sinfo,
                    run_id,
                    self.hooks,
                    self.exchange,
                    rows_needed=cut,
                )
                sinfo.status = "ok"
                sinfo.spilled_bytes = sum(
                    ref.nbytes
                    for r in results[stage.id]
                    for ref in r.refs
                    if ref.backend != self.exchange.name
                )
                info.spilled_bytes += sinfo.spilled_bytes
            except BaseException:
                sinfo.status = "failed"
                raise
            finally:
                sinfo.ended = time.time()
                executor.forget(stage_key)
                self.hooks.on_stage_end(sinfo)
            self.exchange.release(own_refs)
            for up in stage.upstream:
                readers_left[up] -= 1
                if readers_left[up] == 0:
                    self.exchange.release([r for res in results[up] for r in res.refs])
            adapted = self._adapt(plan, stage.id, results, readers_left, build)
            if adapted is not None:
                plan, pending = adapted, list(adapted.stages)
                readers_left = Counter(up for s in adapted.stages for up in s.upstream)
                info.stage_ops.update({s.id: list(s.nodes) for s in adapted.stages})
                info.stage_capture.update({s.id: s.capture for s in adapted.stages})
        return plan, results

    def _adapt(
        self,
        plan: planner.PhysicalPlan,
        stage: str,
        results: dict[str, list[TaskResult]],
        readers_left: Counter[str],
        build: dict[str, Any],
    ) -> planner.PhysicalPlan | None:
        """The rest of the run planned again, when ``stage`` sizes an adaptive join and came
        out small enough to broadcast (``PhysicalPlan.adapt``); else None. Only while no
        other finished stage's output is still awaited: the new plan would compute it again."""
        if stage not in plan.adaptive or not results[stage]:
            return None
        if any(readers_left[s] > 0 for s in results if s != stage):
            return None
        nbytes = sum(ref.nbytes for r in results[stage] for ref in r.refs)
        if nbytes > self.settings.broadcast_bytes:
            return None
        first = results[stage][0].refs
        schema = self.exchange.get(first[0]).schema if first else None
        adapted = plan.adapt(stage, nbytes, len(first), schema, self.settings, **build)
        if adapted is None:
            return None
        log.info(
            "%s holds %.1f MiB: %s becomes a broadcast join", stage, nbytes / 2**20,
            plan.adaptive[stage].join,
        )  # fmt: skip
        return _instrumented(adapted)

    def _inputs(
        self,
        stage: ph.Stage,
        plan: planner.PhysicalPlan,
        results: dict[str, list[TaskResult]],
        run_id: str,
        owner: int,
    ) -> ph.TaskInputs:
        """Per-task inputs of ``stage`` (its reader's rule), and refs the driver created for it
        (released after it)."""

        def node(name: str) -> n.Node:  # only in-memory sources ask: walk the plan then
            return next(x for x in n.walk(plan.root) if x.name == name)

        key = SegmentKey(owner, run_id, f"{stage.id}-src", 0)
        ctx = ph.InputContext(results, self.exchange, key, node)
        return stage.reader.task_inputs(ctx)


def _instrumented(plan: planner.PhysicalPlan) -> planner.PhysicalPlan:
    """The plan with each stage's provenance instrument attached (from its capture mode)."""
    if all(s.capture == "off" for s in plan.stages):
        return plan  # nothing observes: not even the instruments' module is loaded
    from riera.provenance.instrument import for_stage

    stages = tuple(
        dataclasses.replace(s, instrument=for_stage(s.capture, s.sample)) for s in plan.stages
    )
    return dataclasses.replace(plan, stages=stages)


def _start_provenance(settings: Settings, hooks: HookList) -> Collector:
    """Open the provenance store (errors name it) and subscribe the capture hook."""
    from riera.provenance.capture import Collector, ProvenanceHook
    from riera.provenance.store import open_store

    collector = Collector(lambda: open_store(settings.provenance_target))
    hooks.hooks.append(ProvenanceHook(settings, collector))
    return collector


def _local_dirs(settings: Settings) -> list[Path]:
    """The local directories this session's exchange writes segments into (existing ones)."""
    dirs = [settings.shm_dir]
    if settings.exchange in ("disk", "auto") or settings.spill_path.is_dir():
        settings.spill_path.mkdir(parents=True, exist_ok=True)
        dirs.append(settings.spill_path)
    return [d for d in dirs if d.is_dir()]


def _progress_enabled(settings: Settings) -> bool:
    if settings.progress == "on":
        return True
    if settings.progress == "off":
        return False
    return sys.stderr.isatty() and os.environ.get("CI") is None


# -- SIGTERM --------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated(128 + signum)


def _handle_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` unless the program chose its own handling (or this
    is not the main thread, where Python cannot install handlers). The default action kills the
    process on the spot: segments would stay until the next session sweeps them."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)


# -- the session's runtime -------------------------------------------------------------------------

_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def init(*, hooks: list[Hooks] | None = None, **settings: Any) -> Runtime:
    """Start (or restart) the session runtime with these settings over the configured layers.

    >>> import riera
    >>> rt = riera.init(workers=2)
    >>> riera.range(10).count()
    10
    """
    global _runtime
    # The new runtime is built before the old one stops: bad settings, an unreachable
    # provenance store or any other failure leave the session's runtime as it was, still
    # recording provenance, instead of a stopped one that later runs would use silently.
    validated = load_settings(**settings)
    with _runtime_lock:
        old = _runtime
        _runtime = Runtime(validated, hooks)
        if old is not None:
            old.shutdown()
        return _runtime


def get_runtime() -> Runtime:
    """The session runtime, created from the configured settings on first use."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(load_settings())
        return _runtime


def shutdown() -> None:
    """Stop the worker processes and release this session's shared-memory ownership."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.shutdown()
            _runtime = None


atexit.register(shutdown)

__all__ = ["RunOutput", "Runtime", "__version__", "get_runtime", "init", "shutdown"]
