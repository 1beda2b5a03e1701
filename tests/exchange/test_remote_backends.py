"""Behaviour specific to the remote exchanges (Redis, S3), against real servers on 127.0.0.1.

The shared contract (every type, empty/wide tables, release semantics) is the conformance suite's;
here: Redis chunking, expiry and prefix release checked with a Redis client; the S3 object layout,
the Parquet format and prefix release checked by listing the bucket; the ``confidential`` refusal;
fast, clear connection errors; and one end-to-end pipeline per backend, run by two worker
processes, compared with the shared-memory result and leaving nothing behind.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import riera
from riera.config import load_settings
from riera.errors import ConfigError, ExchangeError
from riera.exchange import create
from riera.exchange import s3 as s3_module
from riera.exchange.base import SegmentKey
from riera.exchange.redis_store import HEADER_MAGIC, RedisExchange, is_loopback_host
from riera.exchange.s3 import S3Exchange

redis = pytest.importorskip("redis")
boto3 = pytest.importorskip("boto3")

pytestmark = pytest.mark.integration

E2E_ROWS = 50_000


def run_key(
    task: int = 0, attempt: int = 0, stage: str = "s1", run: str | None = None
) -> SegmentKey:
    return SegmentKey(os.getpid(), run or f"r{secrets.token_hex(4)}", stage, task, attempt)


def sample_table(rows: int) -> pa.Table:
    rng = np.random.default_rng(7)
    return pa.table(
        {
            "id": pa.array(np.arange(rows)),
            "x": pa.array(rng.random(rows)),
            "s": pa.array([f"row-{i % 1000}" for i in range(rows)]).dictionary_encode(),
            "l": pa.array([[i, i + 1] for i in range(rows)], pa.list_(pa.int32())),
        }
    )


@pytest.fixture(autouse=True, scope="module")
def _default_runtime_afterwards() -> Iterator[None]:
    """The end-to-end tests re-initialise Riera; leave the default runtime for later modules."""
    yield
    riera.init(workers=2, progress="off")


# -- Redis ---------------------------------------------------------------------------------------


@pytest.fixture
def rclient(redis_url: str) -> Iterator[Any]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def keys_under(client: Any, prefix: str) -> set[bytes]:
    return set(client.scan_iter(match=f"riera:{prefix}*", count=1000))


def test_redis_chunks_values_above_the_limit(redis_url: str, rclient: Any) -> None:
    ex = RedisExchange(redis_url, 600, chunk_bytes=64 * 1024)
    table = sample_table(20_000)
    key = run_key()
    ref = ex.put(table, key)
    assert ref.backend == "redis" and ref.location == f"riera:{key.object_path(0)}"
    assert ref.rows == table.num_rows and ref.batches is None

    header = rclient.get(ref.location)
    assert header.startswith(HEADER_MAGIC)
    count = int(header[len(HEADER_MAGIC) :])
    assert count > 2
    chunks = [rclient.get(f"{ref.location}:c{i}") for i in range(count)]
    assert all(c is not None and 0 < len(c) <= 64 * 1024 for c in chunks)
    assert rclient.exists(f"{ref.location}:c{count}") == 0
    assert keys_under(rclient, key.run_path) == {ref.location.encode()} | {
        f"{ref.location}:c{i}".encode() for i in range(count)
    }

    got = ex.get(ref)
    assert got.equals(table) and got.schema.equals(table.schema, check_metadata=True)

    ex.release([ref])
    ex.release([ref])  # idempotent
    assert keys_under(rclient, key.run_path) == set()


def test_redis_value_below_the_limit_is_one_key_of_ipc_bytes(redis_url: str, rclient: Any) -> None:
    ex = RedisExchange(redis_url, 600)
    table = sample_table(1000)
    key = run_key()
    ref = ex.put(table, key)
    assert rclient.get(ref.location)[:4] == b"\xff\xff\xff\xff"  # the IPC continuation marker
    assert keys_under(rclient, key.run_path) == {ref.location.encode()}
    assert ex.get(ref).equals(table)
    assert ex.release_run(key) == 1


def test_redis_get_decodes_without_copying(redis_url: str) -> None:
    table = pa.table({"x": pa.array(np.arange(500_000)), "y": pa.array(np.ones(500_000))})
    key = run_key()
    whole = RedisExchange(redis_url, 600)
    chunked = RedisExchange(redis_url, 600, chunk_bytes=2**20)
    refs = [whole.put(table, key), chunked.put(table, SegmentKey(key.owner, key.run, "c", 0))]
    before = pa.total_allocated_bytes()
    got = whole.get(refs[0])  # buffers point into the fetched bytes: no Arrow allocation
    assert pa.total_allocated_bytes() - before < 4096 and got.equals(table)
    got = chunked.get(refs[1])  # chunks are joined once into one aligned Arrow buffer
    assert pa.total_allocated_bytes() - before < table.nbytes + 4096 and got.equals(table)
    whole.release_run(key)


def test_redis_every_key_expires_within_redis_ttl(redis_url: str, rclient: Any) -> None:
    ex = RedisExchange(redis_url, 120, chunk_bytes=16 * 1024)
    key = run_key()
    ex.put_partitioned([sample_table(5000), pa.table({}), sample_table(10)], key)
    keys = keys_under(rclient, key.run_path)
    assert len(keys) > 3  # chunked values: a header and its chunks
    ttls = [rclient.ttl(k) for k in keys]
    assert all(0 < t <= 120 for t in ttls), ttls
    ex.release_run(key)


def test_redis_release_task_and_run_leave_others_alone(redis_url: str, rclient: Any) -> None:
    ex = RedisExchange(redis_url, 600, chunk_bytes=32 * 1024)
    big, small = sample_table(5000), sample_table(10)
    a0 = run_key(task=1)
    a1 = SegmentKey(a0.owner, a0.run, a0.stage, 10)  # t10 must survive releasing t1
    b = run_key(task=1)
    refs_a0 = ex.put_partitioned([big, small], a0)
    refs_a1 = ex.put_partitioned([small, big, small], a1)
    refs_b = ex.put_partitioned([big, small], b)

    assert ex.release_task(a0) == 2  # tables, not chunk keys
    assert keys_under(rclient, a0.task_path) == set()
    assert [ex.get(r).num_rows for r in refs_a1] == [10, 5000, 10]

    assert ex.release_run(a0) == 3
    assert keys_under(rclient, a0.run_path) == set()
    for ref in refs_a0 + refs_a1:
        with pytest.raises(ExchangeError, match="gone"):
            ex.get(ref)
    assert [ex.get(r).num_rows for r in refs_b] == [5000, 10]  # the other run is untouched
    assert keys_under(rclient, b.run_path)
    assert ex.release_run(b) == 2
    assert keys_under(rclient, b.run_path) == set()


def test_redis_wrong_url_fails_fast_naming_it() -> None:
    url = "redis://127.0.0.1:1/0"
    started = time.monotonic()
    with pytest.raises(ExchangeError) as info:
        create("redis", load_settings(redis_url=url))
    assert time.monotonic() - started < 3
    assert url in str(info.value) and "RIERA_REDIS_URL" in str(info.value)


def test_redis_errors_never_show_the_password() -> None:
    with pytest.raises(ExchangeError) as info:
        RedisExchange("redis://user:hunter2@127.0.0.1:1/0", 60)
    assert "hunter2" not in str(info.value) and "user:***@127.0.0.1:1" in str(info.value)


def test_redis_confidential_refuses_a_remote_server(redis_url: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExchangeError, match="`confidential`"):
        RedisExchange("redis://10.255.255.1:6379/0", 60, confidential=True)
    assert time.monotonic() - started < 1  # refused before any connection attempt
    with pytest.raises(ExchangeError, match="`confidential`"):
        create("redis", load_settings(redis_url="redis://redis.example.com/0", confidential=True))
    # A server on this machine is fine.
    RedisExchange(redis_url, 60, confidential=True).release([])


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("10.0.0.1", False),
        ("192.168.1.5", False),
        ("127.example.com", False),
        ("s3.amazonaws.com", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, local: bool) -> None:
    assert is_loopback_host(host) is local


# -- S3 ------------------------------------------------------------------------------------------


@pytest.fixture
def s3client(s3_server: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=s3_server,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def objects(client: Any, bucket: str, prefix: str = "") -> set[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {o["Key"] for page in pages for o in page.get("Contents", ())}


@pytest.fixture(params=["boto3", "s3fs"])
def client(request: pytest.FixtureRequest) -> str:
    """The S3 exchange's client library: every S3 test runs with each."""
    return str(request.param)


def s3(endpoint: str, bucket: str, client: str, **kwargs: Any) -> S3Exchange:
    return S3Exchange(
        bucket,
        endpoint=endpoint,
        access_key="testing",
        secret_key="testing",
        client=client,  # type: ignore[arg-type]
        **kwargs,
    )


def test_s3_creates_the_bucket_and_uses_the_documented_layout(
    client: str, s3_server: str, s3client: Any
) -> None:
    bucket = f"layout-{secrets.token_hex(4)}"
    ex = s3(s3_server, bucket, client)
    assert bucket in {b["Name"] for b in s3client.list_buckets()["Buckets"]}
    s3(s3_server, bucket, client)  # the bucket exists now: constructing again is fine

    key = SegmentKey(os.getpid(), "20260101T000000ab12", "s3", task=2, attempt=1)
    parts = [sample_table(10), sample_table(0), sample_table(5)]
    refs = ex.put_partitioned(parts, key)
    want = {f"20260101T000000ab12.{os.getpid()}/s3/t2/a1/p{i}" for i in range(3)}
    assert objects(s3client, bucket) == want
    assert [r.location for r in refs] == sorted(want)
    assert all(r.backend == "s3" and r.batches is None for r in refs)
    assert [r.rows for r in refs] == [10, 0, 5]
    for ref, part in zip(refs, parts, strict=True):
        assert ex.get(ref).equals(part)
    body = s3client.get_object(Bucket=bucket, Key=refs[0].location)["Body"].read()
    assert body[:4] == b"\xff\xff\xff\xff"  # Arrow IPC stream
    assert ex.release_run(key) == 3
    assert objects(s3client, bucket) == set()


def test_s3_parquet_objects_are_snappy_parquet(client: str, s3_server: str, s3client: Any) -> None:
    bucket = f"parquet-{secrets.token_hex(4)}"
    table = sample_table(20_000)
    ipc_ex, pq_ex = s3(s3_server, bucket, client), s3(s3_server, bucket, client, fmt="parquet")
    key = run_key()
    ipc_ref = ipc_ex.put(table, key)
    pq_ref = pq_ex.put(table, SegmentKey(key.owner, key.run, "pq", 0))

    body = s3client.get_object(Bucket=bucket, Key=pq_ref.location)["Body"].read()
    assert body[:4] == b"PAR1" and body[-4:] == b"PAR1"
    meta = pq.ParquetFile(pa.BufferReader(body)).metadata
    assert {meta.row_group(0).column(i).compression for i in range(meta.num_columns)} == {"SNAPPY"}
    ipc_size = s3client.head_object(Bucket=bucket, Key=ipc_ref.location)["ContentLength"]
    assert len(body) < ipc_size

    got = pq_ex.get(pq_ref)
    assert got.equals(table) and got.schema.equals(table.schema, check_metadata=True)
    assert ipc_ex.get(pq_ref).equals(table)  # readers go by the object's format, not their own
    assert pq_ex.get(ipc_ref).equals(table)
    pq_ex.release_run(key)


def test_s3_parquet_restores_what_parquet_loses(client: str, s3_server: str) -> None:
    ex = s3(s3_server, f"types-{secrets.token_hex(4)}", client, fmt="parquet")
    table = pa.table(
        {
            "dict_int": pa.array([1, 2, 1, None]).dictionary_encode(),
            "ts_s": pa.array([1, 2, 3, None], pa.timestamp("s")),
            "date64": pa.array([0, 86_400_000, None, 0], pa.date64()),
            "time_s": pa.array([1, 2, None, 4], pa.time32("s")),
            "list": pa.array([[1], [], None, [2, 3]], pa.list_(pa.int8())),
            "map": pa.array([[("k", 1)], [], None, [("a", 2)]], pa.map_(pa.string(), pa.int64())),
        },
        metadata={"origin": "test"},
    )
    key = run_key()
    got = ex.get(ex.put(table, key))
    assert got.schema.equals(table.schema, check_metadata=True), got.schema
    assert got.equals(table)
    no_columns = pa.table({"a": [1, 2, 3]}).select([])
    got = ex.get(ex.put(no_columns, SegmentKey(key.owner, key.run, key.stage, 1)))
    assert got.shape == (3, 0)
    ex.release_run(key)


def test_s3_parquet_refuses_types_parquet_cannot_store(client: str, s3_server: str) -> None:
    ex = s3(s3_server, f"union-{secrets.token_hex(4)}", client, fmt="parquet")
    union = pa.UnionArray.from_sparse(
        pa.array([0, 1], pa.int8()), [pa.array([1, 2]), pa.array(["a", "b"])]
    )
    with pytest.raises(ExchangeError, match="s3_format='ipc'"):
        ex.put(pa.table({"u": union}), run_key())


def test_s3_large_objects_go_up_in_a_multipart_upload(client: str, s3_server: str) -> None:
    ex = s3(s3_server, f"multi-{secrets.token_hex(4)}", client, multipart_threshold=6 * 2**20)
    table = pa.table({"x": pa.array(np.random.default_rng(1).random(1_000_000))})  # 8 MB
    key = run_key()
    ref = ex.put(table, key)
    assert ex.get(ref).equals(table)
    assert ex.release_task(key) == 1


def test_s3_release_run_deletes_exactly_that_run(
    client: str, s3_server: str, s3client: Any
) -> None:
    bucket = f"release-{secrets.token_hex(4)}"
    ex = s3(s3_server, bucket, client)
    t = sample_table(3)
    a = run_key()
    a_other_task = SegmentKey(a.owner, a.run, a.stage, 10)
    b = run_key()
    ex.put_partitioned([t, t], a)
    ex.put_partitioned([t, t, t], a_other_task)
    refs_b = ex.put_partitioned([t, t], b)
    s3client.put_object(Bucket=bucket, Key="not-riera/p0", Body=b"x")

    assert ex.release_task(a) == 2
    assert objects(s3client, bucket, a.run_path) == {a_other_task.object_path(i) for i in range(3)}
    assert ex.release_run(a) == 3
    assert objects(s3client, bucket) == {r.location for r in refs_b} | {"not-riera/p0"}
    ex.release(refs_b)
    ex.release(refs_b)  # idempotent
    assert objects(s3client, bucket) == {"not-riera/p0"}
    with pytest.raises(ExchangeError, match="gone"):
        ex.get(refs_b[0])


def test_s3_release_deletes_in_batches(
    client: str, s3_server: str, s3client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(s3_module, "_DELETE_BATCH", 7)  # 1000 in production: DeleteObjects' cap
    bucket = f"many-{secrets.token_hex(4)}"
    ex = s3(s3_server, bucket, client)
    key = run_key()
    refs = ex.put_partitioned([pa.table({"x": [i]}) for i in range(30)], key)
    ex.release(refs[:10])
    assert len(objects(s3client, bucket)) == 20
    assert ex.release_run(key) == 20
    assert objects(s3client, bucket) == set()


def test_s3_confidential_refuses_a_remote_endpoint(client: str, s3_server: str) -> None:
    for endpoint in ("http://10.255.255.1:9000", "https://s3.eu-west-1.amazonaws.com", None):
        settings = load_settings(s3_endpoint=endpoint, confidential=True)
        with pytest.raises(ExchangeError, match="`confidential`"):
            create("s3", settings)
    s3(s3_server, "confidential-ok", client, confidential=True)  # 127.0.0.1 is this machine


def test_s3_unreachable_endpoint_names_it(client: str) -> None:
    with pytest.raises(ExchangeError, match=r"http://127\.0\.0\.1:1\b.*RIERA_S3_ENDPOINT"):
        s3("http://127.0.0.1:1", "nowhere", client)


def test_s3_clients_read_each_others_objects(s3_server: str) -> None:
    bucket = f"clients-{secrets.token_hex(4)}"
    boto, fs = s3(s3_server, bucket, "boto3"), s3(s3_server, bucket, "s3fs", fmt="parquet")
    table, key = sample_table(1_000), run_key()
    from_boto = boto.put(table, key)
    from_fs = fs.put(table, SegmentKey(key.owner, key.run, key.stage, 1))
    assert fs.get(from_boto).equals(table) and boto.get(from_fs).equals(table)
    assert boto.stored_bytes(from_fs) == fs.stored_bytes(from_fs) < fs.stored_bytes(from_boto)
    assert fs.release_run(key) == 2
    with pytest.raises(ExchangeError, match="gone"):
        boto.get(from_fs)


def test_s3_client_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="s3_client"):
        load_settings(s3_client="minio")


# -- end to end ----------------------------------------------------------------------------------


class StoredCounter(riera.Hooks):
    """After each stage, counts what the run has in the remote store (its outputs are there)."""

    def __init__(self, count: Callable[[str], int]) -> None:
        self.count = count
        self.counts: list[int] = []
        self.run_id = ""

    def on_stage_end(self, stage: riera.StageInfo) -> None:
        self.run_id = stage.run_id
        self.counts.append(self.count(stage.run_id))


def pipeline() -> pa.Table:
    rng = np.random.default_rng(3)
    data = pa.table(
        {
            "k": pa.array([f"k{i}" for i in rng.integers(0, 300, E2E_ROWS)]),
            "v": pa.array(rng.integers(0, 1000, E2E_ROWS)),
            "w": pa.array(rng.random(E2E_ROWS)),
        }
    )
    ds = riera.from_arrow(data, partitions=4)
    return (
        ds.group_by("k")
        .agg(n=("v", "count"), total=("v", "sum"), top=("w", "max"))
        .sort(["total", "k"], descending=[True, False])
        .to_arrow()
    )


@pytest.fixture(scope="module")
def shm_result() -> pa.Table:
    riera.init(workers=2, exchange="shm", progress="off")
    return pipeline()


@pytest.mark.parametrize("backend", ["redis", "s3-ipc", "s3-parquet", "s3fs-parquet"])
def test_end_to_end_matches_shared_memory(
    backend: str,
    shm_result: pa.Table,
    remote_settings: Callable[[str], dict[str, Any]],
) -> None:
    overrides = remote_settings(backend)
    pid = os.getpid()
    if backend == "redis":
        client = redis.Redis.from_url(overrides["redis_url"])

        def count(run_id: str) -> int:
            return len(list(client.scan_iter(match=f"riera:{run_id}.{pid}/*", count=1000)))
    else:
        client = boto3.client("s3", endpoint_url=overrides["s3_endpoint"], region_name="us-east-1")

        def count(run_id: str) -> int:
            return len(objects(client, overrides["s3_bucket"], f"{run_id}.{pid}/"))

    counter = StoredCounter(count)
    riera.init(workers=2, progress="off", hooks=[counter], **overrides)
    result = pipeline()
    assert riera.get_runtime().last_run is not None
    assert riera.get_runtime().last_run.exchange == overrides["exchange"]

    assert result.num_rows == shm_result.num_rows == 300
    assert result.equals(shm_result)
    assert counter.run_id and max(counter.counts) > 0  # the stages' data went through the store
    assert count(counter.run_id) == 0  # … and the run released all of it
    client.close()
