"""An average pool and its QuantizeLinear as onnxruntime runs them (QLinearAveragePool).

onnxruntime fuses DequantizeLinear -> AveragePool -> QuantizeLinear into QLinearAveragePool,
which computes in float32 step by step (ops/qpool.py). With the ``fp32`` rounding the pool
becomes ``qavg_pool2d``, those steps in integers; with ``half_even`` (or where the op's bounds
do not hold) it stays the exact sum and one requantize. A pool over the whole image with no
padding is QLinearGlobalAveragePool's formula in onnxruntime too (the ``mean`` requantize).
"""
from __future__ import annotations

import numpy as np

from ops.base import OpError
from vm.validate import infer

from .graph import Node
from .lower import Lowering
from .values import NO_CLAMP, Acc


def float32_pair(scale) -> tuple[int, int]:
    """(m, e) with m * 2^e the float32 value of ``scale`` exactly, m < 2^24."""
    m, e = np.frexp(np.float64(np.float32(scale)))
    return int(m * (1 << 24)), int(e) - 24


def pool_origin(sum_name: str, source: str, scale, zero: int, attrs: dict) -> tuple:
    """What an average pool's sum remembers of its input, for :func:`pooled`."""
    return (sum_name, source, float(np.float32(scale)), zero, tuple(sorted(attrs.items())))


def pooled(ctx: Lowering, v, scale, zero: int, qmin: int, qmax: int, node: Node) -> str | None:
    """The ``qavg_pool2d`` giving the average pool ``v`` quantized to (scale, zero), or None
    (not an untouched pool sum, per-channel, ``half_even``, or outside the op's bounds)."""
    origin = v.pool if isinstance(v, Acc) else None
    if (origin is None or ctx.rounding != "fp32" or origin[0] != v.name
            or v.clamp != NO_CLAMP or len(scale) != 1):
        return None
    _, source, s_x, zero_in, attrs = origin
    (mx, ex), (my, ey) = float32_pair(s_x), float32_pair(scale[0])
    attrs = dict(attrs, zero_point=zero_in, scale_m=mx, scale_e=ex, out_m=my, out_e=ey,
                 zero_point_out=zero, qmin=qmin, qmax=qmax)
    t = ctx.b.tensor(source)
    try:
        infer("qavg_pool2d", [t.shape], [t.precision], attrs, ctx.b.semantics)
    except OpError:
        return None
    return ctx.op("qavg_pool2d", source, out=node.outputs[0], **attrs)
