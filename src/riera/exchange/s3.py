"""S3 exchange: each partition is one object in a bucket of any S3-compatible store.

Why S3: storage that outgrows every machine's memory and disk, shared by workers anywhere, and
billed by the byte-month. It costs a request per partition written, read and listed, so it suits
few, large partitions; for many small ones prefer Redis or shared memory.

Layout. A partition of task attempt ``key`` is the object ``<run>.<owner>/<stage>/t<task>/
a<attempt>/p<partition>`` (:meth:`SegmentKey.object_path`) in ``s3_bucket``; a task attempt's
and a run's objects are found by listing a prefix. ``release_task``/``release_run`` page through
``ListObjectsV2`` and delete each page (at most 1000 keys, the ``DeleteObjects`` limit) with one
request. S3 bills no storage for deleted objects, but a crashed driver leaves its run behind:
give the bucket a lifecycle rule expiring objects after a day.

Formats (setting ``s3_format``):

- ``ipc`` (default): Arrow IPC stream bytes. Exact for every Arrow type; the read decodes
  zero-copy over the downloaded bytes. Fast to write and read, not compressed.
- ``parquet``: Parquet with snappy. Usually several times smaller (cheaper transfers and
  storage), at the cost of encode/decode CPU. Parquet cannot represent every Arrow type, so the
  read restores the Arrow schema pyarrow stores in the file (``ARROW:schema``): second-resolution
  timestamps, ``date64``, dictionaries of non-strings and the like come back as written, and a
  table with no columns gets its row count back from the :class:`Ref`. The one loss left:
  dictionaries of non-string values nested inside lists or structs come back decoded. Types
  Parquet cannot store at all (unions…) are refused on write with a pointer to ``ipc``.

Reads detect the format from the object's magic bytes (``PAR1`` or the IPC continuation marker),
so a reader never depends on its own ``s3_format`` agreeing with the writer's.

Writes up to ``multipart_threshold`` (256 MiB) are one ``PutObject``; larger ones are multipart
uploads, in parallel parts, since one ``PutObject`` is capped at 5 GiB and a failed single part
of a large upload is cheaper to retry than the whole object. Reads are one ``GetObject`` into
memory.

Clients (setting ``s3_client``): ``boto3`` (default), or ``s3fs`` (fsspec over aiobotocore), the
library document 002 wrote its Parquet objects with. Both write the same objects under the same
names, so either reads what the other wrote; only the client library and its overheads differ.

Connection. ``s3_endpoint`` selects an S3-compatible server (MinIO, Ceph, moto…) and then path-
style addressing, which those servers expect; without it the client talks to AWS. Credentials
come from ``s3_access_key``/``s3_secret_key`` when set, else from the client's usual chain
(environment, ``~/.aws``, instance role). The bucket is created when missing.

Confidentiality. With ``confidential=True`` the exchange only accepts an endpoint on this machine
(a loopback address or ``localhost``); AWS itself is refused.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from pydantic import SecretStr

from riera.config import Settings
from riera.errors import ExchangeError, MissingExtraError
from riera.exchange.base import PerPartitionObjects, Ref, SegmentKey, from_ipc, register, to_ipc
from riera.exchange.policy import is_loopback_host, redact_url

MULTIPART_THRESHOLD = 256 * 2**20
_MULTIPART_CHUNK = 64 * 2**20  # parts of a multipart upload (S3: at least 5 MiB)
_MIN_PART = 5 * 2**20
_DELETE_BATCH = 1000  # the DeleteObjects limit
_PARQUET_MAGIC = b"PAR1"
_IPC_MAGIC = b"\xff\xff\xff\xff"
_MISSING_BUCKET = {"404", "NoSuchBucket", "NotFound"}
_FORBIDDEN = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}
CLIENTS = ("boto3", "s3fs")


class _Gone(Exception):
    """The object asked for does not exist (any more)."""


class _Connection:
    """Where the exchange connects, as given by settings."""

    def __init__(
        self,
        bucket: str,
        endpoint: str | None,
        region: str,
        access_key: str | None,
        secret_key: str | None,
        connect_timeout: float,
        multipart_threshold: int,
    ) -> None:
        self.bucket = bucket
        self.endpoint = endpoint
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.connect_timeout = connect_timeout
        self.multipart_threshold = multipart_threshold
        self.shown = redact_url(endpoint) if endpoint else f"AWS S3 ({region})"

    def target(self, what: str) -> str:
        return f"s3://{self.bucket}/{what} at {self.shown}"

    def denied(self, action: str, what: str, code: str) -> ExchangeError:
        return ExchangeError(
            f"cannot {action} {self.target(what)}: access denied ({code}); check "
            f"RIERA_S3_ACCESS_KEY/RIERA_S3_SECRET_KEY and that they may read, write, list and "
            f"delete in the bucket"
        )

    def unreachable(self, action: str, what: str, err: BaseException) -> ExchangeError:
        return ExchangeError(
            f"cannot {action} {self.target(what)}: the S3 endpoint does not answer ({err}). "
            f"Start the S3 server or set RIERA_S3_ENDPOINT to a reachable one (setting "
            f"s3_endpoint)"
        )

    def no_credentials(self, action: str, what: str) -> ExchangeError:
        return ExchangeError(
            f"cannot {action} {self.target(what)}: no S3 credentials; set RIERA_S3_ACCESS_KEY "
            f"and RIERA_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
        )

    def taken(self) -> ExchangeError:
        return ExchangeError(
            f"bucket {self.bucket!r} at {self.shown} belongs to someone else (bucket names are "
            f"global); set RIERA_S3_BUCKET to a name of your own"
        )


class _Boto3Client:
    """The exchange's requests through boto3 (threads, synchronous)."""

    library = "boto3"

    def __init__(self, conn: _Connection) -> None:
        try:
            import boto3
        except ImportError as err:
            raise MissingExtraError(
                "the 's3' exchange needs boto3, which is not installed: pip install 'riera[s3]'"
            ) from err
        import botocore.exceptions
        from boto3.exceptions import Boto3Error
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self.conn = conn
        self._botocore_errors = botocore.exceptions
        self._boto3_error = Boto3Error
        self._transfer = TransferConfig(
            multipart_threshold=conn.multipart_threshold, multipart_chunksize=_MULTIPART_CHUNK
        )
        config = Config(
            connect_timeout=conn.connect_timeout,
            read_timeout=120,
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"} if conn.endpoint else {},
        )
        # A session per exchange: boto3's default session is not safe to share between threads.
        self.s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=conn.endpoint,
            region_name=conn.region,
            aws_access_key_id=conn.access_key,
            aws_secret_access_key=conn.secret_key,
            config=config,
        )

    def ensure_bucket(self) -> None:
        ClientError = self._botocore_errors.ClientError
        bucket = self.conn.bucket
        # HEAD first: it needs only read access, where CreateBucket is often not allowed.
        with self.errors("reach bucket", ""):
            try:
                self.s3.head_bucket(Bucket=bucket)
                return
            except ClientError as err:
                if _code(err) not in _MISSING_BUCKET:
                    raise
        kwargs: dict[str, Any] = {"Bucket": bucket}
        if self.conn.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.conn.region}
        with self.errors("create bucket", ""):
            try:
                self.s3.create_bucket(**kwargs)
            except ClientError as err:
                code = _code(err)
                if code == "BucketAlreadyOwnedByYou":  # another worker created it meanwhile
                    return
                if code == "BucketAlreadyExists":
                    raise self.conn.taken() from err
                raise

    def put(self, name: str, body: pa.Buffer) -> None:
        with self.errors("store", name):
            if body.size <= self.conn.multipart_threshold:
                self.s3.put_object(Bucket=self.conn.bucket, Key=name, Body=pa.BufferReader(body))
            else:
                self.s3.upload_fileobj(
                    pa.BufferReader(body), self.conn.bucket, name, Config=self._transfer
                )

    def get(self, name: str) -> bytes:
        with self.errors("read", name):
            try:
                body = self.s3.get_object(Bucket=self.conn.bucket, Key=name)["Body"]
                return bytes(body.read())
            except self.s3.exceptions.NoSuchKey as err:
                raise _Gone(name) from err

    def size(self, name: str) -> int:
        with self.errors("stat", name):
            return int(self.s3.head_object(Bucket=self.conn.bucket, Key=name)["ContentLength"])

    def pages(self, prefix: str) -> Iterator[list[str]]:
        with self.errors("list", f"{prefix}*"):
            paginator = self.s3.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.conn.bucket, Prefix=prefix):
                yield [o["Key"] for o in page.get("Contents", ())]

    def delete(self, names: list[str]) -> list[dict[str, Any]]:
        with self.errors("delete", f"{len(names)} object(s)"):
            response = self.s3.delete_objects(
                Bucket=self.conn.bucket,
                Delete={"Objects": [{"Key": k} for k in names], "Quiet": True},
            )
        return list(response.get("Errors", []))

    @contextmanager
    def errors(self, action: str, what: str) -> Iterator[None]:
        """botocore's exceptions as :class:`ExchangeError` naming the store and the fix."""
        errors, conn = self._botocore_errors, self.conn
        try:
            yield
        except errors.ClientError as err:
            code = _code(err)
            if code in _FORBIDDEN:
                raise conn.denied(action, what, code) from err
            raise ExchangeError(f"cannot {action} {conn.target(what)}: {err}") from err
        except errors.NoCredentialsError as err:
            raise conn.no_credentials(action, what) from err
        except (errors.EndpointConnectionError, errors.ConnectTimeoutError) as err:
            raise conn.unreachable(action, what, err) from err
        except (errors.BotoCoreError, self._boto3_error) as err:
            raise ExchangeError(f"cannot {action} {conn.target(what)}: {err}") from err


class _S3fsClient:
    """The exchange's requests through s3fs (fsspec; aiobotocore on its own event loop thread).

    The document's study wrote Parquet through s3fs; this client lets the same exchange run over
    it. Objects, layout and formats are the same as with boto3, so either client reads what the
    other wrote.
    """

    library = "s3fs"

    def __init__(self, conn: _Connection) -> None:
        try:
            import s3fs
        except ImportError as err:
            raise MissingExtraError(
                "s3_client='s3fs' needs s3fs, which is not installed: pip install 'riera[s3fs]'"
            ) from err
        self.conn = conn
        self.fs = s3fs.S3FileSystem(
            key=conn.access_key,
            secret=conn.secret_key,
            endpoint_url=conn.endpoint,
            client_kwargs={"region_name": conn.region},
            config_kwargs={
                "connect_timeout": conn.connect_timeout,
                "read_timeout": 120,
                "retries": {"max_attempts": 5, "mode": "standard"},
                **({"s3": {"addressing_style": "path"}} if conn.endpoint else {}),
            },
            skip_instance_cache=True,  # fsspec caches instances by arguments, across forks
            use_listings_cache=False,  # every listing must see the objects as they are now
        )

    def _path(self, name: str) -> str:
        return f"{self.conn.bucket}/{name}"

    def ensure_bucket(self) -> None:
        with self.errors("reach bucket", ""):
            try:
                self.fs.call_s3("head_bucket", Bucket=self.conn.bucket)
                return
            except FileNotFoundError:
                pass
        kwargs: dict[str, Any] = {"Bucket": self.conn.bucket}
        if self.conn.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.conn.region}
        with self.errors("create bucket", ""):
            try:
                self.fs.call_s3("create_bucket", **kwargs)
            except OSError as err:
                code = _code(err.__cause__) if hasattr(err.__cause__, "response") else ""
                if code == "BucketAlreadyOwnedByYou":  # another worker created it meanwhile
                    return
                if code == "BucketAlreadyExists":
                    raise self.conn.taken() from err
                raise
        self.fs.invalidate_cache()

    def put(self, name: str, body: pa.Buffer) -> None:
        size = body.size
        if size <= self.conn.multipart_threshold:
            chunk = max(size, 1)  # s3fs puts in one request below two chunks
        else:
            chunk = max(_MIN_PART, min(_MULTIPART_CHUNK, size // 2))
        with self.errors("store", name):
            # aiobotocore takes bytes (not buffers) and s3fs slices them into parts: one copy.
            self.fs.pipe_file(self._path(name), body.to_pybytes(), chunksize=chunk)

    def get(self, name: str) -> bytes:
        with self.errors("read", name):
            try:
                return bytes(self.fs.cat_file(self._path(name)))
            except FileNotFoundError as err:
                raise _Gone(name) from err

    def size(self, name: str) -> int:
        with self.errors("stat", name):
            return int(self.fs.info(self._path(name))["size"])

    def pages(self, prefix: str) -> Iterator[list[str]]:
        with self.errors("list", f"{prefix}*"):
            found = self.fs.find(self._path(prefix))
        start = len(self.conn.bucket) + 1
        names = [p[start:] for p in found]
        for i in range(0, len(names), _DELETE_BATCH):
            yield names[i : i + _DELETE_BATCH]

    def delete(self, names: list[str]) -> list[dict[str, Any]]:
        with self.errors("delete", f"{len(names)} object(s)"):
            response = self.fs.call_s3(
                "delete_objects",
                Bucket=self.conn.bucket,
                Delete={"Objects": [{"Key": k} for k in names], "Quiet": True},
            )
            self.fs.invalidate_cache()
        return list(response.get("Errors", []))

    @contextmanager
    def errors(self, action: str, what: str) -> Iterator[None]:
        """s3fs' exceptions (``OSError`` family, botocore's below) as :class:`ExchangeError`."""
        import botocore.exceptions as errors

        conn = self.conn
        try:
            yield
        except _Gone:
            raise
        except PermissionError as err:
            raise conn.denied(action, what, "AccessDenied") from err
        except errors.NoCredentialsError as err:
            raise conn.no_credentials(action, what) from err
        except (errors.EndpointConnectionError, errors.ConnectTimeoutError) as err:
            raise conn.unreachable(action, what, err) from err
        except (OSError, errors.BotoCoreError) as err:
            cause = err.__cause__
            code = _code(cause) if cause is not None and hasattr(cause, "response") else ""
            if code in _FORBIDDEN:
                raise conn.denied(action, what, code) from err
            if _is_connection_error(err):
                raise conn.unreachable(action, what, err) from err
            raise ExchangeError(f"cannot {action} {conn.target(what)}: {err}") from err


def _is_connection_error(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) is a refused or timed-out connection."""
    import botocore.exceptions as errors

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(
            seen,
            (errors.EndpointConnectionError, errors.ConnectTimeoutError, ConnectionError),
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class S3Exchange(PerPartitionObjects):
    """One object per partition (Arrow IPC or Parquet) in an S3 bucket, via boto3 or s3fs."""

    name = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        fmt: Literal["ipc", "parquet"] = "ipc",
        client: Literal["boto3", "s3fs"] = "boto3",
        confidential: bool = False,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        connect_timeout: float = 5.0,
    ) -> None:
        if fmt not in ("ipc", "parquet"):
            raise ExchangeError(f"s3_format must be 'ipc' or 'parquet'; got {fmt!r}")
        if client not in CLIENTS:
            raise ExchangeError(f"s3_client must be 'boto3' or 's3fs'; got {client!r}")
        conn = _Connection(
            bucket, endpoint, region, access_key, secret_key, connect_timeout, multipart_threshold
        )
        self.bucket = bucket
        self.endpoint = endpoint
        self.fmt = fmt
        self.multipart_threshold = multipart_threshold
        self.shown_endpoint = conn.shown
        if confidential and not (endpoint and is_loopback_host(urlsplit(endpoint).hostname)):
            raise ExchangeError(
                f"the S3 exchange at {self.shown_endpoint} is not on this machine and the setting "
                f"`confidential` is on (intermediate data must stay on this machine). Point "
                f"RIERA_S3_ENDPOINT at an S3-compatible server on 127.0.0.1/localhost, use "
                f"another exchange (shm, disk), or set confidential=False"
            )
        if (access_key is None) != (secret_key is None):
            raise ExchangeError(
                "set both s3_access_key and s3_secret_key (RIERA_S3_ACCESS_KEY, "
                "RIERA_S3_SECRET_KEY), or neither to use the client's credential chain"
            )
        self._client: _Boto3Client | _S3fsClient = (
            _Boto3Client(conn) if client == "boto3" else _S3fsClient(conn)
        )
        self.client = client
        self._client.ensure_bucket()

    # -- writing -------------------------------------------------------------------------------
    def put_partition(self, table: pa.Table, key: SegmentKey, partition: int) -> Ref:
        name = key.object_path(partition)
        self._client.put(name, self._encode(table, name))
        return Ref(self.name, name, table.num_rows, table.nbytes, None)

    def _encode(self, table: pa.Table, name: str) -> pa.Buffer:
        if self.fmt == "ipc":
            return to_ipc(table)
        sink = pa.BufferOutputStream()
        try:
            pq.write_table(table, sink, compression="snappy")
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as err:
            raise ExchangeError(
                f"cannot store {name} as Parquet: {err}. Parquet cannot represent every Arrow "
                f"type; set s3_format='ipc' (RIERA_S3_FORMAT=ipc), which stores any table"
            ) from err
        return sink.getvalue()

    # -- reading -------------------------------------------------------------------------------
    def get(self, ref: Ref) -> pa.Table:
        try:
            data = self._client.get(ref.location)
        except _Gone as err:
            raise ExchangeError(
                f"object s3://{self.bucket}/{ref.location} at {self.shown_endpoint} is gone: "
                f"it was released before this read (or removed by a bucket lifecycle rule)"
            ) from err
        if data[:4] == _PARQUET_MAGIC:
            return _from_parquet(data, ref.rows)
        if data[:4] == _IPC_MAGIC:
            return from_ipc(data)
        raise ExchangeError(
            f"object s3://{self.bucket}/{ref.location} at {self.shown_endpoint} is neither Arrow "
            f"IPC nor Parquet; something other than Riera wrote it (is s3_bucket shared?)"
        )

    def stored_bytes(self, ref: Ref) -> int:
        """The size of ``ref``'s object in the bucket (one ``HeadObject``)."""
        return self._client.size(ref.location)

    # -- lifecycle -----------------------------------------------------------------------------
    def release(self, refs: Sequence[Ref]) -> None:
        self._delete(list(dict.fromkeys(r.location for r in refs)))

    def release_task(self, key: SegmentKey) -> int:
        return self._release_prefix(key.task_path)

    def release_run(self, key: SegmentKey) -> int:
        return self._release_prefix(key.run_path)

    def _release_prefix(self, prefix: str) -> int:
        return sum(self._delete(page) for page in self._client.pages(prefix))

    def _delete(self, keys: list[str]) -> int:
        """Delete ``keys`` (missing ones are fine); returns how many are gone now."""
        deleted = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            errors = self._client.delete(batch)
            if errors:
                first = errors[0]
                raise ExchangeError(
                    f"cannot delete {len(errors)} object(s) from s3://{self.bucket} at "
                    f"{self.shown_endpoint}, e.g. {first.get('Key')}: {first.get('Code')} "
                    f"{first.get('Message', '')}; check that the credentials may s3:DeleteObject"
                )
            deleted += len(batch)
        return deleted


def _code(err: Any) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def _from_parquet(data: bytes, rows: int) -> pa.Table:
    """Decode Parquet, then give back what Parquet's types lost (see the module docstring)."""
    pf = pq.ParquetFile(pa.BufferReader(data))
    table = pf.read()
    stored = (pf.metadata.metadata or {}).get(b"ARROW:schema")
    if stored is not None:
        schema = ipc.read_schema(pa.py_buffer(base64.b64decode(stored)))
        if not table.schema.equals(schema, check_metadata=True):
            table = _conform(table, schema)
    if table.num_columns == 0 and table.num_rows != rows:
        # (Built with its metadata: ``replace_schema_metadata`` drops a column-less table's rows.)
        table = pa.table({"_": pa.nulls(rows)}, metadata=table.schema.metadata).select([])
    return table


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s types where Parquet changed them, and its field names."""
    columns, fields = [], []
    for field, column in zip(schema, table.columns, strict=True):
        if column.type != field.type:
            try:
                if pa.types.is_dictionary(field.type) and not pa.types.is_dictionary(column.type):
                    column = column.cast(field.type.value_type).dictionary_encode()
                column = column.cast(field.type)
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid):
                pass  # e.g. a non-string dictionary inside a list: keep Parquet's decoded type
        columns.append(column)
        # Types equal but for child names (Parquet's list ``element``, map ``key_value``) take the
        # written names from ``field``.
        fields.append(field if column.type == field.type else field.with_type(column.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields, metadata=schema.metadata))


def _factory(settings: Settings) -> S3Exchange:
    def secret(value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()

    return S3Exchange(
        settings.s3_bucket,
        endpoint=settings.s3_endpoint,
        region=settings.s3_region,
        access_key=secret(settings.s3_access_key),
        secret_key=secret(settings.s3_secret_key),
        fmt=settings.s3_format,
        client=settings.s3_client,
        confidential=settings.confidential,
    )


register("s3", _factory)
