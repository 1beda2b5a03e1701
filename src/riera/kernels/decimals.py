"""Exact decimal arithmetic on 64-bit integers, when the values allow it.

Arrow computes ``decimal128`` products and sums exactly, but in 128- or 256-bit arithmetic, with a
cast to ``decimal256`` and back when the declared result is wider than 38 digits. Real decimal
columns (prices, quantities, rates) almost always hold unscaled values that fit in 64 bits, as
DuckDB exploits. Here the unscaled values are read straight out of the Arrow buffer (the low word of
each 16-byte value), multiplied or added with numpy, and written back as ``decimal128`` words —
exactly the value Arrow would compute, in the same result type, about ten times faster.

The fast path is taken only when it is provably exact: every valid input fits in an ``int64`` and
the bound ``max|a| * max|b|`` (or ``max|a| + max|b|``) stays below ``2**63``. Otherwise the caller
falls back to Arrow's kernels, which also raise on a true overflow.
"""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LIMIT = 2**63 - 1


def _words(arr: pa.Array) -> tuple[np.ndarray, np.ndarray | None] | None:
    """The unscaled values of a decimal128 array as int64 (nulls as 0) and its validity, or None
    when some valid value does not fit in 64 bits."""
    buf = arr.buffers()[1]
    words = np.frombuffer(buf, dtype=np.int64).reshape(-1, 2)[arr.offset : arr.offset + len(arr)]
    lo, hi = words[:, 0], words[:, 1]
    fits = hi == (lo >> 63)
    valid = None
    if arr.null_count:
        valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
        if not bool(np.all(fits | ~valid)):
            return None
        return np.where(valid, lo, 0), valid
    if not bool(np.all(fits)):
        return None
    return lo, None


def _bound(values: np.ndarray) -> int:
    if len(values) == 0:
        return 0
    return max(abs(int(values.max())), abs(int(values.min())))


def _build(values: np.ndarray, valid: np.ndarray | None, type_: pa.DataType) -> pa.Array:
    words = np.empty(2 * len(values), dtype=np.int64)
    words[0::2] = values
    np.right_shift(values, 63, out=words[1::2])  # the high word: the sign, extended
    bitmap = None
    if valid is not None:
        bitmap = pa.array(valid, pa.bool_()).buffers()[1]
    return pa.Array.from_buffers(
        type_, len(values), [bitmap, pa.py_buffer(words)], null_count=-1 if valid is not None else 0
    )


def _and(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def _chunks(
    a: pa.Array | pa.ChunkedArray, b: pa.Array | pa.ChunkedArray
) -> list[tuple[pa.Array, pa.Array]] | None:
    if len(a) != len(b):
        return None
    if isinstance(a, pa.ChunkedArray) or isinstance(b, pa.ChunkedArray):
        ca = a if isinstance(a, pa.ChunkedArray) else pa.chunked_array([a])
        cb = b if isinstance(b, pa.ChunkedArray) else pa.chunked_array([b])
        if [len(c) for c in ca.chunks] != [len(c) for c in cb.chunks]:
            ca, cb = ca.combine_chunks(), cb.combine_chunks()
            return [(ca, cb)]
        return list(zip(ca.chunks, cb.chunks, strict=True))
    return [(a, b)]


def _wrap(
    like: pa.Array | pa.ChunkedArray, parts: list[pa.Array], type_: pa.DataType
) -> pa.Array | pa.ChunkedArray:
    if isinstance(like, pa.ChunkedArray):
        return pa.chunked_array(parts, type_)
    return parts[0]


def _is_dec128_array(v: object) -> bool:
    return isinstance(v, pa.Array | pa.ChunkedArray) and pa.types.is_decimal128(v.type)


def multiply(
    a: pa.Array | pa.ChunkedArray | pa.Scalar,
    b: pa.Array | pa.ChunkedArray | pa.Scalar,
    type_: pa.DataType,
) -> pa.Array | pa.ChunkedArray | None:
    """``a * b`` in ``type_`` (scale ``s1 + s2``), or None when the fast path does not apply."""
    if not (_is_dec128_array(a) and _is_dec128_array(b)):
        return None
    pairs = _chunks(a, b)
    if pairs is None:
        return None
    parts = []
    for ca, cb in pairs:
        wa, wb = _words(ca), _words(cb)
        if wa is None or wb is None or _bound(wa[0]) * _bound(wb[0]) > _LIMIT:
            return None
        parts.append(_build(wa[0] * wb[0], _and(wa[1], wb[1]), type_))
    return _wrap(a if isinstance(a, pa.ChunkedArray) else b, parts, type_)


def _side(
    v: pa.Array | pa.ChunkedArray | pa.Scalar, chunk: pa.Array, scale: int
) -> tuple[np.ndarray | np.int64, np.ndarray | None, int] | None:
    """One operand of a sum rescaled to ``scale``: values, validity and a bound on |value|."""
    factor = 10 ** (scale - v.type.scale)
    if isinstance(v, pa.Scalar):
        if not v.is_valid:
            return None
        unscaled = int(v.as_py().scaleb(v.type.scale)) * factor
        return (np.int64(unscaled), None, abs(unscaled)) if abs(unscaled) <= _LIMIT else None
    w = _words(chunk)
    if w is None:
        return None
    bound = _bound(w[0]) * factor
    if bound > _LIMIT:
        return None
    return (w[0] * factor if factor != 1 else w[0]), w[1], bound


def add(
    a: pa.Array | pa.ChunkedArray | pa.Scalar,
    b: pa.Array | pa.ChunkedArray | pa.Scalar,
    type_: pa.DataType,
    subtract: bool = False,
) -> pa.Array | pa.ChunkedArray | None:
    """``a + b`` (or ``a - b``) in ``type_``, both rescaled to its scale; None when the fast path
    does not apply. A scalar side is broadcast."""
    if not all(pa.types.is_decimal128(v.type) for v in (a, b)):
        return None
    arrays = [v for v in (a, b) if isinstance(v, pa.Array | pa.ChunkedArray)]
    if not arrays:
        return None
    if len(arrays) == 2:
        pairs = _chunks(a, b)
        if pairs is None:
            return None
    else:
        arr = arrays[0]
        pairs = [(c, c) for c in (arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr])]
    parts = []
    for ca, cb in pairs:
        sa, sb = _side(a, ca, type_.scale), _side(b, cb, type_.scale)
        if sa is None or sb is None or sa[2] + sb[2] > _LIMIT:
            return None
        values = np.asarray(sa[0] - sb[0] if subtract else sa[0] + sb[0], dtype=np.int64)
        if values.ndim == 0:
            return None
        parts.append(_build(values, _and(sa[1], sb[1]), type_))
    return _wrap(arrays[0], parts, type_)


@functools.lru_cache(maxsize=256)
def result_type(kernel: str, a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The decimal128 type Arrow gives ``kernel`` over two decimal128 operands, or None."""
    try:
        return pc.call_function(kernel, [pa.array([], a), pa.array([], b)]).type
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
