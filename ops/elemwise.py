"""Elementwise ops: abs, negative, cvm_precision, elemwise_add/sub, clip, cvm_clip, cvm_left_shift,
cvm_right_shift (CVM semantics; the formal backend is normative, cvm.md 3.3).

Every op here weighs 1 gas per output element (CVM GetOps code) and keeps its input's shape.
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, bitlen, bound, clip_ints, number_precision, require, wide
from .registry import register
from .z3util import pointwise

INT31 = (1 << 31) - 1
PRECISION = Attr("precision", "int", lo=1, hi=32)
SHIFT_BIT = Attr("shift_bit", "int", lo=1, hi=32)


def _unary(name, opcode, doc, fn, kernel, *, attrs=(), precision=None, check=None,
           inplace=True, z3=None):
    """Register a one-input, same-shape op; ``fn(x, attrs)`` is the scalar semantics of one int.

    ``precision`` defaults to the rule ``P0``; ``check(attrs)`` (raising OpError) runs in the
    shape rule; ``z3(zx, term, attrs)`` is the Z3 encoding of one element.
    """
    def shape(shapes, a):
        if check is not None:
            check(a)
        return shapes[0]

    register(OpDef(
        name=name, opcode=opcode, doc=doc, inputs=("x",), outputs=("out",), attrs=attrs,
        shape=shape,
        precision=precision or (lambda precs, shapes, a: precs[0]),
        cost=lambda shapes, a: 1,
        scalar=lambda args, a: Ref(args[0].shape, [fn(v, a) for v in args[0].data]),
        kernel=kernel, inplace=inplace, z3=pointwise(z3), batch="map",
    ))


def _same_shape_binary(name, opcode, doc, fn, kernel):
    """Register a two-input op over equal shapes with precision max(P0, P1) + 1; ``fn`` works
    on ints and on Z3 terms alike (it is only ``+`` or ``-``)."""
    def shape(shapes, a):
        require(shapes[0] == shapes[1], f"{name} needs equal shapes, got {shapes[0]} and "
                f"{shapes[1]} (use broadcast_{name.split('_')[1]} to broadcast)")
        return shapes[0]

    register(OpDef(
        name=name, opcode=opcode, doc=doc, inputs=("a", "b"), outputs=("out",), attrs=(),
        shape=shape,
        precision=lambda precs, shapes, a: max(precs[0], precs[1]) + 1,
        cost=lambda shapes, a: 1,
        scalar=lambda args, a: Ref(args[0].shape,
                                   [fn(x, y) for x, y in zip(args[0].data, args[1].data)]),
        kernel=kernel, inplace=True,
        z3=lambda zx, x, y: Ref(x.shape, [fn(u, v) for u, v in zip(x.data, y.data)]),
        batch="map",
    ))


def _clamp(v: int, lo: int, hi: int) -> int:
    return min(max(v, lo), hi)


# ---------------------------------------------------------------------------------------------
# abs, negative
# ---------------------------------------------------------------------------------------------

_unary("abs", 10, "y = |x| (exact; |x| <= R(P0) so it fits). Precision P0.",
       lambda v, a: abs(v), lambda xp, x: xp.abs(wide(xp, x)),
       z3=lambda zx, v, a: zx.abs(v))

_unary("negative", 11, "y = -x (exact; the precision bound is symmetric). Precision P0. "
       "Not in-place (CVM's whitelist misspells it).",
       lambda v, a: -v, lambda xp, x: -wide(xp, x), inplace=False,
       z3=lambda zx, v, a: -v)


# ---------------------------------------------------------------------------------------------
# cvm_precision
# ---------------------------------------------------------------------------------------------

def _bit_length_kernel(xp, x):
    """bitlen(|x|), at least 1, by a 6-step binary search with integer compares and shifts."""
    n = xp.abs(wide(xp, x))
    y = xp.zeros(n.shape, dtype=xp.int64)
    for step in (32, 16, 8, 4, 2, 1):
        big = n >= (1 << step)
        y = y + xp.where(big, step, 0)
        n = xp.where(big, xp.right_shift(n, step), n)
    return xp.maximum(y + n, 1)        # n is now 0 or 1: the last bit


def _bit_length_z3(zx, v, a):
    """max(bitlen(|v|), 1) for |v| < 2^63: a binary search on |v| with if-then-else."""
    n, y = zx.abs(v), zx.num(0)
    for step in (32, 16, 8, 4, 2, 1):
        big = n >= (1 << step)
        y = y + zx.ite(big, step, 0)
        n = zx.ite(big, zx.shr(n, step), n)
    return zx.max(y + n, 1)


_unary("cvm_precision", 12,
       """y = bitlen(|x|) for x != 0, and 1 for x = 0 (1 -> 1, 2..3 -> 2, 4..7 -> 3).
       Integer-only (no log2). Output precision 6 (values <= 31 for 32-bit inputs).""",
       lambda v, a: max(bitlen(abs(v)), 1), _bit_length_kernel,
       precision=lambda precs, shapes, a: 6, z3=_bit_length_z3)


# ---------------------------------------------------------------------------------------------
# elemwise_add, elemwise_sub
# ---------------------------------------------------------------------------------------------

_same_shape_binary("elemwise_add", 13,
                   "y = a + b, exact, equal shapes required. Precision max(P0, P1) + 1.",
                   lambda x, y: x + y, lambda xp, a, b: wide(xp, a) + wide(xp, b))

_same_shape_binary("elemwise_sub", 14,
                   "y = a - b, exact, equal shapes required. Precision max(P0, P1) + 1.",
                   lambda x, y: x - y, lambda xp, a, b: wide(xp, a) - wide(xp, b))


# ---------------------------------------------------------------------------------------------
# clip, cvm_clip
# ---------------------------------------------------------------------------------------------

def _clip_check(a):
    require(a["a_min"] < a["a_max"], f"clip needs a_min < a_max, got {a['a_min']} and "
            f"{a['a_max']}")


def _clip_precision(precs, shapes, a):
    _clip_check(a)
    return number_precision(max(abs(a["a_min"]), abs(a["a_max"])))


_unary("clip", 15,
       """y = max(min(x, a_max), a_min); a_min < a_max, both in [-(2^31-1), 2^31-1].
       Precision GetNumberPrecision(max(|a_min|, |a_max|)) = bitlen(M + 1) + 1, which over-counts
       by one at M = 2^k - 1 (clip(+-127) is p9, clip(+-126) p8) and may be smaller than P0: the
       clipped range always fits it. M = 2^31 - 1 gives 33 (CVM rejects p > 32 at load).""",
       lambda v, a: max(min(v, a["a_max"]), a["a_min"]),
       lambda xp, x, *, a_min, a_max: xp.maximum(xp.minimum(wide(xp, x), a_max), a_min),
       attrs=(Attr("a_min", "int", lo=-INT31, hi=INT31), Attr("a_max", "int", lo=-INT31, hi=INT31)),
       precision=_clip_precision, check=_clip_check,
       z3=lambda zx, v, a: zx.clip(v, a["a_min"], a["a_max"]))

_unary("cvm_clip", 16,
       """y = clip(x, -R(p), R(p)) with p = the precision attribute, R(p) = 2^(p-1) - 1.
       Always symmetric: is_sign is accepted but ignored (as by every CVM kernel). Precision p.""",
       lambda v, a: _clamp(v, -bound(a["precision"]), bound(a["precision"])),
       lambda xp, x, *, precision, is_sign: clip_ints(xp, wide(xp, x), -bound(precision),
                                                       bound(precision)),
       attrs=(PRECISION, Attr("is_sign", "bool", default=True)),
       precision=lambda precs, shapes, a: a["precision"],
       z3=lambda zx, v, a: zx.clip(v, -bound(a["precision"]), bound(a["precision"])))


# ---------------------------------------------------------------------------------------------
# cvm_left_shift, cvm_right_shift
# ---------------------------------------------------------------------------------------------

def _left_shift_precision(precs, shapes, a):
    require(precs[0] + a["shift_bit"] <= 32, f"cvm_left_shift needs P0 + shift_bit <= 32, got "
            f"{precs[0]} + {a['shift_bit']}")
    return a["precision"]


_unary("cvm_left_shift", 17,
       """y = clip(x * 2^s, -R(p), R(p)), s = shift_bit, p = precision (CVM formal backend; CVM's
       cpu/gpu entry points fail). Requires P0 + s <= 32, so x * 2^s is exact. Precision p.""",
       lambda v, a: _clamp(v * 2 ** a["shift_bit"], -bound(a["precision"]), bound(a["precision"])),
       lambda xp, x, *, precision, shift_bit: clip_ints(
           xp, xp.left_shift(wide(xp, x), shift_bit), -bound(precision), bound(precision)),
       attrs=(PRECISION, SHIFT_BIT), precision=_left_shift_precision,
       z3=lambda zx, v, a: zx.clip(zx.shl(v, a["shift_bit"]), -bound(a["precision"]),
                                   bound(a["precision"])))


def _right_shift_scalar(v: int, a) -> int:
    s, r = a["shift_bit"], bound(a["precision"])
    return _clamp((v + 2 ** (s - 1)) // 2 ** s, -r, r)      # floor(v / 2^s + 1/2)


def _right_shift_kernel(xp, x, *, precision, shift_bit):
    t = xp.right_shift(xp.right_shift(wide(xp, x), shift_bit - 1) + 1, 1)   # arithmetic shifts
    return clip_ints(xp, t, -bound(precision), bound(precision))


_unary("cvm_right_shift", 18,
       """y = clip(T, -R(p), R(p)) with T = floor(x / 2^s + 1/2): round half up, toward +inf
       (s=1: 3 -> 2, -3 -> -1, -5 -> -2), computed as ((x >> (s-1)) + 1) >> 1 with arithmetic
       shifts. s = shift_bit in [1, 32], p = precision in [1, 32]. The formula holds for every s,
       s = 31 and 32 included (CVM formal backend; CVM's cpu shortcut x >> 31 is not followed).
       p = 1 gives zeros. Precision p.""",
       _right_shift_scalar, _right_shift_kernel,
       attrs=(PRECISION, SHIFT_BIT), precision=lambda precs, shapes, a: a["precision"],
       z3=lambda zx, v, a: zx.clip(zx.shr(v + (1 << (a["shift_bit"] - 1)), a["shift_bit"]),
                                   -bound(a["precision"]), bound(a["precision"])))
