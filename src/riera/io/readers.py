"""File sources: path expansion, splitting into partitions, and reading one split.

Paths are expanded when the dataset is defined (a missing path fails on the line that named it).
Text, CSV and JSON-lines files are split by byte size and realigned on line boundaries the way Hadoop
does: a line belongs to the split holding its first byte, so every line is read exactly once whatever
the split size. (CSV fields with embedded newlines therefore need ``split=False``, which reads whole
files per partition.) Parquet is split by row groups; ``read_files`` and whole-file text group whole
files. Files and directories whose name starts with ``_`` or ``.`` are skipped, as Spark and Hadoop
do, so an output directory's ``_SUCCESS`` and ``_temporary`` are never read as data.
"""

from __future__ import annotations

import glob
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from riera import memory
from riera.errors import SchemaMismatchError, SourceError
from riera.kernels import views

BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Split:
    """What one task reads: byte range of one file, row groups of one Parquet file, or whole files."""

    path: str
    start: int = 0
    end: int = -1
    row_groups: tuple[int, ...] = ()
    files: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.files:
            return f"{len(self.files)} file(s) from {self.files[0]}"
        if self.row_groups:
            return f"{self.path} row groups {self.row_groups[0]}..{self.row_groups[-1]}"
        return f"{self.path} bytes {self.start}..{self.end}"


def _hidden(path: str) -> bool:
    return os.path.basename(path).startswith(("_", "."))


def _hidden_below(match: str, pattern: str) -> bool:
    """Whether a glob match passes through a ``_``/``.`` entry below the pattern's fixed prefix."""
    fixed = []
    for part in pattern.split(os.sep):
        if glob.has_magic(part):
            break
        fixed.append(part)
    root = os.sep.join(fixed) or "."
    rel = os.path.relpath(match, root)
    return any(c.startswith(("_", ".")) and c not in (".", "..") for c in rel.split(os.sep))


def expand_paths(paths: Any, op: str) -> tuple[tuple[str, int], ...]:
    """Files behind ``paths`` (files, directories, globs), sorted, with sizes."""
    items = [paths] if isinstance(paths, str | os.PathLike) else list(paths)
    if not items:
        raise SourceError(f"{op}: no paths given")
    found: dict[str, int] = {}
    for item in items:
        p = os.fspath(item)
        matches = sorted(glob.glob(p, recursive=True)) if glob.has_magic(p) else [p]
        if not matches or not any(os.path.exists(m) for m in matches):
            raise SourceError(
                f"{op}: path {p!r} does not exist"
                + (" (the glob matched nothing)" if glob.has_magic(p) else "")
            )
        for m in matches:
            if glob.has_magic(p) and _hidden_below(m, p):
                continue  # a glob never picks _SUCCESS, _temporary/ or dot entries
            if os.path.isdir(m):
                for root, dirs, files in os.walk(m):
                    dirs[:] = sorted(d for d in dirs if not _hidden(d))
                    for f in sorted(files):
                        if not _hidden(f):
                            fp = os.path.join(root, f)
                            found[fp] = os.path.getsize(fp)
            elif os.path.isfile(m):
                found[m] = os.path.getsize(m)
    if not found:
        raise SourceError(f"{op}: {items!r} holds no files")
    return tuple(sorted(found.items()))


def byte_splits(files: tuple[tuple[str, int], ...], target: int) -> list[Split]:
    out: list[Split] = []
    for path, size in files:
        if size == 0:
            continue
        n = max(1, -(-size // target))
        step = -(-size // n)
        out.extend(Split(path, s, min(size, s + step)) for s in range(0, size, step))
    return out or [Split(files[0][0], 0, 0)]


def file_groups(files: tuple[tuple[str, int], ...], target: int) -> list[Split]:
    groups: list[list[str]] = [[]]
    acc = 0
    for path, size in files:
        if groups[-1] and acc + size > target:
            groups.append([])
            acc = 0
        groups[-1].append(path)
        acc += size
    return [Split(g[0], files=tuple(g)) for g in groups]


def parquet_splits(files: tuple[tuple[str, int], ...], target: int) -> list[Split]:
    """Each file's row groups in about ``size / target`` contiguous splits of equal bytes *on
    disk* (compressed: the unit of the file sizes the target comes from), never splitting a row
    group. Balancing by cumulative size, not greedy packing, keeps 8 row groups for 4 splits at
    2 + 2 + 2 + 2 when they are a byte over a quarter each."""
    out = []
    for path, _ in files:
        md = pq.ParquetFile(path).metadata
        sizes = []
        for i in range(md.num_row_groups):
            rg = md.row_group(i)
            sizes.append(sum(rg.column(j).total_compressed_size for j in range(rg.num_columns)))
        total = sum(sizes)
        if not sizes or total == 0:
            out.append(Split(path, row_groups=tuple(range(len(sizes)))))
            continue
        k = max(1, min(len(sizes), -(-total // max(1, target))))
        groups: list[list[int]] = [[] for _ in range(k)]
        acc = 0
        for i, size in enumerate(sizes):
            groups[min(k - 1, (2 * acc + size) * k // (2 * total))].append(i)
            acc += size
        out.extend(Split(path, row_groups=tuple(g)) for g in groups if g)
    return out


def read_line_range(path: str, start: int, end: int) -> tuple[np.ndarray, int]:
    """The whole lines starting in ``[start, end)`` and the file offset they start at.

    The bytes are read straight into a buffer from Arrow's pool (no ``bytes`` object, no fresh
    pages per task) and returned as a uint8 array; a UTF-8 BOM at the start of the file is
    dropped (the offset then says 3)."""
    with open(path, "rb") as fh:
        pos = start
        if start > 0:
            fh.seek(start - 1)
            pos = start - 1 + len(fh.readline())
        if pos >= end:
            return np.empty(0, dtype=np.uint8), pos
        slack = 1 << 16
        buf = memory.empty(end - pos + slack, dtype=np.uint8)
        got, want = 0, end - pos
        view = memoryview(buf.data)
        while got < want:  # one read returns at most ~2 GiB
            n = os.preadv(fh.fileno(), [view[got:want]], pos + got)
            if n == 0:
                break  # the file is shorter than it was when listed
            got += n
        if got and buf[got - 1] != 10:  # finish the line that crosses ``end``
            fh.seek(pos + got)
            tail = fh.readline()
            if len(tail) > slack:
                buf = np.concatenate([buf[:got], np.frombuffer(tail, dtype=np.uint8)])
            else:
                buf[got : got + len(tail)] = np.frombuffer(tail, dtype=np.uint8)
            got += len(tail)
    data = buf[:got]
    if pos == 0 and data[:3].tobytes() == BOM:
        return data[3:], 3
    return data, pos


# -- per-format readers ------------------------------------------------------------------------


def lines_to_array(data: bytes | np.ndarray, path: str) -> pa.Array:
    """Lines of ``data`` as a string array, newline characters removed."""
    if len(data) == 0:
        return pa.array([], pa.string())
    raw = np.frombuffer(data, dtype=np.uint8)
    newline = memory.empty(len(raw), dtype=bool)
    ends = np.flatnonzero(np.equal(raw, 10, out=newline)) + 1
    del newline
    if len(ends) == 0 or ends[-1] != len(raw):
        ends = np.append(ends, len(raw))
    offsets = np.concatenate([[0], ends]).astype(np.int64 if len(raw) >= 2**31 else np.int32)
    typ = pa.large_string() if offsets.dtype == np.int64 else pa.string()
    arr = pa.Array.from_buffers(typ, len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    try:
        arr.validate(full=True)
    except pa.ArrowInvalid as err:
        raise SourceError(
            f"{path}: not valid UTF-8 text ({err}); read it with read_files() to get raw bytes"
        ) from err
    return pc.utf8_rtrim(arr, characters="\r\n")


def read_text_split(split: Split, whole_files: bool, include_paths: bool) -> pa.Table:
    if whole_files:
        paths, texts = [], []
        for f in split.files:
            with open(f, "rb") as fh:
                data = fh.read()
            if data.startswith(BOM):
                data = data[3:]
            try:
                texts.append(data.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise SourceError(f"{f}: not valid UTF-8 text at byte {err.start}") from err
            paths.append(f)
        return pa.table({"path": paths, "text": pa.array(texts, pa.large_string())})
    arr = lines_to_array(read_line_range(split.path, split.start, split.end)[0], split.path)
    if include_paths:
        return pa.table({"path": pa.array([split.path] * len(arr), pa.string()), "text": arr})
    return pa.table({"text": arr})


def read_files_split(split: Split) -> pa.Table:
    """One row per file; the contents are read straight into one buffer (a single copy)."""
    sizes = [os.path.getsize(f) for f in split.files]
    data = memory.empty(sum(sizes), dtype=np.uint8)
    offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
    pos = 0
    for i, (f, size) in enumerate(zip(split.files, sizes, strict=True)):
        with open(f, "rb", buffering=0) as fh:
            view = memoryview(data.data)[pos : pos + size]
            got = 0
            while got < size:
                n = fh.readinto(view[got:])
                if not n:
                    raise SourceError(f"{f}: file shrank while being read ({got} of {size} bytes)")
                got += n
        pos += size
        offsets[i + 1] = pos
    blobs = pa.Array.from_buffers(
        pa.large_binary(), len(sizes), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pa.table(
        {
            "path": pa.array(list(split.files), pa.string()),
            "size": pa.array(sizes, pa.int64()),
            "bytes": blobs,
        }
    )


_ROW_RE = re.compile(r"Row #(\d+)")


def _line_of(path: str, offset: int) -> int:
    """1-based line number at byte ``offset``."""
    n = 1
    with open(path, "rb") as fh:
        remaining = offset
        while remaining > 0:
            chunk = fh.read(min(remaining, 1 << 22))
            if not chunk:
                break
            n += chunk.count(b"\n")
            remaining -= len(chunk)
    return n


def csv_header(path: str, options: dict[str, Any]) -> list[str]:
    with open(path, "rb") as fh:
        first = fh.readline()
    if first.startswith(BOM):
        first = first[3:]
    delim = options.get("delimiter", ",")
    table = pacsv.read_csv(
        io.BytesIO(first + b"\n"),
        read_options=pacsv.ReadOptions(autogenerate_column_names=True),
        parse_options=pacsv.ParseOptions(delimiter=delim),
        convert_options=pacsv.ConvertOptions(column_types={}, strings_can_be_null=False),
    )
    return [str(v[0].as_py()) if v[0].is_valid else "" for v in table.columns]


def infer_csv_schema(path: str, names: list[str], options: dict[str, Any]) -> pa.Schema:
    data, _ = read_line_range(path, 0, min(os.path.getsize(path), 1 << 20))
    table = _parse_csv(data, path, 0, names, None, options, first_split=True)
    return table.schema


def _parse_csv(
    data: bytes | np.ndarray,
    path: str,
    offset: int,
    names: list[str],
    schema: pa.Schema | None,
    options: dict[str, Any],
    first_split: bool,
    columns: list[str] | None = None,
) -> pa.Table:
    header = options.get("header", True)
    # Single-threaded: a task is already one core, and only then does Arrow say "Row #N".
    ro = pacsv.ReadOptions(
        column_names=names,
        skip_rows=1 if (header and first_split) else 0,
        block_size=max(1 << 20, min(len(data) + 1, 1 << 26)),
        use_threads=False,
    )
    po = pacsv.ParseOptions(delimiter=options.get("delimiter", ","))
    co = pacsv.ConvertOptions(
        column_types=schema, strings_can_be_null=False, include_columns=columns
    )
    if len(data) == 0:
        full = schema or pa.schema([(n, pa.string()) for n in names])
        keep = columns if columns is not None else full.names
        return pa.schema([full.field(c) for c in keep]).empty_table()
    try:
        return pacsv.read_csv(
            pa.BufferReader(pa.py_buffer(data)),
            read_options=ro,
            parse_options=po,
            convert_options=co,
        )
    except pa.ArrowInvalid as err:
        msg = str(err)
        m = _ROW_RE.search(msg)
        where = f"{path}"
        if m:
            row = int(m.group(1))  # 1-based, counting rows skipped (the header) too
            line = _line_of(path, offset) + row - 1
            where = f"{path}, line {line}"
        else:
            where = f"{path}, in the lines starting at line {_line_of(path, offset)}"
        hint = " (pass schema=... to read_csv to set column types)" if "conversion" in msg else ""
        raise SourceError(f"malformed CSV in {where}: {msg}{hint}") from err


def read_csv_split(
    split: Split,
    names: list[str],
    schema: pa.Schema | None,
    options: dict[str, Any],
    columns: list[str] | None = None,
) -> pa.Table:
    """A split's rows; ``columns``: only these are converted (the others are skipped by the
    parser, not decoded and dropped)."""
    if split.files:  # split=False: whole files
        parts = []
        for f in split.files:
            with open(f, "rb") as fh:
                data = fh.read()
            start = 3 if data.startswith(BOM) else 0
            parts.append(_parse_csv(data[start:], f, 0, names, schema, options, True, columns))
        return pa.concat_tables(parts)
    lines, pos = read_line_range(split.path, split.start, split.end)
    return _parse_csv(lines, split.path, pos, names, schema, options, pos <= 3, columns)


def check_csv_headers(files: tuple[tuple[str, int], ...], options: dict[str, Any]) -> list[str]:
    """Column names shared by all files; a file that disagrees is named in the error."""
    first_path = files[0][0]
    names = csv_header(first_path, options)
    if not options.get("header", True):
        names = [f"f{i}" for i in range(len(names))]
        return options.get("column_names") or names
    for path, size in files[1:]:
        if size == 0:
            continue
        other = csv_header(path, options)
        if other != names:
            raise SchemaMismatchError(
                f"read_csv: {path} has columns {other}, but {first_path} has {names}; "
                f"read the files separately and align them with select()/map_batches(), "
                f"or fix the header"
            )
    return names


def infer_json_schema(path: str) -> pa.Schema:
    data, _ = read_line_range(path, 0, min(os.path.getsize(path), 1 << 20))
    return _parse_json(data, path, 0, None).schema


def _parse_json(
    data: bytes | np.ndarray, path: str, offset: int, schema: pa.Schema | None
) -> pa.Table:
    if not np.any(np.frombuffer(data, dtype=np.uint8) > 32):  # nothing but whitespace
        return schema.empty_table() if schema is not None else pa.table({})
    po = pajson.ParseOptions(
        explicit_schema=schema, unexpected_field_behavior="infer", newlines_in_values=False
    )
    ro = pajson.ReadOptions(block_size=max(1 << 20, min(len(data) + 1, 1 << 26)))
    try:
        return pajson.read_json(
            pa.BufferReader(pa.py_buffer(data)), read_options=ro, parse_options=po
        )
    except pa.ArrowInvalid as err:
        line = _json_error_line(bytes(data)) if "JSON" in str(err) else None
        where = (
            f"{path}, line {_line_of(path, offset) + line - 1}"
            if line
            else f"{path}, lines from {_line_of(path, offset)}"
        )
        raise SourceError(f"malformed JSON lines in {where}: {err}") from err


def _json_error_line(data: bytes) -> int | None:
    import json

    for i, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            json.loads(line)
        except ValueError:
            return i
    return None


def read_json_split(split: Split, schema: pa.Schema | None) -> pa.Table:
    data, pos = read_line_range(split.path, split.start, split.end)
    return _parse_json(data, split.path, pos, schema)


def parquet_schema(files: tuple[tuple[str, int], ...]) -> pa.Schema:
    first = files[0][0]
    try:
        schema = pq.read_schema(first)
    except (pa.ArrowInvalid, OSError) as err:
        raise SourceError(f"read_parquet: {first} is not a readable Parquet file: {err}") from err
    for path, _ in files[1:]:
        try:
            other = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as err:
            raise SourceError(
                f"read_parquet: {path} is not a readable Parquet file: {err}"
            ) from err
        if not other.equals(schema, check_metadata=False):
            raise SchemaMismatchError(
                f"read_parquet: {path} has schema {_fmt(other)}, but {first} has {_fmt(schema)}; "
                f"read them separately and cast with map_batches()"
            )
    return schema


def read_parquet_split(
    split: Split, columns: list[str] | None, arrow_filter: Any = None
) -> pa.Table:
    """The split's row groups (only ``columns``); with ``arrow_filter``, the row groups whose
    statistics rule the filter out are not read at all."""
    file, groups = _parquet_groups(split, arrow_filter)
    if not groups:
        return _empty(file, columns)
    return _ViewReader(split.path, file, groups, columns).read(groups)


def iter_parquet_split(
    split: Split, columns: list[str] | None, arrow_filter: Any = None
) -> Iterator[pa.Table]:
    """:func:`read_parquet_split` a row group at a time (at least one table, maybe empty)."""
    file, groups = _parquet_groups(split, arrow_filter)
    if not groups:
        yield _empty(file, columns)
    reader = _ViewReader(split.path, file, groups, columns)
    for g in groups:
        yield reader.read([g])


# Reading through the dictionary pays when it holds few values beside the rows: its page is
# small (writers fall back to plain pages once it reaches their limit, ~1 MiB by default) and a
# small part of the column chunk (or tiny).
_SMALL_DICTIONARY = 256 << 10
_TINY_DICTIONARY = 4 << 10


class _ViewReader:
    """Row groups of one Parquet split. View columns (``string_view``, as Polars and DuckDB
    write) whose chunks are dictionary-encoded are read as dictionaries and gathered into views
    (:func:`riera.kernels.views.from_dictionary`), 2-3x faster than decoding every value; the
    tables have the file's types either way."""

    def __init__(
        self, path: str, file: pq.ParquetFile, groups: list[int], columns: list[str] | None
    ) -> None:
        self.columns = columns
        self.schema = file.schema_arrow
        self.encoded = _dictionary_views(file, groups, columns)
        self.file = (
            pq.ParquetFile(path, metadata=file.metadata, read_dictionary=self.encoded)
            if self.encoded
            else file
        )

    def read(self, groups: list[int]) -> pa.Table:
        table = self.file.read_row_groups(groups, columns=self.columns)
        for name in self.encoded:
            i = table.schema.get_field_index(name)
            field = self.schema.field(name)
            col = table.column(i)
            if pa.types.is_dictionary(col.type):
                chunks = [views.from_dictionary(c, field.type) for c in col.chunks]
                table = table.set_column(i, field, pa.chunked_array(chunks, field.type))
        return table


def _dictionary_views(
    file: pq.ParquetFile, groups: list[int], columns: list[str] | None
) -> list[str]:
    """The top-level view columns among ``columns`` that every row group in ``groups`` keeps
    dictionary-encoded with a small dictionary."""
    schema = file.schema_arrow
    wanted = [
        f.name
        for f in schema
        if (columns is None or f.name in columns)
        and (pa.types.is_string_view(f.type) or pa.types.is_binary_view(f.type))
    ]
    if not wanted or not groups:
        return []
    meta = file.metadata
    position = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    out = []
    for name in wanted:
        i = position.get(name)
        if i is not None and all(_small_dictionary(meta.row_group(g).column(i)) for g in groups):
            out.append(name)
    return out


def _small_dictionary(chunk: Any) -> bool:
    start = chunk.dictionary_page_offset
    if not chunk.has_dictionary_page or start is None:
        return False
    size = chunk.data_page_offset - start
    if not 0 <= size <= _SMALL_DICTIONARY:
        return False
    return size <= _TINY_DICTIONARY or 8 * size <= chunk.total_compressed_size


def _empty(file: pq.ParquetFile, columns: list[str] | None) -> pa.Table:
    schema = file.schema_arrow
    keep = columns if columns is not None else schema.names
    return pa.schema([schema.field(c) for c in keep]).empty_table()


def _parquet_groups(split: Split, arrow_filter: Any) -> tuple[pq.ParquetFile, list[int]]:
    groups = list(split.row_groups)
    file = pq.ParquetFile(split.path)
    if arrow_filter is not None and groups:
        import pyarrow.dataset as pds
        from pyarrow import fs

        fragment = pds.ParquetFileFormat().make_fragment(
            split.path, filesystem=fs.LocalFileSystem(), row_groups=groups
        )
        try:
            groups = [rg.id for rg in fragment.subset(arrow_filter).row_groups]
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass  # statistics of a type the scanner cannot compare: read every group
    return file, groups


def _fmt(schema: pa.Schema) -> str:
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"
