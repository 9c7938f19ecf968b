"""Broadcasting binary ops: broadcast_add/sub/mul/div/max/greater (CVM semantics, cvm.md 3.3).

Broadcasting follows numpy: shapes are right-aligned, the shorter one padded with leading 1s;
each dim pair must be equal or contain a 1; the output takes the other dim. For an output index
every input reads index min(i, dim - 1) on its right-aligned axes (0 on broadcast axes). Every op
weighs 1 gas per output element (CVM GetOps code). None is in-place.
"""
from __future__ import annotations

from .base import OpDef, Ref, require, trunc_div, wide
from .registry import register
from .z3util import build


def broadcast_shape(a: tuple, b: tuple, op: str = "broadcast") -> tuple:
    """The numpy broadcast of shapes ``a`` and ``b``; OpError when they do not broadcast."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    out = []
    for da, db in zip(a, b):
        require(da == db or da == 1 or db == 1,
                f"{op}: shapes {a} and {b} do not broadcast (dims {da} and {db})")
        out.append(da if db == 1 else db)
    return tuple(out)


def _source(t: Ref, out_index: tuple) -> tuple:
    """The index of ``t`` that output index ``out_index`` reads (right-aligned, clamped)."""
    tail = out_index[len(out_index) - t.ndim:]
    return tuple(min(i, d - 1) for i, d in zip(tail, t.shape))


def _broadcast(name, opcode, doc, fn, kernel, precision, z3):
    """Register a broadcasting binary op; ``fn(a, b)`` is the scalar semantics of one pair,
    ``z3(zx, a, b)`` its Z3 encoding."""
    def scalar(args, attrs):
        x, y = args
        return Ref.build(broadcast_shape(x.shape, y.shape, name),
                         lambda i: fn(x.at(_source(x, i)), y.at(_source(y, i))))

    register(OpDef(
        name=name, opcode=opcode, doc=doc, inputs=("a", "b"), outputs=("out",), attrs=(),
        shape=lambda shapes, a: broadcast_shape(shapes[0], shapes[1], name),
        precision=precision,
        cost=lambda shapes, a: 1,
        scalar=scalar,
        kernel=lambda xp, a, b: kernel(xp, wide(xp, a), wide(xp, b)),   # int64, then broadcast
        z3=lambda zx, x, y: build(broadcast_shape(x.shape, y.shape, name), lambda i: z3(
            zx, x.at(_source(x, i)), y.at(_source(y, i)))),
        batch="map",
    ))


def _div_kernel(xp, a, b):
    """Truncating division on int64: |a| // |b| with the sign fixed; 0 where b == 0."""
    zero = b == 0
    q = xp.abs(a) // xp.where(zero, 1, xp.abs(b))        # non-negative integer division
    q = xp.where((a < 0) != (b < 0), -q, q)
    return xp.where(zero, 0, q)


_broadcast("broadcast_add", 20, "y = a + b, exact. Precision max(P0, P1) + 1.",
           lambda x, y: x + y, lambda xp, a, b: a + b,
           lambda precs, shapes, a: max(precs) + 1, lambda zx, x, y: x + y)

_broadcast("broadcast_sub", 21, "y = a - b, exact. Precision max(P0, P1) + 1.",
           lambda x, y: x - y, lambda xp, a, b: a - b,
           lambda precs, shapes, a: max(precs) + 1, lambda zx, x, y: x - y)

_broadcast("broadcast_mul", 22, "y = a * b, exact. Precision P0 + P1.",
           lambda x, y: x * y, lambda xp, a, b: a * b,
           lambda precs, shapes, a: precs[0] + precs[1], lambda zx, x, y: x * y)

_broadcast("broadcast_div", 23,
           """y = a / b truncated toward zero (C division: -7/2 = -3, 7/-2 = -3, -7/-2 = 3), and
           y = 0 where b == 0 (no trap). |y| <= |a|, so precision P0.""",
           lambda x, y: 0 if y == 0 else trunc_div(x, y), _div_kernel,
           lambda precs, shapes, a: precs[0],
           lambda zx, x, y: zx.ite(y == 0, 0, zx.tdiv(x, y)))

_broadcast("broadcast_max", 24, "y = max(a, b). Precision max(P0, P1).",
           max, lambda xp, a, b: xp.maximum(a, b),
           lambda precs, shapes, a: max(precs), lambda zx, x, y: zx.max(x, y))

_broadcast("broadcast_greater", 25,
           """y = 1 if a > b else 0. Precision P0, the left operand's (CVM quirk, kept: it sets
           the output byte width), raised to 2 when P0 = 1, because 1 does not fit p1 (R(1) = 0);
           both are 1-byte widths, so CVM's output bytes are unchanged.""",
           lambda x, y: int(x > y), lambda xp, a, b: (a > b).astype(xp.int64),
           lambda precs, shapes, a: max(precs[0], 2), lambda zx, x, y: zx.flag(x > y))
