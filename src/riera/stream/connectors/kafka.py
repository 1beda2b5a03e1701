"""``kafka://HOST:PORT/TOPIC[?partitions=P]``: Apache Kafka as source and sink (``confluent-kafka``).

**Source.** Riera assigns the topic's partitions itself (``assign`` with explicit offsets, never
``subscribe``): a group rebalance must not move partitions under a running epoch, and the commit
point is Riera's checkpoint, not the group's committed offsets. A partition's position is the offset
of the next message to read (the last message's offset + 1); ``start`` None reads from the low
watermark. Reads are ``isolation.level=read_committed``, so the output of a transactional producer
(a Riera :class:`KafkaSink` upstream) is seen only once committed. With ``upto`` a partition is read
while the message offset is below its bound (messages fetched past it wait in a buffer for the next
poll) and partitions that are not named are paused; such a poll waits for those messages (30 s at
most) however short its timeout: they are known to be in the log, and a replay takes an empty
answer for "nothing left". A resume position below the low watermark
(retention deleted what the query never read) raises :class:`~riera.errors.SourceTrimmedError`; so
does an offset-out-of-range while reading (``auto.offset.reset=error``: never skip silently).
:meth:`KafkaSource.release` commits the positions to the consumer group ``?group=`` (default
``riera``), only so that Kafka's tools show the query's lag. ``lag`` is the last stable offset minus
the position (transaction markers count as messages: an upper bound).

**Producer.** Idempotent (``enable.idempotence``); a keyed message goes to the partition Riera's
:func:`~riera.stream.connectors.base.partition_of` picks (the same hash as the other brokers, not
Kafka's murmur2 — a Riera query does not rely on where another producer put a key). A missing topic
is created with ``?partitions=`` (default 1) partitions and the broker's replication factor.

**Sink.** A transactional producer whose ``transactional.id`` is ``riera-JOB`` (``?txn_prefix=``
replaces ``riera-``). Each write is one transaction holding the rows (keyed by their key columns'
JSON in upsert mode, with headers ``riera-epoch``/``riera-seq``) *and* the job's commit record,
written to the compacted topic ``TOPIC.riera-commits`` keyed by the job (value ``{"epoch", "seq",
"fence"}``). Before a write the sink reads that topic up to its last stable offset, refuses a fence
older than the record's (:class:`~riera.errors.FencedError`) and skips an ``(epoch, seq)`` at or
below it. The id holds the job but *not* the fence on purpose: a new driver's
``init_transactions`` then bumps the producer epoch, which aborts a zombie's open transaction and
makes its commit fail (``PRODUCER_FENCED``, reported as FencedError), so no zombie can commit
between its record check and its commit. Upsert in a log: every applied version is appended, and
because a job's writes are applied in strictly increasing ``(epoch, seq)`` order (the record is a
high-water mark) the last message per key — what a compacted topic keeps — is the newest. The
per-key guard of the other sinks against *another job's* newer rows is not enforced here.

Extra librdkafka settings pass through the URL as ``?kafka.NAME=VALUE`` (e.g.
``?kafka.security.protocol=SASL_SSL``).
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Literal

import pyarrow as pa

from riera.errors import (
    FencedError,
    MissingExtraError,
    PlanError,
    SinkError,
    SourceTrimmedError,
    StreamError,
)
from riera.stream.connectors import base
from riera.stream.connectors.rows import encode_rows

TIMEOUT_S = 30.0
COMMITS_SUFFIX = ".riera-commits"


def _kafka(url: base.Url) -> Any:
    try:
        import confluent_kafka
    except ImportError as err:
        raise MissingExtraError(
            f"{url.raw}: Kafka topics need confluent-kafka: pip install 'riera[kafka]'"
        ) from err
    return confluent_kafka


class _Target:
    """The parsed URL: bootstrap servers, topic and the client settings every client shares."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.ck = _kafka(url)
        topic = url.path.strip("/")
        if not url.host or not topic or "/" in topic:
            raise PlanError(
                f"{url.raw}: expected kafka://HOST:PORT/TOPIC, e.g. kafka://127.0.0.1:9092/words"
            )
        self.topic = topic
        self.bootstrap = f"{url.host}:{url.port or 9092}"
        self.partitions_asked = (
            url.int_option("partitions", 1) if "partitions" in url.query else None
        )
        self.conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap}
        for name, value in url.query.items():
            if name.startswith("kafka."):
                self.conf[name[len("kafka.") :]] = value

    def admin(self) -> Any:
        from confluent_kafka.admin import AdminClient

        return AdminClient(dict(self.conf))

    def consumer(self, group: str, eof: bool = False) -> Any:
        conf = {**self.conf, "group.id": group, "enable.auto.commit": False,
                "enable.auto.offset.store": False, "isolation.level": "read_committed",
                "auto.offset.reset": "error", "enable.partition.eof": eof}  # fmt: skip
        return self.ck.Consumer(conf)

    def error(self, what: str, err: Any) -> StreamError:
        return StreamError(
            f"{self.url}: {what}: {err}; check that a Kafka broker answers at {self.bootstrap}"
        )

    def ensure_topic(self, topic: str, partitions: int | None, compact: bool = False) -> int:
        """The topic's partition count, creating it (``partitions`` or 1) when it is missing."""
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        ck = self.ck
        deadline = time.monotonic() + TIMEOUT_S
        created = False
        while True:
            try:
                meta = admin.list_topics(topic=topic, timeout=10)
            except ck.KafkaException as err:
                raise self.error(f"cannot read the metadata of topic {topic!r}", err) from err
            found = meta.topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                n = len(found.partitions)
                if partitions is not None and partitions != n and not created:
                    raise PlanError(
                        f"{self.url}: topic {topic!r} has {n} partitions, not {partitions}; drop "
                        f"?partitions= or use another topic"
                    )
                return n
            code = None if found is None or found.error is None else found.error.code()
            missing = (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._UNKNOWN_TOPIC, None)
            if code not in missing and code != ck.KafkaError.LEADER_NOT_AVAILABLE:
                raise self.error(f"topic {topic!r} cannot be used", code)
            if not created:
                config = {"cleanup.policy": "compact"} if compact else {}
                new = NewTopic(topic, num_partitions=partitions or 1, replication_factor=-1,
                               config=config)  # fmt: skip
                future = admin.create_topics([new], operation_timeout=10)[topic]
                try:
                    future.result()
                except ck.KafkaException as err:
                    if err.args[0].code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                        raise self.error(f"cannot create topic {topic!r}", err) from err
                created = True
            if time.monotonic() > deadline:
                raise self.error(f"topic {topic!r} has no partitions", "timed out")
            time.sleep(0.1)  # the new topic's metadata spreads to the brokers


def _permanent(err: Any, ck: Any) -> bool:
    """Whether a consumer error event means reading cannot go on. Most events are informational
    (a broker went down, a request timed out): librdkafka reconnects and retries by itself."""
    codes = (ck.KafkaError.TOPIC_AUTHORIZATION_FAILED, ck.KafkaError._UNKNOWN_TOPIC,
             ck.KafkaError._UNKNOWN_PARTITION)  # fmt: skip
    return bool(err.fatal()) or err.code() in codes


def _ts(msg: Any, ck: Any) -> float | None:
    kind, ts = msg.timestamp()
    return None if kind == ck.TIMESTAMP_NOT_AVAILABLE else float(ts)


class KafkaReader:
    """Reads assigned partitions by offset; keeps what was fetched beyond an ``upto`` bound."""

    def __init__(self, target: _Target, group: str, start: dict[int, int]) -> None:
        self.target, self.ck = target, target.ck
        self._pos = dict(start)
        self._buf: dict[int, deque[Any]] = {p: deque() for p in start}
        self._paused: set[int] = set()
        self.consumer = target.consumer(group)
        tp = self.ck.TopicPartition
        self.consumer.assign([tp(target.topic, p, off) for p, off in start.items()])

    def poll(self, max_records: int, timeout_s: float, upto: dict[int, Any] | None = None
             ) -> list[base.Message]:  # fmt: skip
        bounds = None if upto is None else {p: int(v) for p, v in upto.items() if p in self._pos}
        self._pause_for(bounds)
        # Without bounds: what arrives within the timeout (one fetch even for a zero timeout:
        # what librdkafka prefetched). With bounds: the messages up to them were read before and
        # are still in the log, so the poll waits for them however short its timeout (a replay
        # polls with 0 and takes an empty answer for "nothing left"), 30 s at most.
        began = time.monotonic()
        deadline = began + (TIMEOUT_S if bounds is not None else timeout_s)
        out: list[base.Message] = []
        fetched = False
        while True:
            self._deliver(out, max_records, bounds)
            if out or (bounds is not None and self._done(bounds)):
                return out
            remaining = deadline - time.monotonic()
            if remaining <= 0 and fetched:
                if bounds is None:
                    return out
                behind = {p: (self._pos[p], b) for p, b in bounds.items() if self._pos[p] < b}
                raise StreamError(
                    f"{self.target.url}: replaying an epoch needs the records up to offsets "
                    f"{bounds}, but after {TIMEOUT_S:g} s partitions (position, bound) {behind} "
                    f"still lack some; is the broker reachable?"
                )
            self._fetch(max_records - len(out), min(max(0.0, remaining), 0.5))
            fetched = True

    def _done(self, bounds: dict[int, int]) -> bool:
        return all(self._pos[p] >= b for p, b in bounds.items())

    def _active(self, bounds: dict[int, int] | None) -> set[int]:
        if bounds is None:
            return set(self._pos)
        return {p for p, b in bounds.items() if self._pos[p] < b}

    def _pause_for(self, bounds: dict[int, int] | None) -> None:
        active = self._active(bounds)
        tp = self.ck.TopicPartition
        pause = [p for p in self._pos if p not in active and p not in self._paused]
        resume = [p for p in self._paused if p in active]
        if pause:
            self.consumer.pause([tp(self.target.topic, p) for p in pause])
            self._paused.update(pause)
        if resume:
            self.consumer.resume([tp(self.target.topic, p) for p in resume])
            self._paused.difference_update(resume)
            for p in resume:  # go on right after what was taken, whatever the pause dropped
                buf = self._buf[p]
                nxt = buf[-1].offset() + 1 if buf else self._pos[p]
                try:
                    self.consumer.seek(tp(self.target.topic, p, nxt))
                except self.ck.KafkaException as err:
                    raise self.target.error(f"cannot resume partition {p}", err) from err

    def _deliver(self, out: list[base.Message], limit: int, bounds: dict[int, int] | None) -> None:
        for part, buf in self._buf.items():
            bound = None if bounds is None else bounds.get(part)
            if bounds is not None and bound is None:
                continue
            while buf and len(out) < limit:
                msg = buf[0]
                if bound is not None and msg.offset() >= bound:
                    break
                buf.popleft()
                self._pos[part] = msg.offset() + 1
                out.append(base.Message(msg.value() or b"", msg.key(), _ts(msg, self.ck), part,
                                        msg.offset() + 1))  # fmt: skip

    def _fetch(self, limit: int, timeout_s: float) -> None:
        ck = self.ck
        try:
            batch = self.consumer.consume(num_messages=max(1, min(limit, 10_000)),
                                          timeout=timeout_s)  # fmt: skip
        except ck.KafkaException as exc:
            raise self.target.error("cannot read", exc) from exc
        for msg in batch:
            err = msg.error()
            if err is not None:
                code = err.code()
                if code == ck.KafkaError._PARTITION_EOF:
                    continue
                if code in (ck.KafkaError._AUTO_OFFSET_RESET, ck.KafkaError.OFFSET_OUT_OF_RANGE):
                    raise SourceTrimmedError(
                        f"{self.target.url}: partition {msg.partition()} no longer holds the "
                        f"offsets the query reads ({err.str()}): retention deleted records it "
                        f"never read. Restart with a new checkpoint directory to read what remains."
                    )
                if _permanent(err, ck):
                    raise self.target.error(f"partition {msg.partition()}", err.str())
                continue  # informational (a broker down…): librdkafka reconnects and retries
            part = msg.partition()
            buf = self._buf.get(part)
            if buf is None:
                continue
            last = buf[-1].offset() if buf else self._pos[part] - 1
            if msg.offset() > last:  # a refetch after pause/resume may repeat messages
                buf.append(msg)

    def positions(self) -> dict[int, Any]:
        return dict(self._pos)

    def close(self) -> None:
        self.consumer.close()


class KafkaSource:
    """A Kafka topic's partitions, read by offset (see the module doc)."""

    replayable = True

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.target = _Target(url)
        self.group = url.query.get("group", "riera")
        self.n = self.target.ensure_topic(self.target.topic, self.target.partitions_asked)
        self._meta: Any = None

    def _consumer(self) -> Any:
        if self._meta is None:
            self._meta = self.target.consumer(self.group)
        return self._meta

    def _watermarks(self, part: int) -> tuple[int, int]:
        ck = self.target.ck
        tp = ck.TopicPartition(self.target.topic, part)
        try:
            marks = self._consumer().get_watermark_offsets(tp, timeout=10, cached=False)
        except ck.KafkaException as err:
            raise self.target.error(f"cannot read partition {part}'s offsets", err) from err
        if marks is None:
            raise self.target.error(f"cannot read partition {part}'s offsets", "timed out")
        return int(marks[0]), int(marks[1])

    def partitions(self) -> int:
        return self.n

    def reader(self, start: dict[int, Any]) -> KafkaReader:
        begin: dict[int, int] = {}
        for part, pos in start.items():
            if not 0 <= part < self.n:
                raise PlanError(
                    f"{self.url}: the topic has {self.n} partitions; no partition {part}"
                )
            low, high = self._watermarks(part)
            if pos is None:
                begin[part] = low
                continue
            if int(pos) < low or int(pos) > high:
                why = (f"was trimmed to offset {low}" if int(pos) < low else
                       f"ends at offset {high} (was the topic deleted and made again?)")  # fmt: skip
                raise SourceTrimmedError(
                    f"{self.url}: partition {part} {why}, but the query must resume from offset "
                    f"{pos}: records it never read are gone. Restart the query with a new "
                    f"checkpoint directory to read from what remains."
                )
            begin[part] = int(pos)
        return KafkaReader(self.target, self.group, begin)

    def release(self, upto: dict[int, Any]) -> None:
        ck = self.target.ck
        offsets = [ck.TopicPartition(self.target.topic, p, int(pos)) for p, pos in upto.items()
                   if pos is not None]  # fmt: skip
        if not offsets:
            return
        try:
            self._consumer().commit(offsets=offsets, asynchronous=False)
        except ck.KafkaException as err:
            raise self.target.error("cannot record the committed offsets", err) from err

    def lag(self, positions: dict[int, Any]) -> dict[int, int | None]:
        out: dict[int, int | None] = {}
        for part, pos in positions.items():
            low, high = self._watermarks(part)
            out[part] = max(0, high - (low if pos is None else int(pos)))
        return out

    def close(self) -> None:
        if self._meta is not None:
            self._meta.close()
            self._meta = None


class KafkaProducer:
    """Appends messages to a topic with an idempotent producer (flushed per :meth:`send`)."""

    def __init__(self, url: base.Url) -> None:
        self.target = _Target(url)
        self.n = self.target.ensure_topic(self.target.topic, self.target.partitions_asked)
        conf = {**self.target.conf, "enable.idempotence": True, "linger.ms": 5}
        self.producer = self.target.ck.Producer(conf)
        self._sent = 0

    def send(self, messages: Sequence[tuple[bytes | None, bytes, float | None]]) -> None:
        failed: list[Any] = []

        def delivered(err: Any, _msg: Any) -> None:
            if err is not None:
                failed.append(err)

        for key, value, ts in messages:
            part = base.partition_of(key, self.n, self._sent)
            self._sent += 1
            stamp = int(ts if ts is not None else time.time() * 1000)
            _produce(self.producer, self.target.topic, value=value, key=key, partition=part,
                     timestamp=stamp, on_delivery=delivered)  # fmt: skip
        left = self.producer.flush(TIMEOUT_S)
        if failed or left:
            why = failed[0] if failed else f"{left} messages undelivered after {TIMEOUT_S:g} s"
            raise self.target.error("cannot produce", why)

    def close(self) -> None:
        self.producer.flush(TIMEOUT_S)


def _produce(producer: Any, topic: str, **kwargs: Any) -> None:
    """``producer.produce``, waiting for room when the local queue is full."""
    while True:
        try:
            producer.produce(topic, **kwargs)
            return
        except BufferError:
            producer.poll(0.05)


class KafkaSink:
    """Commits rows and the job's commit record in one Kafka transaction (see the module doc)."""

    def __init__(self, url: base.Url) -> None:
        self.url = url.raw
        self.target = _Target(url)
        mode = url.query.get("mode", "upsert")
        if mode not in ("upsert", "append"):
            raise PlanError(f"{url.raw}: ?mode= must be upsert or append; got {mode!r}")
        self.mode: Literal["upsert", "append"] = mode  # type: ignore[assignment]
        self.prefix = url.query.get("txn_prefix", "riera-")
        self.commits_topic = self.target.topic + COMMITS_SUFFIX
        self.job = ""
        self.key: tuple[str, ...] = ()
        self.n = 0
        self._producer: Any = None
        self._records: Any = None  # consumer of the commits topic
        self._seen = 0  # the commits topic's offset read up to
        self._record: dict[str, tuple[int, int, int]] = {}
        self._sent = 0

    def open(self, job: str, key: Sequence[str]) -> None:
        self.job, self.key = job, tuple(key)
        self.n = self.target.ensure_topic(self.target.topic, self.target.partitions_asked)
        self.target.ensure_topic(self.commits_topic, 1, compact=True)
        if self._records is None:
            ck = self.target.ck
            self._records = self.target.consumer(f"riera-commits-{job}", eof=True)
            self._records.assign([ck.TopicPartition(self.commits_topic, 0, ck.OFFSET_BEGINNING)])

    def _refresh(self) -> tuple[int, int, int] | None:
        """The job's commit record, after reading the commits topic up to its last stable offset."""
        if self._records is None:
            raise PlanError(f"{self.url}: call open(job, key) before using the sink")
        ck = self.target.ck
        tp = ck.TopicPartition(self.commits_topic, 0)
        try:
            marks = self._records.get_watermark_offsets(tp, timeout=10, cached=False)
        except ck.KafkaException as exc:
            raise self.target.error("cannot read the commit records' offsets", exc) from exc
        if marks is None:
            raise self.target.error("cannot read the commit records' offsets", "timed out")
        end = int(marks[1])  # read_committed: the last stable offset
        deadline = time.monotonic() + TIMEOUT_S
        while self._seen < end:
            if time.monotonic() > deadline:
                raise self.target.error(
                    f"cannot read topic {self.commits_topic!r} up to offset {end}", "timed out"
                )
            for msg in self._records.consume(num_messages=1000, timeout=0.5):
                err = msg.error()
                if err is not None:
                    if err.code() == ck.KafkaError._PARTITION_EOF:
                        self._seen = max(self._seen, int(msg.offset()))
                        continue
                    if _permanent(err, ck):
                        raise self.target.error("cannot read the commit records", err.str())
                    continue
                self._seen = max(self._seen, msg.offset() + 1)
                if msg.key() is None or msg.value() is None:
                    continue
                try:
                    data = json.loads(msg.value())
                    record = (int(data["epoch"]), int(data["seq"]), int(data["fence"]))
                except (ValueError, KeyError, TypeError):
                    continue  # not written by Riera
                self._record[msg.key().decode()] = record
        return self._record.get(self.job)

    def committed(self) -> tuple[int, int]:
        record = self._refresh()
        return (record[0], record[1]) if record else (-1, -1)

    def _transactional(self) -> Any:
        if self._producer is None:
            ck = self.target.ck
            conf = {**self.target.conf, "transactional.id": f"{self.prefix}{self.job}",
                    "transaction.timeout.ms": 60_000, "linger.ms": 5}  # fmt: skip
            producer = ck.Producer(conf)
            try:
                producer.init_transactions(TIMEOUT_S)
            except ck.KafkaException as err:
                raise self.target.error("cannot start a transactional producer", err) from err
            self._producer = producer
        return self._producer

    def write(self, rows: pa.Table, epoch: int, seq: int, fence: int) -> bool:
        record = self._refresh()
        if record is not None:
            if fence < record[2]:
                raise self._fenced(f"is fenced at token {record[2]}; this driver holds {fence}")
            if (epoch, seq) <= (record[0], record[1]):
                if fence > record[2]:  # skipped; opening the producer fences the older one out
                    self._transactional()
                return False
        producer = self._transactional()
        ck = self.target.ck
        headers = [("riera-epoch", str(epoch).encode()), ("riera-seq", str(seq).encode())]
        try:
            producer.begin_transaction()
            for key, payload in encode_rows(rows, self.key if self.mode == "upsert" else ()):
                kbytes = key.encode() if self.mode == "upsert" else None
                part = base.partition_of(kbytes, self.n, self._sent)
                self._sent += 1
                _produce(producer, self.target.topic, value=payload.encode(), key=kbytes,
                         partition=part, headers=headers)  # fmt: skip
            value = json.dumps({"epoch": epoch, "seq": seq, "fence": fence}).encode()
            _produce(producer, self.commits_topic, value=value, key=self.job.encode(), partition=0)
            producer.commit_transaction(TIMEOUT_S)
        except Exception as exc:
            err = exc.args[0] if isinstance(exc, ck.KafkaException) and exc.args else None
            code = err.code() if isinstance(err, ck.KafkaError) else None
            if code in (ck.KafkaError._FENCED, ck.KafkaError.PRODUCER_FENCED,
                        ck.KafkaError.INVALID_PRODUCER_EPOCH):  # fmt: skip
                self._producer = None
                raise self._fenced("was taken over: a newer driver opened its transactional "
                                   "producer") from exc  # fmt: skip
            try:  # leave no transaction open: the next write begins a new one
                producer.abort_transaction(TIMEOUT_S)
            except ck.KafkaException:
                self._producer = None  # unusable (fatal error): made again at the next write
            why = err.str() if isinstance(err, ck.KafkaError) else f"{type(exc).__name__}: {exc}"
            raise SinkError(
                f"{self.url}: cannot commit write ({epoch}, {seq}) of job {self.job!r}: {why}; "
                f"nothing of it is visible to read_committed consumers"
            ) from exc
        self._record[self.job] = (epoch, seq, fence)
        return True

    def _fenced(self, why: str) -> FencedError:
        return FencedError(f"{self.url}: job {self.job!r} {why}: another driver took the job over")

    def latest(self) -> dict[str, Any]:
        """The last row per key in the topic (all rows, keyed by position, for an append sink);
        reads the whole topic: for small result topics, like ``riera stream counts`` shows."""
        ck = self.target.ck
        consumer = self.target.consumer(f"riera-latest-{self.job}", eof=True)
        try:
            parts = [ck.TopicPartition(self.target.topic, p, ck.OFFSET_BEGINNING)
                     for p in range(self.n or 1)]  # fmt: skip
            consumer.assign(parts)
            ends = {}
            for tp in parts:
                marks = consumer.get_watermark_offsets(
                    ck.TopicPartition(tp.topic, tp.partition), timeout=10, cached=False
                )
                ends[tp.partition] = int(marks[1]) if marks else 0
            seen = {p: 0 for p in ends}
            out: dict[str, Any] = {}
            deadline = time.monotonic() + TIMEOUT_S
            while any(seen[p] < ends[p] for p in ends) and time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=1000, timeout=0.5):
                    err = msg.error()
                    part = msg.partition()
                    if err is not None:
                        if err.code() == ck.KafkaError._PARTITION_EOF:
                            seen[part] = max(seen[part], int(msg.offset()))
                        continue
                    seen[part] = max(seen[part], msg.offset() + 1)
                    row = json.loads(msg.value())
                    if self.mode == "upsert" and msg.key() is not None:
                        out[msg.key().decode()] = row
                    else:
                        out[json.dumps([len(out)])] = row
            return out
        finally:
            consumer.close()

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(TIMEOUT_S)
            self._producer = None
        if self._records is not None:
            self._records.close()
            self._records = None
