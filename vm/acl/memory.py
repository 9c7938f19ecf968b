"""Host memory behind pyACL's pointers: integer handles to byte buffers (``acl.rt.malloc``,
``acl.util.numpy_to_ptr``), and data buffers (aclDataBuffer) over a handle, a numpy array or a
bytearray. Tensors are read and written as their storage bytes (int8 or int32, little endian)."""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..checks import expect, expect_dims
from .status import ACL_ERROR_INVALID_PARAM, ACL_SUCCESS, fail

_lock = threading.Lock()
_ids = itertools.count(1)
_memory: dict[int, memoryview] = {}


def register(view: memoryview) -> int:
    """A new handle for the bytes of ``view``."""
    with _lock:
        handle = next(_ids) << 4
        _memory[handle] = view
    return handle


def release(handle) -> bool:
    if not isinstance(handle, int):
        return False
    with _lock:
        return _memory.pop(handle, None) is not None


def view(ptr) -> memoryview:
    """The bytes behind a handle, a C-contiguous numpy array or a bytearray."""
    if isinstance(ptr, np.ndarray):
        if not ptr.flags.c_contiguous:
            fail(ACL_ERROR_INVALID_PARAM, "a buffer array must be C-contiguous")
        return memoryview(ptr).cast("B")
    if isinstance(ptr, (bytearray, memoryview)):
        return memoryview(ptr).cast("B")
    found = _memory.get(ptr) if isinstance(ptr, int) and not isinstance(ptr, bool) else None
    if found is None:
        fail(ACL_ERROR_INVALID_PARAM, f"{ptr!r} is not a buffer (acl.rt.malloc, "
                                      "acl.util.numpy_to_ptr, a numpy array or a bytearray)")
    return found


@dataclass
class DataBuffer:
    """A buffer of ``size`` bytes (aclDataBuffer)."""

    ptr: Any
    size: int


def create_data_buffer(ptr, size: int) -> DataBuffer:
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= len(view(ptr)):
        fail(ACL_ERROR_INVALID_PARAM, f"create_data_buffer: size {size!r} exceeds the buffer")
    return DataBuffer(ptr, size)


def destroy_data_buffer(data: DataBuffer) -> int:
    return ACL_SUCCESS if isinstance(data, DataBuffer) else ACL_ERROR_INVALID_PARAM


def get_data_buffer_addr(data: DataBuffer):
    return expect(data, DataBuffer, "get_data_buffer_addr").ptr


def get_data_buffer_size_v2(data: DataBuffer) -> int:
    return expect(data, DataBuffer, "get_data_buffer_size").size


get_data_buffer_size = get_data_buffer_size_v2


def read_array(buf: DataBuffer, shape, dtype: np.dtype) -> np.ndarray:
    """The tensor of ``shape`` and storage ``dtype`` at the start of ``buf`` (no copy)."""
    shape = expect_dims(shape, "shape")
    count = int(np.prod(shape))
    raw = view(expect(buf, DataBuffer, "buffer").ptr)
    if count * dtype.itemsize > min(len(raw), buf.size):
        fail(ACL_ERROR_INVALID_PARAM, f"a {list(shape)} {dtype} tensor does not fit a buffer of "
                                      f"{buf.size} bytes")
    return np.frombuffer(raw[:count * dtype.itemsize], dtype=dtype).reshape(shape)


def writable(raw: memoryview, what: str) -> memoryview:
    """``raw`` if it may be written (a read-only numpy array or bytes view may not)."""
    if raw.readonly:
        fail(ACL_ERROR_INVALID_PARAM, f"{what} is read-only memory")
    return raw


def write_array(buf: DataBuffer, array: np.ndarray) -> None:
    """``array``'s bytes at the start of ``buf`` (the caller checked the size)."""
    data = np.ascontiguousarray(array)
    writable(view(buf.ptr), "an output buffer")[:data.nbytes] = data.view(np.uint8).reshape(-1)
