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

Between two operations of one expression the result stays :class:`Unscaled` — its int64 values,
validity and decimal type, never written as 16-byte words — so ``a * (1 - b) * (1 + c)`` reads
each column once and builds one ``decimal128`` array at the end (:meth:`Unscaled.arrow`).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_LIMIT = 2**63 - 1


class Unscaled:
    """A decimal128 column held as its unscaled int64 values (per chunk, with validity); what
    the fast paths return so that the next one need not read 16-byte words back."""

    def __init__(
        self,
        parts: list[tuple[np.ndarray, np.ndarray | None]],
        type_: pa.DataType,
        chunked: bool,
    ) -> None:
        self.parts = parts
        self.type = type_
        self.chunked = chunked
        self._bound: int | None = None

    def __len__(self) -> int:
        return sum(len(v) for v, _ in self.parts)

    def bound(self) -> int:
        """max |value| over the valid values."""
        if self._bound is None:
            self._bound = max((_bound(v) for v, _ in self.parts), default=0)
        return self._bound

    def arrow(self) -> pa.Array | pa.ChunkedArray:
        """The values as a ``decimal128`` array (chunked as the operands were)."""
        built = [_build(v, valid, self.type) for v, valid in self.parts]
        if self.chunked:
            return pa.chunked_array(built, self.type)
        return built[0]


def arrow(v: Any) -> Any:
    """``v`` as Arrow data (an :class:`Unscaled` is built; anything else is returned as is)."""
    return v.arrow() if isinstance(v, Unscaled) else v


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


Part = tuple[np.ndarray, np.ndarray | None]  # unscaled values and validity of one chunk


def _parts(v: pa.Array | pa.ChunkedArray | Unscaled) -> list[Part] | None:
    """Unscaled values per chunk, or None when some valid value does not fit in 64 bits."""
    if isinstance(v, Unscaled):
        return v.parts
    out = []
    for chunk in v.chunks if isinstance(v, pa.ChunkedArray) else [v]:
        w = _words(chunk)
        if w is None:
            return None
        out.append(w)
    return out


def _lengths(v: pa.Array | pa.ChunkedArray | Unscaled) -> list[int]:
    if isinstance(v, Unscaled):
        return [len(p) for p, _ in v.parts]
    return [len(c) for c in v.chunks] if isinstance(v, pa.ChunkedArray) else [len(v)]


def _is_chunked(v: object) -> bool:
    return isinstance(v, pa.ChunkedArray) or (isinstance(v, Unscaled) and v.chunked)


def _aligned(
    a: pa.Array | pa.ChunkedArray | Unscaled, b: pa.Array | pa.ChunkedArray | Unscaled
) -> tuple[list[Part], list[Part]] | None:
    """Both operands' unscaled values, chunk by chunk alike; None off the fast path."""
    if len(a) != len(b):
        return None
    if _lengths(a) != _lengths(b):
        a = arrow(a).combine_chunks() if _is_chunked(a) else arrow(a)
        b = arrow(b).combine_chunks() if _is_chunked(b) else arrow(b)
    pa_, pb = _parts(a), _parts(b)
    if pa_ is None or pb is None:
        return None
    return pa_, pb


def _is_dec128_array(v: object) -> bool:
    if isinstance(v, Unscaled):
        return True
    return isinstance(v, pa.Array | pa.ChunkedArray) and pa.types.is_decimal128(v.type)


def _part_bound(v: object, values: np.ndarray) -> int:
    return v.bound() if isinstance(v, Unscaled) and len(v.parts) == 1 else _bound(values)


def multiply(
    a: pa.Array | pa.ChunkedArray | pa.Scalar | Unscaled,
    b: pa.Array | pa.ChunkedArray | pa.Scalar | Unscaled,
    type_: pa.DataType,
) -> Unscaled | None:
    """``a * b`` in ``type_`` (scale ``s1 + s2``), or None when the fast path does not apply."""
    if not (_is_dec128_array(a) and _is_dec128_array(b)):
        return None
    aligned = _aligned(a, b)
    if aligned is None:
        return None
    parts = []
    for (va, valid_a), (vb, valid_b) in zip(*aligned, strict=True):
        bound = _part_bound(a, va) * _part_bound(b, vb)
        if bound > _LIMIT:
            return None
        parts.append((va * vb, _and(valid_a, valid_b)))
    out = Unscaled(parts, type_, _is_chunked(a) or _is_chunked(b))
    if len(parts) == 1:
        out._bound = bound
    return out


def _scalar(v: pa.Scalar, scale: int) -> tuple[np.int64, None, int] | None:
    """A decimal scalar rescaled to ``scale``: value, no validity, its bound."""
    if not v.is_valid:
        return None
    unscaled = int(v.as_py().scaleb(v.type.scale)) * 10 ** (scale - v.type.scale)
    return (np.int64(unscaled), None, abs(unscaled)) if abs(unscaled) <= _LIMIT else None


def _rescaled(
    v: pa.Array | pa.ChunkedArray | Unscaled, part: Part, scale: int
) -> tuple[np.ndarray, np.ndarray | None, int] | None:
    """One chunk of an array operand of a sum rescaled to ``scale``, validity and bound."""
    factor = 10 ** (scale - v.type.scale)
    values, valid = part
    bound = _part_bound(v, values) * factor
    if bound > _LIMIT:
        return None
    return (values * factor if factor != 1 else values), valid, bound


def add(
    a: pa.Array | pa.ChunkedArray | pa.Scalar | Unscaled,
    b: pa.Array | pa.ChunkedArray | pa.Scalar | Unscaled,
    type_: pa.DataType,
    subtract: bool = False,
) -> Unscaled | None:
    """``a + b`` (or ``a - b``) in ``type_``, both rescaled to its scale; None when the fast path
    does not apply. A scalar side is broadcast."""
    if not all(pa.types.is_decimal128(v.type) for v in (a, b)):
        return None
    arrays = [v for v in (a, b) if not isinstance(v, pa.Scalar)]
    if not arrays:
        return None
    if len(arrays) == 2:
        aligned = _aligned(a, b)
        if aligned is None:
            return None
        sides = list(zip(*aligned, strict=True))
    else:
        own = _parts(arrays[0])
        if own is None:
            return None
        sides = [(p, p) for p in own]
    parts = []
    bound = 0
    for pa_, pb in sides:
        sa = _scalar(a, type_.scale) if isinstance(a, pa.Scalar) else _rescaled(a, pa_, type_.scale)
        sb = _scalar(b, type_.scale) if isinstance(b, pa.Scalar) else _rescaled(b, pb, type_.scale)
        if sa is None or sb is None or sa[2] + sb[2] > _LIMIT:
            return None
        values = np.asarray(sa[0] - sb[0] if subtract else sa[0] + sb[0], dtype=np.int64)
        if values.ndim == 0:
            return None
        bound = sa[2] + sb[2]
        parts.append((values, _and(sa[1], sb[1])))
    out = Unscaled(parts, type_, any(_is_chunked(x) for x in arrays))
    if len(parts) == 1:
        out._bound = bound
    return out


@functools.lru_cache(maxsize=256)
def result_type(kernel: str, a: pa.DataType, b: pa.DataType) -> pa.DataType | None:
    """The decimal128 type Arrow gives ``kernel`` over two decimal128 operands, or None."""
    try:
        return pc.call_function(kernel, [pa.array([], a), pa.array([], b)]).type
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
