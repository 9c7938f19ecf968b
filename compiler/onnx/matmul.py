"""MatMul of two tensors computed in the graph (attention): MatMul (QDQ), QLinearMatMul and
MatMulInteger whose B is not a constant become one ``qmatmul`` (ops/matmul.py); a constant B
keeps the weight path of linear.py.

onnxruntime fuses DequantizeLinear -> MatMul -> QuantizeLinear into QLinearMatMul, whose u8
GEMM accumulates exactly in int32 and requantizes with the float32 ratio
fl(fl(s_a * s_b) / s_y) (MlasRequantizeOutput): the accumulator here carries those factors, so
the ``fp32`` requantize reproduces it bit for bit.
"""
from __future__ import annotations

from fractions import Fraction

from vm.errors import InvalidError

from . import linear
from .graph import Node
from .lower import Lowering
from .quantops import as_q, materialize, one_zero, qparams, renamed, requantize, type_range
from .values import Acc, Const, Int, Q, QConst

INT32 = linear.INT32


def _operand(ctx: Lowering, v, node: Node, which: str) -> Q:
    if not isinstance(v, Q):
        raise InvalidError(f"{node.describe()}: {which} must be a quantized tensor")
    v = materialize(ctx, v, node)
    if len(v.scale) != 1:
        raise InvalidError(f"{node.describe()}: {which} has per-channel scales")
    return v


def emit_qmatmul(ctx: Lowering, node: Node, a: Q, b: Q, out: str) -> str:
    """a @ b (ONNX MatMul shapes: a 1-D operand gains a unit axis, removed afterwards)."""
    sa, sb = ctx.shape(a.name), ctx.shape(b.name)
    x, w = a.name, b.name
    if len(sa) == 1:
        x = ctx.op("reshape", x, out=out + "#a2d", shape=[1, sa[0]])
    if len(sb) == 1:
        w = ctx.op("reshape", w, out=out + "#b2d", shape=[sb[0], 1])
    squeeze = len(sa) == 1 or len(sb) == 1
    y = ctx.op("qmatmul", x, w, out=out + ("#2d" if squeeze else ""),
               zero_point=one_zero(a, node), zero_point_b=one_zero(b, node))
    if squeeze:
        shape = ctx.shape(y)
        keep = list(shape[:-2]) + ([shape[-2]] if len(sa) > 1 else []) + \
            ([shape[-1]] if len(sb) > 1 else [])
        y = ctx.op("reshape", y, out=out, shape=keep or [1])
    return y


def _product_acc(name: str, a: Q, b: Q) -> Acc:
    return Acc(name, (Fraction(a.scale[0]) * Fraction(b.scale[0]),), 1,
               ("product", float(a.scale[0]), (float(b.scale[0]),)))


def matmul(ctx: Lowering, node: Node, args):
    """ai.onnx MatMul: weights (a dequantized constant B) or two activations."""
    if isinstance(args[1], (QConst, Const)):
        return linear.matmul(ctx, node, args)
    a = _operand(ctx, args[0], node, "A")
    b = _operand(ctx, args[1], node, "B")
    return _product_acc(emit_qmatmul(ctx, node, a, b, node.outputs[0]), a, b)


def qlinear_matmul(ctx: Lowering, node: Node, args):
    """QLinearMatMul (a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp)."""
    if isinstance(args[3], Const):
        return linear.qlinear_matmul(ctx, node, args)
    a = as_q(args[0], *qparams(node, args, 1)[:2], node)
    b = as_q(args[3], *qparams(node, args, 4)[:2], node)
    for v, which in ((a, "A"), (b, "B")):
        _operand(ctx, v, node, which)
    inner = renamed(node, "#acc")
    acc = _product_acc(emit_qmatmul(ctx, inner, a, b, inner.outputs[0]), a, b)
    y_scale, y_zero, dtype = qparams(node, args, 6)
    return requantize(ctx, acc, y_scale, int(y_zero[0]), type_range(dtype, node), node)


def matmul_integer(ctx: Lowering, node: Node, args):
    """MatMulInteger (a, b, a_zero_point?, b_zero_point?): the exact int32 product."""
    if isinstance(args[1], Const):
        return linear.matmul_integer(ctx, node, args)
    zeros = [linear._zero(args[k] if len(args) > k else None, node) for k in (2, 3)]
    a, b = (as_q(v, [1.0], z, node) for v, z in zip(args[:2], zeros))
    return Int(emit_qmatmul(ctx, node, a, b, node.outputs[0]), *INT32)
