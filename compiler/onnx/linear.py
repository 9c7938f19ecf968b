"""Linear nodes: Conv, Gemm, MatMul (QDQ), QLinearConv, QLinearMatMul, QGemm (QOperator),
ConvInteger, MatMulInteger.

Each becomes one qconv2d / qdense on the integer activation with its zero point as an
attribute (exact); weights are the constant integers q_w - z_w; the bias is the int32 bias
when its scale is ORT's s_x * s_w, else the real bias rounded (half to even) to that scale.
The result is an :class:`Acc` whose scale is s_x * s_w (per output channel); QLinear* nodes
requantize it at once.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from vm.errors import InvalidError

from .fixed import fl32, round_half_even
from .graph import Node
from .lower import Lowering, constant, dequantized_const
from .quantops import (add, as_q, materialize, one_zero, qparams, real_value, renamed, requantize,
                       rescale, type_range)
from .values import Acc, Const, FloatIn, Int, Q, QConst, describe
from .window import window

INT32 = ((-(1 << 31) + 1), (1 << 31) - 1)


def _activation(ctx: Lowering, v, node: Node) -> Q:
    if isinstance(v, FloatIn):
        raise InvalidError(f"{node.describe()}: its input {v.name!r} is a float tensor: the "
                           "model is not quantized (quantize it first: detvm quantize)")
    if not isinstance(v, Q):
        raise InvalidError(f"{node.describe()}: the data input must be quantized "
                           f"(it is {describe(v)})")
    v = materialize(ctx, v, node)
    if len(v.scale) != 1:
        raise InvalidError(f"{node.describe()}: per-channel activation scales are not supported")
    return v


def _weights(w: QConst, out_axis: int, node: Node) -> tuple[np.ndarray, np.ndarray]:
    """(q - z as int64, float32 scale per output channel or one)."""
    q = w.q.astype(np.int64)
    zero, scale = w.zero, w.scale
    if (zero.size > 1 or scale.size > 1) and w.axis % q.ndim != out_axis:
        raise InvalidError(f"{node.describe()}: weight quantization axis {w.axis} is not the "
                           "output-channel axis")
    shape = [-1 if d == out_axis else 1 for d in range(q.ndim)]
    return q - (zero.reshape(shape) if zero.size > 1 else zero.reshape(())), scale


def _bias(b, s_x: float, s_w: np.ndarray, n: int, node: Node, beta: float = 1.0):
    """The int bias at scale s_x * s_w[c] per output channel, or None."""
    if b is None:
        return None
    acc = [Fraction(float(s_x)) * Fraction(float(s_w[c % s_w.size])) for c in range(n)]
    if isinstance(b, Const) and b.value.dtype.kind in "iu":       # QLinearConv / QGemm bias
        return np.broadcast_to(b.value.astype(np.int64).reshape(-1), (n,)).copy()
    if isinstance(b, QConst):
        q = np.broadcast_to((b.q.astype(np.int64) - b.zero).reshape(-1), (n,))
        sb = np.broadcast_to(b.scale.reshape(-1), (n,))
        if beta == 1 and all(fl32(sb[c]) == fl32(fl32(s_x) * fl32(s_w[c % s_w.size]))
                             for c in range(n)):
            return q.copy()
        real = [int(q[c]) * Fraction(float(sb[c])) for c in range(n)]
    elif isinstance(b, Const):
        real = [Fraction(float(v)) for v in np.broadcast_to(b.value.reshape(-1), (n,))]
    else:
        raise InvalidError(f"{node.describe()}: the bias must be a constant")
    return np.array([round_half_even(r * Fraction(beta) / a) for r, a in zip(real, acc)],
                    dtype=np.int64)


def _acc(name: str, s_x: float, s_w: np.ndarray, axis: int, alpha: float = 1.0) -> Acc:
    scales = tuple(Fraction(float(s_x)) * Fraction(float(s)) * Fraction(alpha) for s in s_w)
    ort = ("product", float(s_x), tuple(float(s) for s in s_w)) if alpha == 1 else None
    return Acc(name, scales, axis, ort)


# ---------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------

def emit_conv(ctx: Lowering, node: Node, x: Q, w_int: np.ndarray, bias) -> str:
    shape = ctx.shape(x.name)
    win = window(node, shape, w_int.shape[2:])
    zp, name = one_zero(x, node), x.name
    padding = win.begin
    if not win.symmetric:
        (t, l), (b, r) = win.begin, win.end
        name = ctx.op("pad", name, out=node.outputs[0] + "#pad", pads=[0, 0, t, l, 0, 0, b, r],
                      value=zp)
        padding = (0, 0)
    inputs = [name, ctx.const(w_int, node.outputs[0] + "#w")]
    if bias is not None:
        inputs.append(ctx.const(bias, node.outputs[0] + "#b"))
    return ctx.op("qconv2d", *inputs, out=node.outputs[0], channels=w_int.shape[0],
                  kernel_size=win.kernel, strides=win.strides, padding=padding,
                  dilation=win.dilations, groups=node.attrs.get("group", 1),
                  use_bias=bias is not None, zero_point=zp)


def conv(ctx: Lowering, node: Node, args):
    x = _activation(ctx, args[0], node)
    w = dequantized_const(args[1], node, "the weight")
    w_int, s_w = _weights(w, 0, node)
    bias = _bias(args[2] if len(args) > 2 else None, x.scale[0], s_w, w_int.shape[0], node)
    bias, s_w = _constant_channels(w_int, bias, s_w, ctx.rounding)
    w_int, bias = _silenced(node, x, w_int, bias, s_w, _next_scale(ctx, node))
    return _acc(emit_conv(ctx, node, x, w_int, bias), x.scale[0], s_w, 1)


SILENT_RATIO = Fraction(1, 1 << 33)
"""Below this requantize ratio any int32 accumulator rounds to 0 (|acc| * ratio < 1/4)."""


def _silenced(node: Node, x: Q, w_int: np.ndarray, bias, s_w, y_scale) -> tuple:
    """Weights and bias with zeros for the output channels whose requantize ratio is below
    2^-33: their output is the zero point for every int32 accumulator, in onnxruntime and in
    exact arithmetic. Quantizers give a channel of vanishing weights a vanishing scale and a
    bias saturated near 2^31, which would otherwise widen every accumulator of the layer.
    Another channel whose int32 accumulator could overflow is an error (onnxruntime's kernel
    adds the bias in int32: its result is not defined there)."""
    n = w_int.shape[0]
    if y_scale is not None:
        ratios = [Fraction(float(x.scale[0])) * Fraction(float(s_w[c % s_w.size]))
                  / Fraction(y_scale) for c in range(n)]
        silent = np.array([r < SILENT_RATIO for r in ratios])
        if silent.any():
            w_int, bias = w_int.copy(), None if bias is None else bias.copy()
            w_int[silent] = 0
            if bias is not None:
                bias[silent] = 0
    reach = max(one_zero(x, node) - x.qmin, x.qmax - one_zero(x, node))
    bound = np.abs(w_int).reshape(n, -1).sum(1) * reach + (0 if bias is None else np.abs(bias))
    if (bound > INT32[1]).any():
        c = int(np.argmax(bound))
        raise InvalidError(f"{node.describe()}: output channel {c} can overflow the int32 "
                           f"accumulator of onnxruntime's kernel (its bias is "
                           f"{0 if bias is None else int(bias[c])}): the result is not defined")
    return w_int, bias


CONSTANT_BIAS = 1 << 24
"""A channel of zero weights whose bias is this large is held as a smaller bias."""


def _constant_channels(w_int: np.ndarray, bias, s_w: np.ndarray, rounding: str) -> tuple:
    """(bias, weight scales): a channel of zero weights computes its bias alone; a large one
    is held as bias / 2^k with the scale times 2^k (exact in float32), so that it does not
    widen the layer's accumulator. ``fp32`` rounding: the bias rounded to float32 first, as
    onnxruntime's requantize does (so 2^k divides it); ``half_even``: k its trailing zeros."""
    if bias is None or s_w.size != w_int.shape[0]:
        return bias, s_w
    flat = w_int.reshape(w_int.shape[0], -1)
    big = [c for c in range(len(bias)) if not flat[c].any() and abs(int(bias[c])) >= CONSTANT_BIAS]
    if not big:
        return bias, s_w
    bias, s_w = bias.copy(), s_w.astype(np.float32).copy()
    for c in big:
        b = int(fl32(float(bias[c]))) if rounding == "fp32" else int(bias[c])
        k = (b & -b).bit_length() - 1 if b else 0
        bias[c], s_w[c] = b >> k, np.float32(np.ldexp(np.float64(s_w[c]), k))
    return bias, s_w


def _next_scale(ctx: Lowering, node: Node) -> float | None:
    """The scale of the QuantizeLinear that alone reads the node's output, if that is so."""
    readers = [n for n in ctx.graph.nodes if node.outputs[0] in n.inputs]
    if len(readers) == 1 and readers[0].op_type == "QuantizeLinear" and not readers[0].domain:
        scale = ctx.values.get(readers[0].inputs[1])
        if isinstance(scale, Const) and scale.value.size == 1:
            return float(scale.value.reshape(()))
    return None


def qlinear_conv(ctx: Lowering, node: Node, args):
    x_scale, x_zero, _ = qparams(node, args, 1)
    x = as_q(args[0], x_scale, x_zero, node)
    w_scale, w_zero, _ = qparams(node, args, 4)
    w = QConst(constant(args[3], node, "the weight"), w_scale, w_zero, 0)
    w_int, s_w = _weights(w, 0, node)
    bias = _bias(args[8] if len(args) > 8 else None, x.scale[0], s_w, w_int.shape[0], node)
    y_scale, y_zero, dtype = qparams(node, args, 6)
    bias, s_w = _constant_channels(w_int, bias, s_w, ctx.rounding)
    w_int, bias = _silenced(node, x, w_int, bias, s_w, float(y_scale[0]))
    acc = _acc(emit_conv(ctx, _inner(node), x, w_int, bias), x.scale[0], s_w, 1)
    return requantize(ctx, acc, y_scale, int(y_zero[0]), type_range(dtype, node), node)


def conv_integer(ctx: Lowering, node: Node, args):
    x_zero = args[2] if len(args) > 2 else None
    x = as_q(args[0], [1.0], _zero(x_zero, node), node)
    w_zero = args[3] if len(args) > 3 and args[3] is not None else Const(np.zeros(1, np.int64))
    w = QConst(constant(args[1], node, "the weight"), np.ones(1, np.float32),
               constant(w_zero, node, "w_zero_point").astype(np.int64).reshape(-1), 0)
    return Int(emit_conv(ctx, node, x, _weights(w, 0, node)[0], None), *INT32)


def _zero(v, node: Node) -> np.ndarray:
    return np.zeros(1, np.int64) if v is None else \
        constant(v, node, "a zero point").astype(np.int64).reshape(-1)


def _inner(node: Node) -> Node:
    return renamed(node, "#acc")


# ---------------------------------------------------------------------------------------------
# Gemm and MatMul
# ---------------------------------------------------------------------------------------------

def emit_matmul(ctx: Lowering, node: Node, x: Q, w_int: np.ndarray, bias) -> str:
    """x [..., K] @ w_int [K, N] (+ bias): one qdense on the rows of x, or one per batch
    when w_int is batched [B, K, N]."""
    shape, zp = ctx.shape(x.name), one_zero(x, node)
    out = node.outputs[0]
    if w_int.ndim == 2:
        return _rows(ctx, x.name, shape, zp, w_int, bias, out)
    if w_int.ndim != 3 or len(shape) != 3 or shape[0] != w_int.shape[0]:
        raise InvalidError(f"{node.describe()}: batched MatMul shapes {shape} @ {w_int.shape} "
                           "are not supported")
    parts = []
    for k in range(shape[0]):
        row = ctx.op("strided_slice", x.name, out=f"{out}#{k}", begin=[k], end=[k + 1])
        parts.append(_rows(ctx, row, (1,) + shape[1:], zp, w_int[k], bias, f"{out}#{k}"))
    return ctx.op("concatenate", *parts, out=out, axis=0)


def _rows(ctx: Lowering, name: str, shape, zp: int, w_int, bias, out: str) -> str:
    k, n = w_int.shape
    if len(shape) != 2:
        name = ctx.op("reshape", name, out=out + "#2d", shape=[-1, k])
    inputs = [name, ctx.const(w_int.T, out + "#w")]
    if bias is not None:
        inputs.append(ctx.const(bias, out + "#b"))
    y = ctx.op("qdense", *inputs, out=out + ("#2d_out" if len(shape) != 2 else ""), units=n,
               use_bias=bias is not None, zero_point=zp)
    return y if len(shape) == 2 else ctx.op("reshape", y, out=out, shape=[*shape[:-1], n])


def matmul(ctx: Lowering, node: Node, args):
    x = _activation(ctx, args[0], node)
    w = dequantized_const(args[1], node, "B")
    w_int, s_w = _weights(w, w.q.ndim - 1, node)
    name = emit_matmul(ctx, node, x, w_int, None)
    return _acc(name, x.scale[0], s_w, len(ctx.shape(name)) - 1)


def qlinear_matmul(ctx: Lowering, node: Node, args):
    a = as_q(args[0], *qparams(node, args, 1)[:2], node)
    b_scale, b_zero, _ = qparams(node, args, 4)
    b = constant(args[3], node, "B")
    w_int, s_w = _weights(QConst(b, b_scale, b_zero, b.ndim - 1), b.ndim - 1, node)
    name = emit_matmul(ctx, _inner(node), a, w_int, None)
    acc = _acc(name, a.scale[0], s_w, len(ctx.shape(name)) - 1)
    y_scale, y_zero, dtype = qparams(node, args, 6)
    return requantize(ctx, acc, y_scale, int(y_zero[0]), type_range(dtype, node), node)


def matmul_integer(ctx: Lowering, node: Node, args):
    a = as_q(args[0], [1.0], _zero(args[2] if len(args) > 2 else None, node), node)
    b = constant(args[1], node, "B")
    b_zero = _zero(args[3] if len(args) > 3 else None, node)
    w_int, _ = _weights(QConst(b, np.ones(1, np.float32), b_zero, b.ndim - 1), b.ndim - 1, node)
    return Int(emit_matmul(ctx, node, a, w_int, None), *INT32)


def _gemm(ctx: Lowering, node: Node, x: Q, w: QConst, c) -> Acc:
    a = node.attrs
    name = x.name
    if a.get("transA", 0):
        name = ctx.op("transpose", name, out=node.outputs[0] + "#t", axes=[1, 0])
        x = Q(name, x.scale, x.zero, x.qmin, x.qmax)
    trans_b = a.get("transB", 0)
    w_int, s_w = _weights(w, 0 if trans_b else 1, node)
    w_int = w_int.T if trans_b else w_int
    bias = _bias(c, x.scale[0], s_w, w_int.shape[1], node, a.get("beta", 1.0))
    out = emit_matmul(ctx, node, x, w_int, bias)
    return _acc(out, x.scale[0], s_w, 1, a.get("alpha", 1.0))


def gemm(ctx: Lowering, node: Node, args):
    x = _activation(ctx, args[0], node)
    return _gemm(ctx, node, x, dequantized_const(args[1], node, "B"),
                 args[2] if len(args) > 2 else None)


def qgemm(ctx: Lowering, node: Node, args):
    """com.microsoft QGemm: (A, a_scale, a_zp, B, b_scale, b_zp, C?, y_scale?, y_zp?)."""
    a = as_q(args[0], *qparams(node, args, 1)[:2], node)
    b_scale, b_zero, _ = qparams(node, args, 4)
    b = constant(args[3], node, "B")
    axis = 0 if node.attrs.get("transB", 0) else 1
    has_y = len(args) > 7 and args[7] is not None
    acc = _gemm(ctx, _inner(node) if has_y else node, a, QConst(b, b_scale, b_zero, axis),
                args[6] if len(args) > 6 else None)
    if not has_y:
        return acc
    y_scale, y_zero, dtype = qparams(node, args, 7, "int8" if a.qmin < 0 else "uint8")
    return requantize(ctx, acc, y_scale, int(y_zero[0]), type_range(dtype, node), node)


# ---------------------------------------------------------------------------------------------
# BatchNormalization (not folded): a per-channel affine map of a Q or an Acc
# ---------------------------------------------------------------------------------------------

def batch_norm(ctx: Lowering, node: Node, args):
    """y = a_c * x + b_c, a_c = gamma / sqrt(var + eps), b_c = beta - mean * a_c: the scale
    goes into the accumulator's per-channel scale (|a_c|, the sign by an exact multiply by
    +-1), b_c is added rounded to that scale. A Q input is first made the exact accumulator
    (q - zero) * 2^16 (scale s * 2^-16), so the rounded bias stays far below an LSB."""
    v = args[0]
    if not all(isinstance(p, (Const, QConst)) for p in args[1:5]):
        raise InvalidError(f"{node.describe()}: the batch-norm parameters must be constants")
    gamma, beta, mean, var = (real_value(p) for p in args[1:5])
    a = gamma / np.sqrt(var + node.attrs.get("epsilon", 1e-5))
    if isinstance(v, Q):
        v = materialize(ctx, v, node)
        fine = Fraction(float(v.scale[0])) / 2 ** 16
        v = Acc(rescale(ctx, v, fine, renamed(node, "#x")), (fine,) * len(v.scale), v.axis)
    elif isinstance(v, Acc):
        v = materialize(ctx, v, node)
    else:
        raise InvalidError(f"{node.describe()}: needs a quantized input")
    if len(v.scale) > 1 and v.axis != 1:
        raise InvalidError(f"{node.describe()}: per-channel scales on axis {v.axis}")
    name = v.name
    if (a < 0).any():
        sign = np.where(a < 0, -1, 1).reshape([-1] + [1] * (len(ctx.shape(name)) - 2))
        name = ctx.op("broadcast_mul", name, ctx.const(sign, node.outputs[0] + "#sign"),
                      out=node.outputs[0] + "#signed")
    scales = tuple(v.scale[c % len(v.scale)] * Fraction(float(abs(a[c]))) for c in range(len(a)))
    acc = Acc(name, scales, 1)
    bias = Const((beta - mean * a).reshape([-1] + [1] * (len(ctx.shape(name)) - 2)))
    return add(ctx, node, [acc, bias])
