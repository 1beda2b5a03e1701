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

Connection. ``s3_endpoint`` selects an S3-compatible server (MinIO, Ceph, moto…) and then path-
style addressing, which those servers expect; without it the client talks to AWS. Credentials
come from ``s3_access_key``/``s3_secret_key`` when set, else from boto3's usual chain
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
_DELETE_BATCH = 1000  # the DeleteObjects limit
_PARQUET_MAGIC = b"PAR1"
_IPC_MAGIC = b"\xff\xff\xff\xff"
_MISSING_BUCKET = {"404", "NoSuchBucket", "NotFound"}
_FORBIDDEN = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"}


def _import_boto3() -> Any:
    try:
        import boto3
    except ImportError as err:
        raise MissingExtraError(
            "the 's3' exchange needs boto3, which is not installed: pip install 'riera[s3]'"
        ) from err
    return boto3


class S3Exchange(PerPartitionObjects):
    """One object per partition (Arrow IPC or Parquet) in an S3 bucket."""

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
        confidential: bool = False,
        multipart_threshold: int = MULTIPART_THRESHOLD,
        connect_timeout: float = 5.0,
    ) -> None:
        if fmt not in ("ipc", "parquet"):
            raise ExchangeError(f"s3_format must be 'ipc' or 'parquet'; got {fmt!r}")
        self.bucket = bucket
        self.endpoint = endpoint
        self.fmt = fmt
        self.multipart_threshold = multipart_threshold
        self.shown_endpoint = redact_url(endpoint) if endpoint else f"AWS S3 ({region})"
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
                "RIERA_S3_SECRET_KEY), or neither to use boto3's credential chain"
            )
        boto3 = _import_boto3()
        import botocore.exceptions
        from boto3.exceptions import Boto3Error
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        self._botocore_errors = botocore.exceptions
        self._boto3_error = Boto3Error
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=_MULTIPART_CHUNK,
        )
        config = Config(
            connect_timeout=connect_timeout,
            read_timeout=120,
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path"} if endpoint else {},
        )
        # A session per exchange: boto3's default session is not safe to share between threads.
        self._client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=config,
        )
        self._ensure_bucket(region)

    def _ensure_bucket(self, region: str) -> None:
        ClientError = self._botocore_errors.ClientError
        # HEAD first: it needs only read access, where CreateBucket is often not allowed.
        with self._errors("reach bucket", ""):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as err:
                if _code(err) not in _MISSING_BUCKET:
                    raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with self._errors("create bucket", ""):
            try:
                self._client.create_bucket(**kwargs)
            except ClientError as err:
                code = _code(err)
                if code == "BucketAlreadyOwnedByYou":  # another worker created it meanwhile
                    return
                if code == "BucketAlreadyExists":
                    raise ExchangeError(
                        f"bucket {self.bucket!r} at {self.shown_endpoint} belongs to someone "
                        f"else (bucket names are global); set RIERA_S3_BUCKET to a name of your own"
                    ) from err
                raise

    # -- writing -------------------------------------------------------------------------------
    def put_partition(self, table: pa.Table, key: SegmentKey, partition: int) -> Ref:
        name = key.object_path(partition)
        body = self._encode(table, name)
        with self._errors("store", name):
            if body.size <= self.multipart_threshold:
                self._client.put_object(Bucket=self.bucket, Key=name, Body=pa.BufferReader(body))
            else:
                self._client.upload_fileobj(
                    pa.BufferReader(body), self.bucket, name, Config=self._transfer
                )
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
        with self._errors("read", ref.location):
            try:
                data = self._client.get_object(Bucket=self.bucket, Key=ref.location)["Body"].read()
            except self._client.exceptions.NoSuchKey as err:
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

    # -- lifecycle -----------------------------------------------------------------------------
    def release(self, refs: Sequence[Ref]) -> None:
        self._delete(list(dict.fromkeys(r.location for r in refs)))

    def release_task(self, key: SegmentKey) -> int:
        return self._release_prefix(key.task_path)

    def release_run(self, key: SegmentKey) -> int:
        return self._release_prefix(key.run_path)

    def _release_prefix(self, prefix: str) -> int:
        deleted = 0
        with self._errors("list", f"{prefix}*"):
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            for page in pages:
                deleted += self._delete([o["Key"] for o in page.get("Contents", ())])
        return deleted

    def _delete(self, keys: list[str]) -> int:
        """Delete ``keys`` (missing ones are fine); returns how many are gone now."""
        deleted = 0
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            with self._errors("delete", f"{len(batch)} object(s)"):
                response = self._client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
                )
            errors = response.get("Errors", [])
            if errors:
                first = errors[0]
                raise ExchangeError(
                    f"cannot delete {len(errors)} object(s) from s3://{self.bucket} at "
                    f"{self.shown_endpoint}, e.g. {first.get('Key')}: {first.get('Code')} "
                    f"{first.get('Message', '')}; check that the credentials may s3:DeleteObject"
                )
            deleted += len(batch)
        return deleted

    # -- errors --------------------------------------------------------------------------------
    @contextmanager
    def _errors(self, action: str, what: str) -> Iterator[None]:
        """Turn botocore's exceptions into :class:`ExchangeError` naming the store and the fix."""
        errors = self._botocore_errors
        target = f"s3://{self.bucket}/{what} at {self.shown_endpoint}"
        try:
            yield
        except errors.ClientError as err:
            raise self._client_error(action, what, err) from err
        except errors.NoCredentialsError as err:
            raise ExchangeError(
                f"cannot {action} {target}: no S3 credentials; set RIERA_S3_ACCESS_KEY and "
                f"RIERA_S3_SECRET_KEY (or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
            ) from err
        except (errors.EndpointConnectionError, errors.ConnectTimeoutError) as err:
            raise ExchangeError(
                f"cannot {action} {target}: the S3 endpoint does not answer ({err}). Start the "
                f"S3 server or set RIERA_S3_ENDPOINT to a reachable one (setting s3_endpoint)"
            ) from err
        except (errors.BotoCoreError, self._boto3_error) as err:
            raise ExchangeError(f"cannot {action} {target}: {err}") from err

    def _client_error(self, action: str, what: str, err: Any) -> ExchangeError:
        code = _code(err)
        target = f"s3://{self.bucket}/{what} at {self.shown_endpoint}"
        if code in _FORBIDDEN:
            return ExchangeError(
                f"cannot {action} {target}: access denied ({code}); check RIERA_S3_ACCESS_KEY/"
                f"RIERA_S3_SECRET_KEY and that they may read, write, list and delete in the bucket"
            )
        return ExchangeError(f"cannot {action} {target}: {err}")


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
        confidential=settings.confidential,
    )


register("s3", _factory)
