"""Exact integer GEMMs on float BLAS: licences, and conv2d / dense bound at load time.

A sum of integers whose every partial sum stays below 2^24 in magnitude is computed exactly by
float32 BLAS in any order (2^53: float64). :func:`licence` proves, from the constant weights,
how a conv2d/dense reduction is split into contiguous channel chunks that are each exact in
float32 (their results then summed exactly in float64), or which single dtype is exact.

The pointwise tail after the GEMM is an ops/tails.py Requant (and optionally a Residual).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from .base import bound
from .scratch import lane_count, parallel, scratch
from .tails import Requant, Residual

F32_LIMIT, F64_LIMIT = 1 << 24, 1 << 53
MAX_CHUNKS = 4
LINEAR_OPS = ("conv2d", "dense", "qconv2d", "qdense")


def data_bound(op_name: str, data_precision: int, attrs) -> int:
    """Largest |x| the reduction sees: R(P0), or R(P0) + |zero_point| for qconv2d/qdense."""
    return bound(data_precision) + (abs(attrs.get("zero_point", 0)) if op_name[0] == "q" else 0)


def _magnitudes(weight: np.ndarray) -> np.ndarray:
    """|W| exactly, unsigned: int8 storage is abs'ed in place width and viewed as uint8 (so
    even -128 reads 128); wider storage goes through int64."""
    if weight.dtype.itemsize == 1:
        return np.abs(weight).view(np.uint8)
    return np.abs(weight.astype(np.int64))


def row_abs_sums(weight: np.ndarray) -> np.ndarray:
    """sum_k |W[oc, k]| per output row (exact int64), shape (OC,)."""
    m = _magnitudes(weight).reshape(weight.shape[0], -1)
    narrow = m.dtype == np.uint8 and m.shape[1] * 255 < 1 << 32
    return m.sum(axis=1, dtype=np.uint32 if narrow else np.int64).astype(np.int64)


def channel_abs_sums(weight: np.ndarray) -> np.ndarray:
    """S[oc, c] = sum over the kernel window of |W[oc, c, ...]| (exact, int32 or int64),
    shape (OC, C)."""
    return _window_sums(_magnitudes(weight), weight.shape, np.uint8, np.uint16)


def _window_sums(m: np.ndarray, shape, small, acc_small) -> np.ndarray:
    """sum over the kernel window of m (OC, C, ...), exact (OC, C): accumulated in
    ``acc_small`` (returned as int32) when m is ``small`` and the window is short enough,
    else in int64."""
    m = m.reshape(shape[0] * shape[1], -1)
    acc = acc_small if m.dtype == small and m.shape[1] * 255 < 1 << 15 else np.int64
    s = m.sum(axis=1, dtype=acc)                 # one pass; numpy casts in small buffers
    return s.reshape(shape[0], shape[1]).astype(np.int32 if acc != np.int64 else np.int64)


def _costs(weight: np.ndarray, nonneg: bool, per_channel: bool) -> list:
    """Arrays whose sums over any set of terms bound |partial sums| / x_bound: [|W|], or, for
    data known to be >= 0, [P, -N] (sums of the positive and of the negative weights), since
    then every partial sum lies in [R N, R P]."""
    if per_channel:
        a = channel_abs_sums(weight)
        signed = lambda: _window_sums(weight, weight.shape, np.int8, np.int16)
    else:
        a = row_abs_sums(weight)
        signed = lambda: weight.reshape(weight.shape[0], -1).sum(axis=1, dtype=np.int64)
    if not nonneg:
        return [a]
    s = signed()
    return [(a + s) >> 1, (a - s) >> 1]                 # exact: a +- s = 2P, 2N >= 0


@dataclass(frozen=True)
class GemmLicence:
    """How a linear op's reduction is computed exactly: ``dtype`` of the BLAS call and the
    channel boundaries ``splits`` (0 = s_0 < ... < s_n = C) of its chunks; ``bound`` is the
    largest proven partial-sum bound of a chunk (below the dtype's exact-integer limit), and
    ``whole`` that of the complete sum (chunks are summed in float64, exact below 2^53)."""

    dtype: str
    splits: tuple[int, ...]
    bound: int
    whole: int


def licence(weight: np.ndarray, x_bound: int, nonneg: bool = False) -> GemmLicence:
    """The licence for a constant weight (OC, C, ...) and data |x| <= ``x_bound`` (``nonneg``:
    0 <= x <= x_bound): one float32 chunk if every partial sum stays below 2^24, else at most
    MAX_CHUNKS float32 chunks of whole channels, else float64, else int64."""
    whole = x_bound * max(int(cost.max(initial=0)) for cost in _costs(weight, nonneg, False))
    c = weight.shape[1]
    if whole < F32_LIMIT:
        return GemmLicence("float32", (0, c), whole, whole)
    cums = []                                           # (OC, C + 1): prefix sums over C
    for cost in _costs(weight, nonneg, True):
        cum = np.zeros((cost.shape[0], c + 1), np.int64)
        np.cumsum(cost, axis=1, dtype=np.int64, out=cum[:, 1:])
        cums.append(cum)
    splits, worst, start = [0], 0, 0
    while start < c and len(splits) <= MAX_CHUNKS:
        chunk = x_bound * np.max([(cum[:, start + 1:] - cum[:, start:start + 1]).max(axis=0)
                                  for cum in cums], axis=0)
        fits = int(np.count_nonzero(chunk < F32_LIMIT))  # chunk bounds grow with the end
        if fits == 0:
            break
        start += fits
        splits.append(start)
        worst = max(worst, int(chunk[fits - 1]))
    if start == c and len(splits) - 1 <= MAX_CHUNKS:
        return GemmLicence("float32", tuple(splits), worst, whole)
    if whole < F64_LIMIT:
        return GemmLicence("float64", (0, c), whole, whole)
    return GemmLicence("int64", (0, c), whole, whole)


class Licences(Mapping):
    """{instruction index: GemmLicence}, each computed on first use from the facts
    :meth:`add` records (weight, x_bound, nonneg): the same licence :func:`licence` returns,
    but only for the steps whose kernels ask for it (a step another backend runs never does);
    once per weight array, bound and sign (a weight many instructions share: once)."""

    def __init__(self):
        self._facts: dict[int, tuple] = {}
        self._done: dict[int, GemmLicence] = {}
        self._shared: dict[tuple, GemmLicence] = {}   # (id of the weight, x_bound, nonneg)

    def add(self, index: int, weight: np.ndarray, x_bound: int, nonneg: bool) -> None:
        self._facts[index] = (weight, x_bound, nonneg)

    def __getitem__(self, index: int) -> GemmLicence:
        done = self._done.get(index)
        if done is None:
            weight, x_bound, nonneg = facts = self._facts[index]   # holds the weight: its id
            key = (id(weight), x_bound, nonneg)                    # stays its own
            done = self._shared.get(key)
            if done is None:
                done = self._shared[key] = licence(*facts)
            self._done[index] = done
        return done

    def __contains__(self, index) -> bool:
        return index in self._facts

    def __iter__(self):
        return iter(self._facts)

    def __len__(self) -> int:
        return len(self._facts)

    def computed(self) -> frozenset:
        """The indices whose licence has been computed so far."""
        return frozenset(self._done)

    def __repr__(self) -> str:
        return f"Licences({self._done!r}, {len(self._facts) - len(self._done)} not computed)"


def matmul_chunks(weights: list, cols: np.ndarray, splits: tuple[int, ...], rows_per: int):
    """sum_k weights[k] @ cols[splits[k]*rows_per : splits[k+1]*rows_per] exactly: one BLAS
    call per chunk; several chunks are summed in float64 (exact: below 2^53)."""
    if len(weights) == 1:
        return np.matmul(weights[0], cols)
    acc = None
    for w, s0, s1 in zip(weights, splits, splits[1:]):
        part = np.matmul(w, cols[s0 * rows_per:s1 * rows_per])
        if acc is None:
            acc = part.astype(np.float64)
        else:
            np.add(acc, part, out=acc)
    return acc


def scaled_chunks(w2d: np.ndarray, splits, rows_per: int, dtype, scale, extra: int = 0) -> list:
    """The integer weight matrix (OC, K) times ``scale`` (a power of two: exact) in ``dtype``,
    split along K at ``splits`` (x ``rows_per``), in one pass per chunk; the last chunk gets
    ``extra`` more (uninitialised) columns."""
    out = []
    for k, (s0, s1) in enumerate(zip(splits, splits[1:])):
        part = w2d[:, s0 * rows_per:s1 * rows_per]
        last = k == len(splits) - 2
        chunk = np.empty((w2d.shape[0], part.shape[1] + (extra if last else 0)), dtype)
        np.multiply(part, scale, out=chunk[:, :part.shape[1]], dtype=dtype, casting="unsafe")
        out.append(chunk)
    return out


def offsets(bias, tail: Requant, oc: int) -> np.ndarray:
    """The per-channel offset bias + add that the kernels add to the reduction (int64)."""
    offset = np.full(oc, tail.add, dtype=np.int64)
    if bias is not None:
        offset += bias.astype(np.int64)
    return offset


def offset_limit(lic: GemmLicence) -> int:
    """The exact-integer limit of the float in which the offset is added: the licence's dtype
    for one chunk, float64 (the sum of the chunks) for several; 0 for int64."""
    if len(lic.splits) > 2:
        return F64_LIMIT
    return {"float32": F32_LIMIT, "float64": F64_LIMIT}.get(lic.dtype, 0)


def kernel_mode(lic: GemmLicence, offset: np.ndarray, span: int = 0) -> str:
    """How :class:`LinearKernel` runs: "ones" (offset row in the one float GEMM), "chunks"
    (float chunks, offset added in float64) while whole + |offset| and the tail's clip bounds
    (``span``, Requant.span) stay below that float's limit, else "int64"."""
    reach = max(lic.whole + int(np.abs(offset).max(initial=0)), span)
    if reach >= offset_limit(lic):
        return "int64"
    return "chunks" if len(lic.splits) > 2 else "ones"


# ---------------------------------------------------------------------------------------------
# conv2d / dense bound at load time
# ---------------------------------------------------------------------------------------------

COLS_BUDGET = 1 << 21
"""Elements of the im2col matrix per block of work (bounds the scratch memory)."""
MIN_COLUMNS = 256
"""A block of one image's output rows is worth a lane when it has this many pixels."""


class LinearKernel:
    """conv2d / dense (or qconv2d / qdense) with a constant weight and bias, followed by the
    fused ``tail``: z = sum_k W[oc, k] * (x[k] - zero_point) + bias[oc], q = tail(z), written in
    ``out_dtype``. The reduction runs as licensed (``lic``). With one float chunk and
    |z + add| below that float's exact limit, the weights are prescaled by 2^-shift (exact) and
    the offset bias + add rides in the GEMM on a row of ones, so the GEMM yields
    (z + add) * 2^-shift exactly; chunks are summed in float64 and offset there; else int64.
    Float paths of conv2d may end with a ``residual`` or a ``post`` requantize, as ShiftedConv
    (ops/blas.py)."""

    def __init__(self, op: str, weight, bias, attrs, lic: GemmLicence, tail: Requant,
                 out_dtype, residual: Residual | None = None, post=None):
        self.conv, self.residual = op.endswith("conv2d"), residual
        self.epilogue = tail if post is None else post       # post: after an identity tail
        self.attrs, self.tail, self.out_dtype, self.lic = attrs, tail, np.dtype(out_dtype), lic
        self.zp = attrs.get("zero_point", 0)
        self.rows_per = int(np.prod(weight.shape[2:])) if self.conv else 1
        self.oc = oc = weight.shape[0]
        offset = offsets(bias, tail, oc)
        self.mode, chunked = kernel_mode(lic, offset, tail.span()), len(lic.splits) > 2
        self.dtype = np.dtype(np.int64 if self.mode == "int64" else lic.dtype)
        k = weight.size // oc
        scale = self.dtype.type(1 if self.mode == "int64" else 2.0 ** -tail.shift)
        self.splits = lic.splits if chunked else (0, k)
        self.weights = scaled_chunks(weight.reshape(oc, k), self.splits,
                                     self.rows_per if chunked else 1, self.dtype, scale,
                                     extra=int(self.mode == "ones"))
        if self.mode == "ones":                # |offset| < the exact limit; scale: exact
            np.multiply(offset, scale, out=self.weights[0][:, k], dtype=self.dtype,
                        casting="unsafe")
        self.offset = (offset.reshape(oc, 1) if self.mode == "int64"
                       else np.ldexp(offset.astype(np.float64), -tail.shift).reshape(oc, 1))
        if (residual is not None or post is not None) and (self.mode == "int64" or
                                                            not self.conv):
            raise ValueError("a residual or a requantize is fused only after a float-path "
                             "conv2d")

    def __call__(self, xp, x, other=None):
        if not self.conv:
            cols = self._cols_buffer(x.shape[1], x.shape[0])
            np.subtract(x.T, self.zp, out=cols[:x.shape[1]], dtype=self.dtype, casting="unsafe")
            out = np.empty((x.shape[0], self.oc), self.out_dtype)
            self._gemm(cols, out.T, 0, self.oc)
            return out
        n, c = x.shape[:2]
        oh, ow = self._out_hw(x.shape)
        out = np.empty((n, self.oc, oh, ow), self.out_dtype)
        blocks = self._blocks(n, oh, ow, c * self.rows_per)
        if n > 1:                # blocks of images: each lane pads its own, in its scratch
            parallel(lambda b: self._block(self._source(x[b[0]:b[1]]), out, ow, other,
                                           *b, local=True), blocks)
        elif blocks[0][4] != 0 or blocks[0][5] != self.oc:   # channel blocks: one im2col
            cols = self._im2col(self._source(x), 0, oh, ow)
            parallel(lambda b: self._gemm(cols, out[0, b[4]:b[5]][:, None], b[4], b[5], None
                                          if other is None else other[0, b[4]:b[5]][:, None]),
                     blocks)
        else:
            src = self._source(x)
            parallel(lambda b: self._block(src, out, ow, other, *b), blocks)
        return out

    def _blocks(self, n: int, oh: int, ow: int, k: int) -> list:
        """(n0, n1, r0, r1, o0, o1): images, output rows and channels of each block of work;
        at most COLS_BUDGET im2col elements each, and one per lane when worthwhile."""
        lanes, per_row = lane_count(n * oh * ow * k * self.oc), k * ow
        if n > 1:
            step = max(1, min(COLS_BUDGET // (per_row * oh), -(-n // lanes)))
            return [(n0, min(n, n0 + step), 0, oh, 0, self.oc) for n0 in range(0, n, step)]
        rows = max(1, min(oh, COLS_BUDGET // per_row))
        if lanes > 1 and oh * ow >= lanes * MIN_COLUMNS:
            rows = min(rows, -(-oh // lanes))
        if rows < oh or lanes == 1:
            return [(0, 1, r0, min(oh, r0 + rows), 0, self.oc) for r0 in range(0, oh, rows)]
        per = -(-self.oc // lanes)                     # few pixels: split the channels
        return [(0, 1, 0, oh, o0, min(self.oc, o0 + per)) for o0 in range(0, self.oc, per)]

    def _block(self, src, out, ow: int, other, n0, n1, r0, r1, o0, o1,
               local: bool = False) -> None:
        """Images [n0, n1), output rows [r0, r1), channels [o0, o1); ``src`` holds all the
        images, or (``local``) just these."""
        cols = self._im2col(src if local else src[n0:n1], r0, r1, ow)
        part = lambda a: a[n0:n1, o0:o1, r0:r1].transpose(1, 0, 2, 3)
        self._gemm(cols, part(out), o0, o1, None if other is None else part(other))

    def _cols_buffer(self, k: int, columns: int) -> np.ndarray:
        """Scratch (K [+ 1], columns) in the GEMM dtype; the extra row of ones carries the
        offset in the "ones" mode."""
        cols = scratch("cols", (k + (self.mode == "ones"), columns), self.dtype)
        if self.mode == "ones":
            cols[k] = 1
        return cols

    def _gemm(self, cols, dst, o0: int, o1: int, other=None) -> None:
        """dst <- tail(W[o0:o1] @ cols + bias[o0:o1]) (then the residual with ``other``, the
        same part of the other operand); dst (o1 - o0, ...) of cols' columns."""
        if self.mode == "ones":
            acc = np.matmul(self.weights[0][o0:o1], cols)
        else:
            acc = matmul_chunks([w[o0:o1] for w in self.weights], cols, self.splits,
                                self.rows_per)
            if self.mode == "int64":
                acc = acc.astype(np.int64, copy=False)
            np.add(acc, self.offset[o0:o1], out=acc)
        acc = acc.reshape(dst.shape)
        if self.mode == "int64":
            self.tail.finish_int(acc, dst)
        else:
            self.epilogue.finish_float(acc, dst, None, self.residual, other, slice(o0, o1))

    def _out_hw(self, shape):
        (kh, kw), (sh, sw) = self.attrs["kernel_size"], self.attrs["strides"]
        (ph, pw), (dh, dw) = self.attrs["padding"], self.attrs["dilation"]
        return ((shape[2] + 2 * ph - (kh - 1) * dh - 1) // sh + 1,
                (shape[3] + 2 * pw - (kw - 1) * dw - 1) // sw + 1)

    def _source(self, x):
        """The im2col source: x itself without padding (``_im2col`` subtracts the zero point
        while it gathers), else x - zero_point in the GEMM dtype, zero-padded (exact:
        |x - zp| < 2^24)."""
        n, c, h, w = x.shape
        ph, pw = self.attrs["padding"]
        if not (ph or pw):
            return x
        src = scratch("pad", (n, c, h + 2 * ph, w + 2 * pw), self.dtype)
        src.fill(0)
        np.subtract(x, self.zp, out=src[:, :, ph:ph + h, pw:pw + w], dtype=self.dtype,
                    casting="unsafe")
        return src

    def _im2col(self, src, r0: int, r1: int, ow: int):
        """cols[(c, r, s), (n, p, q)] = src[n, c, p*SH + r*DH, q*SW + s*DW] - zp' for output
        rows p in [r0, r1) (src: the padded x - zp, zp' = 0; or x itself, zp' = zp)."""
        n, c = src.shape[:2]
        (kh, kw), (sh, sw) = self.attrs["kernel_size"], self.attrs["strides"]
        dh, dw = self.attrs["dilation"]
        rows = r1 - r0
        cols = self._cols_buffer(c * kh * kw, n * rows * ow)
        sn, sc, sy, sx = src.strides
        windows = np.lib.stride_tricks.as_strided(       # a read-only view, in bounds
            src[:, :, r0 * sh:], shape=(c, kh, kw, n, rows, ow),
            strides=(sc, dh * sy, dw * sx, sn, sh * sy, sw * sx), writeable=False)
        dst = cols[:c * kh * kw].reshape(c, kh, kw, n, rows, ow)
        if src.dtype != self.dtype and self.zp:
            np.subtract(windows, self.zp, out=dst, dtype=self.dtype, casting="unsafe")
        else:
            np.copyto(dst, windows, casting="unsafe")
        return cols
