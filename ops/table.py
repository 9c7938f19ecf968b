"""lut: one or two small integer inputs through a lookup table.

A float island of a quantized model (the ops between DequantizeLinear and QuantizeLinear:
sigmoid, GELU, a division, the sum of two differently scaled activations...) maps one or two
8-bit values to one 8-bit value: it is an integer function of at most 256 x 256 arguments,
which the importer tabulates (compiler/onnx/). Once in the bytecode the table is data and the
lookup is plain integer semantics.
"""
from __future__ import annotations

import numpy as np

from .base import Attr, OpDef, Ref, clip_ints, require, size_of, wide
from .broadcast import broadcast_shape
from .layout import clamp
from .registry import register
from .scratch import lane_count, parallel, scratch
from .z3util import build

MAX_ENTRIES = 1 << 16
"""At most 65,536 table entries (256 x 256: two 8-bit arguments; or one 16-bit argument)."""
LOW = (1 << 31) - 1
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def _dims(shapes, a) -> tuple[int, ...]:
    """The table's dims, one per data input, after checking arity, table rank and size."""
    table, data = shapes[0], shapes[1:]
    require(len(data) in (1, 2), f"lut takes a table and one or two data inputs, got "
            f"{len(data)} data inputs")
    require(len(table) == len(data), f"lut with {len(data)} data input(s) needs a "
            f"{len(data)}-D table, got shape {tuple(table)}")
    require(len(a["low"]) == len(data), f"lut attribute low has {len(a['low'])} value(s) for "
            f"{len(data)} data input(s)")
    require(size_of(table) <= MAX_ENTRIES,
            f"lut table has {size_of(table)} entries (at most {MAX_ENTRIES})")
    return tuple(table)


def _shape(shapes, a):
    _dims(shapes, a)
    if len(shapes) == 2:
        return tuple(shapes[1])
    return broadcast_shape(shapes[1], shapes[2], "lut")


def _source(t: Ref, out_index: tuple) -> tuple:
    """The index of ``t`` that output index ``out_index`` reads (numpy broadcasting)."""
    tail = out_index[len(out_index) - t.ndim:]
    return tuple(min(i, d - 1) for i, d in zip(tail, t.shape))


def _precision(precs, shapes, a):
    _dims(shapes, a)
    return precs[0]


def _scalar(args, a):
    table, data = args[0], args[1:]
    dims = _dims([table.shape] + [d.shape for d in data], a)
    out = _shape([table.shape] + [d.shape for d in data], a)

    def element(i):
        index = [clamp(d.at(_source(d, i)) - low, 0, n - 1)
                 for d, low, n in zip(data, a["low"], dims)]
        return table.at(index)
    return Ref.build(out, element)


def _kernel(xp, table, *data, low):
    """The flat index (rows clamped, times the row length, plus the clamped columns) and one
    gather. On numpy, inputs of one shape beyond BLOCK elements (BYTES_WHOLE for bytes) go in
    blocks, spread over the lanes, each block's indices in an int64 scratch; else whole
    arrays (:func:`_whole`)."""
    dims, flat = tuple(table.shape), table.reshape(-1)
    shapes = {tuple(d.shape) for d in data}
    size = data[0].size
    whole_bytes = all(_indexes_as_bytes(d, lo, n) for d, lo, n in zip(data, low, dims))
    if xp is np and len(shapes) == 1 and len(data) == 2 and dims[1] == 256 and whole_bytes:
        return _pairs(flat, data, next(iter(shapes)))
    if xp is not np or len(shapes) > 1 or size <= BLOCK or (size <= BYTES_WHOLE and
                                                            whole_bytes):
        return _whole(xp, flat, data, low, dims)
    out = np.empty(next(iter(shapes)), table.dtype)
    ins, dst = [d.reshape(-1) for d in data], out.reshape(-1)

    def block(start: int) -> None:
        end = min(dst.size, start + BLOCK)
        index = scratch("lut", (end - start,), np.int64)
        _rows_into(ins[0][start:end], low[0], dims[0], index)
        if len(ins) == 2:
            column = scratch("lut column", (end - start,), np.int64)
            _rows_into(ins[1][start:end], low[1], dims[1], column)
            np.multiply(index, dims[1], out=index, dtype=np.int64)
            np.add(index, column, out=index, dtype=np.int64)
        np.take(flat, index, out=dst[start:end], mode="clip")   # in range: clip never acts
    starts = list(range(0, dst.size, BLOCK))
    if lane_count(dst.size * len(ins)) > 1:
        parallel(block, starts)
    else:
        for start in starts:
            block(start)
    return out


class PreparedLut:
    """lut with a constant table, prepared once for a result dtype: the entries cast to it
    where they fit (no narrowing after the gather; a smaller table in the cache). One input
    of bytes that index the whole table as they are (uint8 from 0, int8 from -128) gathers
    by their bits; where the result is a byte too, by :func:`translate`. Anything else:
    :func:`_kernel` on the cast table."""

    def __init__(self, table, low, out_dtype):
        wide = np.asarray(table)
        cast = wide.astype(out_dtype)
        self.table = cast if np.array_equal(cast.astype(wide.dtype), wide) else wide
        self.low = tuple(low)
        self._bits: dict = {}

    def _by_bits(self, dtype):
        """(entries by bit pattern, their bytes for :func:`translate` or None) for byte data
        of ``dtype``."""
        got = self._bits.get(dtype)
        if got is None:
            entries = by_bits(self.table.reshape(-1), self.low[0], dtype)
            got = self._bits[dtype] = (entries, entries.view(np.uint8).tobytes()
                                       if entries.dtype.itemsize == 1 else None)
        return got

    def __call__(self, xp, *data):
        d = data[0]
        if xp is not np or len(data) != 1 or self.table.ndim != 1 or \
                not _indexes_as_bytes(d, self.low[0], self.table.shape[0]):
            return _kernel(xp, self.table, *data, low=self.low)
        entries, table = self._by_bits(d.dtype)
        bits = np.ascontiguousarray(d).view(np.uint8)
        if table is not None:                                   # a byte result: one C loop
            return translate(bits, table, entries.dtype, d.shape)
        out = np.empty(d.shape, entries.dtype)
        np.take(entries, bits, out=out, mode="clip")            # in range: clip never acts
        return out


def by_bits(entries: np.ndarray, low: int, dtype) -> np.ndarray:
    """entries[clip(v - low, 0, n - 1)] for the 256 values v of the byte ``dtype``, in the
    order of their bit patterns: the table that data of that dtype index as they are."""
    values = np.arange(256, dtype=np.uint8).view(dtype).astype(np.int64)
    return entries[np.clip(values - low, 0, entries.size - 1)]


def translate(bits, table: bytes, dtype, shape) -> np.ndarray:
    """table[b] for each byte b of ``bits`` (a C-contiguous uint8 array, or a bytearray), as
    a new array of the byte ``dtype`` and ``shape``: Python's ``bytearray.translate``, one C
    loop (with the copy into a bytearray 0.33 ns a byte on this project's machine, against
    0.39 for numpy's take of byte pairs from a 65,536-entry table, which first copies its
    indices to intp)."""
    src = bits if isinstance(bits, bytearray) else bytearray(bits)
    return np.frombuffer(src.translate(table), dtype).reshape(shape)


BLOCK = 1 << 18
"""Elements per block of the numpy gather: 2 MiB of int64 indices, few enough Python calls
that two lanes gather in parallel."""
PAIR_BLOCK = 1 << 16
"""Pairs of bytes per block of :func:`_pairs` (128 KiB of uint16 indices)."""
BYTES_WHOLE = 1 << 21
"""Byte arguments index the table as they are (two as one uint16): whole arrays up to this
many elements gather faster that way than in blocks."""


SCRATCH_WORDS = 4
"""int64 words per output element the kernel may hold besides its output (and a table's
worth): two blocks of int64 indices; over whole arrays, the int32 rows, their flat index and
the gather's intp copy of it (at most 20 bytes per element, measured); an onnxruntime
lowering's index arithmetic."""


def _rows_into(d, low: int, n: int, index) -> None:
    """index <- clip(d - low, 0, n - 1) in int64 (exact: |d|, |low| < 2^32); bytes that
    index n >= 256 rows from 0 (uint8 from 0, int8 from -128) need no clamping."""
    np.subtract(d, low, out=index, dtype=np.int64)
    if not _indexes_as_bytes(d, low, n):
        np.clip(index, 0, n - 1, out=index)


def _pairs(flat, data, shape):
    """Two byte arguments of one shape that index a 256-column table as they are: a * 256 + b
    is the uint16 of their two bytes (an int8's with its sign bit flipped), built and
    gathered in blocks of PAIR_BLOCK in uint16 scratch (cache-sized, and no page faults of
    fresh whole-array indices: 2.46 M pairs 3.45 -> 2.65 ms), spread over the lanes."""
    out = np.empty(shape, flat.dtype)
    a, b, dst = data[0].reshape(-1), data[1].reshape(-1), out.reshape(-1)
    flip = (0x8000 if a.dtype.kind == "i" else 0) | (0x80 if b.dtype.kind == "i" else 0)

    def block(start: int) -> None:
        end = min(dst.size, start + PAIR_BLOCK)
        index = scratch("lut pairs", (end - start,), np.uint16)
        np.left_shift(a[start:end].view(np.uint8), 8, out=index, dtype=np.uint16)
        np.bitwise_or(index, b[start:end].view(np.uint8), out=index, dtype=np.uint16)
        if flip:
            np.bitwise_xor(index, np.uint16(flip), out=index)
        np.take(flat, index, out=dst[start:end], mode="clip")   # in range: clip never acts
    starts = list(range(0, dst.size, PAIR_BLOCK))
    if len(starts) > 1 and lane_count(dst.size * 2) > 1:
        parallel(block, starts)
    else:
        for start in starts:
            block(start)
    return out


def _whole(xp, flat, data, low, dims):
    """One flat gather from the table, over whole arrays (broadcast). Row (column) indices:
    bytes that index a row (column) of at least 256 entries from 0 as they are; else each
    argument clamped to its window [low, low + n - 1] (:func:`_rows`). Entries fit int32 (at
    most 65,536), so the flat index a * m + b does."""
    rows = [_byte_rows(d, lo, n) for d, lo, n in zip(data, low, dims)]
    if all(r is not None for r in rows):
        if len(data) == 1:
            return xp.take(flat, rows[0])
        if dims[1] == 256:                  # a * 256 + b: the two bytes of a uint16
            index = xp.left_shift(rows[0], 8, dtype=xp.uint16)
            return xp.take(flat, xp.bitwise_or(index, rows[1], dtype=xp.uint16))
        return xp.take(flat, rows[0].astype(xp.int32) * dims[1] + rows[1])
    rows = [_rows(xp, d, lo, n) for d, lo, n in zip(data, low, dims)]
    if len(data) == 1:
        return xp.take(flat, rows[0])
    return xp.take(flat, rows[0] * dims[1] + rows[1])        # a, b broadcast


def _rows(xp, d, low: int, n: int):
    """clip(d - low, 0, n - 1) as int32: clamped in d's own dtype to [low, low + n - 1] when
    that window is representable in it and in int32 (then d - low is exact in int32), else
    computed in int64."""
    info = xp.iinfo(d.dtype)
    top = low + n - 1
    if max(info.min, INT32_MIN) <= low and top <= min(info.max, INT32_MAX):
        rows = xp.clip(d, low, top).astype(xp.int32, copy=False)
        return rows - xp.int32(low) if low else rows
    return clip_ints(xp, wide(xp, d) - low, 0, n - 1).astype(xp.int32)


def _byte_rows(d, low: int, n: int):
    """The row indices d - low as uint8 when d holds bytes and they index the n rows without
    clamping (uint8 from 0, int8 from -128: its bits with the sign bit flipped), else None."""
    if not _indexes_as_bytes(d, low, n):
        return None
    return d if d.dtype.kind == "u" else d.view("uint8") ^ 0x80


def _indexes_as_bytes(d, low: int, n: int) -> bool:
    """Whether d holds bytes that index n >= 256 rows from 0 without clamping (uint8 from 0,
    int8 from -128)."""
    dtype = getattr(d, "dtype", None)
    return dtype is not None and n >= 256 and dtype.itemsize == 1 and \
        low == (0 if dtype.kind == "u" else -128)


def _z3(zx, table, *data, low):
    """Per output element, one lookup of the clamped flat index in the table's entries (a Z3
    array built once per instruction: zx.table)."""
    dims = _dims([table.shape] + [d.shape for d in data], dict(low=low))
    out = _shape([table.shape] + [d.shape for d in data], dict(low=low))
    look = zx.table(table.data)

    def element(i):
        index = 0
        for d, lo, n in zip(data, low, dims):
            index = index * n + zx.clip(d.at(_source(d, i)) - lo, 0, n - 1)
        return look(index)
    return build(out, element)


register(OpDef(
    name="lut", opcode=130,
    doc="""Table lookup of one or two integer inputs, with clamped indices.

    One data input a, a table T of shape (n,):   y[i] = T[clip(a[i] - low_0, 0, n - 1)].
    Two data inputs a, b, T of shape (n, m):
        y[i] = T[clip(a[i] - low_0, 0, n - 1), clip(b[i] - low_1, 0, m - 1)]
    where a and b broadcast as in numpy (output shape: their broadcast; one input: a's shape).
    ``low`` holds, per data input, the value that selects row (column) 0: -128 for an int8
    argument, 0 for a uint8 one. Values outside the table's range take its first or last
    row (column), as cvm_lut and take clamp. At most 65,536 entries. Precision P0 (the
    table's). Gas per element: 1 (one input), 2 (two inputs: the flat index a * m + b).""",
    inputs=("table", "a", "b?"), outputs=("out",),
    attrs=(Attr("low", "ints", length=(1, 2), lo=-LOW, hi=LOW),),
    shape=_shape, precision=_precision,
    cost=lambda shapes, a: len(shapes) - 1, scalar=_scalar, kernel=_kernel, z3=_z3,
    batch=(1, 2), scratch=lambda ins, outs, a: 8 * (SCRATCH_WORDS * size_of(outs[0])
                                                    + size_of(ins[0])),
))
