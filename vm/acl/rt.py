"""``acl.rt``: memory (host memory on every device)."""
from __future__ import annotations

from .memory import register, release, view, writable
from .status import (ACL_ERROR_INVALID_PARAM, ACL_MEM_MALLOC_HUGE_FIRST, ACL_MEMCPY_HOST_TO_HOST,
                     fail, status)

MAX_ALLOCATION = 1 << 34


@status(paired=True)
def malloc(size, policy=ACL_MEM_MALLOC_HUGE_FIRST):
    """``(handle, code)``: ``size`` zeroed bytes."""
    if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= MAX_ALLOCATION:
        fail(ACL_ERROR_INVALID_PARAM, f"malloc: size {size!r} out of range")
    return register(memoryview(bytearray(size)))


malloc_host = malloc


@status()
def free(ptr):
    if not release(ptr):
        fail(ACL_ERROR_INVALID_PARAM, f"free: {ptr!r} is not an allocated buffer")


free_host = free


@status()
def memcpy(dst, dest_max, src, count, kind=ACL_MEMCPY_HOST_TO_HOST):
    """Copy ``count`` bytes from ``src`` to ``dst`` (at most ``dest_max``)."""
    d, s = writable(view(dst), "memcpy destination"), view(src)
    for value, what in ((dest_max, "dest_max"), (count, "count")):
        if not isinstance(value, int) or isinstance(value, bool):
            fail(ACL_ERROR_INVALID_PARAM, f"memcpy: {what} must be an int, got {value!r}")
    if not 0 <= count <= min(dest_max, len(d), len(s)):
        fail(ACL_ERROR_INVALID_PARAM, f"memcpy: count {count} exceeds a buffer "
                                      f"(dst {min(dest_max, len(d))}, src {len(s)} bytes)")
    d[:count] = s[:count]
