"""Large numpy buffers from Arrow's memory pool.

A fresh ``np.empty`` of hundreds of MB is a new ``mmap``: every page faults on first touch, and
glibc returns the pages to the OS when the array dies, so the next task faults again. On the VMs
Riera targets that costs ~1 s per 500 MB (measured: 1.2 s to touch 550 MB). Arrow's pool
(mimalloc or jemalloc) maps large blocks with huge pages and keeps freed pages for reuse: the same
touch costs 0.05 s the first time and ~0 after. Kernels use :func:`empty` for their big outputs.

Public: Riera's own operators and readers use it, and so may any batch function
(``map_batches``) that builds large numpy scratch arrays, as the word count and TeraSort apps do.
It depends only on numpy and pyarrow (the bottom layer, beside ``errors`` and ``config``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

_SMALL = 1 << 20  # below this, numpy's own allocator is as good


def empty(shape: int | tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
    """An uninitialised, writable array backed by a buffer from Arrow's default memory pool.

    >>> a = empty((4, 100))
    >>> a.shape, a.flags.writeable
    ((4, 100), True)
    """
    dt = np.dtype(dtype)
    dims = (shape,) if isinstance(shape, int) else tuple(shape)
    nbytes = int(np.prod(dims, dtype=np.int64)) * dt.itemsize
    if nbytes < _SMALL:
        return np.empty(dims, dtype=dt)
    buf = pa.allocate_buffer(nbytes)
    return np.frombuffer(buf, dtype=dt).reshape(dims)


def zeros(shape: int | tuple[int, ...], dtype: Any = np.uint8) -> np.ndarray:
    out = empty(shape, dtype)
    out.fill(0)
    return out
