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
from .scratch import scratch, spread

F32, F64 = 1 << 24, 1 << 53


class RequantizeKernel:
    """requantize bound at load time (see the module doc); blocks spread over the lanes."""

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
        self.zin, self.zp = a["zero_point_in"], a["zero_point"]
        self.lo, self.hi = a["qmin"] - self.zp, a["qmax"] - self.zp
        self.out_dtype = np.dtype(out_dtype)
        self.limit = F32 if self.mode == "fp32" else F64        # exact integers of self.float
        # the largest magnitude the clip and the zero point's addition handle: below limit
        self.clip_span = max(abs(self.lo), abs(self.hi), abs(a["qmin"]), abs(a["qmax"]))
        self.ok = (self.mode == "fp32" or top * int(m.max()) + (1 << int(s.max())) < F64) \
            and self.clip_span < self.limit

    def __call__(self, xp, x):
        out = np.empty(x.shape, self.out_dtype)

        def block(index):
            if self.mode == "fp32" and self.zin == 0 and x.dtype.itemsize <= 4:
                y = scratch("y", x[index].shape, np.float32)        # one rounding: float32(x)
                np.multiply(x[index], self._sub(self.scale, index), out=y, dtype=np.float32)
                np.rint(y, out=y)                                    # and one rounding here
                self._clip_to(y, out[index], y)
                return
            d = scratch("d", x[index].shape, np.float64)
            np.subtract(x[index], self.zin, out=d, dtype=np.float64)   # exact: |d| < 2^53
            self._apply(d, out[index], self._sub(self.scale, index), self._sub(self.half, index))
        spread(block, x.shape, 8)
        return out

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

    @staticmethod
    def _sub(a: np.ndarray, index) -> np.ndarray:
        """The broadcast per-channel array restricted to a block of the two leading axes."""
        return a[tuple(sl if a.shape[k] > 1 else slice(None) for k, sl in enumerate(index))]


def prepare(attrs, in_precision: int, ndim: int, out_dtype, tail):
    """A RequantizeKernel, followed by ``tail`` when that is only clipping (relu, clip,
    cvm_clip: composed into qmin / qmax), when its float arithmetic is licensed; else None."""
    if tail.shift or tail.add:
        return None
    both = tail.__class__(0, 0, attrs["qmin"], attrs["qmax"]).then_clip(tail.lo, tail.hi)
    kernel = RequantizeKernel({**attrs, "qmin": both.lo, "qmax": both.hi}, in_precision, ndim,
                              out_dtype)
    return kernel if kernel.ok else None
