"""qmatmul: the product of two integer tensors, each centred by its zero point, exactly
(ONNX QLinearMatMul / MatMulInteger with both operands computed in the graph: attention).

Leading (batch) dims broadcast as numpy's matmul does. The kernel is one batched GEMM in the
licensed dtype (float BLAS is exact while every partial sum stays below 2^24 / 2^53).
"""
from __future__ import annotations

from .base import Attr, OpDef, Ref, bound, precision_for, require, size_of, wide
from .nn import GEMM_DTYPES
from .quant import MAX_DATA_PRECISION, ZERO_POINT
from .registry import register
from .z3util import build


def _batch(a: tuple, b: tuple) -> tuple:
    """numpy's broadcast of the leading dims."""
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    out = []
    for x, y in zip(a, b):
        require(x == y or 1 in (x, y), f"qmatmul batch dims {a} and {b} do not broadcast")
        out.append(max(x, y))
    return tuple(out)


def _shape(shapes, a):
    x, y = shapes
    require(len(x) >= 2 and len(y) >= 2, f"qmatmul operands must be at least 2-D, got {x}, {y}")
    require(x[-1] == y[-2], f"qmatmul inner dims differ: {x} @ {y}")
    return _batch(x[:-2], y[:-2]) + (x[-2], y[-1])


def _span(precs, a):
    """The largest |x - zero_point| and |y - zero_point_b|."""
    require(max(precs) <= MAX_DATA_PRECISION,
            f"qmatmul operand precisions must be <= {MAX_DATA_PRECISION}, got {precs}")
    return bound(precs[0]) + abs(a["zero_point"]), bound(precs[1]) + abs(a["zero_point_b"])


def _acc_bound(precs, shapes, a, consts) -> int:
    u, v = _span(precs, a)
    return shapes[0][-1] * u * v


def _index(shape: tuple, out: tuple, i: tuple) -> tuple:
    """The index of an operand of ``shape`` read by output batch index ``i`` (broadcast)."""
    lead = len(out) - 2 - (len(shape) - 2)
    return tuple(0 if d == 1 else i[lead + k] for k, d in enumerate(shape[:-2]))


def _products(x, y, i, a, times):
    """times(x value, y value) for k in range(K), at output index ``i``."""
    out = _shape([x.shape, y.shape], a)
    bx, by = _index(x.shape, out, i), _index(y.shape, out, i)
    m, n = i[-2], i[-1]
    return [times(x.at(bx + (m, k)), y.at(by + (k, n))) for k in range(x.shape[-1])]


def _scalar(args, a):
    x, y = args
    return Ref.build(_shape([x.shape, y.shape], a), lambda i: sum(_products(
        x, y, i, a, lambda u, v: (u - a["zero_point"]) * (v - a["zero_point_b"]))))


def _batch_rule(attrs, ranks, limit):
    """An operand is batchable when its axis 0 is the output's: x always when it has the
    output's rank (its rows M at rank 2), w only as a true batch dim (rank >= 3)."""
    out = max(ranks)
    return tuple(k for k, r in enumerate(ranks) if r == out and (k == 0 or r >= 3))


def _kernel(xp, x, y, *, zero_point, zero_point_b, gemm="int64"):
    require(gemm in GEMM_DTYPES, f"unknown gemm path {gemm!r}")
    dt = getattr(xp, gemm)
    u = (wide(xp, x) - zero_point).astype(dt)
    v = (wide(xp, y) - zero_point_b).astype(dt)
    return xp.matmul(u, v).astype(xp.int64)


def _z3(zx, x, y, *, gemm=None, **a):
    return build(_shape([x.shape, y.shape], a), lambda i: zx.sum(_products(
        x, y, i, a, lambda u, v: (u - a["zero_point"]) * (v - a["zero_point_b"]))))


register(OpDef(
    name="qmatmul", opcode=113,
    doc="""Matrix product of two integer tensors centred by their zero points, exactly:
    Y[.., m, n] = sum_k (X[.., m, k] - zero_point) * (W[.., k, n] - zero_point_b), leading dims
    broadcast as numpy's matmul (both operands at least 2-D). Precision: operand precisions
    <= 16, p = precision_for(K * (R(P0) + |zero_point|) * (R(P1) + |zero_point_b|)).""",
    inputs=("x", "w"), outputs=("out",),
    attrs=(ZERO_POINT, Attr("zero_point_b", "int", default=0, lo=-(1 << 16), hi=1 << 16)),
    shape=_shape,
    precision=lambda precs, shapes, a: precision_for(
        shapes[0][-1] * _span(precs, a)[0] * _span(precs, a)[1]),
    cost=lambda shapes, a: 3 * shapes[0][-1],
    scalar=_scalar, kernel=_kernel, z3=_z3, acc_bound=_acc_bound, batch=_batch_rule,
))
