"""Quantize / dequantize, requantization, clamps, additions, concatenation and average pools.

Every change of scale is one ``requantize`` instruction whose (multiplier, shift) pairs come
from compiler/onnx/fixed.py; zero points are exact integer attributes.
"""
from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np

from ops.base import bound
from ops.pool import pool_lcm
from vm.errors import InvalidError

from .avgpool import pool_origin, pooled
from .fixed import ort_ratios, pairs, quantize_real
from .graph import Node
from .lower import Lowering, constant
from .values import (NO_CLAMP, TYPE_RANGES, Acc, Const, FloatIn, Int, Q, QConst, describe,
                     with_clamp)
from .window import window

COMMON_BITS = 16
"""Fraction bits kept below the larger operand scale when operands of different scales are
added or concatenated (error <= 2^-17 of that scale before the final requantize)."""


# ---------------------------------------------------------------------------------------------
# Quantization parameters
# ---------------------------------------------------------------------------------------------

def qparams(node: Node, args: list, k: int, default_dtype: str = "uint8"):
    """(scales float32 1-D, zero points int64 1-D, element type) from inputs k, k + 1."""
    scale = np.asarray(constant(args[k], node, "a scale"), dtype=np.float32).reshape(-1)
    if len(args) > k + 1 and args[k + 1] is not None:
        zp = constant(args[k + 1], node, "a zero point")
        dtype = zp.dtype.name
    else:
        zp, dtype = np.zeros(1, np.int64), _output_dtype(node, default_dtype)
    if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise InvalidError(f"{node.describe()}: scales must be positive and finite")
    zp = np.asarray(zp)
    if zp.dtype.kind in "fc" or "float" in zp.dtype.name:   # float8 too: NaN casts differ
        # by machine (int4 and int2, ml_dtypes' kind 'V', are integers)
        raise InvalidError(f"{node.describe()}: zero points of element type {dtype} are not "
                           f"supported (integers only)")
    return scale, zp.astype(np.int64).reshape(-1), dtype


def _output_dtype(node: Node, default: str) -> str:
    code = node.attrs.get("output_dtype", 0)
    if not code:
        return default
    from .graph import _dtype, onnx_module
    return _dtype(onnx_module(), code)


def type_range(dtype: str, node: Node) -> tuple[int, int]:
    if dtype not in TYPE_RANGES:
        raise InvalidError(f"{node.describe()}: element type {dtype} is not supported")
    return TYPE_RANGES[dtype]


def one_zero(v: Q, node: Node) -> int:
    if len(set(v.zero)) != 1:
        raise InvalidError(f"{node.describe()}: per-channel zero points of an activation are "
                           "only supported at an output")
    return v.zero[0]


def _axis(node: Node, ndim: int) -> int:
    if node.attrs.get("block_size", 0):
        raise InvalidError(f"{node.describe()}: blocked quantization is not supported")
    axis = node.attrs.get("axis", 1)
    return axis + ndim if axis < 0 else axis


def as_q(v, scale, zero, node: Node, axis: int = 1) -> Q:
    """The integer tensor ``v`` read with the given scale and zero point (QLinear* inputs)."""
    if not isinstance(v, Int):
        raise InvalidError(f"{node.describe()}: expected a quantized integer tensor")
    return Q(v.name, tuple(float(s) for s in scale), tuple(int(z) for z in zero), v.qmin,
             v.qmax, axis)


# ---------------------------------------------------------------------------------------------
# QuantizeLinear, DequantizeLinear
# ---------------------------------------------------------------------------------------------

def dequantize_linear(ctx: Lowering, node: Node, args):
    x = args[0]
    scale, zero, _ = qparams(node, args, 1)
    if isinstance(x, Const):
        if x.value.dtype.kind not in "iu":
            raise InvalidError(f"{node.describe()}: {x.value.dtype} input is not supported")
        return QConst(x.value, scale, zero, _axis(node, x.value.ndim))
    if isinstance(x, Int):
        return as_q(x, scale, zero, node, _axis(node, len(ctx.shape(x.name))))
    raise InvalidError(f"{node.describe()}: input must be an integer tensor")


def quantize_linear(ctx: Lowering, node: Node, args):
    v = args[0]
    scale, zero, dtype = qparams(node, args, 1)
    qmin, qmax = type_range(dtype, node)
    if isinstance(v, FloatIn):
        return ctx.quantize_input(v, scale, zero, _axis(node, len(v.shape)), dtype)
    if isinstance(v, Const):
        q = np.rint(v.value.astype(np.float32) / _bcast(scale, node, v.value.ndim))
        return Const(np.clip(q + _bcast(zero, node, v.value.ndim), qmin, qmax).astype(dtype))
    if isinstance(v, (Q, Acc)):
        axis = _axis(node, len(ctx.shape(v.name)))
        return requantize(ctx, v, scale, int(zero[0]) if len(set(zero)) == 1 else None,
                          (qmin, qmax), node, axis)
    raise InvalidError(f"{node.describe()}: cannot quantize {describe(v)}")


def _bcast(values, node: Node, ndim: int):
    if values.size == 1:
        return values.reshape(())
    axis = _axis(node, ndim)
    return values.reshape([-1 if d == axis else 1 for d in range(ndim)])


def requantize(ctx: Lowering, v, scale, zero: int | None, qrange, node: Node,
               axis: int | None = None) -> Int:
    """``v`` (a Q or Acc) quantized to (scale, zero) within ``qrange``: one requantize."""
    if zero is None:
        raise InvalidError(f"{node.describe()}: per-channel output zero points are not supported")
    qmin, qmax = _clamped(v.clamp, scale, zero, qrange, node)
    name = pooled(ctx, v, scale, zero, qmin, qmax, node)
    if name is not None:
        return Int(name, *qrange)
    zin = one_zero(v, node) if isinstance(v, Q) else 0
    ins, outs = v.fractions(), [Fraction(float(s)) for s in scale]
    n = max(len(ins), len(outs))
    if len(ins) > 1 and len(outs) > 1 and (len(ins) != len(outs) or v.axis != axis):
        raise InvalidError(f"{node.describe()}: per-channel scales on different axes")
    ratios = [ins[c % len(ins)] / outs[c % len(outs)] for c in range(n)]
    ort = None
    if isinstance(v, Acc) and v.ort is not None and len(outs) == 1:
        ort = ort_ratios(v.ort, scale[0])
    if isinstance(v, Q) and set(ratios) == {1} and zin == zero \
            and qmin <= v.qmin and qmax >= v.qmax:
        return Int(v.name, *qrange)                       # the same integers
    ms = pairs(ratios, ctx.rounding, ort)
    name = ctx.op("requantize", v.name, out=node.outputs[0],
                  multiplier=[m for m, _ in ms], shift=[s for _, s in ms],
                  axis=v.axis if len(ins) > 1 else (1 if axis is None else axis),
                  zero_point_in=zin,
                  zero_point=zero, qmin=qmin, qmax=qmax, rounding=ctx.rounding)
    return Int(name, *qrange)


def _clamped(clamp, scale, zero: int, qrange, node: Node) -> tuple[int, int]:
    """The quantized range tightened by a pending real clamp (exact: rounding is monotonic)."""
    lo, hi = clamp
    if (math.isfinite(lo) and lo != 0 or math.isfinite(hi)) and len(scale) > 1:
        raise InvalidError(f"{node.describe()}: a clip before a per-channel quantization")
    qmin = max(qrange[0], quantize_real(lo, scale[0], zero)) if math.isfinite(lo) else qrange[0]
    qmax = min(qrange[1], quantize_real(hi, scale[0], zero)) if math.isfinite(hi) else qrange[1]
    return qmin, max(qmin, qmax)


# ---------------------------------------------------------------------------------------------
# Clamps: Relu, Clip (pending until the next QuantizeLinear)
# ---------------------------------------------------------------------------------------------

def relu(ctx: Lowering, node: Node, args):
    v = args[0]
    if isinstance(v, (Q, Acc)):
        return with_clamp(v, 0.0, math.inf)
    if isinstance(v, Int):
        return Int(ctx.op("relu", v.name, out=node.outputs[0]), max(v.qmin, 0), max(v.qmax, 0))
    raise InvalidError(f"{node.describe()}: its input is {describe(v)}: not supported")


def clip(ctx: Lowering, node: Node, args):
    lo = node.attrs.get("min", -math.inf)
    hi = node.attrs.get("max", math.inf)
    if len(args) > 1 and args[1] is not None:
        lo = float(constant(args[1], node, "min"))
    if len(args) > 2 and args[2] is not None:
        hi = float(constant(args[2], node, "max"))
    v = args[0]
    if isinstance(v, (Q, Acc)):
        return with_clamp(v, lo, hi)
    raise InvalidError(f"{node.describe()}: Clip of {describe(v)} is not supported")


def materialize(ctx: Lowering, v, node: Node | None):
    """``v`` with its pending clamp applied by an instruction (exact for Relu; a Clip bound
    that is not a multiple of the scale is rounded half to even)."""
    if v.clamp == NO_CLAMP:
        return v
    lo, hi = v.clamp
    out = node.outputs[0] + "#clip" if node is not None else v.name
    if isinstance(v, Acc) and (lo, hi) == (0.0, math.inf):
        return replace(v, name=ctx.op("relu", v.name, out=out), clamp=NO_CLAMP)
    if len(v.scale) > 1 and not (lo == 0 and hi == math.inf):
        raise InvalidError(f"{node.describe() if node else 'output'}: a clip of a per-channel "
                           "tensor is not supported here")
    zero = one_zero(v, node) if isinstance(v, Q) else 0
    scale = float(Fraction(v.scale[0]))
    rng = (v.qmin, v.qmax) if isinstance(v, Q) else (-bound(32), bound(32))
    a_min, a_max = _clamped(v.clamp, [scale], zero, rng, node)
    if a_min >= a_max:
        raise InvalidError(f"{node.describe() if node else 'output'}: the clip range is empty "
                           "at this scale")
    return replace(v, name=ctx.op("clip", v.name, out=out, a_min=a_min, a_max=a_max),
                   clamp=NO_CLAMP)


# ---------------------------------------------------------------------------------------------
# Add, Concat: operands brought to a common fine scale
# ---------------------------------------------------------------------------------------------

def rescale(ctx: Lowering, v, common: Fraction, node: Node) -> str:
    """``v`` as exact-up-to-rounding multiples of ``common`` (one half_even requantize)."""
    v = materialize(ctx, v, node)
    zin = one_zero(v, node) if isinstance(v, Q) else 0
    ratios = [s / common for s in v.fractions()]
    top = (bound(ctx.b.tensor(v.name).precision) + abs(zin)) * max(ratios)
    limit = math.ceil(top) + 1
    if limit > bound(31):
        raise InvalidError(f"{node.describe()}: operand scales too far apart to add exactly")
    ms = pairs(ratios, "half_even")
    return ctx.op("requantize", v.name, out=f"{node.outputs[0]}#{v.name}",
                  multiplier=[m for m, _ in ms], shift=[s for _, s in ms], axis=v.axis,
                  zero_point_in=zin, qmin=-limit, qmax=limit, rounding="half_even")


def common_scale(values) -> Fraction:
    return max(s for v in values for s in v.fractions()) / 2 ** COMMON_BITS


def add(ctx: Lowering, node: Node, args):
    a, b = args
    if isinstance(a, (Const, QConst)):
        a, b = b, a
    if not isinstance(a, (Q, Acc)) or not isinstance(b, (Q, Acc, Const, QConst)):
        raise InvalidError(f"{node.describe()}: Add needs a quantized operand")
    if isinstance(b, (Const, QConst)):
        return _add_const(ctx, node, a, b)
    common = common_scale([a, b])
    name = ctx.op("broadcast_add", rescale(ctx, a, common, node), rescale(ctx, b, common, node),
                  out=node.outputs[0])
    return Acc(name, (common,))


def real_value(c) -> np.ndarray:
    """The float64 values of a Const or a QConst (dequantized)."""
    if isinstance(c, QConst):
        shape = [-1 if d == c.axis % max(c.q.ndim, 1) else 1 for d in range(c.q.ndim)]
        per = lambda a: a.reshape(shape) if a.size > 1 else a.reshape(())
        return (c.q.astype(np.float64) - per(c.zero)) * per(c.scale.astype(np.float64))
    return np.asarray(c.value, dtype=np.float64)


def _add_const(ctx: Lowering, node: Node, v, c):
    """v + a constant: an accumulator keeps its scale (the usual bias add); a quantized
    tensor is first rescaled to a fine common scale. The constant is rounded (half to even)
    to that scale."""
    v = materialize(ctx, v, node)
    ndim = len(ctx.shape(v.name))
    if isinstance(v, Acc):
        name, scales = v.name, np.array([float(s) for s in v.scale], dtype=np.float64)
        if len(scales) > 1:
            scales = scales.reshape([-1 if d == v.axis else 1 for d in range(ndim)])
        result = v
    else:
        common = common_scale([v])
        name, scales, result = rescale(ctx, v, common, node), float(common), Acc("", (common,))
    q = np.rint(real_value(c) / scales).astype(np.int64)
    if q.ndim == 0:                          # a scalar: one element that broadcasts
        q = q.reshape((1,) * ndim)
    if q.size and int(np.abs(q).max()) > bound(31):
        raise InvalidError(f"{node.describe()}: the constant is too large for the scale")
    return replace(result, name=ctx.op("broadcast_add", name, ctx.const(q, f"{node.name}#c"),
                                       out=node.outputs[0]))


def concat(ctx: Lowering, node: Node, args):
    ndim = len(ctx.shape(args[0].name)) if hasattr(args[0], "name") else 0
    axis = node.attrs.get("axis", 1) % max(ndim, 1)
    if all(isinstance(v, Int) for v in args):
        name = ctx.op("concatenate", *[v.name for v in args], out=node.outputs[0], axis=axis)
        return Int(name, min(v.qmin for v in args), max(v.qmax for v in args))
    if not all(isinstance(v, (Q, Acc)) for v in args):
        raise InvalidError(f"{node.describe()}: Concat of constants is not supported")
    if all(isinstance(v, Q) and (v.scale, v.zero, v.clamp) == (args[0].scale, args[0].zero,
                                                               args[0].clamp) for v in args):
        name = ctx.op("concatenate", *[v.name for v in args], out=node.outputs[0], axis=axis)
        return replace(args[0], name=name, qmin=min(v.qmin for v in args),
                       qmax=max(v.qmax for v in args))
    if node.outputs[0] in ctx.graph.outputs and all(isinstance(v, Q) and len(v.scale) == 1
                                                    for v in args):
        return _output_concat(ctx, node, args, axis)
    common = common_scale(args)
    parts = [rescale(ctx, v, common, node) for v in args]
    return Acc(ctx.op("concatenate", *parts, out=node.outputs[0], axis=axis), (common,))


def _output_concat(ctx: Lowering, node: Node, args: list, axis: int) -> Q:
    """A graph output made by a float Concat of quantized tensors (``detvm quantize`` leaves
    a detector's head so): the integers concatenated, each index along ``axis`` keeping its
    input's scale and zero point (dequantized per index by float_io: exact)."""
    parts = [materialize(ctx, v, node) for v in args]
    sizes = [ctx.shape(v.name)[axis] for v in parts]
    name = ctx.op("concatenate", *[v.name for v in parts], out=node.outputs[0], axis=axis)
    return Q(name, tuple(v.scale[0] for v, n in zip(parts, sizes) for _ in range(n)),
             tuple(v.zero[0] for v, n in zip(parts, sizes) for _ in range(n)),
             min(v.qmin for v in parts), max(v.qmax for v in parts), axis)


def qlinear_concat(ctx: Lowering, node: Node, args):
    y_scale, y_zero, dtype = qparams(node, args, 0)
    parts = []
    for k in range(2, len(args), 3):
        scale, zero, _ = qparams(node, args, k + 1)
        q = as_q(args[k], scale, zero, node)
        parts.append(requantize(ctx, q, y_scale, int(y_zero[0]), type_range(dtype, node),
                                renamed(node, f"#{k}")).name)
    lo, hi = type_range(dtype, node)
    return Int(ctx.op("concatenate", *parts, out=node.outputs[0],
                      axis=node.attrs.get("axis", 1) % len(ctx.shape(parts[0]))), lo, hi)


def qlinear_add(ctx: Lowering, node: Node, args):
    a, b = (_operand(args[k], *qparams(node, args, k + 1)[:2], node) for k in (0, 3))
    summed = add(ctx, renamed(node, "#sum"), [a, b])
    scale, zero, dtype = qparams(node, args, 6)
    return requantize(ctx, summed, scale, int(zero[0]), type_range(dtype, node), node)


def _operand(v, scale, zero, node: Node):
    """A QLinear* input: an integer tensor read as a Q, or a constant as a QConst."""
    if isinstance(v, Const):
        return QConst(v.value, scale, zero)
    return as_q(v, scale, zero, node)


def renamed(node: Node, suffix: str) -> Node:
    """``node`` whose first output name gets ``suffix`` (for inner instructions)."""
    return replace(node, outputs=[node.outputs[0] + suffix])


# ---------------------------------------------------------------------------------------------
# Average pools: sum_pool2d (exact numerator) then the division folded into the scale
# ---------------------------------------------------------------------------------------------

def _sum_pool(ctx: Lowering, node: Node, v, kernel=None, include_pad=False) -> Acc:
    if not isinstance(v, Q):
        raise InvalidError(f"{node.describe()}: average pooling needs a quantized input")
    v = materialize(ctx, v, node)
    shape = ctx.shape(v.name)
    w = window(node, shape, kernel)
    if not w.symmetric or w.dilations != (1, 1):
        raise InvalidError(f"{node.describe()}: asymmetric pads or dilations are not supported")
    attrs = dict(pool_size=w.kernel, strides=w.strides, padding=w.begin,
                 count_include_pad=bool(include_pad))
    lcm = pool_lcm(shape, attrs)
    name = ctx.op("sum_pool2d", v.name, out=node.outputs[0], zero_point=one_zero(v, node),
                  **attrs)
    whole = w.kernel == tuple(shape[2:]) and w.begin == (0, 0) and len(v.scale) == 1
    origin = (pool_origin(name, v.name, v.scale[0], one_zero(v, node), attrs)
              if not whole and len(v.scale) == 1 else None)
    return Acc(name, tuple(s / lcm for s in v.fractions()), v.axis,
               ("mean", v.scale[0], lcm) if whole else None, pool=origin)


def average_pool(ctx: Lowering, node: Node, args):
    return _sum_pool(ctx, node, args[0], None, node.attrs.get("count_include_pad", 0))


def global_average_pool(ctx: Lowering, node: Node, args):
    return _sum_pool(ctx, node, args[0], ctx.shape(args[0].name)[2:], True)


def qlinear_pool(is_global: bool):
    """com.microsoft QLinearAveragePool / QLinearGlobalAveragePool (NCHW only)."""
    def handler(ctx: Lowering, node: Node, args):
        if node.attrs.get("channels_last", 0):
            raise InvalidError(f"{node.describe()}: channels_last is not supported")
        q = as_q(args[0], *qparams(node, args, 1)[:2], node)
        inner = renamed(node, "#sum")
        acc = (_sum_pool(ctx, inner, q, ctx.shape(q.name)[2:], True) if is_global else
               _sum_pool(ctx, inner, q, None, node.attrs.get("count_include_pad", 0)))
        scale, zero, dtype = qparams(node, args, 3)
        return requantize(ctx, acc, scale, int(zero[0]), type_range(dtype, node), node)
    return handler
