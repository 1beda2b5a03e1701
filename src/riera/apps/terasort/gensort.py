"""Vectorized kernels for TeraSort data in the gensort/valsort (v1.5) record format.

These are pure numpy functions meant to be called once per partition by the engine:
generate records (:func:`make_records`), view raw bytes as records (:func:`records_view`),
extract sortable key prefixes (:func:`key_prefix_u64`), and validate sorted output the
way ``valsort`` does (:func:`checksum`, :func:`summarize`, :func:`combine`).

Record layouts (100 bytes each, offsets are 0-based and half-open)::

    binary (gensort default)              ASCII (gensort -a)
    [ 0, 10)  key, 10 random bytes        [ 0, 10)  key, 10 printable chars ' '..'~'
    [10, 12)  0x00 0x11                   [10, 12)  two spaces
    [12, 44)  record number, 32 hex       [12, 44)  record number, 32 hex
              digits (uppercase ASCII)              digits (uppercase ASCII)
    [44, 48)  0x88 0x99 0xAA 0xBB         [44, 46)  two spaces
    [48, 96)  filler, 12 groups of 4      [46, 98)  filler, 13 groups of 4
    [96,100)  0xCC 0xDD 0xEE 0xFF         [98,100)  "\\r\\n"

Deviations from gensort 1.5 (the layout is the same; the *contents* of two fields differ):

* **Keys** are not produced by gensort's 128-bit LCG. Instead they are a deterministic
  function of ``(record number, seed)``: ``h0 = splitmix64(rownum ^ c0)`` and
  ``h1 = splitmix64(rownum ^ c1)``, where ``c0 = splitmix64(seed)`` and
  ``c1 = splitmix64(c0 ^ 0x5EED5EED5EED5EED)``. ``splitmix64(x)`` is the standard
  splitmix64 step: ``z = x + 0x9E3779B97F4A7C15``, ``z = (z ^ z >> 30) * 0xBF58476D1CE4E5B9``,
  ``z = (z ^ z >> 27) * 0x94D049BB133111EB``, ``z ^ z >> 31`` (all mod ``2**64``).
  The key is the 8 big-endian bytes of ``h0`` followed by the top two bytes of ``h1``.
  Because the data depend only on the record number, any split of ``[0, N)`` into
  partitions generates exactly the same data set. Since ``splitmix64`` is a bijection on
  64-bit integers, the 8-byte key prefixes of distinct records (with the same seed) are
  distinct, i.e. generated binary data sets have no duplicate keys.
  ASCII keys map each of those 10 bytes to ``byte % 95 + 32``.
* **Filler** is derived from the *record number* (gensort derives it from the random
  number). With ``g`` groups (12 binary, 13 ASCII), group ``j`` (``0 <= j < g``) is the
  letter ``chr(ord('A') + ((rownum >> (4 * (g - 1 - j))) & 0xF))`` repeated 4 times, i.e.
  the nibbles of the low ``4 * g`` bits of the record number, most significant first,
  spelled with the letters ``'A'..'P'``.

Record numbers must lie in ``[0, 2**64)``; the upper 16 hex digits are therefore ``'0'``.
The seed is reduced modulo ``2**64``.

Validation follows ``valsort``: the checksum is the sum of ``zlib.crc32`` over the
individual 100-byte records modulo ``2**128`` (so it is independent of record order),
keys are compared as unsigned byte strings (``memcmp``) over the full 10 bytes, equal
adjacent keys count as duplicates and a key smaller than its predecessor counts as one
unordered record.
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from riera import memory

__all__ = [
    "KEY_SIZE",
    "RECORD_SIZE",
    "PartitionSummary",
    "ValidationReport",
    "checksum",
    "combine",
    "key_prefix_u64",
    "make_records",
    "records_view",
    "summarize",
]

RECORD_SIZE = 100
KEY_SIZE = 10

# Field offsets shared by both layouts.
ROWNUM_OFFSET = 12
ROWNUM_SIZE = 32
BINARY_FILLER_OFFSET = 48
BINARY_FILLER_GROUPS = 12
ASCII_FILLER_OFFSET = 46
ASCII_FILLER_GROUPS = 13

_MASK64 = (1 << 64) - 1
_MOD128 = 1 << 128
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = 0xBF58476D1CE4E5B9
_MIX2 = 0x94D049BB133111EB

# Records generated per inner step: intermediates stay cache-resident.
_GEN_CHUNK = 1 << 14
# Records per step of the checksum kernel (a 16 KiB uint32 accumulator).
_CRC_CHUNK = 1 << 12


# --------------------------------------------------------------------------- helpers


def _splitmix64_int(x: int) -> int:
    """Scalar splitmix64 on Python ints (used for seed-derived constants)."""
    z = (x + _GOLDEN) & _MASK64
    z = ((z ^ (z >> 30)) * _MIX1) & _MASK64
    z = ((z ^ (z >> 27)) * _MIX2) & _MASK64
    return z ^ (z >> 31)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Vectorized splitmix64 on a uint64 array (modified in place and returned)."""
    x += np.uint64(_GOLDEN)
    t = x >> np.uint64(30)
    x ^= t
    x *= np.uint64(_MIX1)
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= np.uint64(_MIX2)
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
    return x


def _seed_constants(seed: int) -> tuple[np.uint64, np.uint64]:
    s = seed & _MASK64
    c0 = _splitmix64_int(s)
    c1 = _splitmix64_int(c0 ^ 0x5EED5EED5EED5EED)
    return np.uint64(c0), np.uint64(c1)


def _table(chunks: list[bytes], dtype: Any) -> np.ndarray:
    """A lookup table whose entry ``i`` has the memory image ``chunks[i]``."""
    return np.frombuffer(b"".join(chunks), dtype=dtype).copy()


_HEX_DIGITS = b"0123456789ABCDEF"
_LETTERS = b"ABCDEFGHIJKLMNOP"
# byte -> its two uppercase hex digits, as a uint16 with that memory image
_HEX2 = _table([bytes((_HEX_DIGITS[b >> 4], _HEX_DIGITS[b & 15])) for b in range(256)], np.uint16)
# byte -> 4 x letter(high nibble) + 4 x letter(low nibble), as a uint64
_FILL8 = _table(
    [bytes([_LETTERS[b >> 4]] * 4 + [_LETTERS[b & 15]] * 4) for b in range(256)], np.uint64
)
# byte -> 4 x letter(low nibble), as a uint32
_FILL4_LOW = _table([bytes([_LETTERS[b & 15]] * 4) for b in range(256)], np.uint32)
_ZEROS_HEX = b"0" * 16


def _template(ascii: bool) -> np.ndarray:
    row = bytearray(RECORD_SIZE)
    row[ROWNUM_OFFSET : ROWNUM_OFFSET + 16] = _ZEROS_HEX
    if ascii:
        row[10:12] = b"  "
        row[44:46] = b"  "
        row[98:100] = b"\r\n"
    else:
        row[10:12] = b"\x00\x11"
        row[44:48] = b"\x88\x99\xaa\xbb"
        row[96:100] = b"\xcc\xdd\xee\xff"
    return np.frombuffer(bytes(row), dtype=np.uint8)


_TEMPLATES = {False: _template(False), True: _template(True)}


def _field(rows: np.ndarray, offset: int, dtype: Any, count: int) -> np.ndarray:
    """A (possibly unaligned) ``(n, count)`` view of ``dtype`` items at byte ``offset``."""
    width = np.dtype(dtype).itemsize * count
    return rows[:, offset : offset + width].view(dtype)


def _as_records(records: Any) -> np.ndarray:
    if isinstance(records, np.ndarray):
        if records.ndim != 2 or records.shape[1] != RECORD_SIZE or records.dtype != np.uint8:
            raise ValueError(
                f"expected a (n, {RECORD_SIZE}) uint8 array, got shape {records.shape} "
                f"dtype {records.dtype}"
            )
        if records.strides[1] != 1:
            records = np.ascontiguousarray(records)
        return records
    return records_view(records)


# ------------------------------------------------------------------------- generation


def _fill(out: np.ndarray, first: int, ascii: bool, c0: np.uint64, c1: np.uint64) -> None:
    m = out.shape[0]
    out[...] = _TEMPLATES[ascii]
    rownum = np.arange(m, dtype=np.uint64)
    rownum += np.uint64(first)

    h0 = _splitmix64(rownum ^ c0)
    h1 = _splitmix64(rownum ^ c1)
    if ascii:
        key = np.empty((m, KEY_SIZE), dtype=np.uint8)
        _field(key, 0, ">u8", 1)[:, 0] = h0
        _field(key, 8, ">u2", 1)[:, 0] = h1 >> np.uint64(48)
        key %= np.uint8(95)
        key += np.uint8(32)
        out[:, :KEY_SIZE] = key
    else:
        _field(out, 0, ">u8", 1)[:, 0] = h0
        _field(out, 8, ">u2", 1)[:, 0] = h1 >> np.uint64(48)

    rn_bytes = rownum.astype(">u8").view(np.uint8).reshape(m, 8)  # big-endian bytes
    _field(out, ROWNUM_OFFSET + 16, np.uint16, 8)[...] = _HEX2[rn_bytes]
    if ascii:
        _field(out, ASCII_FILLER_OFFSET, np.uint32, 1)[:, 0] = _FILL4_LOW[rn_bytes[:, 1]]
        _field(out, ASCII_FILLER_OFFSET + 4, np.uint64, 6)[...] = _FILL8[rn_bytes[:, 2:]]
    else:
        _field(out, BINARY_FILLER_OFFSET, np.uint64, 6)[...] = _FILL8[rn_bytes[:, 2:]]


def make_records(start: int, count: int, *, ascii: bool = False, seed: int = 0) -> np.ndarray:
    """Generate records ``start .. start + count - 1`` in gensort format.

    Returns a C-contiguous ``(count, 100)`` uint8 array. The result depends only on the
    record numbers, ``ascii`` and ``seed``, so generating ``[0, N)`` in any number of
    pieces yields the same bytes.

    >>> recs = make_records(0, 3)
    >>> recs.shape, recs.dtype
    ((3, 100), dtype('uint8'))
    >>> bytes(recs[2, 12:44])
    b'00000000000000000000000000000002'
    >>> bytes(make_records(5, 1, ascii=True)[0, 44:])[-6:]
    b'FFFF\\r\\n'
    >>> bool((make_records(0, 10) == make_records(0, 10)).all())
    True
    """
    start = int(start)
    count = int(count)
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if start < 0 or start + count > 1 << 64:
        raise ValueError(f"record numbers must lie in [0, 2**64), got start={start} count={count}")
    c0, c1 = _seed_constants(int(seed))
    out = memory.empty((count, RECORD_SIZE), dtype=np.uint8)
    for lo in range(0, count, _GEN_CHUNK):
        _fill(out[lo : lo + _GEN_CHUNK], start + lo, bool(ascii), c0, c1)
    return out


# -------------------------------------------------------------------------- views/keys


def records_view(buf: Any) -> np.ndarray:
    """Zero-copy ``(n, 100)`` uint8 view over a buffer-protocol object.

    Accepts ``bytes``, ``bytearray``, ``memoryview``, ``pyarrow.Buffer``, numpy arrays and
    anything else exporting a C-contiguous buffer. The view is read-only iff the buffer is.

    >>> records_view(bytes(200)).shape
    (2, 100)
    >>> records_view(b"x" * 150)
    Traceback (most recent call last):
    ...
    ValueError: buffer length 150 is not a multiple of the record size 100
    """
    mv = memoryview(buf)
    if mv.ndim != 1 or mv.format not in ("B", "b", "c"):
        mv = mv.cast("B")
    if mv.nbytes % RECORD_SIZE:
        raise ValueError(
            f"buffer length {mv.nbytes} is not a multiple of the record size {RECORD_SIZE}"
        )
    arr = np.frombuffer(mv, dtype=np.uint8)
    return arr.reshape(mv.nbytes // RECORD_SIZE, RECORD_SIZE)


def key_prefix_u64(records: np.ndarray) -> np.ndarray:
    """The first 8 key bytes of each record as a big-endian-decoded uint64 array.

    Numeric order of the result equals the byte order (``memcmp``) of those 8 bytes, so
    it is a good sort/partition key; ties must be broken with bytes 8 and 9.

    >>> recs = records_view(bytes(range(1, 9)) + bytes(92))
    >>> hex(int(key_prefix_u64(recs)[0]))
    '0x102030405060708'
    """
    records = _as_records(records)
    return _field(records, 0, ">u8", 1)[:, 0].astype(np.uint64)


def _key_suffix_u16(records: np.ndarray) -> np.ndarray:
    return _field(records, 8, ">u2", 1)[:, 0].astype(np.uint16)


# --------------------------------------------------------------------------- checksum


@functools.cache
def _crc_tables() -> tuple[int, list[np.ndarray]]:
    """Tables for the affine decomposition of CRC-32 over 100-byte messages.

    For a fixed message length, ``crc32(m) == crc32(zeros) ^ XOR_j T_j[u16_j(m)]`` where
    ``u16_j`` is the native-endian 16-bit word at byte offset ``2 * j``.
    """
    zero = zlib.crc32(bytes(RECORD_SIZE))
    per_byte = np.empty((RECORD_SIZE, 256), dtype=np.uint32)
    msg = bytearray(RECORD_SIZE)
    for pos in range(RECORD_SIZE):
        for value in range(256):
            msg[pos] = value
            per_byte[pos, value] = zlib.crc32(msg) ^ zero
        msg[pos] = 0
    # index v of a uint16 word = bytes (lo_addr, hi_addr) of its memory image
    v = np.arange(1 << 16, dtype=np.uint16).view(np.uint8).reshape(-1, 2)
    tables = [
        per_byte[2 * j][v[:, 0]] ^ per_byte[2 * j + 1][v[:, 1]] for j in range(RECORD_SIZE // 2)
    ]
    return zero, tables


def checksum(records: Any) -> int:
    """valsort's checksum: ``sum(zlib.crc32(record)) mod 2**128`` over all records.

    Order-independent, so it can be compared between the input and the sorted output.
    Computed without a per-record Python call, using per-position CRC tables.

    >>> import zlib
    >>> recs = make_records(0, 4)
    >>> checksum(recs) == sum(zlib.crc32(r.tobytes()) for r in recs)
    True
    """
    records = _as_records(records)
    n = records.shape[0]
    if n == 0:
        return 0
    zero, tables = _crc_tables()
    words = records.view(np.uint16)  # (n, 50)
    size = min(n, _CRC_CHUNK)
    acc = np.empty(size, dtype=np.uint32)
    tmp = np.empty(size, dtype=np.uint32)
    total = 0
    for lo in range(0, n, _CRC_CHUNK):
        w = words[lo : lo + _CRC_CHUNK]
        a = acc[: w.shape[0]]
        t = tmp[: w.shape[0]]
        np.take(tables[0], w[:, 0], out=a, mode="wrap")
        for j in range(1, RECORD_SIZE // 2):
            np.take(tables[j], w[:, j], out=t, mode="wrap")
            a ^= t
        a ^= np.uint32(zero)
        total += int(a.sum(dtype=np.uint64))
    return total % _MOD128


# ------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class PartitionSummary:
    """valsort-style summary of one partition (records in output order).

    ``first_unordered`` is the 0-based index of the first record whose key is smaller than
    its predecessor's (so it is always >= 1), like valsort's "first unordered record".
    """

    records: int
    checksum: int
    first_key: bytes | None
    last_key: bytes | None
    unordered: int
    duplicates: int
    first_unordered: int | None


def summarize(records: Any) -> PartitionSummary:
    """Summarize one partition: count, checksum, boundary keys, order and duplicates.

    >>> s = summarize(make_records(0, 100))
    >>> s.records, s.unordered > 0, s.duplicates
    (100, True, 0)
    """
    records = _as_records(records)
    n = records.shape[0]
    if n == 0:
        return PartitionSummary(0, 0, None, None, 0, 0, None)
    unordered = 0
    duplicates = 0
    first_unordered: int | None = None
    if n > 1:
        prefix = key_prefix_u64(records)
        lo, hi = prefix[:-1], prefix[1:]
        bad = np.flatnonzero(lo > hi)
        ties = np.flatnonzero(lo == hi)
        if ties.size:
            suffix = _key_suffix_u16(records)
            s_lo, s_hi = suffix[ties], suffix[ties + 1]
            duplicates = int(np.count_nonzero(s_lo == s_hi))
            tie_bad = ties[s_lo > s_hi]
            if tie_bad.size:
                bad = np.union1d(bad, tie_bad)
        unordered = int(bad.size)
        if unordered:
            first_unordered = int(bad.min()) + 1
    return PartitionSummary(
        records=n,
        checksum=checksum(records),
        first_key=records[0, :KEY_SIZE].tobytes(),
        last_key=records[-1, :KEY_SIZE].tobytes(),
        unordered=unordered,
        duplicates=duplicates,
        first_unordered=first_unordered,
    )


@dataclass(frozen=True)
class ValidationReport:
    """Result of validating a whole (partitioned) output, like valsort's final report.

    ``unordered`` and ``duplicates`` include the boundaries between consecutive non-empty
    partitions. ``first_unordered`` is the global 0-based index of the first record whose
    key is smaller than its predecessor's.
    """

    records: int
    checksum: int
    duplicates: int
    unordered: int
    first_error: str | None
    first_unordered: int | None = None

    @property
    def ok(self) -> bool:
        """True iff all records are in order."""
        return self.unordered == 0

    @property
    def checksum_hex(self) -> str:
        """The checksum as 32 lowercase hex digits."""
        return f"{self.checksum:032x}"


def combine(
    summaries: Sequence[PartitionSummary], names: Sequence[str] | None = None
) -> ValidationReport:
    """Combine per-partition summaries (given in output order) into a report.

    Empty partitions are skipped when checking that ``last_key(i) <= first_key(i + 1)``.
    ``names`` (e.g. file names) label partitions in ``first_error``.

    >>> recs = make_records(0, 10)
    >>> keys = [recs[i, :10].tobytes() for i in range(10)]
    >>> srt = recs[np.argsort(keys, kind="stable")]
    >>> report = combine([summarize(srt[:4]), summarize(srt[4:])], names=["a", "b"])
    >>> report.ok, report.records, report.checksum == checksum(recs)
    (True, 10, True)
    >>> bad = combine([summarize(srt[4:]), summarize(srt[:4])], names=["a", "b"])
    >>> bad.ok, bad.unordered, bad.first_unordered
    (False, 1, 6)
    """
    if names is not None and len(names) != len(summaries):
        raise ValueError(f"got {len(names)} names for {len(summaries)} partitions")

    def label(i: int) -> str:
        return f"partition {i} ({names[i]!r})" if names is not None else f"partition {i}"

    records = 0
    total = 0
    duplicates = 0
    unordered = 0
    first_error: str | None = None
    first_unordered: int | None = None
    prev_last: bytes | None = None
    prev_index = -1
    for i, s in enumerate(summaries):
        if s.records == 0:
            continue
        assert s.first_key is not None and s.last_key is not None
        if prev_last is not None:
            if s.first_key < prev_last:
                unordered += 1
                if first_error is None:
                    first_unordered = records
                    first_error = (
                        f"{label(i)}: record 0 (global record {records}) has key "
                        f"{s.first_key.hex()}, below the last key {prev_last.hex()} "
                        f"of {label(prev_index)}"
                    )
            elif s.first_key == prev_last:
                duplicates += 1
        if s.unordered and first_error is None:
            k = s.first_unordered
            assert k is not None
            first_unordered = records + k
            first_error = (
                f"{label(i)}: record {k} (global record {records + k}) is out of order "
                f"(its key is below that of record {k - 1})"
            )
        unordered += s.unordered
        duplicates += s.duplicates
        records += s.records
        total += s.checksum
        prev_last = s.last_key
        prev_index = i
    return ValidationReport(
        records=records,
        checksum=total % _MOD128,
        duplicates=duplicates,
        unordered=unordered,
        first_error=first_error,
        first_unordered=first_unordered,
    )
