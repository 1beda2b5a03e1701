"""One driver's part of a streaming job that several drivers run together.

``write_stream(..., coordinator="redis://HOST:PORT/DB", shards=S)`` cuts the job's key groups
into ``S`` shards (:mod:`riera.stream.lease`). Every driver started with the same query, name
and coordinator joins the job; each runs the shards it holds a lease on, each shard an ordinary
:class:`~riera.stream.engine.Engine` with its own checkpoint directory ``DIR/shard-S`` (which
every driver must reach: a shared file system) and its own job name at the sinks, so its
exactly-once commits are the single-driver ones.

Every ``ttl/3`` the driver renews its leases and looks at how many drivers are alive:

- below its fair share (``ceil(S / drivers)``) it takes free shards: the shards of a driver that
  died or hung come back to life within about one ``ttl``;
- above it, it stops one shard cleanly (its epoch committed) and lets it go, so a driver that
  joins gets work;
- a lease it lost (a newer holder has it) is dropped at once: whatever that shard tries to commit
  is refused by the fencing token anyway;
- without a successful renewal for a whole ``ttl`` (Redis unreachable), it stops every shard
  itself: by then the others may have taken them.

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

from riera.errors import FencedError, StreamError
from riera.stream.handle import QueryHandle
from riera.stream.lease import Lease, ShardLeases

log = logging.getLogger(__name__)

StartShard = Callable[[int, int], Any]  # (shard, token) -> a started StreamingQuery


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
        self._held: dict[int, tuple[Lease, Any]] = {}
        self._finished: set[int] = set()  # shards that ended idle here
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._state = "starting"
        self._taken = 0  # shards taken over in this run
        self._lost = 0  # leases lost (a newer holder fenced this driver)
        self._ended: dict[int, dict[str, Any]] = {}  # metrics of shards no longer held
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=f"riera-leases-{name}", daemon=True)
        self._thread.start()

    # -- the loop ---------------------------------------------------------------------------------
    def _main(self) -> None:
        last_ok = time.monotonic()
        self._state = "running"
        try:
            while not self._stop.is_set():
                try:
                    self._tick()
                    last_ok = time.monotonic()
                except (OSError, ConnectionError, TimeoutError) as err:
                    log.warning("job %s: cannot renew leases: %s", self.name, err)
                except Exception as err:
                    if type(err).__module__.startswith("redis"):
                        log.warning("job %s: cannot renew leases: %s", self.name, err)
                    else:
                        raise
                if time.monotonic() - last_ok > self.leases.ttl_ms / 1000 and self._held:
                    log.error("job %s: no lease renewed for %d ms; stopping every shard",
                              self.name, self.leases.ttl_ms)  # fmt: skip
                    for shard in list(self._held):
                        self._drop(shard, clean=False)
                if self._until_idle and self._idle_done():
                    self._state = "finished"
                    break
                self._stop.wait(self.leases.ttl_ms / 3000)
            else:
                self._state = "stopped"
        except BaseException as err:
            self._error = err
            self._state = "failed"
        finally:
            for shard in list(self._held):
                self._drop(shard, clean=True)
            with contextlib.suppress(Exception):
                self.leases.leave()
            self.leases.close()

    def _tick(self) -> None:
        held = [lease for lease, _ in self._held.values()]
        for lease in self.leases.heartbeat(held):
            log.warning("job %s: shard %d was taken over (token %d is old); dropping it",
                        self.name, lease.shard, lease.token)  # fmt: skip
            self._lost += 1
            self._drop(lease.shard, clean=False)
        for shard, (_, query) in list(self._held.items()):
            if not query.is_active:
                self._ended_shard(shard, query)
        share = self.leases.fair_share()
        if len(self._held) > share:
            shard = max(self._held)
            log.info("job %s: %d drivers; handing shard %d over", self.name, self.leases.alive,
                     shard)  # fmt: skip
            self._drop(shard, clean=True)
            return
        for shard in self.leases.order():
            if len(self._held) >= share:
                break
            if shard in self._held or shard in self._finished:
                continue
            got = self.leases.acquire(shard)
            if got is None:
                continue
            lease = got
            log.info("job %s: running shard %d (token %d)", self.name, shard, lease.token)
            try:
                query = self._start(shard, lease.token)
            except BaseException:
                self.leases.release(lease)
                raise
            with self._lock:
                self._held[shard] = (lease, query)
            self._taken += 1

    def _ended_shard(self, shard: int, query: Any) -> None:
        """A shard's query ended by itself: idle (with until_idle), or failed."""
        lease, _ = self._held[shard]
        try:
            query.await_termination(0)
        except StreamError as err:
            if isinstance(err.__cause__, FencedError):
                self._lost += 1
                log.warning("job %s: shard %d fenced: %s", self.name, shard, err.__cause__)
            else:
                self._drop(shard, clean=False)
                raise
        else:
            self._finished.add(shard)
        self._forget(shard, query)
        self.leases.release(lease)

    def _drop(self, shard: int, *, clean: bool) -> None:
        """Stop a shard's query (committing what is in flight if ``clean``) and let it go."""
        lease, query = self._held[shard]
        query.engine.stop_event.set()
        query._thread.join(60 if clean else 10)
        with contextlib.suppress(Exception):
            query.await_termination(0)
        self._forget(shard, query)
        with contextlib.suppress(Exception):
            self.leases.release(lease)

    def _forget(self, shard: int, query: Any) -> None:
        with self._lock:
            self._held.pop(shard, None)
            with contextlib.suppress(Exception):
                self._ended[shard] = query.metrics

    def _idle_done(self) -> bool:
        """Nothing held here, and every shard either ended idle here or is held by another."""
        if self._held:
            return False
        holders = self.leases.holders()
        return all(s in self._finished or holders[s] is not None for s in range(self.leases.shards))

    # -- the handle -------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask every held shard to commit what is in flight and the leases to go (no wait)."""
        self._stop.set()

    @property
    def shards_held(self) -> list[int]:
        with self._lock:
            return sorted(self._held)

    @property
    def status(self) -> dict[str, Any]:
        return {"state": self._state, "job": self.leases.job, "member": self.leases.member,
                "shards": self.leases.shards, "held": self.shards_held,
                "drivers": self.leases.alive, "taken_over": self._taken, "lost": self._lost,
                "error": None if self._error is None else str(self._error)}  # fmt: skip

    @property
    def metrics(self) -> dict[str, Any]:
        """Sums over the shards this driver ran, and each one's own metrics."""
        with self._lock:
            per = dict(self._ended)
            for shard, (_, query) in self._held.items():
                per[shard] = query.metrics
        total = {k: sum(int(m.get(k) or 0) for m in per.values())
                 for k in ("records_in", "rows_out", "late_records", "dead_letters")}  # fmt: skip
        return {**total, "shards": {str(s): per[s] for s in sorted(per)}}

    def late_records(self) -> list[dict[str, Any]]:
        with self._lock:
            queries = [q for _, q in self._held.values()]
        return [r for q in queries for r in q.late_records()]
