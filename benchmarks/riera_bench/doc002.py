"""Document 002's figures as data, and the cells ``riera bench exchange`` shows for them.

Source: ``/work/shared/seeds/002_faas_shared_memory_ca.txt`` (Hostau Guimerà, URV 2023, in
Catalan), section 4.2. Units are the document's: sizes in bytes (tables 3–8), memory in MiB as
``memory_profiler`` printed it (tables 9–24; "Mem Usage" after the line and its "Increment"),
times in seconds (the text of 4.2.2.3; figures 6–15 are images whose values are not in the text).

What the text does *not* hold: the bodies of tables 1 and 2 ("Exemple de part del CSV Terasort /
Brain") — only their captions survive — and every plotted time except the zero-copy read times.
What the figures imply (derived here, not stated by the document):

- Terasort 500 MB (table 3): the ``string[pyarrow]`` frame is the record batch plus 128 bytes (a
  ``RangeIndex``), and the object frame adds 8 + 49 bytes per string (pointer + CPython header,
  the 49 the text quotes). Solving both gives ≈ 4,562,296 rows of ≈ 107.6 characters (key and
  value together), i.e. ≈ 109.6 CSV bytes per line — longer than a 10 + 90 character record.
- Brain 150 MB (table 4): frame = record batch + 128 = 20 bytes × 4,728,496 rows exactly
  (int32 + 2 × float64); the CSV holds 33.3 bytes per line, and its 157,551,403 bytes are
  150.25 MiB: the document's "150MB" is in MiB. The other Brain files are labelled 32, 63, 95 and
  127 MB (captions of figures 9, 10, 14, 15); Terasort ones 100–500 MB.

Variant names map the document's column headers to the study's: Terasort "Python String" (pandas
``string``, Python storage), "Python Object" (``object``), "PyArrow String" (``string[pyarrow]``,
read back with ``types_mapper=pd.ArrowDtype``); Brain ``int32/float64`` (NumPy) and
``int32[pyarrow]/double[pyarrow]`` (Arrow).
"""

from __future__ import annotations

from dataclasses import dataclass

TERASORT_SIZES_MB = (100, 200, 300, 400, 500)
BRAIN_SIZES_MB = (32, 63, 95, 127, 150)  # the 150 MB file is 157,551,403 bytes (150.25 MiB)
TERASORT_ROWS_500MB = 4_562_296  # derived from table 3 (see the module docstring)
BRAIN_ROWS_150MB = 4_728_496  # derived from table 4
SIZE_MB = {"terasort": 500, "brain": 150}  # the file every table 3–24 measured
ROWS = {"terasort": f"≈{TERASORT_ROWS_500MB:,}", "brain": f"{BRAIN_ROWS_150MB:,}"}  # as shown

# Study variant -> the document's column header.
VARIANT_LABELS = {
    ("terasort", "string"): "Python String",
    ("terasort", "object"): "Python Object",
    ("terasort", "arrow"): "PyArrow String",
    ("brain", "numpy"): "int32/float64",
    ("brain", "arrow"): "int32[pyarrow]/double[pyarrow]",
}


@dataclass(frozen=True)
class Sizes:
    """One column of tables 3–8 (bytes); ``stored`` maps a study backend to (table, bytes)."""

    csv: int
    dataframe: int
    record_batch: int
    stored: dict[str, tuple[int, int]]


# Tables 3 (Arrow → shared memory), 5 (pickle → shared memory) and 7 (Parquet+snappy → S3) for
# Terasort 500 MB; 4, 6 and 8 for Brain 150 MB. Table 7/8's S3 sizes are round in the original.
SIZES: dict[tuple[str, str], Sizes] = {
    ("terasort", "string"): Sizes(
        500_000_000,
        1_010_869_371,
        527_265_867,
        {"shm": (3, 527_266_864), "shm-pickle": (5, 518_346_242), "s3": (7, 197_500_000)},
    ),
    ("terasort", "object"): Sizes(
        500_000_000,
        1_010_869_371,
        527_265_867,
        {"shm": (3, 527_266_864), "shm-pickle": (5, 518_345_996), "s3": (7, 197_500_000)},
    ),
    ("terasort", "arrow"): Sizes(
        500_000_000,
        527_265_995,
        527_265_867,
        {"shm": (3, 527_266_864), "shm-pickle": (5, 527_270_396), "s3": (7, 197_500_000)},
    ),
    ("brain", "numpy"): Sizes(
        157_551_403,
        94_570_048,
        94_569_920,
        {"shm": (4, 94_571_080), "shm-pickle": (6, 94_570_701), "s3": (8, 36_500_000)},
    ),
    ("brain", "arrow"): Sizes(
        157_551_403,
        94_570_048,
        94_569_920,
        {"shm": (4, 94_571_104), "shm-pickle": (6, 94_575_068), "s3": (8, 36_500_000)},
    ),
}


@dataclass(frozen=True)
class Line:
    """One profiled line: the study step it corresponds to, Mem Usage and Increment (MiB)."""

    code: str
    step: str | None  # serialize, write, free, open, decode; None: not shown
    usage: float
    increment: float


@dataclass(frozen=True)
class MemTable:
    table: int
    library: str  # "pyarrow", "pickle", "s3fs", "boto3"
    lines: tuple[Line, ...]


def _lines(*rows: tuple[str, str | None, float, float]) -> tuple[Line, ...]:
    return tuple(Line(*r) for r in rows)


_ARROW_PUT = ("RecordBatch.from_pandas", "write_batch (into shm)", "del record_batch", "close")
_PICKLE_PUT = ("pickle.dumps(df)", "sm.buf[:] = pickled", "close")


def _arrow_put(table: int, usage: tuple[float, ...], inc: tuple[float, ...]) -> MemTable:
    steps = ("serialize", "write", "free", "write")
    rows = zip(_ARROW_PUT, steps, usage, inc, strict=True)
    return MemTable(table, "pyarrow", _lines(*rows))


def _pickle_put(table: int, usage: tuple[float, ...], inc: tuple[float, ...]) -> MemTable:
    rows = zip(_PICKLE_PUT, ("serialize", "write", "write"), usage, inc, strict=True)
    return MemTable(table, "pickle", _lines(*rows))


# (dataset, direction, document backend, variant) -> table. Baseline "@profile" lines omitted.
MEMORY: dict[tuple[str, str, str, str], MemTable] = {
    # Table 9: Terasort 500 MB, PyArrow serialisation, write to shared memory.
    ("terasort", "write", "shm", "string"): _arrow_put(
        9, (1816.5, 2269.6, 1869.5, 1366.7), (622.7, 451.8, -400.1, -502.8)
    ),
    ("terasort", "write", "shm", "object"): _arrow_put(
        9, (2576.1, 2806.8, 2704.3, 2201.6), (1040.1, 230.7, -102.5, -502.7)
    ),
    ("terasort", "write", "shm", "arrow"): _arrow_put(
        9, (1696.1, 2198.8, 1696.1, 1193.5), (502.6, 502.7, -502.7, -502.6)
    ),
    # Table 10: Terasort 500 MB, pickle, write to shared memory.
    ("terasort", "write", "shm-pickle", "string"): _pickle_put(
        10, (1687.4, 2182.1, 1687.8), (494.4, 494.3, -494.3)
    ),
    ("terasort", "write", "shm-pickle", "object"): _pickle_put(
        10, (1976.5, 2470.8, 1976.5), (515.3, 494.2, -494.2)
    ),
    ("terasort", "write", "shm-pickle", "arrow"): _pickle_put(
        10, (1527.7, 2030.4, 1527.7), (502.7, 502.7, -502.7)
    ),
    # Table 11: Brain 150 MB, PyArrow, write to shared memory.
    ("brain", "write", "shm", "numpy"): _arrow_put(
        11, (181.3, 272.9, 272.9, 182.7), (2.6, 90.2, 0.0, -90.2)
    ),
    ("brain", "write", "shm", "arrow"): _arrow_put(
        11, (368.9, 453.9, 363.8, 278.9), (90.2, 85.0, -90.1, -84.9)
    ),
    # Table 12: Brain 150 MB, pickle, write to shared memory.
    ("brain", "write", "shm-pickle", "numpy"): _pickle_put(
        12, (286.2, 376.6, 286.5), (108.3, 90.1, -90.1)
    ),
    ("brain", "write", "shm-pickle", "arrow"): _pickle_put(
        12, (401.2, 491.3, 401.2), (35.6, 90.1, -90.1)
    ),
}

_S3FS_PUT = "pq.write_table(Table.from_pandas(df), f)"  # serialise + upload in one line
_BOTO3_PUT = ("df.to_parquet(BytesIO)", "s3_client.put_object")
_S3FS_GET = ("pq.read_table(f)", "table.to_pandas(...)")
_BOTO3_GET = ("BytesIO(get_object().read())", "pq.read_table(buffer)", "table.to_pandas(...)")


def _mem(table: int, library: str, *rows: tuple[str, str, float, float]) -> MemTable:
    return MemTable(table, library, _lines(*rows))


MEMORY.update(
    {
        # Table 13: Terasort 500 MB, s3fs write. Table 15: Brain 150 MB, s3fs write.
        ("terasort", "write", "s3fs", "string"): _mem(
            13, "s3fs", (_S3FS_PUT, "write", 1226.5, 15.8)
        ),
        ("terasort", "write", "s3fs", "object"): _mem(
            13, "s3fs", (_S3FS_PUT, "write", 1226.5, 15.8)
        ),
        ("terasort", "write", "s3fs", "arrow"): _mem(13, "s3fs", (_S3FS_PUT, "write", 1163.4, 1.2)),
        ("brain", "write", "s3fs", "numpy"): _mem(15, "s3fs", (_S3FS_PUT, "write", 1453.1, -33.4)),
        ("brain", "write", "s3fs", "arrow"): _mem(15, "s3fs", (_S3FS_PUT, "write", 534.7, 2.9)),
        # Table 14: Terasort, boto3 write. Table 16: Brain, boto3 write.
        ("terasort", "write", "boto3", "string"): _mem(
            14,
            "boto3",
            (_BOTO3_PUT[0], "serialize", 1813.7, 604.1),
            (_BOTO3_PUT[1], "write", 1411.4, -402.4),
        ),
        ("terasort", "write", "boto3", "object"): _mem(
            14,
            "boto3",
            (_BOTO3_PUT[0], "serialize", 1813.2, 601.8),
            (_BOTO3_PUT[1], "write", 1413.2, -400.0),
        ),
        ("terasort", "write", "boto3", "arrow"): _mem(
            14,
            "boto3",
            (_BOTO3_PUT[0], "serialize", 872.3, 204.2),
            (_BOTO3_PUT[1], "write", 868.5, -3.9),
        ),
        ("brain", "write", "boto3", "numpy"): _mem(
            16,
            "boto3",
            (_BOTO3_PUT[0], "serialize", 276.1, 66.7),
            (_BOTO3_PUT[1], "write", 264.4, -11.7),
        ),
        ("brain", "write", "boto3", "arrow"): _mem(
            16,
            "boto3",
            (_BOTO3_PUT[0], "serialize", 278.6, 58.1),
            (_BOTO3_PUT[1], "write", 262.1, -16.5),
        ),
        # Tables 17/19: PyArrow read from shared memory (the lines opening the stream and reading
        # the batch showed no increment and are not listed).
        ("terasort", "read", "shm", "string"): _mem(
            17, "pyarrow", ("record_batch.to_pandas()", "decode", 2692.1, 1333.3)
        ),
        ("terasort", "read", "shm", "object"): _mem(
            17, "pyarrow", ("record_batch.to_pandas()", "decode", 4336.5, 2032.4)
        ),
        ("terasort", "read", "shm", "arrow"): _mem(
            17, "pyarrow", ("to_pandas(types_mapper=pd.ArrowDtype)", "decode", 1193.6, 0.0)
        ),
        ("brain", "read", "shm", "numpy"): _mem(
            19, "pyarrow", ("record_batch.to_pandas()", "decode", 363.6, 180.7)
        ),
        ("brain", "read", "shm", "arrow"): _mem(
            19, "pyarrow", ("to_pandas(types_mapper=pd.ArrowDtype)", "decode", 278.8, 0.0)
        ),
        # Tables 18/20: pickle read from shared memory (copy out and unpickle in one line).
        ("terasort", "read", "shm-pickle", "string"): _mem(
            18, "pickle", ("pickle.loads(sm.buf)", "open", 2672.5, 1479.1)
        ),
        ("terasort", "read", "shm-pickle", "object"): _mem(
            18, "pickle", ("pickle.loads(sm.buf)", "open", 2961.9, 1479.7)
        ),
        ("terasort", "read", "shm-pickle", "arrow"): _mem(
            18, "pickle", ("pickle.loads(sm.buf)", "open", 2370.8, 1346.0)
        ),
        ("brain", "read", "shm-pickle", "numpy"): _mem(
            20, "pickle", ("pickle.loads(sm.buf)", "open", 358.9, 162.6)
        ),
        ("brain", "read", "shm-pickle", "arrow"): _mem(
            20, "pickle", ("pickle.loads(sm.buf)", "open", 480.8, 169.9)
        ),
        # Tables 21/23: s3fs read (Parquet -> Arrow table, then to_pandas). The document's code
        # listing swaps the two to_pandas branches; its figures (0 MiB for PyArrow String) show
        # ArrowDtype was used for the PyArrow variant.
        ("terasort", "read", "s3fs", "string"): _mem(
            21,
            "s3fs",
            (_S3FS_GET[0], "open", 1847.9, 621.4),
            (_S3FS_GET[1], "decode", 2754.5, 906.6),
        ),
        ("terasort", "read", "s3fs", "object"): _mem(
            21,
            "s3fs",
            (_S3FS_GET[0], "open", 1847.9, 621.4),
            (_S3FS_GET[1], "decode", 2754.5, 906.6),
        ),
        ("terasort", "read", "s3fs", "arrow"): _mem(
            21, "s3fs", (_S3FS_GET[0], "open", 1712.8, 549.4), (_S3FS_GET[1], "decode", 1712.8, 0.0)
        ),
        ("brain", "read", "s3fs", "numpy"): _mem(
            23,
            "s3fs",
            (_S3FS_GET[0], "open", 1582.3, 129.2),
            (_S3FS_GET[1], "decode", 1672.6, 90.3),
        ),
        ("brain", "read", "s3fs", "arrow"): _mem(
            23, "s3fs", (_S3FS_GET[0], "open", 701.5, 166.8), (_S3FS_GET[1], "decode", 701.5, 0.0)
        ),
        # Tables 22/24: boto3 read (download into BytesIO, Parquet -> Arrow table, to_pandas).
        ("terasort", "read", "boto3", "string"): _mem(
            22,
            "boto3",
            (_BOTO3_GET[0], "open", 1412.6, 197.5),
            (_BOTO3_GET[1], "open", 2061.6, 649.0),
            (_BOTO3_GET[2], "decode", 2912.4, 976.6),
        ),
        ("terasort", "read", "boto3", "object"): _mem(
            22,
            "boto3",
            (_BOTO3_GET[0], "open", 1414.3, 197.5),
            (_BOTO3_GET[1], "open", 2152.3, 738.0),
            (_BOTO3_GET[2], "decode", 4260.5, 2108.2),
        ),
        ("terasort", "read", "boto3", "arrow"): _mem(
            22,
            "boto3",
            (_BOTO3_GET[0], "open", 869.3, 197.5),
            (_BOTO3_GET[1], "open", 1393.8, 524.5),
            (_BOTO3_GET[2], "decode", 1380.7, 0.0),
        ),
        ("brain", "read", "boto3", "numpy"): _mem(
            24,
            "boto3",
            (_BOTO3_GET[0], "open", 265.5, 36.4),
            (_BOTO3_GET[1], "open", 400.4, 134.9),
            (_BOTO3_GET[2], "decode", 493.0, 92.6),
        ),
        ("brain", "read", "boto3", "arrow"): _mem(
            24,
            "boto3",
            (_BOTO3_GET[0], "open", 262.8, 36.4),
            (_BOTO3_GET[1], "open", 388.2, 125.5),
            (_BOTO3_GET[2], "decode", 388.2, 0.0),
        ),
    }
)


def size_rows(dataset: str, variants: list[str], backends: list[str]) -> list[list[str]]:
    """Rows of the study's sizes table for tables 3–8; the document's S3 object sizes stand under
    the variant closest to its method (s3fs writing Parquet)."""
    doc_s3 = next((b for b in ("s3fs-parquet", "s3-parquet", "s3fs", "s3") if b in backends), "")
    rows = []
    for variant in variants:
        doc = SIZES.get((dataset, variant))
        if doc is None:
            continue
        stored = []
        for b in backends:
            entry = doc.stored.get("s3" if b == doc_s3 else "" if b.startswith("s3") else b)
            stored.append("–" if entry is None else f"{entry[1]:,} (T{entry[0]})")
        tables = "/".join(f"T{t}" for t, _ in doc.stored.values())
        rows.append([str(SIZE_MB[dataset]), variant, f"**doc 002** {tables}", f"{doc.csv:,}",
                     ROWS[dataset], f"{doc.dataframe:,}", f"{doc.record_batch:,}",
                     f"{doc.dataframe / doc.csv:.3f}", *stored])  # fmt: skip
    return rows


# Which document measurements stand beside a study backend.
DOC_BACKENDS = {
    "shm": ("shm",),
    "shm-pickle": ("shm-pickle",),
    "s3": ("s3fs", "boto3"),
    "s3-parquet": ("s3fs", "boto3"),
    "s3fs": ("s3fs", "boto3"),
    "s3fs-parquet": ("s3fs", "boto3"),
}


def memory_lines(dataset: str, direction: str, backend: str, variant: str, step: str) -> str:
    """The document's increments for ``step`` (``T9 `write_batch` +451.8 (0.90)``), or ``–``.

    In parentheses: the increment in copies of the document's record batch.
    """
    cells = []
    sizes = SIZES.get((dataset, variant))
    for doc_backend in DOC_BACKENDS.get(backend, ()):
        table = MEMORY.get((dataset, direction, doc_backend, variant))
        if table is None:
            continue
        for line in table.lines:
            if line.step == step:
                who = f"{table.library} " if backend.startswith("s3") else ""
                copies = f" ({line.increment * 2**20 / sizes.record_batch:.2f})" if sizes else ""
                cells.append(f"T{table.table} {who}`{line.code}` {line.increment:+.1f}{copies}")
    return "; ".join(cells) or "–"


# -- times (section 4.2.2.3) -------------------------------------------------------------------------

# Zero-copy read of the Terasort frame with Arrow dtypes from shared memory, seconds.
READ_SHM_ARROW_S = {100: 0.013, 200: 0.025, 300: 0.035, 400: 0.046, 500: 0.067}
# "only 0.006 s slower than reading the 100 MB frame with pickle" -> pickle read of 100 MB.
READ_PICKLE_100MB_S = 0.067 - 0.006


@dataclass(frozen=True)
class Ratio:
    key: str
    figure: str
    doc: float  # times faster (×)


RATIOS = (
    Ratio("write_pickle", "write to shared memory, Arrow vs pickle (Terasort 500 MB)", 2.40),
    Ratio("encode_pickle", "encoding, Arrow vs pickle (Terasort 500 MB)", 3.71),
    Ratio("write_s3", "write, Arrow + shared memory vs the best S3 write (500 MB)", 20.32),
    Ratio("read_pickle", "read, zero-copy Arrow vs pickle (500 MB, Arrow dtypes)", 12.09),
    Ratio("read_s3", "read, zero-copy Arrow vs S3 with s3fs (500 MB, Arrow dtypes)", 130.08),
)
