"""One driver's part of a streaming job that several drivers run together.

``write_stream(..., coordinator="redis://HOST:PORT/DB", shards=S)`` cuts the job's key groups
into ``S`` shards (:mod:`riera.stream.lease`). Every driver started with the same query, name
and coordinator joins the job; each runs the shards it holds a lease on, each shard an ordinary
:class:`~riera.stream.engine.Engine` with its own checkpoint directory ``DIR/shard-S`` (which
every driver must reach: a shared file system) and its own job name at the sinks, so its
exactly-once commits are the single-driver ones.

A thread of its own renews the driver's leases every ``ttl/3`` (starting a shard, which replays
its last epochs, or stopping one never delays a renewal); another looks at how many drivers are
alive:

- below its fair share (``ceil(S / drivers)``) it takes free shards: the shards of a driver that
  died or hung come back to life within about one ``ttl``;
- above it, it stops one shard cleanly (its epoch committed) and lets it go, so a driver that
  joins gets work;
- a lease it lost (a newer holder has it) is dropped at once: whatever that shard tries to commit
  is refused by the fencing token anyway;
- without a successful renewal for a whole ``ttl`` (Redis unreachable), it stops every shard
  itself: by then the others may have taken them;
- a shard that fails here is let go and not taken again here for ``10 × ttl``; three failures
  of one shard in a row end the driver, as a crash would;
- with ``until_idle``, a shard that ends idle is flagged in Redis with the time; the driver ends
  once every shard was flagged after it started (so none is left to a driver that died).

Each driver's identity in Redis is its name plus a random suffix: two drivers given one name (or
a restarted one) never share a lease or a token.

Each shard reads every partition of the source and keeps the rows of its key groups (a query
without keyed state splits the partitions instead), so reading and decoding are repeated per
shard; the keyed state, the aggregation and the commits are what the drivers share.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from riera.errors import CheckpointError, FencedError, PlanError, StreamError
from riera.stream.handle import QueryHandle
from riera.stream.lease import Lease, ShardLeases

log = logging.getLogger(__name__)

StartShard = Callable[[int, int], Any]  # (shard, token) -> a started StreamingQuery

MAX_FAILURES = 3  # failures of one shard in a row, here, that end the driver


def default_member() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class LeasedQuery(QueryHandle):
    """The handle of this driver's part of a job (the same methods as a StreamingQuery's)."""

    kind = "job"

    def __init__(self, leases: ShardLeases, start_shard: StartShard, *, until_idle: bool,
                 name: str) -> None:  # fmt: skip
        self.leases, self._start, self._until_idle, self.name = (
            leases,
            start_shard,
            until_idle,
            name,
        )
        self._ttl = leases.ttl_ms / 1000
        self._leases: dict[int, Lease] = {}  # held: the renewer renews these
        self._queries: dict[int, Any] = {}  # running shard queries
        self._lost: set[int] = set()  # leases the renewer found taken over: to drop
        self._retry_at: dict[int, float] = {}  # a shard that failed here: not before then
        self._failures: dict[int, int] = {}  # failures in a row per shard
        self._stop = threading.Event()
        self._done = threading.Event()
        self._error: BaseException | None = None
        self._state = "starting"
        self._taken = self._lost_n = 0
        self._ended: list[dict[str, Any]] = []  # metrics of every shard run that ended here
        self._lock = threading.Lock()
        self._last_ok = time.monotonic()
        self._since_ms = leases.now_ms()  # finished flags count from here (until_idle)
        self._renewer = threading.Thread(target=self._renew_loop, name=f"riera-renew-{name}",
                                         daemon=True)  # fmt: skip
        self._thread = threading.Thread(target=self._main, name=f"riera-leases-{name}", daemon=True)
        self._renewer.start()
        self._thread.start()

    # -- renewing ---------------------------------------------------------------------------------
    def _renew_loop(self) -> None:
        while not self._done.is_set():
            with self._lock:
                held = list(self._leases.values())
            try:
                lost = self.leases.heartbeat(held)
                self._last_ok = time.monotonic()
            except Exception as err:  # Redis unreachable: the leases run out on their own
                log.warning("job %s: cannot renew leases: %s", self.name, err)
                lost = []
            if time.monotonic() - self._last_ok > self._ttl:
                lost = held  # the others may have taken them by now
                if held:
                    log.error("job %s: no lease renewed for %.1f s; stopping every shard",
                              self.name, self._ttl)  # fmt: skip
            with self._lock:
                for lease in lost:
                    if self._leases.get(lease.shard) == lease:
                        del self._leases[lease.shard]
                        self._lost.add(lease.shard)
                        query = self._queries.get(lease.shard)
                        if query is not None:
                            query.request_stop()  # whatever it commits now is refused anyway
            self._done.wait(self._ttl / 3)

    # -- the loop ---------------------------------------------------------------------------------
    def _main(self) -> None:
        self._state = "running"
        try:
            while not self._stop.is_set():
                self._reap()
                self._balance()
                if self._until_idle and self._idle_done():
                    self._state = "finished"
                    break
                self._stop.wait(self._ttl / 3)
            else:
                self._state = "stopped"
        except BaseException as err:
            self._error = err
            self._state = "failed"
        finally:
            for shard in list(self._queries):
                self._drop(shard, clean=True)
            self._done.set()
            self._renewer.join(self._ttl + 5)
            with contextlib.suppress(Exception):
                self.leases.leave()
            self.leases.close()

    def _reap(self) -> None:
        """Shards whose lease was lost, and shard queries that ended by themselves."""
        with self._lock:
            lost = [s for s in self._lost if s in self._queries]
            self._lost.clear()
        for shard in lost:
            log.warning("job %s: shard %d was taken over by another driver; dropping it",
                        self.name, shard)  # fmt: skip
            self._lost_n += 1
            self._drop(shard, clean=False)
        for shard, query in list(self._queries.items()):
            if query.is_active:
                continue
            try:
                query.await_termination(0)
            except StreamError as err:
                self._drop(shard, clean=False)
                self._failed(shard, err)
                continue
            self._drop(shard, clean=True)  # ended idle
            self.leases.mark_finished(shard)
            self._failures.pop(shard, None)

    def _failed(self, shard: int, err: BaseException) -> None:
        if isinstance(err.__cause__, FencedError):
            self._lost_n += 1
            log.warning("job %s: shard %d: %s", self.name, shard, err.__cause__)
            return
        self._failures[shard] = self._failures.get(shard, 0) + 1
        if self._failures[shard] >= MAX_FAILURES:
            raise StreamError(f"job {self.name}: shard {shard} failed {MAX_FAILURES} times in a "
                              f"row here; last: {err}") from err  # fmt: skip
        self._retry_at[shard] = time.monotonic() + 10 * self._ttl
        log.error("job %s: shard %d failed (%s); letting it go", self.name, shard, err)

    def _balance(self) -> None:
        share = self.leases.fair_share()
        if len(self._queries) > share:
            shard = max(self._queries)
            log.info("job %s: %d drivers; handing shard %d over", self.name, self.leases.alive,
                     shard)  # fmt: skip
            self._drop(shard, clean=True)
            return
        done = self.leases.finished_since(self._since_ms) if self._until_idle else set()
        for shard in self.leases.order():
            if len(self._queries) >= share:
                break
            if shard in self._queries or shard in done:
                continue
            if time.monotonic() < self._retry_at.get(shard, 0.0):
                continue
            lease = self.leases.acquire(shard)
            if lease is not None:
                self._run(lease)

    def _run(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.shard] = lease  # renewed while the shard starts and replays
        log.info("job %s: running shard %d (token %d)", self.name, lease.shard, lease.token)
        try:
            query = self._start(lease.shard, lease.token)
        except FencedError as err:  # the log holds a newer token than Redis gave: raise Redis's
            with self._lock:
                self._leases.pop(lease.shard, None)
            self.leases.release(lease)
            if err.held_token is not None and err.held_token > lease.token:
                self.leases.raise_floor(lease.shard, err.held_token)
            log.warning("job %s: shard %d: %s", self.name, lease.shard, err)
            return
        except BaseException as err:
            with self._lock:
                self._leases.pop(lease.shard, None)
            self.leases.release(lease)
            if not isinstance(err, Exception) or isinstance(err, PlanError | CheckpointError):
                raise  # the query itself is wrong: every shard would fail the same way
            self._failed(lease.shard, err)
            return
        with self._lock:
            self._queries[lease.shard] = query
            if lease.shard in self._lost:  # lost while it started
                query.request_stop()
        self._taken += 1

    def _drop(self, shard: int, *, clean: bool) -> None:
        """Stop a shard's query (committing what is in flight if ``clean``) and let it go."""
        with self._lock:
            query = self._queries.pop(shard)
            lease = self._leases.pop(shard, None)
        query.request_stop()
        query._thread.join(60 if clean else 10)
        try:
            query.await_termination(0)
        except StreamError as err:
            if not isinstance(err.__cause__, FencedError):
                log.warning("job %s: shard %d ended with an error: %s", self.name, shard, err)
        with contextlib.suppress(Exception):
            metrics = query.metrics
            with self._lock:
                self._ended.append({"shard": shard, **metrics})
        if lease is not None:
            with contextlib.suppress(Exception):
                self.leases.release(lease)

    def _idle_done(self) -> bool:
        """Nothing running here, and every shard ended idle since this driver started."""
        if self._queries:
            return False
        return len(self.leases.finished_since(self._since_ms)) == self.leases.shards

    # -- the handle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask every held shard to commit what is in flight and the leases to go (no wait)."""
        self._stop.set()

    @property
    def shards_held(self) -> list[int]:
        with self._lock:
            return sorted(self._queries)

    @property
    def status(self) -> dict[str, Any]:
        return {"state": self._state, "job": self.leases.job, "member": self.leases.member,
                "shards": self.leases.shards, "held": self.shards_held,
                "drivers": self.leases.alive, "taken_over": self._taken, "lost": self._lost_n,
                "error": None if self._error is None else str(self._error)}  # fmt: skip

    @property
    def metrics(self) -> dict[str, Any]:
        """Each shard run's metrics (those running now, and those that ended here), and sums:
        ``records_read`` counts every shard's reading (each shard reads every record)."""
        with self._lock:
            running = dict(self._queries)
            runs = list(self._ended)
        runs += [{"shard": s, **q.metrics} for s, q in sorted(running.items())]
        total = {k: sum(int(m.get(k) or 0) for m in runs)
                 for k in ("rows_out", "late_records", "dead_letters")}  # fmt: skip
        total["records_read"] = sum(int(m.get("records_in") or 0) for m in runs)
        return {**total, "shards": runs}

    def late_records(self) -> list[dict[str, Any]]:
        with self._lock:
            queries = list(self._queries.values())
        return [r for q in queries for r in q.late_records()]
