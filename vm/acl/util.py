"""``acl.util``: pointers to and from numpy arrays and bytes."""
from __future__ import annotations

import numpy as np

from ..checks import expect_bytes, expect_dims, expect_int, integer_dtype
from .memory import register, view


def numpy_to_ptr(array: np.ndarray) -> int:
    """A handle sharing ``array``'s memory (no copy)."""
    return register(view(array))


def bytes_to_ptr(data: bytes) -> int:
    """A handle to a copy of ``data``."""
    return register(memoryview(bytearray(expect_bytes(data, "bytes_to_ptr"))))


def ptr_to_bytes(ptr, size: int) -> bytes:
    return bytes(view(ptr)[:expect_int(size, "ptr_to_bytes size", lo=0)])


def ptr_to_numpy(ptr, shape, dtype) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` at ``ptr`` (shared memory)."""
    dt, shape = integer_dtype(dtype, "ptr_to_numpy dtype"), expect_dims(shape, "ptr_to_numpy shape")
    raw = view(ptr)
    count = int(np.prod(shape))
    if count * dt.itemsize > len(raw):
        from ..errors import TrapError
        raise TrapError(f"ptr_to_numpy: {list(shape)} {dt} does not fit {len(raw)} bytes")
    return np.frombuffer(raw, dtype=dt, count=count).reshape(shape)
