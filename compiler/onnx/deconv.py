"""ConvTranspose (QDQ): one qconv2d_transpose on the integer activation, like Conv.

The weight (C, M/groups, KH, KW) is the constant q - z (its per-channel scales on axis 1, the
output channels of a group); the result is an accumulator of scale s_x * s_w[m mod M/groups],
quantized by the QuantizeLinear that follows. onnxruntime has no quantized ConvTranspose on
the CPU: it runs this one in float32 (DequantizeLinear, ConvTranspose, QuantizeLinear). With
``fp32`` rounding, a ConvTranspose without bias whose every reader is one per-tensor
QuantizeLinear becomes one qconv2d_transpose with rounding=fp32, which reproduces those float32
steps in integers (ops/deconv32.py) and yields the quantized tensor; otherwise (``half_even``,
a bias, another reader) the sum is exact and one requantize follows, so an output within
float32 rounding of a tie can differ from onnxruntime's by 1 LSB.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from ops.softfloat import split
from vm.errors import InvalidError

from .graph import Node
from .linear import _activation, _bias, _weights
from .lower import Lowering, dequantized_const
from .quantops import type_range
from .softmax import _quantized_by
from .values import Acc, Q


def transpose_crops(a: dict, size: tuple, kernel: tuple) -> tuple[list[int], list[int]]:
    """(crop_begin, crop_end) per spatial axis from a ConvTranspose's attributes ``a``: pads,
    output_padding, output_shape and auto_pad (ONNX's rules)."""
    strides = list(a.get("strides", [1, 1]))
    dil = list(a.get("dilations", [1, 1]))
    extra = list(a.get("output_padding", [0, 0]))
    pads = list(a.get("pads", [0, 0, 0, 0]))
    auto = a.get("auto_pad", "NOTSET")
    wanted = list(a.get("output_shape", []))[-2:]
    begin, end = pads[:2], pads[2:]
    for k in range(2):
        full = (size[k] - 1) * strides[k] + (kernel[k] - 1) * dil[k] + 1
        if wanted or auto in ("SAME_UPPER", "SAME_LOWER"):
            out = wanted[k] if wanted else size[k] * strides[k]
            total = full + extra[k] - out
            small = total // 2
            begin[k], end[k] = (small, total - small) if auto == "SAME_UPPER" else \
                (total - small, small)
        elif auto == "VALID":
            begin[k], end[k] = 0, 0
        end[k] -= extra[k]
    return begin, end


def conv_transpose(ctx: Lowering, node: Node, args):
    x = _activation(ctx, args[0], node)
    w = dequantized_const(args[1], node, "the weight")
    if w.q.ndim != 4:
        raise InvalidError(f"{node.describe()}: only 2-D ConvTranspose (4-D weight) is "
                           f"supported, got a {w.q.ndim}-D weight")
    groups = node.attrs.get("group", 1)
    w_int, s_w = _weights(w, 1, node)
    channels = w_int.shape[1] * groups
    s_out = np.array([s_w[m % w_int.shape[1] % s_w.size] for m in range(channels)],
                     dtype=np.float32)
    bias = _bias(args[2] if len(args) > 2 else None, x.scale[0], s_out, channels, node)
    begin, end = transpose_crops(node.attrs, ctx.shape(x.name)[2:], w_int.shape[2:])
    inputs = [x.name, ctx.const(w_int, node.outputs[0] + "#w")]
    if bias is not None:
        inputs.append(ctx.const(bias, node.outputs[0] + "#b"))
    common = dict(out=node.outputs[0], channels=channels, kernel_size=list(w_int.shape[2:]),
                  strides=node.attrs.get("strides", [1, 1]),
                  dilation=node.attrs.get("dilations", [1, 1]), groups=groups,
                  crop_begin=begin, crop_end=end, use_bias=bias is not None,
                  zero_point=int(x.zero[0]))
    target = _quantized_by(ctx, node) if ctx.rounding == "fp32" and bias is None else None
    if target is not None and _normal(x.scale[0], target[0], *np.asarray(s_w).reshape(-1)):
        return _as_onnxruntime(ctx, node, inputs, common, x.scale[0], s_w, target)
    name = ctx.op("qconv2d_transpose", *inputs, **common)
    scales = tuple(Fraction(float(x.scale[0])) * Fraction(float(s)) for s in s_out)
    return Acc(name, scales if s_w.size > 1 else scales[:1], 1)


def _float32(v) -> tuple[int, int]:
    """The (mantissa, exponent) of a float32 scale."""
    return split(Fraction(float(np.float32(v))))


def _normal(*scales) -> bool:
    """Whether every scale is a positive normal float32 (rounding=fp32 needs it)."""
    return all(np.float32(s) >= np.finfo(np.float32).tiny for s in scales)


def _as_onnxruntime(ctx: Lowering, node: Node, inputs, common, x_scale, s_w, target) -> Q:
    """One qconv2d_transpose with rounding=fp32: onnxruntime's float32 path, quantized to the
    reading QuantizeLinear's (scale, zero point, type)."""
    y_scale, y_zero, dtype = target
    lo, hi = type_range(dtype, node)
    ws = [_float32(s) for s in np.asarray(s_w, dtype=np.float32).reshape(-1)]
    name = ctx.op("qconv2d_transpose", *inputs, **common, rounding="fp32",
                  x_scale=list(_float32(x_scale)), w_mantissa=[m for m, _ in ws],
                  w_exponent=[e for _, e in ws], y_scale=list(_float32(y_scale)),
                  y_zero_point=y_zero, qmin=lo, qmax=hi)
    return Q(name, (float(np.float32(y_scale)),), (y_zero,), lo, hi)
