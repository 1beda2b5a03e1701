"""Choosing the exchange, and routing reads and writes between backends.

``exchange="auto"`` (the default) picks a backend per run, as document 002's future work asks:

1. **shared memory** when the run's estimated data fits the shared-memory budget (setting
   ``shm_budget``; default 80% of what ``/dev/shm`` has free when the runtime starts) — and even
   then, a segment that would overflow the budget or the free space spills to ``disk`` instead of
   failing;
2. otherwise the **remote store** named by ``remote_exchange`` (``s3`` or ``redis``), unless the
   ``confidential`` setting forbids data leaving the machine;
3. otherwise **disk** (Arrow IPC files in ``spill_dir``).

The estimate is the size of the run's sources (file sizes, in-memory tables, 8 bytes per ``range``
row) times :data:`GROWTH`, a margin for intermediate data larger than the input (decoded text,
added columns). A run's writes all go to the chosen backend; reads follow each ``Ref``'s own
backend, so spilled partitions and different runs mix freely.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Sequence
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa

from riera.config import Settings
from riera.errors import ExchangeError
from riera.exchange.base import Exchange, Ref, SegmentKey, create

log = logging.getLogger(__name__)

GROWTH = 2.0
REMOTE = ("s3", "redis")


def default_shm_budget(settings: Settings) -> int:
    """``shm_budget`` if set, else 80% of the space free in ``shm_dir`` now."""
    if settings.shm_budget is not None:
        return settings.shm_budget
    try:
        st = os.statvfs(settings.shm_dir)
    except OSError:
        return 0
    return int(st.f_bavail * st.f_frsize * 0.8)


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (from a URL) certainly designates this machine; names are not resolved."""
    if host is None:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def redact_url(url: str) -> str:
    """``url`` with its password (if any) masked, fit for error messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def is_local_url(url: str | None) -> bool:
    """Whether ``url`` points at this machine (a loopback address or a unix socket)."""
    if url is None:
        return False
    parsed = urlsplit(url)
    if parsed.scheme in ("unix", "redis+unix"):
        return True
    return is_loopback_host(parsed.hostname)


def check_confidential(name: str, settings: Settings) -> None:
    """Refuse a backend that would send intermediate data off this machine."""
    if not settings.confidential or name not in REMOTE:
        return
    url = settings.s3_endpoint if name == "s3" else settings.redis_url
    if not is_local_url(url):
        raise ExchangeError(
            f"exchange {name!r} would send intermediate data to {url or 'AWS S3'}, but the "
            f"`confidential` setting keeps it on this machine; use exchange='shm', 'disk' or "
            f"'auto', or unset RIERA_CONFIDENTIAL"
        )


def choose(settings: Settings, estimate: int, budget: int) -> str:
    """The backend for a run of about ``estimate`` source bytes (see the module docstring)."""
    if settings.exchange != "auto":
        check_confidential(settings.exchange, settings)
        return settings.exchange
    if estimate * GROWTH <= budget:
        return "shm"
    remote = settings.remote_exchange
    if remote is not None:
        try:
            check_confidential(remote, settings)
        except ExchangeError:
            log.info("auto exchange: %s refused by `confidential`; using disk", remote)
        else:
            return remote
    return "disk"


class Exchanges:
    """The backends of one process, created on first use; reads route by ``Ref.backend``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._by_name: dict[str, Exchange] = {}

    def backend(self, name: str) -> Exchange:
        ex = self._by_name.get(name)
        if ex is None:
            check_confidential(name, self.settings)
            ex = self._by_name[name] = create(name, self.settings)
        return ex

    def created(self) -> list[Exchange]:
        return list(self._by_name.values())

    def writer(self, name: str) -> RoutingExchange:
        return RoutingExchange(self, name)


class RoutingExchange:
    """Writes to one backend; reads and releases go to each ref's own backend."""

    def __init__(self, exchanges: Exchanges, write_to: str) -> None:
        self.exchanges = exchanges
        self.name = write_to
        self.target = exchanges.backend(write_to)
        self.zero_copy = getattr(self.target, "zero_copy", False)

    def put(self, table: pa.Table, key: SegmentKey) -> Ref:
        return self.target.put(table, key)

    def put_partitioned(self, tables: Sequence[pa.Table], key: SegmentKey) -> list[Ref]:
        return self.target.put_partitioned(tables, key)

    def get(self, ref: Ref) -> pa.Table:
        return self.exchanges.backend(ref.backend).get(ref)

    def release(self, refs: Sequence[Ref]) -> None:
        by_backend: dict[str, list[Ref]] = {}
        for r in refs:
            by_backend.setdefault(r.backend, []).append(r)
        for name, group in by_backend.items():
            self.exchanges.backend(name).release(group)

    def release_task(self, key: SegmentKey) -> int:
        return sum(ex.release_task(key) for ex in self.exchanges.created())

    def release_run(self, key: SegmentKey) -> int:
        return sum(ex.release_run(key) for ex in self.exchanges.created())
