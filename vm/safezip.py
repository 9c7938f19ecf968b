"""Reading and writing the zip container of a package, safe against hostile files.

Nothing is ever extracted to disk by name: members are read into memory, each only after its
name, count, sizes and compression were checked against fixed bounds, and the bytes read are
capped at the size declared (a member that inflates beyond it is malformed). Names are plain
relative paths of ``[A-Za-z0-9._-]`` components (no ``..``, no absolute path, no backslash,
no duplicates). ``.npy`` arrays are parsed with bounds too (integer dtypes only, no pickle).
Writing is deterministic: fixed member order, timestamps and compression level.
"""
from __future__ import annotations

import ast
import io
import re
import struct
import zipfile
import zlib

import numpy as np

from .errors import MalformedError

MAX_MEMBERS = 4096
MAX_MEMBER = 4 << 30
MAX_TOTAL = 8 << 30
MAX_RATIO = 1024
"""A deflated member may inflate to at most this many times its compressed size (+ 1 MiB)."""
PART = r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}"
NAME = re.compile(rf"{PART}(/{PART}){{0,7}}\Z")
EPOCH = (1980, 1, 1, 0, 0, 0)
NPY_MAGIC = b"\x93NUMPY\x01\x00"
NPY_DTYPES = ("<i1", "<i2", "<i4", "<i8", "|i1", "|u1", "<u2", "<u4", "<u8")


class Reader:
    """The members of a zip file (path, bytes or binary file object), checked before reading."""

    def __init__(self, source, what: str = "package"):
        self.what = what
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(source) if isinstance(
                source, (bytes, bytearray, memoryview)) else source)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError,
                NotImplementedError, OSError) as e:
            raise MalformedError(f"{what}: not a zip file ({e})") from None
        infos = self.zip.infolist()
        if len(infos) > MAX_MEMBERS:
            raise MalformedError(f"{what}: {len(infos)} members (at most {MAX_MEMBERS})")
        self.members, total = {}, 0
        for info in infos:
            self._check(info)
            total += info.file_size
            if total > MAX_TOTAL:
                raise MalformedError(f"{what}: more than {MAX_TOTAL} bytes uncompressed")
            self.members[info.filename] = info

    def _check(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        shown = repr(name[:80])
        if not NAME.match(name) or any(part in (".", "..") for part in name.split("/")):
            raise MalformedError(f"{self.what}: member name {shown} is not a plain relative "
                                 "path of [A-Za-z0-9._-] components")
        if name in getattr(self, "members", {}):
            raise MalformedError(f"{self.what}: member {shown} appears twice")
        if info.flag_bits & 0x1:
            raise MalformedError(f"{self.what}: member {shown} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise MalformedError(f"{self.what}: member {shown}: compression method "
                                 f"{info.compress_type} (stored or deflated only)")
        if info.file_size > MAX_MEMBER or info.file_size > \
                info.compress_size * MAX_RATIO + (1 << 20):
            raise MalformedError(f"{self.what}: member {shown} declares {info.file_size} bytes "
                                 f"from {info.compress_size} compressed")

    def names(self) -> set[str]:
        return set(self.members)

    def read(self, name: str, limit: int | None = None) -> bytes:
        """The bytes of member ``name``: at most ``limit``, and exactly the declared size."""
        info = self.members.get(name)
        if info is None:
            raise MalformedError(f"{self.what}: no member {name!r}")
        if limit is not None and info.file_size > limit:
            raise MalformedError(f"{self.what}: member {name!r} has {info.file_size} bytes "
                                 f"(at most {limit})")
        try:
            with self.zip.open(info) as f:
                data = f.read(info.file_size + 1)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError,
                RuntimeError, NotImplementedError) as e:
            raise MalformedError(f"{self.what}: member {name!r} cannot be read: {e}") from None
        if len(data) != info.file_size:
            raise MalformedError(f"{self.what}: member {name!r} holds {len(data)} bytes, "
                                 f"{info.file_size} declared")
        return data


def write(members: list[tuple[str, bytes]]) -> bytes:
    """A zip of ``members`` (name, bytes), in that order, deterministic."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, data in members:
            info = zipfile.ZipInfo(name, EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data, compresslevel=6)
    return out.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    """``array`` (little-endian integers, C order) in .npy format 1.0, byte for byte the same
    on every machine."""
    array = np.asarray(array).astype(array.dtype.newbyteorder("<"), order="C")
    shape = repr(tuple(int(d) for d in array.shape))
    header = f"{{'descr': '{array.dtype.str}', 'fortran_order': False, 'shape': {shape}, }}"
    pad = 64 - (len(NPY_MAGIC) + 2 + len(header) + 1) % 64
    header = (header + " " * (pad % 64) + "\n").encode("latin1")
    return NPY_MAGIC + struct.pack("<H", len(header)) + header + array.tobytes()


def npy_array(data: bytes, what: str) -> np.ndarray:
    """The integer array of .npy bytes (format 1.0, C order), with every field checked."""
    if data[:len(NPY_MAGIC)] != NPY_MAGIC or len(data) < len(NPY_MAGIC) + 2:
        raise MalformedError(f"{what}: not a .npy 1.0 array")
    size = struct.unpack("<H", data[8:10])[0]
    try:
        header = ast.literal_eval(data[10:10 + size].decode("latin1"))
        descr, order, shape = header["descr"], header["fortran_order"], header["shape"]
        dtype = np.dtype(descr) if descr in NPY_DTYPES else None
    except (ValueError, SyntaxError, KeyError, TypeError, MemoryError, RecursionError):
        raise MalformedError(f"{what}: bad .npy header") from None
    if dtype is None or order is not False or not isinstance(shape, tuple) or len(shape) > 6 \
            or not all(isinstance(d, int) and 0 <= d < 1 << 31 for d in shape):
        raise MalformedError(f"{what}: a .npy of little-endian integers in C order is "
                             f"needed, got {str(header)[:120]}")
    count = int(np.prod(shape, dtype=object))
    body = data[10 + size:]
    if len(body) != count * dtype.itemsize:
        raise MalformedError(f"{what}: {len(body)} data bytes for shape {shape} {dtype}")
    return np.frombuffer(body, dtype=dtype).reshape(shape)
