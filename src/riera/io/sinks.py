"""File sinks with an atomic, all-or-nothing commit.

Tasks write ``part-NNNNN.<ext>`` files into ``<out>/_temporary/<run>/``; nothing under ``_temporary``
looks like output (readers skip ``_``-prefixed names). Only after every task succeeded does the driver
move the parts into ``<out>/`` and write ``_SUCCESS`` last, with a JSON manifest of files and row
counts. A failed or cancelled run removes its temporary directory and leaves the previous contents of
``<out>`` untouched. (The Hadoop ``FileOutputCommitter`` protocol, on a local file system where a
rename is atomic.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from riera.errors import ColumnTypeError, SinkError

EXTENSIONS = {"csv": "csv", "parquet": "parquet", "json": "jsonl", "text": "txt", "binary": "bin"}
SUCCESS = "_SUCCESS"
CREATED = ".created-by-this-run"  # in the run's temporary directory


def temp_dir(out: str, run_id: str) -> Path:
    return Path(out) / "_temporary" / run_id


def prepare(out: str, mode: str, run_id: str) -> Path:
    """Check the destination and create the run's temporary directory."""
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise SinkError(f"output path {out} exists and is a file; choose a directory path")
    if mode == "error" and target.is_dir():
        existing = [p.name for p in target.iterdir() if p.name != "_temporary"]
        if existing:
            raise SinkError(
                f"output directory {out} is not empty ({len(existing)} entries, e.g. "
                f"{existing[0]!r}); pass mode='overwrite' to replace it or choose another path"
            )
    tmp = temp_dir(out, run_id)
    existed = target.exists()
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        if not existed:
            (tmp / CREATED).touch()
    except OSError as err:
        raise SinkError(f"cannot create the output directory {out}: {err}") from err
    return tmp


def write_part(
    table: pa.Table, fmt: str, tmp: str, index: int, options: dict[str, Any]
) -> dict[str, Any]:
    """Write one partition; returns its manifest entry. Runs inside a task."""
    name = f"part-{index:05d}.{EXTENSIONS[fmt]}"
    path = os.path.join(tmp, name)
    if fmt == "csv":
        ready = _csv_ready(table)
        try:
            pacsv.write_csv(ready, path)
        except pa.ArrowInvalid as err:
            binary = [f.name for f in ready.schema if pa.types.is_binary(f.type)
                      or pa.types.is_large_binary(f.type)]  # fmt: skip
            if "UTF8" not in str(err) or not binary:
                raise
            raise ColumnTypeError(
                f"write_csv: binary column(s) {binary} hold bytes that are not UTF-8 text, which "
                f"CSV cannot hold; write them with write_parquet, or decode them first"
            ) from err
    elif fmt == "parquet":
        pq.write_table(table, path, compression=options.get("compression", "snappy"))
    elif fmt == "json":
        _write_json_lines(table, path)
    elif fmt == "text":
        col = _single_column(table, options.get("column"), "write_text")
        with open(path, "w", encoding="utf-8") as fh:
            for v in col.to_pylist():
                fh.write("" if v is None else str(v))
                fh.write("\n")
    elif fmt == "binary":
        col = _single_column(table, options.get("column"), "write_binary")
        with open(path, "wb") as fh:
            for chunk in col.chunks:
                _write_binary_chunk(fh, chunk)
    else:  # pragma: no cover - validated when the plan is built
        raise SinkError(f"unknown format {fmt!r}")
    return {"file": name, "rows": table.num_rows, "bytes": os.path.getsize(path)}


def _csv_ready(table: pa.Table) -> pa.Table:
    """``table`` in types Arrow's CSV writer takes: views as their ``large_`` counterparts
    (the text is the same); a nested column has no CSV form, so it is refused by name."""
    for i, field in enumerate(table.schema):
        t = field.type
        if pa.types.is_nested(t) or pa.types.is_union(t):
            raise ColumnTypeError(
                f"write_csv: column {field.name!r} has type {t}, which CSV cannot hold; "
                f"write it with write_parquet or write_json, or select the other columns"
            )
        if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
            plain = pa.large_string() if pa.types.is_string_view(t) else pa.large_binary()
            table = table.set_column(i, field.name, table.column(i).cast(plain))
    return table


def _single_column(table: pa.Table, column: str | None, op: str) -> pa.ChunkedArray:
    if column is not None:
        if column not in table.column_names:
            raise KeyError(f"{op}: no column {column!r}; the data has {table.column_names}")
        return table.column(column)
    if table.num_columns != 1:
        raise ValueError(
            f"{op}: the data has {table.num_columns} columns "
            f"{table.column_names}; pass column=... to choose one"
        )
    return table.column(0)


def _write_binary_chunk(fh: Any, chunk: pa.Array) -> None:
    t = chunk.type
    if pa.types.is_fixed_size_binary(t):
        w = t.byte_width
        buf = chunk.buffers()[1]
        fh.write(memoryview(buf)[chunk.offset * w : (chunk.offset + len(chunk)) * w])
    elif (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary_view(t)
    ):
        for v in chunk.to_pylist():
            if v is not None:
                fh.write(v if isinstance(v, bytes) else v.encode())
    else:
        raise TypeError(f"write_binary needs a binary or string column, got {t}")


def _write_json_lines(table: pa.Table, path: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for batch in table.to_batches(max_chunksize=65536):
            for row in batch.to_pylist():
                fh.write(json.dumps(row, default=_json_default, ensure_ascii=False))
                fh.write("\n")


def _json_default(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.decode("latin-1")
    return str(v)


def commit(out: str, mode: str, run_id: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Move the run's parts into place and write ``_SUCCESS`` last.

    With ``mode="overwrite"`` the previous entries are first moved aside (renames, in the same
    directory); if anything fails before ``_SUCCESS`` is written, the new parts are taken out and
    the previous entries put back, so the directory is either the old output or the new one.
    """
    target = Path(out)
    tmp = temp_dir(out, run_id)
    backup = target / f"_previous-{run_id}"
    moved_aside: list[str] = []
    moved_in: list[str] = []
    try:
        if mode == "overwrite":
            backup.mkdir()
            for p in list(target.iterdir()):
                if p.name in ("_temporary", backup.name):
                    continue
                os.replace(p, backup / p.name)
                moved_aside.append(p.name)
        for entry in parts:
            os.replace(tmp / entry["file"], target / entry["file"])
            moved_in.append(entry["file"])
        manifest = {"run_id": run_id, "files": parts, "rows": sum(p["rows"] for p in parts)}
        success_tmp = tmp / SUCCESS
        success_tmp.write_text(json.dumps(manifest, indent=1))
        os.replace(success_tmp, target / SUCCESS)
    except OSError as err:
        for name in moved_in:
            with contextlib.suppress(OSError):
                (target / name).unlink()
        for name in moved_aside:
            with contextlib.suppress(OSError):
                os.replace(backup / name, target / name)
        with contextlib.suppress(OSError):
            backup.rmdir()  # only if everything went back; otherwise it keeps what did not
        raise SinkError(
            f"committing the output to {out} failed ({err}); the directory holds what it held "
            f"before the run"
        ) from err
    shutil.rmtree(backup, ignore_errors=True)
    _remove_temp(out, run_id)
    return manifest


def abort(out: str, run_id: str) -> None:
    """Remove everything the run wrote; earlier contents of ``out`` stay as they were."""
    created = (temp_dir(out, run_id) / CREATED).exists()
    _remove_temp(out, run_id)
    target = Path(out)
    if created:  # the directory did not exist before this run: remove it if it is still empty
        with contextlib.suppress(OSError):
            target.rmdir()


def _remove_temp(out: str, run_id: str) -> None:
    shutil.rmtree(temp_dir(out, run_id), ignore_errors=True)
    parent = Path(out) / "_temporary"
    try:
        parent.rmdir()
    except OSError:
        pass
