"""CVM's binary parameter dict (cvm.md §1.5): a canonical writer and a strict reader.

    u64 0xF7E58D4F05049CB7, u64 reserved, u64 n, n x (u64 len, name bytes), u64 n, n x NDArray
    NDArray: u64 0xDD5E40F096B4A13F, u64 reserved, i32 device_type (1 = CPU), i32 device_id,
             i32 ndim, u8 code (0 = int), u8 bits, u16 lanes, i64 shape[ndim],
             i64 byte size, raw little-endian data

Only int8 and int32 arrays are read or written. Errors carry CVM's codes: a bad list header,
name table or count is 1; a bad array record is 2 ("Invalid DLTensor file format"), and so is
a truncated one (where CVM reads uninitialised memory). Bytes after the last array are ignored.
"""
from __future__ import annotations

import struct
from typing import Iterable, Mapping

import numpy as np

from .errors import LOGIC, RUNTIME, invalid, malformed

LIST_MAGIC = 0xF7E58D4F05049CB7
ARRAY_MAGIC = 0xDD5E40F096B4A13F
CPU = 1
DTYPES = {8: np.dtype("<i1"), 32: np.dtype("<i4")}
MAX_NDIM = 32


def save_params(params: Mapping[str, np.ndarray] | Iterable[tuple[str, np.ndarray]]) -> bytes:
    """The canonical blob of ``params`` (name -> int8 or int32 array), in the given order."""
    items = list(params.items() if isinstance(params, Mapping) else params)
    out = [struct.pack("<QQQ", LIST_MAGIC, 0, len(items))]
    for name, _ in items:
        raw = name.encode("utf-8")
        out.append(struct.pack("<Q", len(raw)) + raw)
    out.append(struct.pack("<Q", len(items)))
    out += [_array_record(name, a) for name, a in items]
    return b"".join(out)


def _array_record(name: str, array: np.ndarray) -> bytes:
    a = np.asarray(array)
    bits = {np.dtype(np.int8): 8, np.dtype(np.int32): 32}.get(a.dtype.newbyteorder("="))
    if bits is None:
        raise invalid(f"parameter {name!r}: dtype {a.dtype} is not int8 or int32")
    data = np.ascontiguousarray(a, dtype=DTYPES[bits]).tobytes()
    head = struct.pack("<QQiiiBBH", ARRAY_MAGIC, 0, CPU, 0, a.ndim, 0, bits, 1)
    return head + struct.pack(f"<{a.ndim}q", *a.shape) + struct.pack("<q", len(data)) + data


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int, what: str, code: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise _error(f"truncated at {what} (offset {self.pos})", code)
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str, what: str, code: int) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what, code))


def _error(message: str, code: int):
    if code == LOGIC:
        return malformed(f"Invalid parameters file format: {message}", LOGIC)
    return malformed(f"Invalid DLTensor file format: {message}", RUNTIME)


def load_params(data: bytes) -> list[tuple[str, np.ndarray]]:
    """The (name, array) pairs of a blob, in order; arrays are int8 or int32."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise malformed(f"params must be bytes, got {type(data).__name__}", LOGIC)
    if len(data) == 0:
        raise malformed("params.size() != 0: the params blob is empty", LOGIC)
    r = _Reader(bytes(data))
    magic, _reserved, count = r.unpack("QQQ", "list header", LOGIC)
    if magic != LIST_MAGIC:
        raise _error(f"bad list magic {magic:#x}", LOGIC)
    if count > len(data) // 8:
        raise _error(f"{count} names cannot fit in {len(data)} bytes", LOGIC)
    names = [_name(r, k) for k in range(count)]
    (arrays,) = r.unpack("Q", "array count", LOGIC)
    if arrays != count:
        raise _error(f"{arrays} arrays for {count} names", LOGIC)
    return [(name, _array(r, name)) for name in names]


def _name(r: _Reader, k: int) -> str:
    (n,) = r.unpack("Q", f"name {k} length", LOGIC)
    raw = bytes(r.take(n, f"name {k}", LOGIC))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _error(f"name {k} is not UTF-8", LOGIC) from None


def _array(r: _Reader, name: str) -> np.ndarray:
    what = f"array {name!r}"
    magic, _, device, _dev_id, ndim, code, bits, lanes = r.unpack("QQiiiBBH", what, RUNTIME)
    if magic != ARRAY_MAGIC:
        raise _error(f"{what}: bad magic {magic:#x}", RUNTIME)
    if device != CPU:
        raise _error(f"{what}: device type {device}, only CPU (1) arrays can be loaded", RUNTIME)
    if not 0 <= ndim <= MAX_NDIM:
        raise _error(f"{what}: ndim {ndim}", RUNTIME)
    shape = r.unpack(f"{ndim}q", f"{what} shape", RUNTIME)
    (nbytes,) = r.unpack("q", f"{what} byte size", RUNTIME)
    if (code, lanes) != (0, 1) or bits not in DTYPES:
        raise invalid(f"parameter {name!r}: dtype (code {code}, bits {bits}, lanes {lanes}) "
                      "is not int8 or int32")
    if any(d < 0 for d in shape):
        raise _error(f"{what}: negative dimension in {shape}", RUNTIME)
    if nbytes != int(np.prod(shape, dtype=object)) * (bits // 8):
        raise _error(f"{what}: byte size {nbytes} does not match shape {list(shape)}", RUNTIME)
    raw = r.take(nbytes, f"{what} data", RUNTIME)
    return np.frombuffer(raw, dtype=DTYPES[bits]).reshape(shape).copy()
