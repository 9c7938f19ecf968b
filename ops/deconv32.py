"""qconv2d_transpose with ``rounding="fp32"``: onnxruntime's float32 ConvTranspose between
DequantizeLinear and QuantizeLinear, as integer arithmetic (every float32 step named).

onnxruntime has no quantized ConvTranspose on the CPU: it dequantizes both operands (one
float32 product each), computes W^T @ X with its SGEMM (per output element, a fused
multiply-add chain over the input channels in order, restarted every 128 channels and the
blocks added in order), scatters the columns into the output in kernel-tap order (col2im,
float32 additions onto zeros) and quantizes (a float32 division, rounded half to even). The
three forms below compute exactly that with ops/softfloat.py's signed helpers.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from . import softfloat as sf
from .base import Ref, precision_for, require, size_of, wide
from .quant import MAX_DATA_PRECISION
from .scratch import lane_count, parallel, scratch as temporary
from .z3util import build

CHUNK = 1 << 17
"""Elements of the column array computed at once (the chains of a block of rows): the
PP-OCRv4 detector's 24x320x320 transposed convolution takes 145 ms in blocks of 2^16, 125-132
in blocks of 2^17 (numpy's per-call cost against the cache)."""
K_BLOCK = 128
"""Input channels per SGEMM block (MLAS's K stride): each block's chain starts from zero."""
MAX_MAGNITUDE = Fraction(2) ** 100
"""Bound on every float32 value of the computation (no overflow to infinity)."""


def scales(a) -> tuple:
    """(x scale, weight scales, y scale) as exact values of their float32 (mantissa, exponent)."""
    xs, ys = a["x_scale"], a["y_scale"]
    ws = list(zip(a["w_mantissa"], a["w_exponent"]))
    return sf.value(*xs), [sf.value(m, e) for m, e in ws], sf.value(*ys)


def check(shapes, precs, a, terms: int) -> None:
    """The fp32 attributes: positive normal float32 scales, one weight scale or one per output
    channel of a group, no bias, and values bounded far below float32's overflow."""
    require(not a["use_bias"], "qconv2d_transpose rounding=fp32 takes no bias")
    require(len(a["x_scale"]) == 2 and len(a["y_scale"]) == 2,
            "qconv2d_transpose rounding=fp32 needs x_scale and y_scale as (mantissa, exponent)")
    mg = a["channels"] // a["groups"]
    require(len(a["w_mantissa"]) == len(a["w_exponent"]) and len(a["w_mantissa"]) in (1, mg),
            f"qconv2d_transpose rounding=fp32 needs 1 or {mg} weight scales")
    pairs = [tuple(a["x_scale"]), tuple(a["y_scale"])] + list(zip(a["w_mantissa"],
                                                                  a["w_exponent"]))
    for m, e in pairs:
        require(1 << 23 <= m < 1 << 24 and sf.EMIN <= e <= 100,
                f"qconv2d_transpose scale ({m}, {e}) is not a positive normal float32")
    require(a["qmin"] <= a["qmax"], "qconv2d_transpose needs qmin <= qmax")
    s_x, s_w, s_y = scales(a)
    data = (1 << precs[0]) + abs(a["zero_point"])
    top = 2 * terms * data * s_x * (1 << precs[1]) * max(s_w)
    require(top < MAX_MAGNITUDE and top / s_y < MAX_MAGNITUDE,
            "qconv2d_transpose rounding=fp32: the scales could overflow float32")


def precision(precs, shapes, a, terms: int) -> int:
    require(precs[0] <= MAX_DATA_PRECISION and precs[1] <= MAX_DATA_PRECISION,
            f"qconv2d_transpose data and weight precisions must be <= {MAX_DATA_PRECISION}")
    check(shapes, precs, a, terms)
    return precision_for(max(abs(a["qmin"]), abs(a["qmax"])))


def _quantized(v, a, to_int, clip):
    return clip(to_int(v) + a["y_zero_point"], a["qmin"], a["qmax"])


def cell(i, x, w, a, ops, taps):
    """Output cell ``i`` from dequantizing functions and float32 operations ``ops``:
    (xf(b, c, y, r), wf(c, j, ky, kx), fma, add, zero); ``taps(i)``: the (input row, input
    col, ky, kx) landing on it, in col2im order (ky, then kx)."""
    xf, wf, fma, add, zero = ops
    bt, o = i[0], i[1]
    cg, mg = x.shape[1] // a["groups"], a["channels"] // a["groups"]
    group, j = divmod(o, mg)
    out = zero
    for y, r, ky, kx in taps(i):
        col = None
        for start in range(0, cg, K_BLOCK):
            acc = zero
            for ch in range(group * cg + start, group * cg + min(cg, start + K_BLOCK)):
                acc = fma(wf(ch, j, ky, kx), xf(bt, ch, y, r), acc)
            col = acc if col is None else add(col, acc)
        out = add(out, col)
    return out


def scalar(args, a, shape, taps):
    x, w = args[0], args[1]
    s_x, s_w, s_y = scales(a)
    fl = sf.sfl32
    ops = (lambda b, c, y, r: fl(fl(Fraction(x.at((b, c, y, r)) - a["zero_point"])) * s_x),
           lambda c, j, ky, kx: fl(fl(Fraction(w.at((c, j, ky, kx)))) * s_w[j % len(s_w)]),
           lambda u, v, acc: fl(u * v + acc), lambda u, v: fl(u + v), Fraction(0))

    def value(i):
        q = fl(cell(i, x, w, a, ops, taps) / s_y)
        return _quantized(q, a, lambda v: max(-sf.SATURATE, min(sf.SATURATE, round(v))),
                          lambda v, lo, hi: min(max(v, lo), hi))
    return Ref.build(shape, value)


def kernel(xp, x, w, a, full_shape):
    """The array form: (mantissa, exponent) int64 pairs, vectorized over images and pixels."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation"]
    g, m = a["groups"], a["channels"]
    cg, mg = c // g, m // g
    pair = lambda me: (xp.asarray(me[0], dtype=xp.int64), xp.asarray(me[1], dtype=xp.int64))
    xf = sf.smul(xp, sf.from_int(xp, wide(xp, x) - a["zero_point"]), pair(a["x_scale"]))
    ws = pair((a["w_mantissa"], a["w_exponent"]))
    ws = (ws[0].reshape(1, -1, 1, 1), ws[1].reshape(1, -1, 1, 1))
    wf = sf.smul(xp, sf.from_int(xp, wide(xp, w)), ws)                 # (c, mg, kh, kw)
    full = [xp.zeros(full_shape, dtype=xp.int64), xp.full(full_shape, sf.EMIN, xp.int64)]
    rows = max(1, CHUNK // max(1, n * mg * kh * kw * wd))
    fma = sf.fma_normal if no_subnormals(a) else sf.fma
    for grp in range(g):
        col = [xp.zeros((n, mg, kh, kw, h, wd), xp.int64) for _ in range(2)]
        for y0 in range(0, h, rows):                      # row blocks that stay in cache
            part = _columns(xp, xf, wf, grp * cg, cg, slice(y0, y0 + rows), fma)
            col[0][..., y0:y0 + rows, :], col[1][..., y0:y0 + rows, :] = part
        chans = slice(grp * mg, (grp + 1) * mg)
        for r in range(kh):
            for s in range(kw):
                cells = (slice(None), chans, slice(r * dh, r * dh + sh * (h - 1) + 1, sh),
                         slice(s * dw, s * dw + sw * (wd - 1) + 1, sw))
                got = sf.sadd(xp, (full[0][cells], full[1][cells]),
                              (col[0][:, :, r, s], col[1][:, :, r, s]))
                full[0][cells], full[1][cells] = got
    return full


def native(x, w, a, full_shape):
    """:func:`kernel` on this thread's IEEE arithmetic (sf.native_float32 checked it rounds to
    nearest, ties to even, subnormals kept): the same steps on float32 arrays, in the same
    order, each fused multiply-add rounded once (:func:`_fma`, or :func:`_fma_normal` where
    :func:`no_subnormals` holds); the uncropped sums, float32."""
    n, c, h, wd = x.shape
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_size"], a["strides"], a["dilation"]
    g, m = a["groups"], a["channels"]
    cg, mg = c // g, m // g
    s_x, s_w = sf.float32_of(*a["x_scale"]), sf.float32_of(a["w_mantissa"], a["w_exponent"])
    with np.errstate(all="ignore"):
        xf = np.multiply((wide(np, x) - a["zero_point"]).astype(np.float32), s_x)
        wf = np.multiply(wide(np, w).astype(np.float32), s_w.reshape(1, -1, 1, 1))
        x64, w64 = xf.astype(np.float64), wf.astype(np.float64)                # exact
        full = np.zeros(full_shape, np.float32)
        rows = max(1, CHUNK // max(1, n * mg * kh * kw * wd))
        fma = _fma_normal if no_subnormals(a) else _fma
        lanes = _native_lanes(n * mg * kh * kw * h * wd * cg)
        for grp in range(g):
            col = np.empty((n, mg, kh, kw, h, wd), np.float32)

            def block(y0: int) -> None:                   # row blocks that stay in cache
                col[..., y0:y0 + rows, :] = _native_columns(x64, w64, grp * cg, cg,
                                                            slice(y0, y0 + rows), fma)
            if lanes > 1:
                parallel(block, list(range(0, h, rows)))
            else:
                for y0 in range(0, h, rows):
                    block(y0)
            chans = slice(grp * mg, (grp + 1) * mg)
            for r in range(kh):
                for s in range(kw):
                    cells = (slice(None), chans, slice(r * dh, r * dh + sh * (h - 1) + 1, sh),
                             slice(s * dw, s * dw + sw * (wd - 1) + 1, sw))
                    full[cells] = np.add(full[cells], col[:, :, r, s])
    return full


def _native_lanes(work: int) -> int:
    """The lanes the row blocks of :func:`native` spread over (ops/scratch.py): those of this
    thread's plan for ``work`` fused multiply-adds, when each lane's thread passes the same
    IEEE float32 probe as this one (a lane's floating-point control register is its own);
    else 1."""
    lanes = lane_count(work)
    if lanes > 1:
        passed = [False] * lanes
        parallel(lambda k: passed.__setitem__(k, sf.native_float32()), list(range(lanes)))
        lanes = lanes if all(passed) else 1
    return lanes


def _native_columns(x64, w64, first: int, count: int, rows: slice, fma):
    """:func:`_columns` on float32 arrays (float64 copies of the dequantized values in); each
    step writes the other of two scratch accumulators (the result is scratch: copy it)."""
    col = None
    for start in range(0, count, K_BLOCK):
        acc = np.float32(0)                                 # each block's chain from zero
        for k, ch in enumerate(range(first + start, first + min(count, start + K_BLOCK))):
            wk, xk = w64[ch][None, :, :, :, None, None], x64[:, ch, rows][:, None, None, None]
            shape = (xk.shape[0],) + wk.shape[1:4] + xk.shape[4:]
            acc = fma(wk, xk, acc, temporary(f"fma.acc{k % 2}", shape, np.float32))
        if col is None:
            col = acc if start + K_BLOCK >= count else acc.copy()
        else:
            np.add(col, acc, out=col)                       # float32: one rounding
    return col


def _fma(a, b, c, out=None):
    """fl(a * b + c) for float32 values (a, b as float64, c float32), rounded once: the product
    is exact in float64 (24-bit significands); :func:`_round_once` rounds its sum with c.
    Into ``out`` when given (not c)."""
    y = _round_once(np.multiply(a, b), c.astype(np.float64))
    if out is None:
        return y
    np.copyto(out, y)
    return out


HALF_BITS, HALF = (1 << 29) - 1, 1 << 28
"""A float64 whose significand's 29 bits below float32's last are 1 followed by 28 zeros is
halfway between two float32 neighbours (in float32's normal range)."""


def _fma_normal(a, b, c, out=None):
    """:func:`_fma` where every nonzero sum is in float32's normal range
    (:func:`no_subnormals`): s = RN64(a b + c) rounded to float32 is already the exact sum
    rounded once unless s is a float32 midpoint (a second rounding can only go wrong at
    one: RN64 is monotone and keeps any other value on the side of each midpoint the exact
    sum is on); only those (about 0.5% of the sums of quantized data, in nearly every step)
    are rounded again by :func:`_round_once`, picked by their flat index. Into ``out`` when
    given (not c); the product, sum and test live in scratch."""
    shape = np.broadcast_shapes(a.shape, b.shape, c.shape)
    p = temporary("fma.product", shape, np.float64)
    np.multiply(a, b, out=p)                               # exact: 24 + 24 bits
    s = temporary("fma.sum", shape, np.float64)
    np.add(p, c, out=s)                                    # c widened exactly, one rounding
    y = np.empty(shape, np.float32) if out is None else out
    np.copyto(y, s, casting="same_kind")                   # one rounding
    bits = temporary("fma.bits", shape, np.int64)
    np.bitwise_and(s.view(np.int64), HALF_BITS, out=bits)
    ties = temporary("fma.ties", shape, np.bool_)
    np.equal(bits, HALF, out=ties)
    at = np.flatnonzero(ties)
    if at.size:
        if c.shape == shape and c.flags.c_contiguous:
            near = c.reshape(-1)[at]
        else:
            near = np.broadcast_to(c, shape)[np.unravel_index(at, shape)]
        y.reshape(-1)[at] = _round_once(p.reshape(-1)[at], near.astype(np.float64))
    return y


def _round_once(p, c):
    """RN32(p + c) for float64 p and c: the sum s = RN64(p + c) with its exact error e
    (TwoSum: s + e = p + c); s moved to its odd neighbour towards e when e != 0 and s is even
    is the sum rounded to odd in 53 bits, and rounding that to float32 (24 bits, 53 >= 24 + 2)
    is the one rounding to nearest of the exact sum (Boldo and Melquiond)."""
    s = p + c
    t = s - p
    e = (p - (s - t)) + (c - t)
    bits = s.view(np.int64)
    odd = bits + np.where((e > 0) == (s > 0), 1, -1)
    return np.where((e != 0) & (bits & 1 == 0), odd, bits).view(np.float64).astype(np.float32)


def native_quantize(v, a):
    """:func:`quantize` of float32 sums ``v`` on this thread's IEEE float32."""
    s_y = sf.float32_of(*a["y_scale"])
    with np.errstate(all="ignore"):
        q = np.clip(np.rint(np.divide(v, s_y)), -sf.SATURATE, sf.SATURATE)
    y = q.astype(np.int64) + a["y_zero_point"]
    return np.minimum(np.maximum(y, a["qmin"]), a["qmax"])


def no_subnormals(a) -> bool:
    """Whether no value of the sums can be subnormal: every one is a multiple of
    ulp(x_scale) * ulp(min w_scale) (dequantized values are multiples of their scale's ulp,
    and float32 rounding keeps that), so a nonzero one is normal when that product is."""
    return a["x_scale"][1] + min(a["w_exponent"]) >= sf.EMIN + 23


TEMPORARIES = 48
"""Arrays of one row block alive at once in an fma step, at most (a bound for the scratch)."""


def scratch(in_shapes, out_shapes, a) -> int:
    """Bytes of the fp32 kernel's temporaries beyond its columns and output pairs: the
    dequantization of the data and weight, the final quantization and one row block's fma
    steps, each at most TEMPORARIES int64 arrays of its size."""
    n, c, h, wd = in_shapes[0]
    (kh, kw), mg = a["kernel_size"], a["channels"] // a["groups"]
    block = max(CHUNK, n * mg * kh * kw * wd)
    sizes = size_of(in_shapes[0]) + size_of(in_shapes[1]) + size_of(out_shapes[0])
    return 8 * TEMPORARIES * (sizes + block)


def _columns(xp, xf, wf, first: int, count: int, rows: slice, fma):
    """The SGEMM columns of input rows ``rows``: per (image, j, ky, kx, row, col), the fma
    chains over channels first .. first + count - 1, in blocks of K_BLOCK added in order."""
    col = None
    for start in range(0, count, K_BLOCK):
        acc = None
        for ch in range(first + start, first + min(count, start + K_BLOCK)):
            wk = tuple(t[ch][None, :, :, :, None, None] for t in wf)
            xk = tuple(t[:, ch, rows][:, None, None, None] for t in xf)
            if acc is None:
                shape = (xk[0].shape[0],) + wk[0].shape[1:4] + xk[0].shape[4:]
                acc = (xp.zeros(shape, xp.int64), xp.full(shape, sf.EMIN, xp.int64))
            acc = fma(xp, wk, xk, acc)
        col = acc if col is None else sf.sadd(xp, col, acc)
    return col


def quantize(xp, v, a):
    q = sf.sdiv(xp, v, (xp.asarray(a["y_scale"][0], dtype=xp.int64),
                        xp.asarray(a["y_scale"][1], dtype=xp.int64)))
    y = sf.to_int_sat(xp, q) + a["y_zero_point"]
    return xp.minimum(xp.maximum(y, a["qmin"]), a["qmax"])


def z3(zx, x, w, a, shape, taps):
    """The Z3 rule in the solver's own IEEE-754 float32 theory (round to nearest even): an
    encoding independent of the integer steps above."""
    s_x, s_w, s_y = scales(a)
    f = zx.f32
    fx, fy = f.const(s_x), f.const(s_y)
    fw = [f.const(v) for v in s_w]
    ops = (lambda b, c, y, r: f.mul(f.from_int(x.at((b, c, y, r)) - a["zero_point"]), fx),
           lambda c, j, ky, kx: f.mul(f.from_int(w.at((c, j, ky, kx))), fw[j % len(fw)]),
           f.fma, f.add, f.const(Fraction(0)))
    return build(shape, lambda i: _quantized(f.div(cell(i, x, w, a, ops, taps), fy), a,
                                                 f.to_int_sat, zx.clip))
