"""``acl.util``: pointers to and from numpy arrays and bytes."""
from __future__ import annotations

import numpy as np

from .memory import register, view


def numpy_to_ptr(array: np.ndarray) -> int:
    """A handle sharing ``array``'s memory (no copy)."""
    return register(view(array))


def bytes_to_ptr(data: bytes) -> int:
    """A handle to a copy of ``data``."""
    return register(memoryview(bytearray(data)))


def ptr_to_bytes(ptr, size: int) -> bytes:
    return bytes(view(ptr)[:size])


def ptr_to_numpy(ptr, shape, dtype) -> np.ndarray:
    """The array of ``shape`` and ``dtype`` at ``ptr`` (shared memory)."""
    dt = np.dtype(dtype)
    return np.frombuffer(view(ptr), dtype=dt, count=int(np.prod(shape))).reshape(shape)
