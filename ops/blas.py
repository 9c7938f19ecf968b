"""Optional direct access to the float32 GEMM of the BLAS library numpy uses.

numpy's matmul has no accumulate (beta) argument and wants whole matrices; cblas ``sgemm``
computes C = A B + beta C with B given by a pointer and a leading dimension, so a stride-1
convolution becomes kh*kw accumulated GEMMs over shifted views of the padded input, without the
im2col copy. Exactness is the same licence as any float32 GEMM (ops/gemm.py): every partial sum
of the output's terms, in any order and any split into calls, stays below 2^24.

Only an ILP64 OpenBLAS already loaded by numpy is used (its ``*cblas_sgemm64_`` symbol, 64-bit
integers); anywhere else :func:`available` is False and the kernels use numpy only.
"""
from __future__ import annotations

import ctypes
import re
import sys

import numpy as np

from .gemm import offsets

ROW_MAJOR, NO_TRANS = 101, 111
_SYMBOLS = ("scipy_cblas_sgemm64_", "cblas_sgemm64_")
_sgemm = None


def _find():
    """The sgemm function of the loaded ILP64 OpenBLAS, or None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", f.read())))
        for path in paths:
            lib = ctypes.CDLL(path)
            for name in _SYMBOLS:
                fn = getattr(lib, name, None)
                if fn is not None:
                    i, p = ctypes.c_int64, ctypes.c_void_p
                    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, i, i, i,
                                   ctypes.c_float, p, i, p, i, ctypes.c_float, p, i]
                    fn.restype = None
                    return fn
    except (OSError, AttributeError):
        return None
    return None


def available() -> bool:
    global _sgemm
    if _sgemm is None:
        np.ones((2, 2), np.float32) @ np.ones((2, 2), np.float32)   # make sure it is loaded
        _sgemm = _find() or False
    return bool(_sgemm)


def sgemm(a: np.ndarray, b: np.ndarray, offset: int, ldb: int, k: int, n: int,
          c: np.ndarray, beta: float, fn=None) -> None:
    """c (M x n) <- a (M x k) @ B + beta c, B[i, j] = b.flat[offset + i * ldb + j]: float32,
    C-contiguous ``a`` and ``c``; every index of B is checked to lie inside ``b``."""
    m = a.shape[0]
    # real checks, not asserts (python -O strips those): a raw pointer is handed to BLAS
    if not (a.dtype == b.dtype == c.dtype == np.float32 and a.shape[1] == k
            and a.flags.c_contiguous and c.flags.c_contiguous and b.flags.c_contiguous
            and c.shape == (m, n) and offset >= 0 and ldb >= n
            and offset + (k - 1) * ldb + n <= b.size):
        raise ValueError(f"sgemm: operands do not fit (a {a.shape}, b {b.size} from {offset} "
                         f"ld {ldb}, c {c.shape}, k {k}, n {n})")
    (fn or _sgemm)(ROW_MAJOR, NO_TRANS, NO_TRANS, m, n, k, 1.0, a.ctypes.data, k,
                   b.ctypes.data + 4 * offset, ldb, beta, c.ctypes.data, n)


# ---------------------------------------------------------------------------------------------
# conv2d bound at load time: stride 1, no im2col
# ---------------------------------------------------------------------------------------------

BLOCK_BUDGET = 1 << 20
"""Output elements (padded width) per block of work."""


def shifted_eligible(attrs, lic, reach: int) -> bool:
    """A stride-1, one-group conv whose whole reduction (offset included) is float32-exact."""
    return (available() and tuple(attrs["strides"]) == (1, 1) and attrs["groups"] == 1
            and lic.dtype == "float32" and len(lic.splits) == 2 and reach < 1 << 24)


class ShiftedConv:
    """A licensed stride-1 conv2d (or qconv2d), then the fused ``tail`` (ops/tails.py Requant):
    Y[:, p, q] = sum_{r,s} W[:, :, r, s] @ Xpad[:, p + r DH, q + s DW] for q over the padded
    width (the last Wp - OW columns of each row are junk: they combine real inputs like any
    column, obey the same bound, and are cropped), one sgemm per tap accumulating in place.
    Weights are prescaled by 2^-shift (exact); the offset bias + add rides on tap 0 against an
    extra all-ones input channel, so the sum is (z + add) * 2^-shift exactly. A ``residual``
    (ops/tails.py Residual) or a ``post`` requantize (ops/fastquant.py, after an identity tail)
    runs in the epilogue, on the exact accumulator."""

    def __init__(self, weight, bias, attrs, tail, out_dtype, residual=None, post=None):
        oc, c, kh, kw = weight.shape
        self.residual = residual
        self.epilogue = tail if post is None else post       # post: after an identity tail
        offset = offsets(bias, tail, oc)
        w = np.zeros((kh * kw, oc, c + 1), np.float32)
        w[:, :, :c] = weight.transpose(2, 3, 0, 1).reshape(kh * kw, oc, c)
        w[0, :, c] = offset                                    # |offset| < 2^24: exact
        self.w = w * np.float32(2.0 ** -tail.shift)            # a power of two: exact
        self.taps = [(r, s) for r in range(kh) for s in range(kw)]
        self.attrs, self.tail, self.oc, self.c = attrs, tail, oc, c
        self.zp, self.out_dtype = attrs.get("zero_point", 0), np.dtype(out_dtype)
        if not available():
            raise RuntimeError("ShiftedConv needs the BLAS sgemm (see shifted_eligible)")
        self.fn = _sgemm                                   # bound once, at load time

    def __call__(self, xp, x, other=None):
        from .scratch import lane_count, parallel
        n, c, h, w = x.shape
        (ph, pw), (dh, dw) = self.attrs["padding"], self.attrs["dilation"]
        (kh, kw) = self.attrs["kernel_size"]
        oh, ow = h + 2 * ph - (kh - 1) * dh, w + 2 * pw - (kw - 1) * dw
        wp = w + 2 * pw
        out = np.empty((n, self.oc, oh, ow), self.out_dtype)
        lanes = lane_count(n * oh * ow * c * kh * kw * self.oc)
        rows = max(1, min(oh, BLOCK_BUDGET // (self.oc * wp)))
        if n == 1 and lanes > 1 and oh * ow >= 256 * lanes:
            rows = min(rows, -(-oh // lanes))
        blocks = [(i, r0, min(oh, r0 + rows), 0, self.oc)
                  for i in range(n) for r0 in range(0, oh, rows)]
        if len(blocks) < lanes:             # few blocks: split each one's output channels
            per = -(-self.oc // lanes)
            blocks = [(i, r0, r1, o0, min(self.oc, o0 + per)) for i, r0, r1, _, _ in blocks
                      for o0 in range(0, self.oc, per)]
        parallel(lambda b: self._block(x, out, other, *b), blocks)
        return out

    def _padded(self, x, i: int, r0: int, r1: int):
        """Scratch holding what output rows [r0, r1) of image i read: input rows
        r0 - PH .. r1 - 1 - PH + (KH - 1) DH of x[i] - zero_point, zero outside the input, as
        float32 (C + 1, rows, Wp) with the all-ones channel last, then (KW - 1) DW zeros of
        slack for the junk columns of the last row. Each block pads its own rows into its
        lane's scratch: in parallel, and in that core's cache."""
        from .scratch import scratch
        c, h, w = x.shape[1:]
        (ph, pw), (dh, dw) = self.attrs["padding"], self.attrs["dilation"]
        (kh, kw) = self.attrs["kernel_size"]
        wp, rows = w + 2 * pw, r1 - r0 + (kh - 1) * dh
        plane = (c + 1) * rows * wp
        buf = scratch("pad", (plane + (kw - 1) * dw,), np.float32)
        src = buf[:plane].reshape(c + 1, rows, wp)
        y0 = r0 - ph                                        # the input row of buffer row 0
        lo, hi = max(0, -y0), max(max(0, -y0), min(rows, h - y0))
        src[:c, :lo] = 0
        src[:c, hi:] = 0
        if pw:
            src[:c, lo:hi, :pw] = 0
            src[:c, lo:hi, wp - pw:] = 0
        buf[plane:] = 0
        src[c] = 1
        rows_in = x[i, :, y0 + lo:y0 + hi]
        if self.zp:
            np.subtract(rows_in, self.zp, out=src[:c, lo:hi, pw:pw + w], dtype=np.float32,
                        casting="unsafe")
        else:
            np.copyto(src[:c, lo:hi, pw:pw + w], rows_in, casting="unsafe")
        return buf, rows * wp

    def _block(self, x, out, other, i, r0, r1, o0, o1) -> None:
        """Output rows [r0, r1) and channels [o0, o1) of image i."""
        from .scratch import scratch
        dh, dw = self.attrs["dilation"]
        wp = x.shape[3] + 2 * self.attrs["padding"][1]
        ow = out.shape[3]
        buf, ldb = self._padded(x, i, r0, r1)
        cols = (r1 - r0) * wp
        acc = scratch("acc", (o1 - o0, cols), np.float32)
        for k, (r, s) in enumerate(self.taps):
            sgemm(self.w[k, o0:o1], buf, r * dh * wp + s * dw, ldb, self.c + 1, cols, acc,
                  0.0 if k == 0 else 1.0, self.fn)
        self.epilogue.finish_float(acc, out[i, o0:o1, r0:r1],
                                   acc.reshape(o1 - o0, r1 - r0, wp)[:, :, :ow], self.residual,
                                   None if other is None else other[i, o0:o1, r0:r1],
                                   slice(o0, o1))
