"""requantize (ops/quant.py) as exact integer ONNX nodes, three ways:

* **multiply**: when every M / 2^s is an integer nothing is rounded: (x - zin) * f + zp,
  clipped;
* **table**: requantize is monotone in x, so below some ``first`` it gives qmin and above some
  ``last`` qmax (:func:`window`, a binary search on the op's rule); x clipped to
  [first, last] indexes a table of the op's own results (GatherElements), computed at load
  by its CPU kernel: any rounding, when the table is small;
* **rounding in integers** (int64), x clipped to the same window, d = x - zin, p = |d| * M,
  q = floor(p / 2^s), f = p - q 2^s, H = 2^(s-1):
  ``half_even``: q + [f + (q mod 2) > H]; ``half_up``: floor((d M + H) / 2^s) (made >= 0 by a
  multiple of 2^s first); ``fp32``: y = p / 2^s rounded to float32 is the half-integer
  q + 1/2 exactly when |f - H| <= ulp(y) / 2 (that half-integer is a multiple of the ulp,
  and float32 rounds ties to even multiples), where rounding half to even gives
  q + (q mod 2); elsewhere float32 rounding keeps y on its side of q + 1/2 and the result is
  q + [f > H]. ulp(y) / 2 in units of 2^-s is 2^(bitlen(q) - 25 + s) (a table of
  2^bitlen(q)); d itself is exact in float32 because the window keeps |d| < 2^24. Rounding
  half to even and float32 rounding are odd functions, so the sign of d is put back last.
"""
from __future__ import annotations

import numpy as np

import ops
from ops import fastquant
from ops.base import bitlen
from ops.quant import FP32_BITS, requantize_value

TABLE_ENTRIES = 1 << 20
"""Largest table (entries over all channels)."""
Q_TABLE = 1 << 16
"""Largest |q| of the integer float32 rounding (its 2^bitlen table)."""
TABLE_BUDGET = 1 << 23
"""Bytes of tables (requantize tables, float32 rounding's powers of two) a plan may make at
load beyond its program's constant bytes: a program of many small requantizes of wide inputs
cannot make a load's time and memory grow beyond its own size (those past the budget run on
numpy)."""
I32, I64 = np.dtype(np.int32), np.dtype(np.int64)


def factors(a):
    """M / 2^s per channel when every pair divides exactly, else None."""
    pairs = list(zip(a["multiplier"], a["shift"]))
    return [m >> s for m, s in pairs] if all(m % (1 << s) == 0 for m, s in pairs) else None


def window(a, lo: int, hi: int) -> tuple[int, int]:
    """[first, last] in [lo, hi] common to every channel: inputs <= first give qmin and
    inputs >= last give qmax on each channel (requantize is monotone in x); a binary search
    per channel on the op's scalar rule, or for many channels on its kernel, all at once."""
    channels = len(a["multiplier"])
    if channels <= SCALAR_CHANNELS:
        pairs = list(zip(a["multiplier"], a["shift"]))
        return _search_each(lambda v, c: requantize_value(v, *pairs[c], a), a, lo, hi,
                            channels)
    f = lambda v: ops.get("requantize").kernel(np, v, **dict(a, axis=0))
    ends = np.full(channels, lo, np.int64), np.full(channels, hi, np.int64)
    first = np.where(f(ends[0]) == a["qmin"],          # the largest v with f(v) == qmin
                     _search(f, a["qmin"], *ends, up=True), ends[0])
    last = np.where(f(ends[1]) == a["qmax"],           # the smallest v with f(v) == qmax
                    _search(f, a["qmax"], first, ends[1], up=False), ends[1])
    return int(first.min()), int(last.max())


SCALAR_CHANNELS = 8
"""Up to this many channels the window's searches run on the scalar rule (cheaper than a
kernel call per step)."""


def _search_each(f, a, lo: int, hi: int, channels: int) -> tuple[int, int]:
    """:func:`window` channel by channel, f(v, channel) the scalar rule."""
    firsts, lasts = [], []
    for c in range(channels):
        first, last = lo, hi
        if f(lo, c) == a["qmin"]:                       # the largest v with f(v) == qmin
            left, right = lo, hi
            while left < right:
                mid = (left + right + 1) // 2
                left, right = (mid, right) if f(mid, c) == a["qmin"] else (left, mid - 1)
            first = left
        if f(hi, c) == a["qmax"]:                       # the smallest v with f(v) == qmax
            left, right = first, hi
            while left < right:
                mid = (left + right) // 2
                left, right = (left, mid) if f(mid, c) == a["qmax"] else (mid + 1, right)
            last = left
        firsts.append(first)
        lasts.append(last)
    return min(firsts), max(lasts)


def _search(f, target: int, left, right, up: bool):
    """Per channel, the largest (``up``) or smallest v in [left, right] with f(v) == target,
    where f reaches target on a prefix (suffix) of the interval that contains left (right)."""
    left, right = left.copy(), right.copy()
    while True:
        active = left < right
        if not active.any():
            return left if up else right
        mid = (left + right + 1) // 2 if up else (left + right) // 2
        hit = f(mid) == target
        if up:
            left = np.where(active & hit, mid, left)
            right = np.where(active & ~hit, mid - 1, right)
        else:
            right = np.where(active & hit, mid, right)
            left = np.where(active & ~hit, mid + 1, left)


def how(a, lo: int, hi: int, budget: int | None = None) -> tuple[str | None, int]:
    """Which way a requantize of inputs in [lo, hi] lowers ("multiply", "table",
    "rounding", or None) and the bytes of the tables it makes, within ``budget`` bytes of
    tables (None: no limit)."""
    f = factors(a)
    if f is not None:
        top = (max(abs(lo), abs(hi)) + abs(a["zero_point_in"])) * max(f) + \
            abs(a["zero_point"]) + max(abs(a["qmin"]), abs(a["qmax"]))
        return ("multiply" if top < 1 << 62 else None), 0
    fits = lambda size: budget is None or size <= budget
    first, last = window(a, lo, hi)
    entries = (last - first + 1) * len(a["multiplier"])
    if entries <= TABLE_ENTRIES and fits(size := entries * _narrow(a).itemsize):
        return "table", size
    if not _rounding_ok(a, first, last):
        return None, 0
    size = 0 if a["rounding"] != "fp32" else _powers_size(a, first, last)
    return ("rounding", size) if fits(size) else (None, 0)


def _rounding_ok(a, first: int, last: int) -> bool:
    shifts, zin = a["shift"], a["zero_point_in"]
    top = max(abs(first - zin), abs(last - zin))
    if min(shifts) == 0 or top * max(a["multiplier"]) >= 1 << 62:
        return False
    if a["rounding"] != "fp32":
        return True
    return top < 1 << FP32_BITS and _q_top(a, top) < Q_TABLE and \
        (min(shifts) >= 25 or max(shifts) <= 25)


def _q_top(a, top: int) -> int:
    return max((top * m) >> s for m, s in zip(a["multiplier"], a["shift"]))


def emit(region, t: int, x_t, out, a, lo: int, hi: int, layout: str,
         kind: str) -> tuple[str, np.dtype]:
    """Nodes computing requantize of tensor ``t`` (``x_t``, values in [lo, hi]) in
    ``layout`` the way ``kind`` (:func:`how`) says; returns the result's name and dtype."""
    ndim = len(x_t.shape)
    channel = lambda v, dtype=I64: region.per_channel(v, a["axis"], ndim, layout, dtype)
    if kind == "multiply":
        v = region.shifted(t, layout, I64, -a["zero_point_in"])
        v = region.g.op("Mul", v, channel(factors(a)))
        return _finish(region, v, a, out)
    first, last = window(a, lo, hi)
    if kind == "table":                          # x - first clipped, plus channel * span
        span, channels = last - first + 1, len(a["multiplier"])
        table = requantize_table(a, x_t.precision, first, span, _narrow(a))
        top = max(abs(lo), abs(hi), hi - first, first - lo, span * channels)   # x, x - first
        dtype = I32 if top < 1 << 31 else I64
        v = region.g.op("Clip", region.shifted(t, layout, dtype, -first),
                        region.scalar(0, dtype), region.scalar(span - 1, dtype))
        if channels > 1:
            v = region.g.op("Add", v, channel(span * np.arange(channels), dtype))
        return region.lookup(table, v, region.shape(t, layout)), table.dtype
    v = region.g.op("Clip", region.shifted(t, layout, I64, -first), region.scalar(0, I64),
                    region.scalar(last - first, I64))
    d = region.g.op("Add", v, region.scalar(first - a["zero_point_in"], I64))
    m = channel(a["multiplier"])
    scale = channel([1 << s for s in a["shift"]])
    half = channel([1 << (s - 1) for s in a["shift"]])
    if a["rounding"] == "half_up":                     # floor((d M + H) / 2^s), made >= 0
        top = max(abs(first), abs(last)) + abs(a["zero_point_in"])
        k = [((top * mm) >> s) + 1 for mm, s in zip(a["multiplier"], a["shift"])]
        shifted = channel([kk << s for kk, s in zip(k, a["shift"])])
        v = region.g.op("Add", region.g.op("Add", region.g.op("Mul", d, m), half), shifted)
        v = region.g.op("Sub", region.g.op("Div", v, scale), channel(k))
        return _finish(region, v, a, out)
    p = region.g.op("Mul", region.g.op("Abs", d), m)
    q = region.g.op("Div", p, scale)
    frac = region.g.op("Sub", p, region.g.op("Mul", q, scale))
    odd = region.g.op("Mod", q, region.scalar(2, I64))
    if a["rounding"] == "half_even":
        up = region.g.op("Greater", region.g.op("Add", frac, odd), half)
        g = region.g.op("Add", q, region.cast(up, np.bool_, I64))
    else:
        g = region.g.op("Add", q, _fp32_step(region, q, frac, half, odd, a, first, last, channel,
                                             region.shape(t, layout)))
    return _finish(region, region.g.op("Mul", g, region.g.op("Sign", d)), a, out)


def _powers_size(a, first: int, last: int) -> int:
    """Bytes of the table of 2^bitlen(q) that float32 rounding reads (int64 entries)."""
    top = max(abs(first - a["zero_point_in"]), abs(last - a["zero_point_in"]))
    return 8 * (_q_top(a, top) + 2)


def _fp32_step(region, q, frac, half, odd, a, first, last, channel, shape) -> str:
    """0 or 1 added to q (of ``shape``) by float32 rounding then rounding half to even (module
    doc)."""
    top = max(abs(first - a["zero_point_in"]), abs(last - a["zero_point_in"]))
    powers = np.array([1 << bitlen(v) for v in range(_q_top(a, top) + 2)], np.int64)
    ulp = region.lookup(powers, q, shape)
    shifts = a["shift"]
    if min(shifts) >= 25:
        ulp = region.g.op("Mul", ulp, channel([1 << (s - 25) for s in shifts]))
    else:
        ulp = region.g.op("Div", ulp, channel([1 << (25 - s) for s in shifts]))
    near = region.g.op("LessOrEqual", region.g.op("Abs", region.g.op("Sub", frac, half)), ulp)
    up = region.cast(region.g.op("Greater", frac, half), np.bool_, I64)
    return region.g.op("Where", near, odd, up)


def _finish(region, v: str, a, out) -> tuple[str, np.dtype]:
    """+ zero_point, clipped to [qmin, qmax] (int64)."""
    if a["zero_point"]:
        v = region.g.op("Add", v, region.scalar(a["zero_point"], I64))
    return region.g.op("Clip", v, region.scalar(a["qmin"], I64), region.scalar(a["qmax"], I64)), I64


def _narrow(a) -> np.dtype:
    """The narrowest integer dtype holding [qmin, qmax]."""
    return next(np.dtype(t) for t in ("uint8", "int8", "int16", "int32")
                if np.iinfo(t).min <= a["qmin"] and a["qmax"] <= np.iinfo(t).max)


def requantize_table(a, precision: int, first: int, span: int, dtype) -> np.ndarray:
    """(channels, span): requantize of first .. first + span - 1 for each channel, computed
    by the op's CPU kernels (the float path where it is licensed, else the int64 kernel)."""
    channels = len(a["multiplier"])
    values = np.broadcast_to(np.arange(first, first + span, dtype=np.int64), (channels, span))
    attrs = dict(a, axis=0)
    fast = fastquant.RequantizeKernel(attrs, precision, 2, dtype)
    if fast.ok:
        return fast(np, values)
    return ops.get("requantize").kernel(np, values, **attrs).astype(dtype)
