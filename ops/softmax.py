"""qsoftmax: onnxruntime's QLinearSoftmax as integer arithmetic (the float32 steps named).

Per row of ``axis``: the maximum, a 256-entry table of float32 exponentials indexed by the
distance to it, their float32 sum, one float32 quotient and one float32 product per element,
rounded to an integer. The table holds (mantissa, exponent) integer pairs, built once at import
time; every float32 step is exact integer arithmetic with a named rounding (ops/softfloat.py).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from . import softfloat as sf
from .base import Attr, OpDef, Ref, clip_ints, precision_for, require, size_of, wide
from .batch import along
from .fastquant import F32
from .layout import normalize_axis
from .quant import INT31
from .registry import register
from .z3util import fold_max

TABLE = 256
MAX_NUMERATOR = (1 << 24) - 1


# ---------------------------------------------------------------------------------------------
# Rules shared by the three forms
# ---------------------------------------------------------------------------------------------

def _check(shape, a) -> int:
    """Validate the attributes against the input shape; return the row length D."""
    axis = normalize_axis(a["axis"], len(shape), "qsoftmax")
    m, e = a["mantissa"], a["exponent"]
    require(len(m) == TABLE and len(e) == TABLE,
            f"qsoftmax needs {TABLE} table mantissas and exponents, got {len(m)}, {len(e)}")
    for k, (mk, ek) in enumerate(zip(m, e)):
        require(mk == 0 and ek == sf.EMIN or (1 << 23) <= mk < 1 << 24
                or ek == sf.EMIN and mk < 1 << 23,
                f"qsoftmax table entry {k} ({mk}, {ek}) is not a normalized float32")
    require(m[TABLE - 1] >= 1 << 23, "qsoftmax table entry 255 (the row maximum's) must be a "
            "normal float32")
    require(a["qmin"] <= a["qmax"], "qsoftmax needs qmin <= qmax")
    d = shape[axis]
    top = max(sf.value(mk, ek) for mk, ek in zip(m, e))
    require(d * top < Fraction(2) ** 127, "qsoftmax: the row sums could overflow float32")
    require(Fraction(a["numerator"]) / (d * top) >= Fraction(2) ** -126,
            "qsoftmax: numerator / row sum could be subnormal")
    return d


def _shape(shapes, a):
    _check(shapes[0], a)
    return shapes[0]


def _precision(precs, shapes, a):
    _check(shapes[0], a)
    return precision_for(max(abs(a["qmin"]), abs(a["qmax"])))


def _index(v: int, top: int) -> int:
    return min(max(v - top + TABLE - 1, 0), TABLE - 1)


# ---------------------------------------------------------------------------------------------
# Scalar reference: exact rationals rounded to float32
# ---------------------------------------------------------------------------------------------

def _row_scalar(values: list[int], a) -> list[int]:
    table = [sf.value(m, e) for m, e in zip(a["mantissa"], a["exponent"])]
    top = max(values)
    t = [table[_index(v, top)] for v in values]
    total = Fraction(0)
    for x in t:
        total = sf.fl32(total + x)
    q = sf.fl32(Fraction(a["numerator"]) / total)
    return [min(max(round(sf.fl32(x * q)) + a["zero_point"], a["qmin"]), a["qmax"]) for x in t]


def _lines(shape, axis: int):
    """Flat indices of every row along ``axis``, in C order of the other axes."""
    inner = size_of(shape[axis + 1:])
    for outer in range(size_of(shape[:axis])):
        for i in range(inner):
            base = outer * shape[axis] * inner + i
            yield [base + k * inner for k in range(shape[axis])]


def _scalar(args, a):
    x = args[0]
    axis = normalize_axis(a["axis"], x.ndim, "qsoftmax")
    out = [0] * len(x.data)
    for line in _lines(x.shape, axis):
        for k, y in zip(line, _row_scalar([x.data[k] for k in line], a)):
            out[k] = y
    return Ref(x.shape, out)


# ---------------------------------------------------------------------------------------------
# Array kernel: rows of (mantissa, exponent) pairs
# ---------------------------------------------------------------------------------------------

def _kernel(xp, x, *, axis, mantissa, exponent, numerator, zero_point, qmin, qmax):
    axis = normalize_axis(axis, x.ndim, "qsoftmax")
    if xp is np and sf.native_float32():
        y = _native(_distances(x, axis), mantissa, exponent, numerator, axis)
        return _offset_clip(y, zero_point, qmin, qmax)
    k = _indices(xp, xp.moveaxis(wide(xp, x), axis, -1), -1)
    t = (xp.asarray(mantissa, dtype=xp.int64)[k], xp.asarray(exponent, dtype=xp.int64)[k])
    total = (xp.zeros(k.shape[:-1], dtype=xp.int64), xp.full(k.shape[:-1], sf.EMIN, xp.int64))
    for j in range(k.shape[-1]):
        total = sf.add(xp, total, (t[0][..., j], t[1][..., j]))
    q = sf.div_int(xp, numerator, total)
    p = sf.mul(xp, t, (q[0][..., None], q[1][..., None]))
    y = sf.to_int(xp, p) + zero_point
    return xp.moveaxis(clip_ints(xp, y, qmin, qmax), -1, axis)


ROWS_AT_ONCE = 256
"""From this many rows the rows are summed element position by element position (one float32
addition of every row's next element at a time), else each row by ``add.accumulate``."""


def _row_sums(t, axis: int):
    """The float32 sum of each row of ``t`` along ``axis`` in index order, fl(..fl(t_0 + t_1)
    .. + t_(D-1)), kept as a dim of 1: one element at a time (unlike a reduction's pairwise
    sum). Many short rows: D additions of whole planes (YOLOv8n's 16-bin softmax over 4x2100
    boxes: 0.50 -> 0.03 ms; ``add.accumulate`` walks such rows one by one); few long ones:
    ``add.accumulate`` along the axis (one row of 1000: 0.006 against 0.9 ms)."""
    rows = t.size // t.shape[axis] if t.shape[axis] else 0
    if rows < ROWS_AT_ONCE or t.shape[axis] < 2:
        last = (slice(None),) * axis + (slice(-1, None),)
        return np.add.accumulate(t, axis=axis, dtype=np.float32)[last]
    planes = np.moveaxis(t, axis, 0)
    total = planes[0].copy()
    for plane in planes[1:]:
        np.add(total, plane, out=total, dtype=np.float32)
    return np.expand_dims(total, axis)


def _indices(xp, x, axis: int):
    """k = clip(x - max(x along ``axis``) + 255, 0, 255), the table index of every element."""
    return clip_ints(xp, x - x.max(axis=axis, keepdims=True) + (TABLE - 1), 0, TABLE - 1)


def _distances(x, axis: int):
    """min(max(x along ``axis``) - x, 255): 255 - the table index of every element (uint8
    for byte data, whose distances are at most 255: their difference modulo 256 as bytes)."""
    top = x.max(axis=axis, keepdims=True)
    if x.dtype.itemsize == 1:
        return np.subtract(top.view(np.uint8), x.view(np.uint8))      # modulo 256: exact
    d = np.subtract(top, x, dtype=np.int32 if x.dtype.itemsize == 2 else np.int64)
    return np.minimum(d, TABLE - 1, out=d)


def _native(distance, mantissa, exponent, numerator, axis: int):
    """The same float32 steps on this thread's IEEE float32 (sf.native_float32 checked it
    rounds as ``fl`` does), on the rows along ``axis`` where they lie: the table's values
    exactly as float32 (by ``distance``, 255 - the index), each row summed in order
    (:func:`_row_sums`), one quotient, one product per element (a product below 2^-126
    rounds to a subnormal here and to 24 bits in sf.mul: both give the integer 0), rounded
    half to even; float32 integers in [0, numerator]."""
    t = sf.float32_of(mantissa, exponent)[::-1].take(distance)
    with np.errstate(all="ignore"):
        total = _row_sums(t, axis)
        q = np.divide(np.float32(numerator), total, dtype=np.float32)   # numerator < 2^24
        np.multiply(t, q, out=t, dtype=np.float32)
        return np.rint(t, out=t)


def _offset_clip(y, zero_point: int, qmin: int, qmax: int):
    """clip(y + zero_point, qmin, qmax) of float32 integers y in [0, 2^24), as int32 (the
    bounds are within it): the clip first, in float32 where its bounds minus the zero point
    are exact (|.| <= 2^24), else on the int64 sums."""
    lo, hi = qmin - zero_point, qmax - zero_point
    if -F32 <= lo and hi <= F32:
        np.clip(y, np.float32(lo), np.float32(hi), out=y)             # exact: integers
        out = y.astype(np.int32)                                       # exact: |y| <= 2^24
        return np.add(out, zero_point, out=out) if zero_point else out
    return clip_ints(np, y.astype(np.int64) + zero_point, qmin, qmax).astype(np.int32)


# ---------------------------------------------------------------------------------------------
# Z3 rule
# ---------------------------------------------------------------------------------------------

def _z3(zx, x, **a):
    axis = normalize_axis(a["axis"], x.ndim, "qsoftmax")
    m_of, e_of = zx.table(a["mantissa"]), zx.table(a["exponent"])
    out = [None] * len(x.data)
    for line in _lines(x.shape, axis):
        terms = [x.data[k] for k in line]
        top = fold_max(zx, terms)
        t = [(m_of(v - top + TABLE - 1), e_of(v - top + TABLE - 1)) for v in terms]
        total = (zx.num(0), zx.num(sf.EMIN))
        for pair in t:
            total = sf.z3_add(zx, total, pair)
        q = sf.z3_div_int(zx, a["numerator"], total)
        for k, pair in zip(line, t):
            y = sf.z3_to_int(zx, sf.z3_mul(zx, pair, q)) + a["zero_point"]
            out[k] = zx.clip(y, a["qmin"], a["qmax"])
    return Ref(x.shape, out)


register(OpDef(
    name="qsoftmax", opcode=111,
    doc="""onnxruntime's QLinearSoftmax in integers. Per row r of ``axis`` (length D):
    k_j = clip(x_j - max_r(x) + 255, 0, 255); t_j = T[k_j], T[k] = mantissa[k] * 2^exponent[k]
    (float32 values, normalized); S = fl(..fl(fl(0 + t_0) + t_1).. + t_{D-1}) (float32 sum in
    index order); q = fl(numerator / S); y_j = clip(round_half_even(fl(t_j * q)) + zero_point,
    qmin, qmax), where fl(v) is the float32 nearest to the exact v, ties to even. Exact integer
    arithmetic (ops/softfloat.py). Valid when T[255] is normal, D * max(T) < 2^127 and
    numerator / (D * max(T)) >= 2^-126 (so no step overflows or leaves the normal range where it
    matters). Precision: precision_for(max(|qmin|, |qmax|)).""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("axis", "int", default=-1, lo=-6, hi=5),
           Attr("mantissa", "ints", lo=0, hi=(1 << 24) - 1),
           Attr("exponent", "ints", lo=sf.EMIN, hi=104),
           Attr("numerator", "int", lo=1, hi=MAX_NUMERATOR),
           Attr("zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16),
           Attr("qmin", "int", lo=-INT31, hi=INT31),
           Attr("qmax", "int", lo=-INT31, hi=INT31)),
    shape=_shape, precision=_precision,
    cost=lambda shapes, a: 24,
    scalar=_scalar, kernel=_kernel, z3=_z3, batch=along("axis"),
    scratch=16,         # the float32 steps: pairs of int64 words per element, a few alive
))
