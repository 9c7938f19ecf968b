"""Row statistics of imported normalization patterns (LayerNorm written as ReduceMean, Sub,
Pow, ReduceMean, Add, Sqrt, Div): qvariance and qnorm, in exact integers.

Over the reduced ``axes`` (length D per row), with S1 = sum x and S2 = sum x^2:

* the centred value of an element is N = D * x - S1 (= D * (x - mean), exact);
* the variance is V / D^2 with V = D * S2 - S1^2 (exact, >= 0).

qvariance rescales V with a fixed-point multiplier (one rounding); qnorm divides N by an
integer square root, sqrt(U), U = a quantized input (the variance quantized earlier in the
graph) or V + eps, and rounds once: the nearest integer to N * sqrt(P / (2^s * U)), computed
with integer square roots and comparisons only.
"""
from __future__ import annotations

from fractions import Fraction
from math import isqrt

from .base import Attr, OpDef, Ref, bound, clip_ints, precision_for, require, size_of, unravel
from .base import wide
from .batch import outside
from .layout import normalize_axes
from .quant import INT31, _round_shift_xp, _z3_round_shift, round_shift
from .registry import register
from .z3util import build

LIMIT = 1 << 62
T_LIMIT = 1 << 60
U_LIMIT = 1 << 44
ROOT_BITS = 31
RANGE = (Attr("zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16),
         Attr("qmin", "int", lo=-INT31, hi=INT31), Attr("qmax", "int", lo=-INT31, hi=INT31))


# ---------------------------------------------------------------------------------------------
# Rows
# ---------------------------------------------------------------------------------------------

def _axes(shape, a) -> tuple[int, ...]:
    require(len(a["axes"]) >= 1, "the reduced axes must not be empty")
    return normalize_axes(a["axes"], len(shape), "row statistics")


def _row_len(shape, a) -> int:
    return size_of([shape[k] for k in _axes(shape, a)])


def _kept(shape, a) -> tuple:
    axes = _axes(shape, a)
    return tuple(1 if k in axes else d for k, d in enumerate(shape))


def _row_of(shape, a, index) -> tuple:
    """The index of ``index``'s row in the kept shape (reduced axes at 0)."""
    axes = _axes(shape, a)
    return tuple(0 if k in axes else i for k, i in enumerate(index))


def _sums(x: Ref, a):
    """{row index: (S1, S2)} of a reference tensor."""
    out = {}
    for flat, v in enumerate(x.data):
        row = _row_of(x.shape, a, unravel(x.shape, flat))
        s1, s2 = out.get(row, (0, 0))
        out[row] = (s1 + v, s2 + v * v)
    return out


def _xp_sums(xp, x, axes):
    w = wide(xp, x)
    return w.sum(axis=axes, keepdims=True), (w * w).sum(axis=axes, keepdims=True)


def _check_range(a):
    require(a["qmin"] <= a["qmax"], "qmin must be <= qmax")


# ---------------------------------------------------------------------------------------------
# qvariance
# ---------------------------------------------------------------------------------------------

def _variance_shape(shapes, a):
    _check_range(a)
    return _kept(shapes[0], a)


def _variance_precision(precs, shapes, a):
    d, top = _row_len(shapes[0], a), bound(precs[0])
    require(d * d * top * top * a["multiplier"] < LIMIT,
            f"qvariance: D^2 * R(P0)^2 * multiplier must stay below 2^62 (D = {d})")
    return precision_for(max(abs(a["qmin"]), abs(a["qmax"])))


def _variance_value(d: int, s1: int, s2: int, a) -> int:
    v = d * s2 - s1 * s1
    r = round_shift(v * a["multiplier"], a["shift"], "half_even")
    return min(max(r + a["zero_point"], a["qmin"]), a["qmax"])


def _variance_scalar(args, a):
    x = args[0]
    d, sums = _row_len(x.shape, a), _sums(x, a)
    return Ref.build(_kept(x.shape, a), lambda i: _variance_value(d, *sums[i], a))


def _variance_kernel(xp, x, *, axes, multiplier, shift, zero_point, qmin, qmax):
    axes = normalize_axes(axes, x.ndim, "qvariance")
    d = size_of([x.shape[k] for k in axes])
    s1, s2 = _xp_sums(xp, x, axes)
    v = (d * s2 - s1 * s1) * multiplier
    r = _round_shift_xp(xp, v, xp.full(v.shape, shift, dtype=xp.int64), "half_even")
    return clip_ints(xp, r + zero_point, qmin, qmax)


def _z3_sums(zx, x, a):
    rows = {}
    for flat, v in enumerate(x.data):
        rows.setdefault(_row_of(x.shape, a, unravel(x.shape, flat)), []).append(v)
    return {k: (zx.sum(vs), zx.sum([v * v for v in vs])) for k, vs in rows.items()}


def _variance_z3(zx, x, **a):
    d, sums = _row_len(x.shape, a), _z3_sums(zx, x, a)

    def element(i):
        s1, s2 = sums[i]
        r = _z3_round_shift(zx, (s2 * d - s1 * s1) * a["multiplier"], a["shift"], "half_even")
        return zx.clip(r + a["zero_point"], a["qmin"], a["qmax"])
    return build(_kept(x.shape, a), element)


register(OpDef(
    name="qvariance", opcode=114,
    doc="""The variance of each row, rescaled: per row of the reduced ``axes`` (length D, kept
    as 1 in the output), V = D * sum x^2 - (sum x)^2 (= D^2 * variance, exact) and
    y = clip(round_half_even(V * multiplier / 2^shift) + zero_point, qmin, qmax).
    D^2 * R(P0)^2 * multiplier < 2^62. Precision: precision_for(max(|qmin|, |qmax|)).""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("axes", "ints", lo=-6, hi=5), Attr("multiplier", "int", lo=0, hi=INT31),
           Attr("shift", "int", lo=0, hi=62)) + RANGE,
    shape=_variance_shape, precision=_variance_precision, cost=lambda shapes, a: 4,
    scalar=_variance_scalar, kernel=_variance_kernel, z3=_variance_z3,
    batch=outside("axes"), scratch=8,       # x wide, x^2, the sums and their products
))


# ---------------------------------------------------------------------------------------------
# qnorm
# ---------------------------------------------------------------------------------------------

def _norm_shape(shapes, a):
    x = shapes[0]
    _check_range(a)
    if len(shapes) > 1:
        require(tuple(shapes[1]) == _kept(x, a), f"qnorm: u shape {tuple(shapes[1])} must be "
                f"the rows' shape {_kept(x, a)}")
    return tuple(x)


def _norm_precision(precs, shapes, a):
    d, top = _row_len(shapes[0], a), bound(precs[0])
    n_max = d * 2 * top
    require(n_max * n_max * a["numerator"] < T_LIMIT,
            f"qnorm: (2 D R(P0))^2 * numerator must stay below 2^60 (D = {d})")
    u_max = bound(precs[1]) + abs(a["zero_point_u"]) if len(precs) > 1 else \
        d * d * top * top + a["eps"]
    require(u_max < U_LIMIT, "qnorm: the radicand could reach 2^44")
    return precision_for(max(abs(a["qmin"]), abs(a["qmax"])))


def _saturation(a) -> int:
    """A magnitude past which the final clip saturates whatever the sign."""
    return max(abs(a["qmin"]), abs(a["qmax"])) + abs(a["zero_point"]) + 1


def nearest_root(n: int, u: int, a) -> int:
    """The nearest integer to n * sqrt(P / (2^s * u)), ties to even (exact rationals); u <= 0
    saturates by the sign of n."""
    sign = (n > 0) - (n < 0)
    if u <= 0:
        return sign * _saturation(a)
    x = Fraction(n * n * a["numerator"], u << a["shift"])
    r = isqrt(x.numerator // x.denominator)
    half = (r + Fraction(1, 2)) ** 2
    return sign * (r + (x > half or (x == half and r % 2 == 1)))


def _norm_scalar(args, a):
    x = args[0]
    d, sums = _row_len(x.shape, a), _sums(x, a)

    def element(i):
        row = _row_of(x.shape, a, i)
        s1, s2 = sums[row]
        u = args[1].at(row) - a["zero_point_u"] if len(args) > 1 else \
            d * s2 - s1 * s1 + a["eps"]
        y = nearest_root(d * x.at(i) - s1, u, a)
        return min(max(y + a["zero_point"], a["qmin"]), a["qmax"])
    return Ref.build(x.shape, element)


def _isqrt_xp(xp, m):
    """floor(sqrt(m)) for int64 0 <= m < 2^62: the float64 root's floor, then one exact step
    down or up. float64(m) is within m * 2^-53 of m and its correctly rounded root within
    sqrt(m) * 2^-52 < 2^-21 of sqrt(m), so the floor is off by at most one (where sqrt(m) is
    that close to an integer), which the integer comparisons (squares below 2^62) correct."""
    root = xp.floor(xp.sqrt(m.astype(xp.float64))).astype(xp.int64)
    root -= root * root > m
    root += (root + 1) * (root + 1) <= m
    return root


def _norm_kernel(xp, x, u=None, *, axes, numerator, shift, eps, zero_point_u, zero_point,
                 qmin, qmax):
    a = dict(qmin=qmin, qmax=qmax, zero_point=zero_point)
    axes = normalize_axes(axes, x.ndim, "qnorm")
    d = size_of([x.shape[k] for k in axes])
    s1, s2 = _xp_sums(xp, x, axes)
    n = d * wide(xp, x) - s1
    u = wide(xp, u) - zero_point_u if u is not None else d * s2 - s1 * s1 + eps
    u = xp.broadcast_to(u, n.shape)
    t = n * n * numerator
    root = _isqrt_xp(xp, (t >> shift) // xp.maximum(u, 1))
    top = _saturation(a)
    kept = xp.minimum(root, top)
    four = t << 2
    a4, rem = four >> shift, four & ((1 << shift) - 1)
    k = (2 * kept + 1) * (2 * kept + 1) * u
    up = (a4 > k) | ((a4 == k) & ((rem > 0) | ((kept & 1) == 1)))
    r = xp.where(root >= top, top, kept + up.astype(xp.int64))
    r = xp.where(u <= 0, xp.where(n == 0, 0, top), r)
    return clip_ints(xp, xp.sign(n) * r + zero_point, qmin, qmax)


def _z3_isqrt(zx, m):
    root = zx.num(0)
    for b in range(ROOT_BITS - 1, -1, -1):
        trial = root + (1 << b)
        root = zx.ite(trial * trial <= m, trial, root)
    return root


def _z3_nearest_root(zx, n, u, a):
    t = n * n * a["numerator"]
    root = _z3_isqrt(zx, zx.tdiv(zx.shr(t, a["shift"]), zx.max(u, 1)))
    top = _saturation(a)
    kept = zx.min(root, top)
    four = zx.shl(t, 2)
    a4 = zx.shr(four, a["shift"])
    rem = four - zx.shl(a4, a["shift"])
    k = (kept * 2 + 1) * (kept * 2 + 1) * u
    odd = kept - zx.shl(zx.shr(kept, 1), 1)
    up = zx.Or(a4 > k, zx.And(a4 == k, zx.Or(rem > 0, odd == 1)))
    r = zx.ite(root >= top, top, kept + zx.ite(up, 1, 0))
    r = zx.ite(u <= 0, zx.ite(n == 0, 0, top), r)
    return zx.ite(n >= 0, r, -r)


def _norm_z3(zx, x, u=None, **a):
    d, sums = _row_len(x.shape, a), _z3_sums(zx, x, a)

    def element(i):
        row = _row_of(x.shape, a, i)
        s1, s2 = sums[row]
        rad = u.at(row) - a["zero_point_u"] if u is not None else s2 * d - s1 * s1 + a["eps"]
        y = _z3_nearest_root(zx, x.at(i) * d - s1, rad, a)
        return zx.clip(y + a["zero_point"], a["qmin"], a["qmax"])
    return build(x.shape, element)


register(OpDef(
    name="qnorm", opcode=115,
    doc="""Normalization by an integer square root: per row of the reduced ``axes`` (length D),
    N = D * x - sum x (= D * (x - mean)) and U = u - zero_point_u (u: one value per row, the
    rows' shape) or, without u, U = D * sum x^2 - (sum x)^2 + eps (D^2 * (variance + eps / D^2));
    y = clip(r + zero_point, qmin, qmax), r the integer nearest to N * sqrt(numerator /
    (2^shift * U)), ties to even (computed exactly: integer square root, then one comparison
    with (r + 1/2)^2); U <= 0 saturates by the sign of N. Requires (2 D R(P0))^2 * numerator
    < 2^60 and U < 2^44. Precision: precision_for(max(|qmin|, |qmax|)).""",
    inputs=("x", "u?"), outputs=("out",),
    attrs=(Attr("axes", "ints", lo=-6, hi=5), Attr("numerator", "int", lo=1, hi=1 << 60),
           Attr("shift", "int", lo=0, hi=62), Attr("eps", "int", default=0, lo=0, hi=1 << 44),
           Attr("zero_point_u", "int", default=0, lo=-(1 << 16), hi=1 << 16)) + RANGE,
    shape=_norm_shape, precision=_norm_precision, cost=lambda shapes, a: 40,
    scalar=_norm_scalar, kernel=_norm_kernel, z3=_norm_z3,
    batch=outside("axes", "map"), scratch=12,   # N, its products, the square-root steps
))
