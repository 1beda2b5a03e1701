"""Tests for the gensort/valsort kernels in ``riera.apps.terasort.gensort``."""

from __future__ import annotations

import itertools
import zlib

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from riera.apps.terasort import gensort as gs

MASK64 = (1 << 64) - 1
HEX = "0123456789ABCDEF"

# --------------------------------------------------------------- pure-Python reference


def ref_splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return z ^ (z >> 31)


def ref_filler(rownum: int, groups: int) -> bytes:
    return b"".join(
        bytes([ord("A") + ((rownum >> (4 * (groups - 1 - j))) & 0xF)]) * 4 for j in range(groups)
    )


def ref_record(rownum: int, *, ascii: bool = False, seed: int = 0) -> bytes:
    """One record built field by field, following the module docstring."""
    c0 = ref_splitmix64(seed & MASK64)
    c1 = ref_splitmix64(c0 ^ 0x5EED5EED5EED5EED)
    h0 = ref_splitmix64(rownum ^ c0)
    h1 = ref_splitmix64(rownum ^ c1)
    key = h0.to_bytes(8, "big") + (h1 >> 48).to_bytes(2, "big")
    hexnum = f"{rownum:032X}".encode()
    if ascii:
        key = bytes(b % 95 + 32 for b in key)
        rec = key + b"  " + hexnum + b"  " + ref_filler(rownum, 13) + b"\r\n"
    else:
        rec = (
            key
            + b"\x00\x11"
            + hexnum
            + b"\x88\x99\xaa\xbb"
            + ref_filler(rownum, 12)
            + b"\xcc\xdd\xee\xff"
        )
    assert len(rec) == 100
    return rec


def naive_checksum(recs: np.ndarray) -> int:
    return sum(zlib.crc32(r.tobytes()) for r in recs) % 2**128


def ref_summary(recs: np.ndarray) -> tuple[int, int, int | None]:
    """(unordered, duplicates, first_unordered) by comparing bytes keys in Python."""
    keys = [r[:10].tobytes() for r in recs]
    unordered = duplicates = 0
    first = None
    for i in range(len(keys) - 1):
        if keys[i] > keys[i + 1]:
            unordered += 1
            if first is None:
                first = i + 1
        elif keys[i] == keys[i + 1]:
            duplicates += 1
    return unordered, duplicates, first


def sort_by_key(recs: np.ndarray) -> np.ndarray:
    # np.lexsort: the last key is the primary one, so pass key bytes 9, 8, ..., 0
    order = np.lexsort(recs[:, :10][:, ::-1].T)
    return recs[order]


# ---------------------------------------------------------------------------- layout


def test_reference_splitmix64_matches_published_value() -> None:
    # first output of splitmix64 seeded with 0
    assert ref_splitmix64(0) == 0xE220A8397B1DCDAF


def test_field_sizes_add_up_to_record_size() -> None:
    assert gs.RECORD_SIZE == 100 and gs.KEY_SIZE == 10
    assert gs.RECORD_SIZE == 10 + 2 + 32 + 4 + 48 + 4  # binary
    assert gs.RECORD_SIZE == 10 + 2 + 32 + 2 + 52 + 2  # ascii
    assert gs.BINARY_FILLER_OFFSET + 4 * gs.BINARY_FILLER_GROUPS + 4 == gs.RECORD_SIZE
    assert gs.ASCII_FILLER_OFFSET + 4 * gs.ASCII_FILLER_GROUPS + 2 == gs.RECORD_SIZE


@pytest.mark.parametrize("ascii", [False, True])
@pytest.mark.parametrize("seed", [0, 7, 2**70 + 3])
@pytest.mark.parametrize("start", [0, 123_456_789, 0xFEDCBA9876543210, 2**64 - 40])
def test_records_match_reference(ascii: bool, seed: int, start: int) -> None:
    recs = gs.make_records(start, 40, ascii=ascii, seed=seed)
    assert recs.shape == (40, 100) and recs.dtype == np.uint8
    assert recs.flags.c_contiguous
    for i in range(40):
        assert recs[i].tobytes() == ref_record(start + i, ascii=ascii, seed=seed)


def test_binary_fields_at_documented_offsets() -> None:
    start = 0x0123456789ABCDEF - 500
    recs = gs.make_records(start, 1000)
    for i, r in enumerate(recs):
        b = r.tobytes()
        assert len(b) == 100
        assert b[10:12] == b"\x00\x11"
        assert int(b[12:44].decode("ascii"), 16) == start + i
        assert b[12:44] == b[12:44].upper()
        assert b[44:48] == b"\x88\x99\xaa\xbb"
        assert b[96:100] == b"\xcc\xdd\xee\xff"
        filler = b[48:96]
        groups = [filler[4 * j : 4 * j + 4] for j in range(12)]
        assert all(g == g[:1] * 4 for g in groups)
        nibbles = [g[0] - ord("A") for g in groups]
        assert sum(n << (4 * (11 - j)) for j, n in enumerate(nibbles)) == (start + i) % 2**48


def test_ascii_fields_at_documented_offsets_and_printable() -> None:
    start = 2**52 - 300
    recs = gs.make_records(start, 1000, ascii=True)
    body = recs[:, :98]
    assert ((body >= 32) & (body <= 126)).all()
    assert (recs[:, 98] == ord("\r")).all() and (recs[:, 99] == ord("\n")).all()
    for i, r in enumerate(recs):
        b = r.tobytes()
        assert b[10:12] == b"  " and b[44:46] == b"  "
        assert int(b[12:44].decode("ascii"), 16) == start + i
        groups = [b[46 + 4 * j : 50 + 4 * j] for j in range(13)]
        assert all(g == g[:1] * 4 and b"A" <= g[:1] <= b"P" for g in groups)
        nibbles = [g[0] - ord("A") for g in groups]
        assert sum(n << (4 * (12 - j)) for j, n in enumerate(nibbles)) == (start + i) % 2**52
    # keys cover (most of) the printable range, i.e. they are not trivially constant
    assert len(np.unique(recs[:, :10])) > 80


def test_keys_look_random_and_have_no_duplicate_prefixes() -> None:
    recs = gs.make_records(0, 20_000)
    prefixes = gs.key_prefix_u64(recs)
    assert len(np.unique(prefixes)) == len(recs)
    counts = np.bincount(recs[:, :10].ravel(), minlength=256)
    assert counts.min() > 0.8 * counts.mean() and counts.max() < 1.2 * counts.mean()


def test_make_records_edge_cases() -> None:
    empty = gs.make_records(10, 0)
    assert empty.shape == (0, 100) and empty.dtype == np.uint8
    last = gs.make_records(2**64 - 1, 1)
    assert last[0].tobytes() == ref_record(2**64 - 1)
    with pytest.raises(ValueError, match="count"):
        gs.make_records(0, -1)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        gs.make_records(2**64 - 1, 2)
    with pytest.raises(ValueError, match="2\\*\\*64"):
        gs.make_records(-1, 1)


# ----------------------------------------------------------------------- determinism


@pytest.mark.parametrize("ascii", [False, True])
def test_split_generation_is_identical(ascii: bool) -> None:
    whole = gs.make_records(0, 1000, ascii=ascii, seed=3)
    parts = np.concatenate(
        [
            gs.make_records(0, 400, ascii=ascii, seed=3),
            gs.make_records(400, 600, ascii=ascii, seed=3),
        ]
    )
    assert np.array_equal(whole, parts)
    # larger than the internal generation chunk
    n = 3 * gs._GEN_CHUNK + 17
    big = gs.make_records(5, n, ascii=ascii)
    cut = gs._GEN_CHUNK // 2 + 1
    split = np.concatenate(
        [gs.make_records(5, cut, ascii=ascii), gs.make_records(5 + cut, n - cut, ascii=ascii)]
    )
    assert np.array_equal(big, split)


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, 2**64 - 2000),
    cuts=st.lists(st.integers(0, 1500), max_size=6),
    seed=st.integers(0, 2**64 - 1),
    ascii=st.booleans(),
)
def test_random_splits_give_identical_data(
    start: int, cuts: list[int], seed: int, ascii: bool
) -> None:
    n = 1500
    whole = gs.make_records(start, n, ascii=ascii, seed=seed)
    bounds = [0, *sorted(cuts), n]
    pieces = [
        gs.make_records(start + lo, hi - lo, ascii=ascii, seed=seed)
        for lo, hi in itertools.pairwise(bounds)
    ]
    assert np.array_equal(whole, np.concatenate(pieces))


def test_seeds() -> None:
    a = gs.make_records(0, 1000, seed=1)
    assert np.array_equal(a, gs.make_records(0, 1000, seed=1))
    b = gs.make_records(0, 1000, seed=2)
    # only the keys depend on the seed
    assert np.array_equal(a[:, 10:], b[:, 10:])
    assert (a[:, :10] != b[:, :10]).any(axis=1).all()
    assert not np.array_equal(gs.key_prefix_u64(a), gs.key_prefix_u64(b))


# ---------------------------------------------------------------------- views & keys


def test_records_view_is_zero_copy_over_buffers() -> None:
    recs = gs.make_records(0, 50)
    raw = recs.tobytes()
    for buf in (raw, memoryview(raw), pa.py_buffer(raw), bytearray(raw)):
        view = gs.records_view(buf)
        assert view.shape == (50, 100) and view.dtype == np.uint8
        assert np.array_equal(view, recs)
    mutable = bytearray(raw)
    view = gs.records_view(mutable)
    mutable[100] = 0xAB
    assert view[1, 0] == 0xAB  # shares memory
    pa_buf = pa.py_buffer(raw)
    assert gs.records_view(pa_buf).ctypes.data == pa_buf.address
    assert gs.records_view(b"").shape == (0, 100)
    # non-byte buffers are reinterpreted as bytes
    assert np.array_equal(gs.records_view(recs.view(np.uint32)), recs)


@pytest.mark.parametrize("length", [1, 99, 150, 1001])
def test_records_view_rejects_bad_length(length: int) -> None:
    with pytest.raises(ValueError, match=rf"length {length} is not a multiple"):
        gs.records_view(bytes(length))
    with pytest.raises(ValueError, match=rf"\b{length}\b"):
        gs.records_view(memoryview(bytes(length + 1))[1:])


def test_key_prefix_is_big_endian_and_order_preserving() -> None:
    recs = gs.make_records(0, 2000, seed=11)
    prefix = gs.key_prefix_u64(recs)
    assert prefix.dtype == np.uint64 and prefix.shape == (2000,)
    expected = [int.from_bytes(r[:8].tobytes(), "big") for r in recs]
    assert prefix.tolist() == expected
    by_number = np.argsort(prefix, kind="stable")
    by_bytes = sorted(range(len(recs)), key=lambda i: recs[i, :8].tobytes())
    assert by_number.tolist() == by_bytes


def test_functions_reject_wrong_shapes() -> None:
    with pytest.raises(ValueError, match="100"):
        gs.checksum(np.zeros((3, 99), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        gs.summarize(np.zeros((3, 100), dtype=np.int64))


# -------------------------------------------------------------------------- checksum


def test_checksum_matches_zlib_on_random_data() -> None:
    rng = np.random.default_rng(1234)
    # not a multiple of the internal chunk size
    recs = rng.integers(0, 256, size=(3 * gs._CRC_CHUNK + 123, 100), dtype=np.uint8)
    assert gs.checksum(recs) == naive_checksum(recs)
    assert gs.checksum(recs[:1]) == zlib.crc32(recs[0].tobytes())
    assert gs.checksum(recs[:0]) == 0
    # extreme bytes
    for fill in (0x00, 0xFF):
        block = np.full((5, 100), fill, dtype=np.uint8)
        assert gs.checksum(block) == naive_checksum(block)


@pytest.mark.parametrize("ascii", [False, True])
def test_checksum_matches_zlib_on_generated_data(ascii: bool) -> None:
    recs = gs.make_records(10**9, 5000, ascii=ascii)
    assert gs.checksum(recs) == naive_checksum(recs)


def test_checksum_accepts_buffers_and_strided_arrays() -> None:
    rng = np.random.default_rng(5)
    recs = rng.integers(0, 256, size=(777, 100), dtype=np.uint8)
    expected = naive_checksum(recs)
    assert gs.checksum(recs.tobytes()) == expected
    assert gs.checksum(pa.py_buffer(recs.tobytes())) == expected
    assert gs.checksum(recs[::2]) == naive_checksum(recs[::2])
    fortran = np.asfortranarray(recs)  # bytes of a record are not adjacent in memory
    assert gs.checksum(fortran) == expected
    assert gs.summarize(fortran) == gs.summarize(recs)
    assert np.array_equal(gs.key_prefix_u64(fortran), gs.key_prefix_u64(recs))
    # unaligned start (odd byte offset into a bigger buffer)
    raw = b"\x00" + recs.tobytes()
    assert gs.checksum(memoryview(raw)[1:]) == expected


def test_checksum_is_permutation_invariant() -> None:
    recs = gs.make_records(0, 3000, seed=9)
    perm = np.random.default_rng(0).permutation(len(recs))
    assert gs.checksum(recs[perm]) == gs.checksum(recs)
    other = recs.copy()
    other[17, 50] ^= 1
    assert gs.checksum(other) != gs.checksum(recs)


# --------------------------------------------------------------------- summarize etc.


def test_summarize_sorted_and_unsorted() -> None:
    recs = gs.make_records(0, 5000)
    s = gs.summarize(recs)
    assert s.records == 5000
    assert s.checksum == naive_checksum(recs)
    assert (s.unordered, s.duplicates, s.first_unordered) == ref_summary(recs)
    assert s.unordered > 0
    assert s.first_key == recs[0, :10].tobytes() and s.last_key == recs[-1, :10].tobytes()

    srt = sort_by_key(recs)
    t = gs.summarize(srt)
    assert (t.unordered, t.duplicates, t.first_unordered) == (0, 0, None)
    assert t.checksum == s.checksum
    assert t.first_key == min(r[:10].tobytes() for r in recs)


def test_summarize_detects_single_swap_and_duplicates() -> None:
    srt = sort_by_key(gs.make_records(0, 1000, seed=4))
    swapped = srt.copy()
    swapped[[300, 301]] = swapped[[301, 300]]
    s = gs.summarize(swapped)
    assert (s.unordered, s.duplicates, s.first_unordered) == (1, 0, 301)

    dup = srt.copy()
    dup[500, :10] = dup[499, :10]
    dup[501, :10] = dup[499, :10]
    dup[10, :10] = dup[11, :10]
    s = gs.summarize(dup)
    assert (s.unordered, s.duplicates, s.first_unordered) == (0, 3, None)


def test_summarize_compares_the_last_two_key_bytes() -> None:
    recs = np.zeros((4, 100), dtype=np.uint8)
    recs[:, :8] = 7  # identical 8-byte prefixes
    recs[:, 8:10] = [[0, 5], [1, 0], [0, 255], [0, 255]]  # ok, unordered, duplicate
    s = gs.summarize(recs)
    assert (s.unordered, s.duplicates, s.first_unordered) == (1, 1, 2)
    recs[1, 8:10] = [0, 4]  # byte 9 now decides: unordered at 1, ok at 2
    s = gs.summarize(recs)
    assert (s.unordered, s.duplicates, s.first_unordered) == (1, 1, 1)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=10, max_size=10), min_size=0, max_size=40), st.booleans())
def test_summarize_matches_reference(keys: list[bytes], small_alphabet: bool) -> None:
    if small_alphabet:  # force ties on the 8-byte prefix and exact duplicates
        keys = [bytes(b % 2 for b in k[:8]) + k[8:] if k[0] % 2 else bytes(10) for k in keys]
    recs = np.zeros((len(keys), 100), dtype=np.uint8)
    for i, k in enumerate(keys):
        recs[i, :10] = np.frombuffer(k, dtype=np.uint8)
        recs[i, 10:] = i % 256
    s = gs.summarize(recs)
    assert (s.unordered, s.duplicates, s.first_unordered) == ref_summary(recs)
    assert s.records == len(keys)
    assert s.checksum == naive_checksum(recs)
    assert s.first_key == (keys[0] if keys else None)
    assert s.last_key == (keys[-1] if keys else None)


def test_summarize_empty() -> None:
    s = gs.summarize(np.zeros((0, 100), dtype=np.uint8))
    assert s == gs.PartitionSummary(0, 0, None, None, 0, 0, None)
    assert gs.summarize(b"") == s


# --------------------------------------------------------------------------- combine


def test_sorted_dataset_validates_with_same_checksum() -> None:
    recs = gs.make_records(0, 10_000, seed=42)
    srt = sort_by_key(recs)
    cuts = [0, 0, 1234, 1234, 5000, 9999, 10_000, 10_000]  # includes empty partitions
    parts = [srt[lo:hi] for lo, hi in itertools.pairwise(cuts)]
    report = gs.combine([gs.summarize(p) for p in parts])
    assert report.ok and report.first_error is None and report.first_unordered is None
    assert report.records == 10_000
    assert report.duplicates == 0
    assert report.checksum == gs.checksum(recs) == naive_checksum(recs)
    assert report.checksum_hex == f"{naive_checksum(recs):032x}"
    assert len(report.checksum_hex) == 32 and report.checksum_hex == report.checksum_hex.lower()


def test_combine_names_boundary_error() -> None:
    srt = sort_by_key(gs.make_records(0, 300))
    parts = [srt[200:], srt[:0], srt[:200]]  # second non-empty partition starts too low
    names = ["part-0", "part-1", "part-2"]
    report = gs.combine([gs.summarize(p) for p in parts], names=names)
    assert not report.ok
    assert report.unordered == 1
    assert report.first_unordered == 100
    assert report.first_error is not None
    assert "part-2" in report.first_error and "part-0" in report.first_error
    assert "part-1" not in report.first_error  # the empty partition is skipped
    assert srt[0, :10].tobytes().hex() in report.first_error
    assert "global record 100" in report.first_error
    assert report.checksum == gs.checksum(srt)


def test_combine_names_internal_error_and_counts_totals() -> None:
    srt = sort_by_key(gs.make_records(0, 900, seed=1))
    bad = srt.copy()
    bad[[650, 651]] = bad[[651, 650]]
    bad[[800, 801]] = bad[[801, 800]]
    parts = [bad[:300], bad[300:600], bad[600:]]
    report = gs.combine([gs.summarize(p) for p in parts], names=["a.bin", "b.bin", "c.bin"])
    assert report.unordered == 2 and not report.ok
    assert report.first_unordered == 651
    assert report.first_error is not None
    assert "c.bin" in report.first_error and "record 51" in report.first_error
    assert "global record 651" in report.first_error
    # without names the partition index is used
    unnamed = gs.combine([gs.summarize(p) for p in parts])
    assert unnamed.first_error is not None and "partition 2" in unnamed.first_error


def test_combine_boundary_duplicates_and_first_error_order() -> None:
    srt = sort_by_key(gs.make_records(0, 100, seed=8))
    dup = np.concatenate([srt[:50], srt[49:]])  # key of record 49 repeated across boundary
    report = gs.combine([gs.summarize(dup[:50]), gs.summarize(dup[50:])])
    assert report.ok and report.duplicates == 1 and report.records == 101

    # a boundary error in partition 1 precedes an internal error later in partition 1
    p0 = srt[60:]
    p1 = srt[:60].copy()
    p1[[30, 31]] = p1[[31, 30]]
    report = gs.combine([gs.summarize(p0), gs.summarize(p1)], names=["x", "y"])
    assert report.unordered == 2
    assert report.first_unordered == 40
    assert report.first_error is not None and "record 0" in report.first_error


def test_combine_edge_cases() -> None:
    empty = gs.combine([])
    assert empty.ok and empty.records == 0 and empty.checksum_hex == "0" * 32
    with pytest.raises(ValueError, match="names"):
        gs.combine([gs.summarize(gs.make_records(0, 3))], names=["a", "b"])
    big = gs.PartitionSummary(1, 2**128 - 1, b"a" * 10, b"a" * 10, 0, 0, None)
    wrapped = gs.combine([big, big])
    assert wrapped.checksum == 2**128 - 2
    assert wrapped.checksum_hex == "f" * 31 + "e"
    assert wrapped.duplicates == 1
