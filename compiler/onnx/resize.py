"""Resize (opset 10 and up; Upsample): nearest and linear, on integer or quantized tensors.

The source coordinate of every output index is computed here, at compile time, in float32 as
onnxruntime computes it (its coordinate transformation and nearest-rounding functions), so the
index maps are onnxruntime's. Nearest resizing then only moves integers: one ``take`` per
resized axis (``upsampling`` for an integer factor on both spatial axes), bit-exact with
onnxruntime, which runs it on the 8-bit tensor itself once it drops the Q/DQ pair. A linear
resize becomes ``resize_linear``: onnxruntime's float32 weights rounded once to integers of
2^-bits, the exact weighted sum, then the scale change of a requantize (one named rounding).
onnxruntime computes a linear resize of a dequantized tensor in float32, so ties of the exact
interpolation may round the other way there (docs/onnx.md gives the measured agreement).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from ops.base import bitlen, bound
from vm.errors import InvalidError

from .graph import Node
from .lower import Lowering, constant
from .quantops import materialize, one_zero
from .values import Acc, Const, Int, Q

f32 = np.float32
LINEAR_BITS = 12
TIE = f32(1e-6)
"""onnxruntime (1.32) takes a coordinate within 1e-6 of a half as a tie of the round_prefer_*
nearest modes (measured: 7.4999995 rounds up under round_prefer_ceil)."""
COORDINATE_MODES = ("half_pixel", "asymmetric", "pytorch_half_pixel", "tf_half_pixel_for_nn",
                    "align_corners")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


@dataclass(frozen=True)
class Plan:
    """How one axis is resized: onnxruntime's float32 scale and the output length."""
    size: int
    out: int
    scale: np.float32


def source_coordinate(mode: str, o: int, p: Plan) -> np.float32:
    """onnxruntime's GetOriginalCoordinateFromResizedCoordinate, in float32."""
    x, s = f32(o), p.scale
    if mode == "asymmetric":
        return x / s
    if mode == "pytorch_half_pixel":
        return (x + f32(0.5)) / s - f32(0.5) if p.out > 1 else f32(0)
    if mode == "tf_half_pixel_for_nn":
        return (x + f32(0.5)) / s
    if mode == "align_corners":
        return f32(0) if p.out == 1 else x * f32(p.size - 1) / f32(p.out - 1)
    return (x + f32(0.5)) / s - f32(0.5)                    # half_pixel


def nearest_index(mode: str, x: np.float32, downsample: bool) -> int:
    """onnxruntime's GetNearestPixelFromOriginal (before clamping)."""
    if mode == "simple":                                   # opset 10 Resize / Upsample
        return math.ceil(x) if downsample else int(x)
    if mode == "floor":
        return math.floor(x)
    if mode == "ceil":
        return math.ceil(x)
    if mode in ("round_prefer_floor", "round_prefer_ceil") and \
            abs(x - f32(math.floor(x)) - f32(0.5)) <= TIE:
        return math.floor(x) if mode == "round_prefer_floor" else math.ceil(x)
    return int(math.copysign(math.floor(abs(float(x)) + 0.5), float(x)))   # std::round


def nearest_map(p: Plan, coordinate: str, nearest: str) -> list[int]:
    """onnxruntime's input index of every output index (one-to-one when the scale is 1)."""
    if p.scale == 1:
        return list(range(p.out))
    return [min(max(nearest_index(nearest, source_coordinate(coordinate, o, p), p.scale < 1),
                    0), p.size - 1) for o in range(p.out)]


def linear_map(p: Plan, coordinate: str, bits: int) -> tuple[list[int], list[int]]:
    """(index pairs, upper weights of 2^-bits): onnxruntime's SetupUpsampleBilinear, its float
    weight of the upper neighbour |x - x1| rounded half to even to 2^-bits."""
    index, weight = [], []
    for o in range(p.out):
        x = f32(o) if p.scale == 1 else source_coordinate(coordinate, o, p)
        x = min(max(x, f32(0)), f32(p.size - 1))
        lo = min(int(x), p.size - 1)
        hi = min(lo + 1, p.size - 1)
        upper = Fraction(0.5) if lo == hi else Fraction(float(abs(x - f32(lo))))
        index += [lo, hi]
        weight.append(round(upper * 2 ** bits))
    return index, weight


# ---------------------------------------------------------------------------------------------
# The node
# ---------------------------------------------------------------------------------------------

def _plans(ctx: Lowering, node: Node, args, shape) -> list[Plan]:
    """Per axis: onnxruntime's scale (given, or out / in in float32) and output length."""
    ndim, a = len(shape), node.attrs
    if len(args) == 1 or (node.op_type == "Upsample" and "scales" in a):
        scales, sizes = [f32(v) for v in a["scales"]], None
    else:
        k = 1 if ctx.graph.opset < 11 else 2
        scales = _floats(args, k, node)
        sizes = _floats(args, k + 1, node) if ctx.graph.opset >= 11 else None
    axes = [x % ndim for x in a.get("axes", range(ndim))]
    full = lambda values, fill: [values[axes.index(d)] if d in axes else fill   # noqa: E731
                                 for d in range(ndim)]
    if scales:
        scales = full(scales, f32(1))
        return [Plan(n, int(s * f32(n)), s) for n, s in zip(shape, scales)]
    if not sizes:
        raise InvalidError(f"{node.describe()}: needs scales or sizes")
    sizes = full([int(v) for v in sizes], None)
    sizes = [n if s is None else s for n, s in zip(shape, sizes)]
    return [Plan(n, s, f32(s) / f32(n)) for n, s in zip(shape, sizes)]


def _floats(args, k: int, node: Node) -> list:
    if len(args) <= k or args[k] is None:
        return []
    return [v for v in np.asarray(constant(args[k], node, "scales / sizes")).reshape(-1)]


def _check_attrs(node: Node, mode: str, coordinate: str, nearest: str) -> None:
    a = node.attrs
    bad = []
    if mode not in ("nearest", "linear"):
        bad.append(f"mode {mode!r}")
    if coordinate not in COORDINATE_MODES:
        bad.append(f"coordinate_transformation_mode {coordinate!r}")
    if nearest not in NEAREST_MODES:
        bad.append(f"nearest_mode {nearest!r}")
    if a.get("antialias", 0):
        bad.append("antialias")
    if a.get("keep_aspect_ratio_policy", "stretch") != "stretch":
        bad.append(f"keep_aspect_ratio_policy {a['keep_aspect_ratio_policy']!r}")
    if bad:
        raise InvalidError(f"{node.describe()}: {', '.join(bad)} not supported")


def resize(ctx: Lowering, node: Node, args):
    v = args[0]
    if isinstance(v, (Q, Acc)):
        v = materialize(ctx, v, node)
    if not isinstance(v, (Q, Int)):
        raise InvalidError(f"{node.describe()}: needs a quantized or integer input")
    shape = ctx.shape(v.name)
    old = ctx.graph.opset < 11 or node.op_type == "Upsample"
    mode = node.attrs.get("mode", "nearest")
    coordinate = "asymmetric" if old else node.attrs.get("coordinate_transformation_mode",
                                                         "half_pixel")
    nearest = "simple" if old else node.attrs.get("nearest_mode", "round_prefer_floor")
    _check_attrs(node, mode, coordinate, nearest)
    plans = _plans(ctx, node, args, shape)
    if all(p.out == p.size for p in plans):          # onnxruntime copies the input then
        return v
    moved = [k for k, p in enumerate(plans) if p.scale != f32(1)]
    if isinstance(v, Q) and len(v.scale) > 1 and v.axis in moved:
        raise InvalidError(f"{node.describe()}: resizing a per-channel axis")
    if mode == "nearest":
        maps = {k: nearest_map(plans[k], coordinate, nearest) for k in moved}
        return replace(v, name=_nearest(ctx, node, v.name, shape, maps))
    return _linear(ctx, node, v, plans, moved, coordinate)


def _nearest(ctx: Lowering, node: Node, name: str, shape, maps: dict[int, list[int]]) -> str:
    out = node.outputs[0]
    factors = {k: len(m) // shape[k] for k, m in maps.items()}
    if len(shape) == 4 and set(maps) == {2, 3} and len(set(factors.values())) == 1 \
            and factors[2] > 1 and all(m == [i // factors[k] for i in range(len(m))]
                                       for k, m in maps.items()):
        return ctx.op("upsampling", name, out=out, scale=factors[2])
    for n, (k, m) in enumerate(sorted(maps.items())):
        if m == list(range(shape[k])):
            continue
        idx = ctx.const(np.array(m, dtype=np.int64), f"{out}#idx{k}")
        name = ctx.op("take", name, idx, out=out if n == len(maps) - 1 else f"{out}#{k}",
                      axis=k)
    return name


def _linear(ctx: Lowering, node: Node, v, plans: list[Plan], moved: list[int],
            coordinate: str):
    if len(moved) > 2:
        raise InvalidError(f"{node.describe()}: linear resize of more than two axes")
    axes = moved if len(moved) == 2 else sorted({moved[0], (moved[0] - 1) % len(plans)})
    zero = one_zero(v, node) if isinstance(v, Q) else 0
    top = bound(ctx.b.tensor(v.name).precision) + abs(zero)
    bits = min(LINEAR_BITS, (31 - bitlen(top)) // 2)
    attrs = {}
    for k, axis in zip("hw", axes):
        index, weight = linear_map(plans[axis], coordinate, bits)
        attrs.update({f"index_{k}": index, f"weight_{k}": weight})
    acc = ctx.op("resize_linear", v.name, out=node.outputs[0] + ("#acc" if isinstance(v, Int)
                                                                  else ""),
                 axes=axes, bits=bits, zero_point=zero, **attrs)
    if isinstance(v, Q):
        return Acc(acc, tuple(s / 4 ** bits for s in v.fractions()), v.axis)
    if bits:                                        # floor(acc / 4^bits) = round half up
        half = ctx.const(np.array([-(1 << (2 * bits - 1))]), node.outputs[0] + "#half")
        acc = ctx.op("broadcast_add", acc, half, out=node.outputs[0] + "#shifted")
    name = ctx.op("requantize", acc, out=node.outputs[0], multiplier=[1], shift=[2 * bits],
                  qmin=v.qmin, qmax=v.qmax, rounding="half_up")    # of (acc - 4^bits / 2)
    return Int(name, v.qmin, v.qmax)
