"""resize_linear: bilinear interpolation with integer weights, the exact numerator.

Nearest-neighbour resizing is pure data movement (``take`` with constant indices, or
``upsampling``); a linear resize weighs two neighbours per axis. The weights are integers of
``bits`` fraction bits (the importer rounds the source runtime's float weights once, at compile
time), so the result is an exact integer at scale 2^-(2 bits); the division is left to a
following requantize, with its named rounding.
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, bound, precision_for, require, wide
from .batch import outside
from .layout import INT, normalize_axis
from .registry import register
from .z3util import build

MAX_BITS = 12


def _axis_plan(a, k: int) -> tuple[list[int], list[int], list[int]]:
    """(lower index, upper index, upper weight) per output position along interpolated axis k."""
    idx, w = a["index_" + "hw"[k]], a["weight_" + "hw"[k]]
    require(len(idx) == 2 * len(w), f"resize_linear index_{'hw'[k]} needs two indices per "
            f"weight ({len(w)} weights, {len(idx)} indices)")
    return list(idx[0::2]), list(idx[1::2]), list(w)


def _resize_shape(shapes, a):
    x = shapes[0]
    require(len(a["axes"]) == 2, f"resize_linear needs two axes, got {a['axes']}")
    axes = [normalize_axis(v, len(x), "resize_linear") for v in a["axes"]]
    require(axes[0] != axes[1], f"resize_linear axes {a['axes']} repeat an axis")
    out = list(x)
    for k, axis in enumerate(axes):
        lo, hi, w = _axis_plan(a, k)
        require(len(w) >= 1, "resize_linear needs at least one output position per axis")
        require(all(0 <= i < x[axis] for i in lo + hi),
                f"resize_linear index_{'hw'[k]} outside [0, {x[axis] - 1}]")
        require(all(0 <= v <= 1 << a["bits"] for v in w),
                f"resize_linear weight_{'hw'[k]} outside [0, 2^bits = {1 << a['bits']}]")
        out[axis] = len(w)
    return tuple(out)


def _resize_precision(precs, shapes, a):
    _resize_shape(shapes, a)
    return precision_for((1 << 2 * a["bits"]) * (bound(precs[0]) + abs(a["zero_point"])))


def _taps(a):
    """Per interpolated axis: for each output position, [(input index, weight), (.., ..)]."""
    full = 1 << a["bits"]
    taps = []
    for k in range(2):
        lo, hi, w = _axis_plan(a, k)
        taps.append([[(i, full - v), (j, v)] for i, j, v in zip(lo, hi, w)])
    return taps


def _terms(x, i, a, axes, taps):
    """(weight, input value) of the four taps of output index ``i``."""
    out = []
    for r, wr in taps[0][i[axes[0]]]:
        for c, wc in taps[1][i[axes[1]]]:
            j = list(i)
            j[axes[0]], j[axes[1]] = r, c
            out.append((wr * wc, x.at(tuple(j))))
    return out


def _axes(a, ndim: int) -> list[int]:
    return [normalize_axis(v, ndim, "resize_linear") for v in a["axes"]]


def _resize_scalar(args, a):
    x, zp = args[0], a["zero_point"]
    axes, taps = _axes(a, x.ndim), _taps(a)
    return Ref.build(_resize_shape([x.shape], a), lambda i: sum(
        w * (v - zp) for w, v in _terms(x, i, a, axes, taps)))


def _resize_kernel(xp, x, *, axes, index_h, weight_h, index_w, weight_w, bits, zero_point):
    """Separable: along the first axis, then the second, in int64 (exact: no rounding)."""
    a = dict(index_h=index_h, weight_h=weight_h, index_w=index_w, weight_w=weight_w)
    y = wide(xp, x) - zero_point
    for k, axis in enumerate(_axes(dict(axes=axes), x.ndim)):
        lo, hi, w = _axis_plan(a, k)
        shape = [-1 if d == axis else 1 for d in range(y.ndim)]
        upper = xp.asarray(w, dtype=xp.int64).reshape(shape)
        y = (xp.take(y, xp.asarray(lo), axis=axis) * ((1 << bits) - upper)
             + xp.take(y, xp.asarray(hi), axis=axis) * upper)
    return y


def _resize_scratch(in_shapes, out_shapes, a) -> int:
    """Bytes of the kernel's int64 temporaries: the widened input and its copy less the zero
    point, then per axis its input and three arrays of its output (two gathers times their
    weights, their sum) at once; the first axis's output is the input of the second."""
    x = in_shapes[0]
    axis = normalize_axis(a["axes"][0], len(x), "resize_linear")
    size = 1
    for d in x:
        size *= d
    middle = size // x[axis] * len(a["weight_h"]) if x[axis] else 0
    out = 1
    for d in out_shapes[0]:
        out *= d
    return 8 * max(2 * size, size + 3 * middle, middle + 3 * out)


def _resize_z3(zx, x, **a):
    axes, taps = _axes(a, x.ndim), _taps(a)
    return build(_resize_shape([x.shape], a), lambda i: zx.sum(
        [(v - a["zero_point"]) * w for w, v in _terms(x, i, a, axes, taps)]))


INDICES = dict(kind="ints", lo=0, hi=INT)
register(OpDef(
    name="resize_linear", opcode=110,
    doc="""Bilinear interpolation on two axes with integer weights, exactly:
    Y[.., p, .., q, ..] = sum_{a, b in {0, 1}} WH_a[p] * WW_b[q] * (X[.., IH_a[p], .., IW_b[q],
    ..] - zero_point), axes = (h, w) the two interpolated axes. Per output row p: index_h holds
    (IH_0[p], IH_1[p]) and weight_h holds WH_1[p] in [0, 2^bits]; WH_0[p] = 2^bits - WH_1[p]
    (columns likewise). Every row and column weighs 2^bits in all, so Y / 4^bits is the
    interpolated value: the division is left to a following requantize (one named
    rounding). Output dims: len(weight_h), len(weight_w) on the two axes. bits <= 12.
    Precision: precision_for(4^bits * (R(P0) + |zero_point|)).""",
    inputs=("x",), outputs=("out",),
    attrs=(Attr("axes", "ints", default=(2, 3), lo=-6, hi=5),
           Attr("index_h", **INDICES), Attr("weight_h", "ints", lo=0, hi=1 << MAX_BITS),
           Attr("index_w", **INDICES), Attr("weight_w", "ints", lo=0, hi=1 << MAX_BITS),
           Attr("bits", "int", default=10, lo=0, hi=MAX_BITS),
           Attr("zero_point", "int", default=0, lo=-(1 << 16), hi=1 << 16)),
    shape=_resize_shape, precision=_resize_precision, cost=lambda shapes, a: 8,
    scalar=_resize_scalar, kernel=_resize_kernel, z3=_resize_z3,
    batch=outside("axes"), scratch=_resize_scratch,
))
