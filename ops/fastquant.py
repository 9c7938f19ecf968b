"""requantize (ops/quant.py) on the CPU fast path, in float arithmetic where that is exact.

Y = clip(round((X - zin) * M / 2^s) + zp, qmin, qmax), per tensor or per channel:

* ``rounding="fp32"`` is defined as onnxruntime's float32 computation written with integers:
  round_fp32(round_fp32(d) * M) / 2^s rounded half to even. IEEE-754 float32 arithmetic (round
  to nearest, ties to even) computes exactly that: d becomes float32 by way of float64 (exact
  for |d| < 2^53, then one rounding), or directly from x when zin = 0 (one rounding), the
  product with M * 2^-s (exact: M < 2^24, a power-of-two scale, normal range since |d| >= 1
  or d = 0) is rounded once, and np.rint rounds the exactly represented quotient half to even;
* ``half_even`` / ``half_up``: d * M + 2^(s-1) is exact in float64 when it stays below 2^53
  (checked at load from the input's precision), times 2^-s exact; rint, or floor of the sum;
* anything else keeps the op's own int64 kernel (:func:`prepare` returns None).
"""
from __future__ import annotations

import numpy as np

from .base import bound
from .scratch import lane_count, parallel, scratch
from .table import translate

F32, F64 = 1 << 24, 1 << 53
BLOCK = 1 << 17
"""Elements per block: each block's temporaries (a float64 or float32 copy) stay in the
cache through the kernel's passes over it, and lanes take blocks in turn."""
LANE_WORK = 8
"""Work per element lane_count weighs a tensor with: lanes from 2^19 elements, the tensor then
split in at least one block per lane. From 2^17 (LANE_WORK 32) the YOLOv8n slice at threads=2
took 5.6-7.0 ms against 5.1-5.6 (four alternating rounds, the machine's other core busy: a
lane that waits for a core costs more than the block it takes)."""
PLANS = 8
"""Block plans a kernel keeps (one per input shape and lane count)."""


ROUNDER = np.float32(3 << 22)
"""1.5 * 2^23: for a float32 p with |p| < 2^21 and an even integer e with |e| < 2^20,
p + ROUNDER + e lies in (2^23, 2^24), where the float32 spacing is 1, so its one rounding (to
nearest, ties to even; ROUNDER + e is even) gives exactly ROUNDER + e + rint(p), whose bits
are 0x4B400000 + e + rint(p): their low byte is e + rint(p) mod 256."""


class RequantizeKernel:
    """requantize bound at load time (see the module doc), on cache-sized blocks (spread over
    the lanes)."""

    def __init__(self, attrs, in_precision: int, ndim: int, out_dtype):
        a = attrs
        m = np.asarray(a["multiplier"], np.float64)
        s = np.asarray(a["shift"], np.int64)
        shape = [1] * ndim
        if m.size > 1:
            shape[a["axis"]] = m.size
        self.mode = a["rounding"]
        self.axis = a["axis"] if m.size > 1 else None                  # per channel: where
        top = bound(in_precision) + abs(a["zero_point_in"])
        self.float = np.float32 if self.mode == "fp32" else np.float64
        self.scale = np.ldexp(m, -s).astype(self.float).reshape(shape)
        self.half = np.where(s > 0, 0.5, 0.0).reshape(shape)           # 2^(s-1) / 2^s
        self.scale_c, self.half_c = self.scale.reshape(-1), self.half.reshape(-1)  # 1 or C
        self._rows: dict[int, tuple] = {}
        self._plans: dict[tuple, list] = {}
        self.zin, self.zp = a["zero_point_in"], a["zero_point"]
        self.lo, self.hi = a["qmin"] - self.zp, a["qmax"] - self.zp
        self.out_dtype = np.dtype(out_dtype)
        self.limit = F32 if self.mode == "fp32" else F64        # exact integers of self.float
        # the largest magnitude the clip and the zero point's addition handle: below limit
        self.clip_span = max(abs(self.lo), abs(self.hi), abs(a["qmin"]), abs(a["qmax"]))
        self.ok = (self.mode == "fp32" or top * int(m.max()) + (1 << int(s.max())) < F64) \
            and self.clip_span < self.limit
        self.even = self.zp - (self.zp & 1)     # the zero point's even part, in the rounder
        self.rounder = None
        if self.mode == "fp32" and self.zin == 0 and self.clip_span < 1 << 20 and \
                top * float(np.abs(self.scale).max(initial=0)) < 1 << 21:
            base = ROUNDER + np.float32(self.even)
            self.rounder = (base, base + np.float32(self.lo), base + np.float32(self.hi))

    def __call__(self, xp, x):
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, self.out_dtype)
        if self.out_dtype.itemsize == 1 and self._rounds(x):
            bits = out.reshape(-1).view(np.uint8)
            self._blocks(x, bits, self._low_byte)
            if self.zp & 1:
                np.add(bits, np.uint8(1), out=bits)         # modulo 256: the byte's bits
            return out
        self._blocks(x, out.reshape(-1), self._rounded if self._rounds(x) else self._block)
        return out

    def _rounds(self, x) -> bool:
        """Whether x's blocks take the rounder (:meth:`_low_byte`, :meth:`_rounded`)."""
        return self.rounder is not None and x.dtype.itemsize <= 4

    def _blocks(self, x, flat_out, block) -> None:
        """block(part, dst, scale, half) on the blocks of ``x`` (C-contiguous) and the same
        blocks of ``flat_out``, spread over the lanes when x is large."""
        flat_x = x.reshape(-1)

        def chunk(c) -> None:
            start, stop, shape, scale, half = c
            block(flat_x[start:stop].reshape(shape), flat_out[start:stop].reshape(shape),
                  scale, half)
        lanes = lane_count(x.size * LANE_WORK)
        chunks = self._chunks(x.shape, lanes)
        if len(chunks) > 1 and lanes > 1:
            parallel(chunk, chunks)
        else:
            for c in chunks:
                chunk(c)

    def _block(self, part, dst, scale, half) -> None:
        if self.mode == "fp32" and self.zin == 0 and part.dtype.itemsize <= 4:
            y = scratch("y", part.shape, np.float32)
            np.copyto(y, part, casting="unsafe")              # one rounding: float32(x)
            np.multiply(y, scale, out=y)                      # one rounding
            np.rint(y, out=y)                                 # and one rounding here
            self._clip_to(y, dst, y)
            return
        d = scratch("d", part.shape, np.float64)
        np.subtract(part, self.zin, out=d, dtype=np.float64)  # exact: |d| < 2^53
        self._apply(d, dst, scale, half)

    def _rounder_sum(self, part, scale) -> np.ndarray:
        """The float32 scratch ROUNDER + even + clip(rint(float32(float32(part) * scale)), lo,
        hi), exact for the fp32 rounding with zin = 0 while the input's bound times the scale
        stays below 2^21 and zp, qmin, qmax below 2^20 (``rounder``: ROUNDER + even and the
        clip bounds of the sum): an integer in (2^23, 2^24), whose bits are 0x4B400000 + even
        + v."""
        base, low, high = self.rounder
        y = scratch("y", part.shape, np.float32)
        np.copyto(y, part, casting="unsafe")               # one rounding: float32(x)
        np.multiply(y, scale, out=y)                       # one rounding: p, |p| < 2^21
        np.add(y, base, out=y)                             # base + rint(p), exactly
        np.clip(y, low, high, out=y)                       # exact: integers below 2^24
        return y

    def _low_byte(self, part, dst, scale, half) -> None:
        """dst <- (clip(rint(float32(float32(part) * scale)), lo, hi) + even) mod 256: the low
        byte of :meth:`_rounder_sum`'s bits."""
        np.copyto(dst, self._rounder_sum(part, scale).view(np.uint32), casting="unsafe")

    def _rounded(self, part, dst, scale, half) -> None:
        """dst <- clip(rint(float32(float32(part) * scale)), lo, hi) + zp: :meth:`_rounder_sum`'s
        bits as int32 minus 0x4B400000 + even - zp, one integer pass in place of the rounding,
        the zero point's addition and the float-to-integer copy (204,800 elements into int32:
        102 -> 90 us)."""
        np.subtract(self._rounder_sum(part, scale).view(np.int32),
                    np.int32(0x4B400000 + self.even - self.zp), out=dst,
                    casting="unsafe")                      # exact: the result fits dst

    def _chunks(self, shape, lanes: int = 1) -> list:
        """The blocks of :meth:`_plan` for ``shape`` on ``lanes`` lanes, made once per shape
        (a few shapes kept: on small tensors making them cost a third of the kernel)."""
        key = (tuple(shape), lanes)
        got = self._plans.get(key)
        if got is None:
            if len(self._plans) >= PLANS:
                self._plans.clear()
            n = int(np.prod(shape, dtype=np.int64))
            got = self._plans[key] = self._plan(shape, min(BLOCK, -(-n // lanes) if n else 1))
        return got

    def _plan(self, shape, block: int) -> list:
        """(start, stop, shape, scale, half) of the flat blocks of about ``block`` elements the
        kernel runs on, the scale and half operands broadcasting against the block's shape:
        whole channel planes (or parts of one) when channels lead their pixels; runs of
        whole channels-last rows against a channel row tiled to the block's length (a
        broadcast of a few channels per inner loop costs numpy twice as much)."""
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0:
            return []
        if self.axis is None:
            return [(a, min(n, a + block), (min(n, a + block) - a,), self.scale_c[0],
                     self.half_c[0]) for a in range(0, n, block)]
        c = shape[self.axis]
        post = int(np.prod(shape[self.axis + 1:], dtype=np.int64))
        if post == 1:                        # channels last: rows of c
            rows = max(1, block // c)
            scale, half = self._tiled(rows)
            return [(a, min(n, a + rows * c), (min(n, a + rows * c) - a,),
                     scale[:min(n, a + rows * c) - a], half[:min(n, a + rows * c) - a])
                    for a in range(0, n, rows * c)]
        planes = n // post
        if post >= block:                    # parts of one channel plane
            return [(p * post + a, p * post + min(post, a + block),
                     (min(post, a + block) - a,), self.scale_c[p % c], self.half_c[p % c])
                    for p in range(planes) for a in range(0, post, block)]
        k = max(1, block // post)            # whole planes, one scale each
        return [(p * post, min(planes, p + k) * post, (min(planes, p + k) - p, post),
                 self.scale_c[np.arange(p, min(planes, p + k)) % c][:, None],
                 self.half_c[np.arange(p, min(planes, p + k)) % c][:, None])
                for p in range(0, planes, k)]

    def _tiled(self, rows: int):
        """The channel scale and half rows repeated ``rows`` times (cached per count)."""
        got = self._rows.get(rows)
        if got is None:
            got = self._rows[rows] = (np.tile(self.scale_c, rows), np.tile(self.half_c, rows))
        return got

    def finish_float(self, y, out, view=None, residual=None, other=None, channels=None):
        """As the epilogue of a conv whose float accumulator ``y`` holds the exact integer
        results (channels on axis 0, ``channels`` of them): out <- requantize(view or y)."""
        v = y if view is None else view
        per = lambda a, ndim: a if a.size == 1 else \
            a[channels].reshape((-1,) + (1,) * (ndim - 1))
        if self.mode == "fp32" and self.zin == 0 and y.dtype == np.float32:
            # y already holds float32(d) exactly: round in place, y whole (contiguous)
            np.multiply(y, per(self.scale_c, y.ndim), out=y)          # one rounding
            np.rint(y, out=y)
            self._clip_to(y, out, v)
            return
        d = scratch("d", v.shape, np.float64)
        np.subtract(v, self.zin, out=d, dtype=np.float64)             # exact: |d| < 2^53
        self._apply(d, out, per(self.scale_c, v.ndim), per(self.half_c, v.ndim))

    def _apply(self, d, out, scale, half) -> None:
        """out <- clip(round(d * scale), lo, hi) + zp for d = x - zin (float64, exact)."""
        if self.mode == "fp32":
            y = scratch("y", d.shape, np.float32)
            np.copyto(y, d, casting="same_kind")                       # one rounding
            np.multiply(y, scale, out=y)                               # one rounding
            np.rint(y, out=y)
        else:
            y = d
            np.multiply(y, scale, out=y)                               # exact
            if self.mode == "half_up":
                np.add(y, half, out=y)                                 # exact (the licence)
                np.floor(y, out=y)
            else:
                np.rint(y, out=y)
        self._clip_to(y, out, y)

    def _clip_to(self, y, out, part) -> None:
        """out <- clip(y, lo, hi) + zp, for ``part`` (a view of y, or y) of the rounded y."""
        np.clip(y, self.lo, self.hi, out=y)
        if self.zp:
            np.add(y, self.zp, out=y)                      # exact: small integers
        np.copyto(out, part, casting="unsafe")


def prepare(attrs, in_precision: int, ndim: int, out_dtype, tail):
    """A RequantizeKernel, followed by ``tail`` when that is only clipping (relu, clip,
    cvm_clip: composed into qmin / qmax), when its float arithmetic is licensed; else None."""
    if tail.shift or tail.add:
        return None
    both = tail.__class__(0, 0, attrs["qmin"], attrs["qmax"]).then_clip(tail.lo, tail.hi)
    kernel = RequantizeKernel({**attrs, "qmin": both.lo, "qmax": both.hi}, in_precision, ndim,
                              out_dtype)
    return kernel if kernel.ok else None


class RequantizeLut(RequantizeKernel):
    """requantize, then a lut of its result alone (one data input), in one pass over each
    block. Where the lut's result is a byte, the blocks leave a byte per element and one
    :func:`ops.table.translate` of the whole tensor maps them: the low byte of the rounder
    (:meth:`RequantizeKernel._low_byte`) through ``rotated`` (256 bytes: the lut's table
    composed with the clamp of its index, rotated by the zero point's even part), else the
    requantized byte's bits through ``by_bits`` (the entries' bytes). A wider result: the
    byte's bits index ``entries`` (numpy's take)."""

    def __init__(self, kernel: RequantizeKernel, byte: np.dtype, entries: np.ndarray):
        self.__dict__.update(kernel.__dict__)
        self._rows, self._plans = {}, {}
        self.byte, self.entries, self.out_dtype = byte, entries, entries.dtype
        self.by_bits = entries.view(np.uint8).tobytes() if entries.dtype.itemsize == 1 \
            else None
        if self.by_bits is not None and self.rounder is not None:
            v = self.lo + (np.arange(256) - self.even - self.lo) % 256   # v + even = i mod 256
            bits = (np.clip(v, self.lo, self.hi) + self.zp).astype(byte).view(np.uint8)
            self.rotated = entries.view(np.uint8)[bits].tobytes()

    def __call__(self, xp, x):
        x = np.ascontiguousarray(x)
        if self.by_bits is None:          # a wider result: each block's bytes take the entries
            out = np.empty(x.shape, self.out_dtype)
            self._blocks(x, out.reshape(-1), self._block)
            return out
        low = bytearray(x.size)
        rounded = self._rounds(x)
        self._blocks(x, np.frombuffer(low, np.uint8), self._low_byte if rounded else
                     self._block)
        return translate(low, self.rotated if rounded else self.by_bits, self.out_dtype,
                         x.shape)

    def _clip_to(self, y, out, part) -> None:
        np.clip(y, self.lo, self.hi, out=y)
        if self.zp:
            np.add(y, self.zp, out=y)                      # exact: small integers
        if self.by_bits is not None:                       # out: the bytes, translated later
            np.copyto(out.view(self.byte), part, casting="unsafe")   # exact: y fits a byte
            return
        b = scratch("byte", part.shape, self.byte)
        np.copyto(b, part, casting="unsafe")               # exact: y fits the byte type
        np.take(self.entries, b.view(np.uint8), out=out, mode="clip")   # in range: no clip


def prepare_lut(attrs, in_precision: int, ndim: int, tail, table: np.ndarray, low: int,
                out_dtype):
    """A RequantizeLut for requantize (then ``tail``, clips only) followed by lut(``table``,
    low=[``low``]) with result dtype ``out_dtype``, when the float path is licensed, the
    requantized values fit a byte and the table's entries fit ``out_dtype``; else None."""
    kernel = prepare(attrs, in_precision, ndim, np.int64, tail)
    if kernel is None or table.ndim != 1:
        return None
    first, last = kernel.lo + kernel.zp, kernel.hi + kernel.zp      # the requantized values
    byte = next((np.dtype(t) for t in (np.uint8, np.int8)
                 if np.iinfo(t).min <= first and last <= np.iinfo(t).max), None)
    if byte is None or first > last:
        return None
    values = np.arange(256, dtype=np.int64).astype(np.uint8).view(byte).astype(np.int64)
    values = np.clip(values, first, last)           # bit patterns no requantize gives: any
    rows = np.clip(values - low, 0, table.size - 1)
    wide = np.asarray(table, np.int64)[rows]
    entries = wide.astype(out_dtype)
    if not np.array_equal(entries.astype(np.int64), wide):
        return None
    return RequantizeLut(kernel, byte, entries)
