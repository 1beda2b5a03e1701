"""Sources: in-memory data, ranges and files, each the start of a lazy :class:`~riera.Dataset`.

Files are listed and checked (headers, schemas) when the source is defined, so a wrong path or
an inconsistent file fails on the line that names it; reading happens in the workers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import pyarrow as pa

from riera.dataset import Dataset, Paths, _default_partitions, _names, _positive
from riera.errors import PlanError
from riera.io import readers
from riera.physical import ops
from riera.plan import nodes as n

if TYPE_CHECKING:
    import pandas as pd


def from_arrow(table: pa.Table | pa.RecordBatch, *, partitions: int | None = None) -> Dataset:
    """A dataset over an Arrow table, split into ``partitions`` slices."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not isinstance(table, pa.Table):
        raise PlanError(f"from_arrow: expected a pyarrow Table; got {type(table).__name__}")
    _positive("from_arrow", "partitions", partitions)
    return Dataset(n.TableSource((), table, partitions or _default_partitions(), "from_arrow"))


def from_pandas(df: pd.DataFrame, *, partitions: int | None = None) -> Dataset:
    """A dataset over a pandas DataFrame (the index is dropped)."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise PlanError(f"from_pandas: expected a pandas DataFrame; got {type(df).__name__}")
    _positive("from_pandas", "partitions", partitions)
    table = pa.Table.from_pandas(df, preserve_index=False)
    return Dataset(n.TableSource((), table, partitions or _default_partitions(), "from_pandas"))


def from_items(items: Iterable[Any], *, partitions: int | None = None) -> Dataset:
    """A dataset over Python objects: dicts become rows; other values become ``{"item": value}``."""
    rows = list(items)
    _positive("from_items", "partitions", partitions)
    if rows and not all(isinstance(r, dict) for r in rows):
        if any(isinstance(r, dict) for r in rows):
            raise PlanError("from_items: mix of dicts and non-dicts; give all rows as dicts")
        rows = [{"item": r} for r in rows]
    try:
        table = ops.rows_to_table(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise PlanError(f"from_items: the rows cannot form one table: {err}") from err
    return Dataset(n.TableSource((), table, partitions or _default_partitions(), "from_items"))


def range(
    start: int, stop: int | None = None, step: int = 1, *, partitions: int | None = None
) -> Dataset:
    """Integers in column ``id``, like Python's ``range``: ``range(10)`` is 0…9,
    ``range(5, 10)`` is 5…9, ``range(0, 10, 3)`` is 0, 3, 6, 9."""
    if stop is None:
        start, stop = 0, start
    for name, v in (("stop", stop), ("start", start), ("step", step)):
        if not isinstance(v, int) or isinstance(v, bool):
            raise PlanError(f"range: {name} must be an integer; got {v!r}")
    if step < 1:
        raise PlanError(f"range: step must be >= 1; got {step}")
    _positive("range", "partitions", partitions)
    return Dataset(n.RangeSource((), start, stop, step, partitions or _default_partitions()))


def read_text(
    paths: Paths,
    *,
    whole_files: bool = False,
    include_paths: bool = False,
    partition_bytes: int | None = None,
) -> Dataset:
    """Lines of text files (column ``text``), or one row per file (``path``, ``text``).

    Files are split into partitions of about ``partition_bytes`` at line boundaries.
    """
    files = readers.expand_paths(paths, "read_text")
    _positive("read_text", "partition_bytes", partition_bytes)
    opts = (("include_paths", include_paths), ("whole_files", whole_files))
    return Dataset(n.FileSource((), "text", files, None, opts, partition_bytes))


def read_csv(
    paths: Paths,
    *,
    schema: pa.Schema | dict[str, Any] | None = None,
    delimiter: str = ",",
    header: bool = True,
    split: bool = True,
    partition_bytes: int | None = None,
) -> Dataset:
    """CSV files with a header row; column types inferred from the first file unless ``schema``.

    ``split=False`` reads whole files per partition (needed when quoted fields contain newlines).
    """
    files = readers.expand_paths(paths, "read_csv")
    _positive("read_csv", "partition_bytes", partition_bytes)
    opts: dict[str, Any] = {"delimiter": delimiter, "header": header, "split": split}
    names = readers.check_csv_headers(files, opts)
    if schema is not None:
        given: pa.Schema = pa.schema(schema) if isinstance(schema, dict) else schema
        missing = [c for c in given.names if c not in names]
        if missing:
            raise PlanError(
                f"read_csv: schema names columns {missing} that the header "
                f"{names} of {files[0][0]} lacks"
            )
        types = {f.name: f.type for f in given}
        full = pa.schema([(c, types.get(c, pa.string())) for c in names])
    else:
        first = next((p for p, s in files if s > 0), files[0][0])
        full = readers.infer_csv_schema(first, names, opts)
    opts["column_names"] = tuple(names)
    return Dataset(
        n.FileSource((), "csv", files, full, tuple(sorted(opts.items())), partition_bytes)
    )


def read_json(
    paths: Paths, *, schema: pa.Schema | None = None, partition_bytes: int | None = None
) -> Dataset:
    """JSON-lines files (one object per line); types inferred from the first file unless given."""
    files = readers.expand_paths(paths, "read_json")
    _positive("read_json", "partition_bytes", partition_bytes)
    if schema is None:
        first = next((p for p, s in files if s > 0), files[0][0])
        schema = readers.infer_json_schema(first)
    return Dataset(n.FileSource((), "json", files, schema, (), partition_bytes))


def read_parquet(
    paths: Paths, *, columns: Sequence[str] | None = None, partition_bytes: int | None = None
) -> Dataset:
    """Parquet files (same schema), split into partitions by row groups."""
    files = readers.expand_paths(paths, "read_parquet")
    _positive("read_parquet", "partition_bytes", partition_bytes)
    schema = readers.parquet_schema(files)
    if columns is not None:
        cols = _names("read_parquet", list(columns))
        missing = [c for c in cols if c not in schema.names]
        if missing:
            raise PlanError(f"read_parquet: no column(s) {missing}; the files have {schema.names}")
        schema = pa.schema([schema.field(c) for c in cols])
    opts = (("columns", tuple(columns) if columns is not None else None),)
    return Dataset(n.FileSource((), "parquet", files, schema, opts, partition_bytes))


def read_file_groups(
    paths: Paths,
    *,
    by: str | re.Pattern[str] | Callable[[str], str] | None = None,
    names: Literal["basename", "relative"] = "basename",
    metadata: Callable[[str, list[str]], Mapping[str, Any]] | None = None,
    partition_bytes: int | None = None,
) -> Dataset:
    """File groups for :meth:`Dataset.run_program`: one row per group, ``group`` (its key),
    ``files`` (a list of ``{name, data}``) and metadata columns.

    ``by`` chooses the groups: ``None`` (one per file), ``"dir"`` (one per directory),
    ``"stem"`` (files sharing the name up to the first dot: ``s1.R1.fq`` and ``s1.R2.fq``), a
    compiled regular expression over the file name (its ``group`` or first group), or a function
    of the path. File names inside a group are base names (``names="relative"``: paths relative to
    the group's directory). ``metadata(key, paths)`` returns extra columns per group. Whole groups
    go to tasks, at least one task per worker when there are enough groups.

    >>> import riera, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for f in ("s1.R1.fq", "s1.R2.fq", "s2.R1.fq"): _ = (d / f).write_text(f)
    >>> ds = riera.read_file_groups(str(d / "*.fq"), by="stem")
    >>> [(r["group"], [f["name"] for f in r["files"]]) for r in ds.collect()]
    [('s1', ['s1.R1.fq', 's1.R2.fq']), ('s2', ['s2.R1.fq'])]
    """
    from riera.blackbox import filegroups

    files = readers.expand_paths(paths, "read_file_groups")
    _positive("read_file_groups", "partition_bytes", partition_bytes)
    if metadata is not None:
        n.require_callable("read_file_groups", metadata, "pass a function (key, paths) -> dict")
    groups = filegroups.make_groups(files, by, names, metadata)
    return Dataset(n.FileGroupSource((), groups, partition_bytes))


def read_files(paths: Paths, *, partition_bytes: int | None = None) -> Dataset:
    """One row per file: ``path``, ``size``, ``bytes`` (raw content)."""
    files = readers.expand_paths(paths, "read_files")
    _positive("read_files", "partition_bytes", partition_bytes)
    return Dataset(n.FileSource((), "files", files, None, (), partition_bytes))
