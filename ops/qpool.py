"""qavg_pool2d: onnxruntime's QLinearAveragePool, its float32 steps as integer arithmetic.

onnxruntime dequantizes every cell to float32, adds a window's in-range cells in row-major
order in float32, divides by the window's count, divides by the output scale, adds the output
zero point and rounds to the nearest integer (ties to even). With the scales as exact pairs
s = m * 2^e, each float32 rounding ``fl`` (nearest, ties to even) is an integer operation:

* a cell: d = fl(s_x (v - zp)) = R(m_x (v - zp)) in units of 2^e_x, R = rounding of an
  integer to 24 significant bits;
* the window sum: A = R(...R(R(0 + d_1) + d_2)... + d_n), in the same units (exact integers);
* Y = fl(A / n), Z = fl(Y / s_y): quotients rounded to 24 significant bits with a remainder
  test (ties to even);
* W = fl(Z + zero_point_out), the output round_half_even(W), clamped to [qmin, qmax].

The attributes keep every step inside float32's normal range and int64 (checked): |v - zp|
< 2^10, KH * KW <= 256, s_x, s_y >= 2^-100, 2^-60 <= s_x / s_y <= 2^20; |qmin|, |qmax| <=
2^16 (so the Z3 rule needs only the exponents where the result is neither clamped nor the
zero point).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from . import softfloat as sf
from .base import Attr, OpDef, Ref, bitlen, bound, clip_ints, precision_for, require, size_of
from .base import wide
from .pool import SPATIAL, _sum_pool_shape, _window_terms, window_count
from .quant import INT31, _bitlen_xp as bitlen_xp, _round_shift_xp as round_shift_xp
from .quant import round_shift
from .registry import register
from .z3util import build

BITS = sf.BITS
CELL_BITS = 10
MAX_CELLS = 256
FRACTION_BITS = 40
"""Z below 2^-16 (exponent < -40 with a 24-bit significand) rounds to the zero point."""


# ---------------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------------

def _log2(m: int, e: int) -> int:
    """floor(log2(m * 2^e)) for m >= 1."""
    return bitlen(m) - 1 + e


def _check(shape, a):
    out = _sum_pool_shape([shape], a)
    (kh, kw) = a["pool_size"]
    require(kh * kw <= MAX_CELLS, f"qavg_pool2d windows of at most {MAX_CELLS} cells")
    x, y = _log2(a["scale_m"], a["scale_e"]), _log2(a["out_m"], a["out_e"])
    require(x >= -100 and y >= -100, "qavg_pool2d scales must be >= 2^-100")
    require(-60 <= x - y - 1 and x - y + 1 <= 20,
            "qavg_pool2d needs 2^-60 <= input scale / output scale <= 2^20")
    require(a["qmin"] <= a["qmax"], "qavg_pool2d needs qmin <= qmax")
    require(max(abs(a["qmin"]), abs(a["qmax"])) <= 1 << 16,
            "qavg_pool2d: qmin and qmax within [-2^16, 2^16]")
    return out


def _precision(precs, shapes, a):
    _check(shapes[0], a)
    require(bound(precs[0]) + abs(a["zero_point"]) < 1 << CELL_BITS,
            f"qavg_pool2d: |x - zero_point| must stay below 2^{CELL_BITS}")
    return precision_for(max(abs(a["qmin"]), abs(a["qmax"])))


def _count(shape, a, p: int, q: int) -> int:
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    if a["count_include_pad"]:
        return kh * kw
    return window_count(p, shape[2], ph, kh, sh) * window_count(q, shape[3], pw, kw, sw)


# ---------------------------------------------------------------------------------------------
# Scalar reference: exact rationals rounded to float32
# ---------------------------------------------------------------------------------------------

def _fl(v: Fraction) -> Fraction:
    return sf.fl32(v) if v >= 0 else -sf.fl32(-v)


def _scalar(args, a):
    x = args[0]
    s_x = Fraction(a["scale_m"]) * Fraction(2) ** a["scale_e"]
    s_y = Fraction(a["out_m"]) * Fraction(2) ** a["out_e"]

    def one(i):
        total = Fraction(0)
        for d in _window_terms(x, i, a, lambda v: _fl(s_x * (v - a["zero_point"]))):
            total = _fl(total + d)
        y = _fl(_fl(total / _count(x.shape, a, i[2], i[3])) / s_y)
        w = _fl(y + a["zero_point_out"])
        return min(max(round(w), a["qmin"]), a["qmax"])
    return Ref.build(_check(x.shape, a), one)


# ---------------------------------------------------------------------------------------------
# Array kernel (int64)
# ---------------------------------------------------------------------------------------------

def _r24_int(v: int) -> int:
    """v rounded to 24 significant bits, ties to even (Python ints)."""
    t = max(abs(v).bit_length() - BITS, 0)
    r = round_shift(abs(v), t, "half_even") << t
    return r if v >= 0 else -r


def _r24(xp, v):
    """v rounded to 24 significant bits (ties to even), same units; |v| < 2^62."""
    mag = xp.abs(v)
    t = xp.maximum(bitlen_xp(xp, mag) - BITS, 0)
    r = xp.left_shift(round_shift_xp(xp, mag, t, "half_even"), t)
    return xp.where(v < 0, -r, r)


def _quotient(xp, num, den):
    """fl(num / den) as (m, e), num / den ~ m * 2^e, m normalized or 0; int64 arrays
    0 <= num < 2^44, 1 <= den < 2^26."""
    sh = xp.maximum(27 + bitlen_xp(xp, den) - bitlen_xp(xp, num), 0)
    big = xp.left_shift(num, sh)
    q = big // den
    sticky = q * den != big
    t = xp.maximum(bitlen_xp(xp, q) - BITS, 1)       # >= 3 unless num = 0
    m = xp.right_shift(q, t)
    rest, half = q - xp.left_shift(m, t), xp.left_shift(xp.ones_like(t), t - 1)
    up = (rest > half) | ((rest == half) & (sticky | ((m & 1) == 1)))
    m = m + up.astype(xp.int64)
    carry = xp.right_shift(m, BITS)
    return xp.right_shift(m, carry), t + carry - sh


def _plus_round(xp, z, e, zero: int):
    """round_half_even(fl(z * 2^e + zero)) for a signed 24-bit z."""
    whole = _r24(xp, xp.left_shift(z, xp.clip(e, 0, 20)) + zero)
    k = xp.clip(-e, 0, FRACTION_BITS)
    shifted = xp.left_shift(xp.full(z.shape, zero, dtype=xp.int64), k)
    part = round_shift_xp(xp, _r24(xp, z + shifted), k, "half_even")
    return xp.where(e >= 0, whole, xp.where(e >= -FRACTION_BITS, part, zero))


def _counts(xp, shape, a, oh: int, ow: int):
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    if a["count_include_pad"]:
        return xp.full((oh, ow), kh * kw, dtype=xp.int64)
    out = []
    for size, pad, k, stride, n in ((shape[2], ph, kh, sh, oh), (shape[3], pw, kw, sw, ow)):
        start = xp.arange(n, dtype=xp.int64) * stride - pad
        out.append(xp.minimum(start + k, size) - xp.maximum(start, 0))
    return out[0].reshape(-1, 1) * out[1].reshape(1, -1)


def _scratch(ins, outs, a) -> int:
    """Bytes of the kernel's int64 temporaries: the padded cells and the rounding steps over
    them (at most 16 arrays of the padded input alive), the window sums and the quotient
    steps (at most 24 arrays of the output)."""
    n, c, h, w = ins[0]
    ph, pw = a["padding"]
    return 8 * (16 * n * c * (h + 2 * ph) * (w + 2 * pw) + 24 * size_of(outs[0]))


def _kernel(xp, x, *, pool_size, strides, padding, count_include_pad, zero_point, scale_m,
            scale_e, out_m, out_e, zero_point_out, qmin, qmax):
    a = dict(pool_size=pool_size, strides=strides, padding=padding,
             count_include_pad=count_include_pad)
    n, c, oh, ow = _sum_pool_shape([x.shape], a)
    (kh, kw), (sh, sw), (ph, pw) = pool_size, strides, padding
    if xp is np and sf.native_float32():
        y = _native(x, a, zero_point, scale_m, scale_e, out_m, out_e, zero_point_out)
        return clip_ints(np, y, qmin, qmax)
    cells = xp.zeros((n, c, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), dtype=xp.int64)
    cells[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]] = _r24(
        xp, (wide(xp, x) - zero_point) * scale_m)
    total = xp.zeros((n, c, oh, ow), dtype=xp.int64)
    for r in range(kh):                  # a padded cell adds 0: R(A + 0) = A
        for s in range(kw):
            total = _r24(xp, total + cells[:, :, r:r + sh * (oh - 1) + 1:sh,
                                           s:s + sw * (ow - 1) + 1:sw])
    m1, e1 = _quotient(xp, xp.abs(total), _counts(xp, x.shape, a, oh, ow))
    m2, e2 = _quotient(xp, m1, xp.full(m1.shape, out_m, dtype=xp.int64))
    z = xp.where(total < 0, -m2, m2)
    return clip_ints(xp, _plus_round(xp, z, e1 + e2 + scale_e - out_e, zero_point_out),
                     qmin, qmax)


def _native(x, a, zero_point, scale_m, scale_e, out_m, out_e, zero_point_out):
    """The float32 steps of the module doc on this thread's IEEE float32 (sf.native_float32
    checked it rounds as ``fl`` does; the attributes keep every value normal): each cell one
    product (v - zp exact in float32), each window's cells added in row-major order, the two
    quotients and the zero point's sum, rounded half to even; int64."""
    n, c, oh, ow = _sum_pool_shape([x.shape], a)
    (kh, kw), (sh, sw), (ph, pw) = a["pool_size"], a["strides"], a["padding"]
    s_x, s_y = sf.float32_of(scale_m, scale_e), sf.float32_of(out_m, out_e)
    cells = np.zeros((n, c, x.shape[2] + 2 * ph, x.shape[3] + 2 * pw), dtype=np.float32)
    np.multiply((wide(np, x) - zero_point).astype(np.float32), s_x,
                out=cells[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]])
    total = np.zeros((n, c, oh, ow), dtype=np.float32)
    for r in range(kh):                  # a padded cell adds +0: A + 0 = A
        for s in range(kw):
            np.add(total, cells[:, :, r:r + sh * (oh - 1) + 1:sh, s:s + sw * (ow - 1) + 1:sw],
                   out=total)
    y = np.divide(total, _counts(np, x.shape, a, oh, ow).astype(np.float32))
    w = np.add(np.divide(y, s_y), np.float32(zero_point_out))
    return np.rint(w).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Z3 rule: the same integer steps, chains over bit lengths
# ---------------------------------------------------------------------------------------------

def _z3_round_signed(zx, v, k: int):
    """round_half_even(v / 2^k) of a signed term |v| < 2^61."""
    return sf._z3_shift_round(zx, v + (1 << 61), k) - (1 << (61 - k))


def _z3_normalize(zx, mag, top: int):
    """(m, t) with mag = m * 2^t and 2^23 <= m < 2^24 (m = 0 for mag = 0), for a term
    0 <= mag < 2^top holding at most 24 significant bits."""
    m, t = zx.num(0), zx.num(0)
    for n in range(1, top + 1):
        big = mag >= 1 << (n - 1)
        step = zx.shl(mag, BITS - n) if n <= BITS else zx.shr(mag, n - BITS)
        m, t = zx.ite(big, step, m), zx.ite(big, n - BITS, t)
    return m, t


def _z3_r24(zx, v, top: int):
    """:func:`_r24` of a term |v| < 2^top."""
    mag = zx.ite(v < 0, -v, v)
    out = mag
    for n in range(BITS + 1, top + 1):
        t = n - BITS
        out = zx.ite(mag >= 1 << (n - 1), zx.shl(sf._z3_shift_round(zx, mag, t), t), out)
    return zx.ite(v < 0, -out, out)


def _z3_quotient(zx, m, den: int, low: int):
    """fl(m / den) as (m', e) for a term m = 0 or 2^(low - 1) <= m < 2^24 and a constant den
    (:func:`_quotient` with a fixed shift: the quotient has at least 27 bits unless m = 0)."""
    bd = den.bit_length()
    sh = 27 + bd - low
    big = zx.shl(m, sh)
    q = zx.tdiv(big, zx.num(den))
    sticky = q * den != big
    m_out, e_out = zx.num(0), zx.num(0)
    for n in range(low + sh - bd, BITS + sh - bd + 2):
        t = n - BITS
        r = zx.shr(q, t)
        rest, half = q - zx.shl(r, t), 1 << (t - 1)
        odd = r - zx.shl(zx.shr(r, 1), 1)
        r = r + zx.ite(zx.Or(rest > half, zx.And(rest == half, zx.Or(sticky, odd == 1))), 1, 0)
        carry = r >= 1 << BITS
        big_q = q >= 1 << (n - 1)
        m_out = zx.ite(big_q, zx.ite(carry, zx.shr(r, 1), r), m_out)
        e_out = zx.ite(big_q, t - sh + zx.ite(carry, 1, 0), e_out)
    return m_out, e_out


def _z3_plus_round(zx, z, e, a):
    """clip(round_half_even(fl(z 2^e + zero)), qmin, qmax) for |z| < 2^24: 0 or below 2^-3
    (e < -26) it is the zero point; at 2^17 or more (e > -7) the clip (|qmin|, |qmax| <= 2^16,
    |zero| < 2^9); in between, in units of 2^-26."""
    zero = a["zero_point_out"]
    scaled = zx.num(0)
    for k in range(7, 27):                              # e = -k
        scaled = zx.ite(e == -k, zx.shl(z, 26 - k), scaled)
    w = _z3_r24(zx, scaled + (zero << 26), 26 + 19)
    out = zx.ite(zx.Or(z == 0, e < -26), zero,
                 zx.ite(e > -7, zx.ite(z > 0, a["qmax"], a["qmin"]), _z3_round_signed(zx, w, 26)))
    return zx.clip(out, a["qmin"], a["qmax"])


def _z3(zx, x, **a):
    cells = a["pool_size"][0] * a["pool_size"][1]
    top = a["scale_m"].bit_length() + CELL_BITS + cells.bit_length()
    reach = 1 << CELL_BITS
    look = zx.table([_r24_int(a["scale_m"] * v) for v in range(-reach + 1, reach)])

    def cell(v):                # a numeral input reads its entry (no Z3 array is built)
        known = zx.value(v)
        return look(zx.num(known - a["zero_point"] + reach - 1) if known is not None
                    else v - a["zero_point"] + reach - 1)

    def one(i):
        terms = _window_terms(x, i, a, cell)
        total = terms[0]                                 # 0 + d_1 is exact
        for d in terms[1:]:
            total = _z3_r24(zx, total + d, top)
        m0, t0 = _z3_normalize(zx, zx.ite(total < 0, -total, total), top)
        m1, e1 = _z3_quotient(zx, m0, _count(x.shape, a, i[2], i[3]), BITS)
        m2, e2 = _z3_quotient(zx, m1, a["out_m"], BITS)
        z = zx.ite(total < 0, -m2, m2)
        return _z3_plus_round(zx, z, t0 + e1 + e2 + a["scale_e"] - a["out_e"], a)
    return build(_check(x.shape, a), one)


register(OpDef(
    name="qavg_pool2d", opcode=116,
    doc="""onnxruntime's QLinearAveragePool (NCHW windows as sum_pool2d) in integers:
    s_x = scale_m * 2^scale_e, s_y = out_m * 2^out_e; per output (p, q) over the in-range
    cells of its window in row-major order, A = fl(..fl(fl(0 + d_1) + d_2).. + d_n) with
    d = fl(s_x * (x - zero_point)); n = KH*KW with count_include_pad, else the in-range cells;
    y = clip(round_half_even(fl(fl(fl(A / n) / s_y) + zero_point_out)), qmin, qmax), fl(v) the
    float32 nearest to the exact v, ties to even (exact integer arithmetic, ops/qpool.py).
    Valid when |x - zero_point| < 2^10 (R(P0) + |zero_point|), KH*KW <= 256, s_x, s_y >=
    2^-100, 2^-60 <= s_x / s_y <= 2^20 and |qmin|, |qmax| <= 2^16.
    Precision: precision_for(max(|qmin|, |qmax|)).""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("pool_size", lo=1, hi=256, **SPATIAL),
           Attr("strides", default=(1, 1), lo=1, hi=4096, **SPATIAL),
           Attr("padding", default=(0, 0), lo=0, hi=255, **SPATIAL),
           Attr("count_include_pad", "bool", default=False),
           Attr("zero_point", "int", default=0, lo=-(1 << 10), hi=1 << 10),
           Attr("scale_m", "int", lo=1, hi=(1 << 24) - 1),
           Attr("scale_e", "int", lo=-150, hi=127),
           Attr("out_m", "int", lo=1, hi=(1 << 24) - 1),
           Attr("out_e", "int", lo=-150, hi=127),
           Attr("zero_point_out", "int", default=0, lo=-(1 << 9), hi=1 << 9),
           Attr("qmin", "int", lo=-INT31, hi=INT31),
           Attr("qmax", "int", lo=-INT31, hi=INT31)),
    shape=lambda shapes, a: _check(shapes[0], a), precision=_precision,
    cost=lambda shapes, a: 4 * a["pool_size"][0] * a["pool_size"][1] + 12,
    scalar=_scalar, kernel=_kernel, z3=_z3, batch="rows", scratch=_scratch,
))
