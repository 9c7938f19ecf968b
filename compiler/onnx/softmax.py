"""Softmax inside the graph: onnxruntime's QLinearSoftmax, reproduced with integers (qsoftmax).

onnxruntime fuses every DequantizeLinear -> Softmax -> QuantizeLinear into QLinearSoftmax
(measured: any output scale, uint8 and int8, every opset): a 256-entry float32 table of
exp((i - 255 + b) * s_x), b = max(0, ln(FLT_MAX / D) - 5) / s_x computed in double, indexed by
each value's distance to its row maximum; a float32 sum of the row; q = fl(floor(1 / s_y) / S);
y = round_half_even(fl(t * q)) + z_y, saturated. The table is built here, at import time, as
(mantissa, exponent) integer pairs; qsoftmax (ops/softmax.py) does the rest in integers.
A Softmax whose result is not quantized stays at the output boundary (float_io applies it).
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from ops.softfloat import split
from vm.errors import InvalidError

from .graph import Node
from .layout import softmax as softmax_at_output
from .lower import Lowering
from .quantops import as_q, materialize, qparams, renamed, type_range
from .values import Int, Q

FLT_MAX = float(np.finfo(np.float32).max)
RESERVE = 5.0
"""onnxruntime keeps e^5 of headroom below FLT_MAX for the sum of D table entries."""


def softmax_table(x_scale: float, d: int) -> tuple[list[int], list[int]]:
    """onnxruntime's exp table for input scale ``x_scale`` and rows of ``d``, as the
    (mantissa, exponent) pairs of its float32 entries."""
    s = float(np.float32(x_scale))
    shift = max(0.0, math.log(FLT_MAX / d) - RESERVE) / s
    pairs = [split(Fraction(float(np.float32(math.exp((i - 255 + shift) * s)))))
             for i in range(256)]
    return [m for m, _ in pairs], [e for _, e in pairs]


def numerator(y_scale: float) -> int:
    """floor(1 / s_y) as onnxruntime computes it (in float32)."""
    return int(math.floor(np.float32(1) / np.float32(y_scale)))


def emit_qsoftmax(ctx: Lowering, node: Node, x: Q, axis: int, flatten: bool, y_scale,
                  y_zero: int, dtype: str, out: str):
    """qsoftmax of ``x`` along ``axis`` (``flatten``: over all axes from ``axis`` on, the
    opset < 13 semantics), quantized to (y_scale, y_zero, dtype)."""
    shape = ctx.shape(x.name)
    if len(x.scale) != 1:
        raise InvalidError(f"{node.describe()}: per-channel scales on a Softmax input")
    name = x.name
    if flatten and axis != len(shape) - 1:
        name = ctx.op("reshape", name, out=out + "#rows",
                      shape=[math.prod(shape[:axis]) or 1, math.prod(shape[axis:])])
        axis = 1
    mantissa, exponent = softmax_table(x.scale[0], ctx.shape(name)[axis])
    lo, hi = type_range(dtype, node)
    ys = numerator(y_scale)
    if not 1 <= ys < 1 << 24:
        raise InvalidError(f"{node.describe()}: output scale {float(y_scale)!r} is outside "
                           "(2^-24, 1]")
    y = ctx.op("qsoftmax", name, out=out if name == x.name else out + "#flat", axis=axis,
               mantissa=mantissa, exponent=exponent, numerator=ys, zero_point=y_zero,
               qmin=lo, qmax=hi)
    if name != x.name:
        y = ctx.op("reshape", y, out=out, shape=list(shape))
    return Q(y, (float(np.float32(y_scale)),), (y_zero,), lo, hi)


def _quantized_by(ctx: Lowering, node: Node):
    """(scale, zero, dtype) of the QuantizeLinear nodes that read every use of ``node``'s
    output, when they all agree; else None."""
    users = [n for n in ctx.graph.nodes if node.outputs[0] in n.inputs]
    if not users or node.outputs[0] in ctx.graph.outputs:
        return None
    params = set()
    for user in users:
        if (user.domain, user.op_type) != ("", "QuantizeLinear") or \
                user.inputs[0] != node.outputs[0]:
            return None
        args = [ctx.values.get(i) if i else None for i in user.inputs]
        scale, zero, dtype = qparams(user, args, 1)
        if scale.size != 1 or zero.size != 1:
            return None
        params.add((float(scale[0]), int(zero[0]), dtype))
    return params.pop() if len(params) == 1 else None


def softmax(ctx: Lowering, node: Node, args):
    """ai.onnx Softmax: qsoftmax when its result is quantized (onnxruntime's QLinearSoftmax),
    else a float op at the output boundary."""
    target = _quantized_by(ctx, node) if isinstance(args[0], Q) else None
    if target is None:
        return softmax_at_output(ctx, node, args)
    x = materialize(ctx, args[0], node)
    ndim = len(ctx.shape(x.name))
    old = ctx.graph.opset < 13
    axis = node.attrs.get("axis", 1 if old else -1) % ndim
    return emit_qsoftmax(ctx, node, x, axis, old, *target, node.outputs[0])


def qlinear_softmax(ctx: Lowering, node: Node, args):
    """com.microsoft QLinearSoftmax (X, X_scale, X_zero_point, Y_scale, Y_zero_point)."""
    x = as_q(args[0], *qparams(node, args, 1)[:2], node)
    y_scale, y_zero, dtype = qparams(node, args, 3, "int8" if x.qmin < 0 else "uint8")
    ndim = len(ctx.shape(x.name))
    old = node.attrs.get("opset", 13) < 13
    axis = node.attrs.get("axis", 1 if old else -1) % ndim
    q = emit_qsoftmax(ctx, renamed(node, ""), x, axis, old, y_scale[0], int(y_zero[0]), dtype,
                      node.outputs[0])
    return Int(q.name, q.qmin, q.qmax)
