"""Indexing nodes: Slice, Split, Gather (constant or data indices) and Cast.

They move integers (``strided_slice``, ``take``) and keep each value's exact view: an integer
tensor stays one, a quantized tensor keeps its scale and zero point, an accumulator its scale.
A per-channel scale follows its channels when the channel axis itself is sliced or gathered.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from vm.errors import InvalidError

from .graph import Node
from .lower import Lowering, constant
from .quantops import materialize
from .values import TYPE_RANGES, Acc, Const, FloatIn, Int, Q

INT64_MAX = (1 << 63) - 1


def _data(ctx: Lowering, v, node: Node):
    """The integer view of a data input (a pending clamp applied), or a clear error."""
    if isinstance(v, (Q, Acc)):
        return materialize(ctx, v, node)
    if isinstance(v, Int):
        return v
    raise InvalidError(f"{node.describe()}: its data input must be a computed tensor, "
                       f"got {_kind(v)}")


def _kind(v) -> str:
    return "a constant" if isinstance(v, Const) else "a float tensor"


def _normalize_axis(axis: int, ndim: int, node: Node) -> int:
    if not -ndim <= axis < ndim:
        raise InvalidError(f"{node.describe()}: axis {axis} out of range for rank {ndim}")
    return axis % ndim


def pick_channels(v, axis: int, picked: list[int], name: str):
    """``v`` moved to ``name`` after its ``axis`` kept the entries ``picked`` (in order); a
    per-channel scale on that axis keeps the same entries."""
    if isinstance(v, Int) or len(v.scale) == 1 or v.axis != axis:
        return replace(v, name=name)
    scale = tuple(v.scale[k] for k in picked)
    if isinstance(v, Q):
        zero = tuple(v.zero[k] for k in picked) if len(v.zero) > 1 else v.zero
        return replace(v, name=name, scale=scale, zero=zero)
    return replace(v, name=name, scale=scale)


# ---------------------------------------------------------------------------------------------
# Slice, Split
# ---------------------------------------------------------------------------------------------

def slice_range(dim: int, start: int, end: int, step: int) -> range:
    """The indices ONNX Slice keeps on an axis of length ``dim`` (its clamping rules)."""
    if step == 0:
        raise ValueError("Slice step must not be 0")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return range(min(max(start, 0), dim), min(max(end, 0), dim), step)
    return range(min(max(start, 0), dim - 1), min(max(end, -1), dim - 1), step)


def emit_slice(ctx: Lowering, node: Node, v, ranges: dict[int, range], out: str):
    """``v`` restricted to ``ranges`` (axis -> kept indices) by one strided_slice."""
    shape = ctx.shape(v.name)
    if all(r == range(shape[a]) for a, r in ranges.items()):
        return v
    if any(len(r) == 0 for r in ranges.values()):
        raise InvalidError(f"{node.describe()}: the result would be empty (detvm tensors have "
                           "no empty dimensions)")
    begin, end, stride = [], [], []
    for axis, dim in enumerate(shape):
        r = ranges.get(axis, range(dim))
        stop = r.start + r.step * len(r)          # one step past the last index
        begin.append(r.start)
        end.append(stop if stop >= 0 else stop - dim)   # strided_slice adds dim to a negative
        stride.append(r.step)
    name = ctx.op("strided_slice", v.name, out=out, begin=begin, end=end, stride=stride)
    for axis, r in ranges.items():
        v = pick_channels(v, axis, list(r), name)
    return replace(v, name=name)


def _ints(v, node: Node, what: str) -> list[int]:
    return [int(x) for x in np.asarray(constant(v, node, what)).reshape(-1)]


def slice_node(ctx: Lowering, node: Node, args):
    v = _data(ctx, args[0], node)
    ndim = len(ctx.shape(v.name))
    if len(args) > 1:                                 # opset >= 10: inputs
        starts, ends = _ints(args[1], node, "starts"), _ints(args[2], node, "ends")
        axes = _ints(args[3], node, "axes") if len(args) > 3 and args[3] is not None \
            else list(range(len(starts)))
        steps = _ints(args[4], node, "steps") if len(args) > 4 and args[4] is not None \
            else [1] * len(starts)
    else:                                             # opset < 10: attributes
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes = list(node.attrs.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise InvalidError(f"{node.describe()}: starts, ends, axes and steps differ in length")
    shape = ctx.shape(v.name)
    ranges = {}
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = _normalize_axis(a, ndim, node)
        if a in ranges:
            raise InvalidError(f"{node.describe()}: axis {a} is sliced twice")
        ranges[a] = slice_range(shape[a], s, e, st)
    return emit_slice(ctx, node, v, ranges, node.outputs[0])


def split_node(ctx: Lowering, node: Node, args):
    v = _data(ctx, args[0], node)
    shape = ctx.shape(v.name)
    axis = _normalize_axis(node.attrs.get("axis", 0), len(shape), node)
    dim, n = shape[axis], len(node.outputs)
    if len(args) > 1 and args[1] is not None:
        sizes = _ints(args[1], node, "split")
    elif "split" in node.attrs:
        sizes = [int(s) for s in node.attrs["split"]]
    else:                                             # equal parts; the last may be smaller
        n = node.attrs.get("num_outputs", n)
        part = -(-dim // n)
        sizes = [min(part, dim - k * part) for k in range(n)]
    if sum(sizes) != dim or len(sizes) != len(node.outputs) or min(sizes) < 1:
        raise InvalidError(f"{node.describe()}: split sizes {sizes} do not cut axis {axis} "
                           f"of length {dim} into {len(node.outputs)} non-empty parts")
    parts, start = [], 0
    for size, out in zip(sizes, node.outputs):
        parts.append(emit_slice(ctx, node, v, {axis: range(start, start + size)},
                                out or f"{node.name}#unused"))
        start += size
    return parts


# ---------------------------------------------------------------------------------------------
# Gather
# ---------------------------------------------------------------------------------------------

def gather_node(ctx: Lowering, node: Node, args):
    if isinstance(args[0], FloatIn) and isinstance(args[1], Const):
        return _gather_float(node, args[0], np.asarray(args[1].value))
    v, idx = _data(ctx, args[0], node), args[1]
    shape = ctx.shape(v.name)
    axis = _normalize_axis(node.attrs.get("axis", 0), len(shape), node)
    if isinstance(idx, Const):
        return _gather_const(ctx, node, v, axis, np.asarray(idx.value))
    if isinstance(idx, Int):
        if len(_scales(v)) > 1 and v.axis == axis:
            raise InvalidError(f"{node.describe()}: data indices on a per-channel axis")
        name = _gather_data(ctx, node, v.name, idx, shape[axis], axis)
        return _channel_axis_moved(v, name, axis, len(ctx.shape(idx.name)) - 1)
    raise InvalidError(f"{node.describe()}: indices must be integers, got {_kind(idx)}")


def _gather_float(node: Node, v: FloatIn, idx: np.ndarray) -> FloatIn:
    """Constant indices on a float graph input: a ``take`` replayed after its quantization
    (YOLOX reorders SpaceToDepth's channels so)."""
    axis = _normalize_axis(node.attrs.get("axis", 0), len(v.shape), node)
    dim = v.shape[axis]
    if idx.dtype.kind not in "iu" or idx.ndim == 0 or not idx.size:
        raise InvalidError(f"{node.describe()}: on a float input, indices must be a non-empty "
                           "integer array")
    if idx.min() < -dim or idx.max() >= dim:
        raise InvalidError(f"{node.describe()}: index out of range [{-dim}, {dim - 1}]")
    flat = np.array([int(i) % dim for i in idx.reshape(-1)]).reshape(idx.shape)
    shape = v.shape[:axis] + idx.shape + v.shape[axis + 1:]
    out = node.outputs[0]
    return replace(v, shape=shape, moves=v.moves + (("take", {"axis": axis}, out,
                                                     ((flat, out + "#idx"),)),))


def _gather_const(ctx: Lowering, node: Node, v, axis: int, idx: np.ndarray):
    dim = ctx.shape(v.name)[axis]
    if idx.dtype.kind not in "iu":
        raise InvalidError(f"{node.describe()}: indices must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise InvalidError(f"{node.describe()}: index out of range [{-dim}, {dim - 1}]")
    flat = [int(i) % dim for i in idx.reshape(-1)]
    if idx.ndim == 0:                                 # a scalar index drops the axis
        picked = emit_slice(ctx, node, v, {axis: range(flat[0], flat[0] + 1)},
                            node.outputs[0] + "#slice")
        out = [d for k, d in enumerate(ctx.shape(picked.name)) if k != axis] or [1]
        name = ctx.op("reshape", picked.name, out=node.outputs[0], shape=out)
        return _channel_axis_moved(picked, name, axis, -1)
    if len(_scales(v)) > 1 and v.axis == axis and idx.ndim > 1:
        raise InvalidError(f"{node.describe()}: multi-dimensional indices on a per-channel "
                           "axis")
    name = ctx.op("take", v.name, ctx.const(np.array(flat).reshape(idx.shape),
                                            node.outputs[0] + "#idx"),
                  out=node.outputs[0], axis=axis)
    return _channel_axis_moved(pick_channels(v, axis, flat, name), name, axis, idx.ndim - 1)


def _scales(v) -> tuple:
    return () if isinstance(v, Int) else v.scale


def _channel_axis_moved(v, name: str, axis: int, grown: int):
    """``v`` in ``name`` after the axes behind ``axis`` moved by ``grown`` positions."""
    if len(_scales(v)) > 1 and v.axis > axis:
        return replace(v, name=name, axis=v.axis + grown)
    return replace(v, name=name)


def _gather_data(ctx: Lowering, node: Node, data: str, idx: Int, dim: int, axis: int) -> str:
    """take with ONNX's index rule: a negative index counts from the end (i + dim). An index
    out of [-dim, dim - 1] (an error in onnxruntime) is clamped into it first."""
    name, base = idx.name, node.outputs[0]
    if idx.qmin < -dim or idx.qmax >= dim:            # take clamps these anyway
        name = ctx.op("clip", name, out=base + "#clip", a_min=-dim, a_max=dim - 1)
    if idx.qmin < 0:
        zero = ctx.const(np.zeros(1, np.int64), base + "#zero")
        below = ctx.op("broadcast_greater", zero, name, out=base + "#neg")
        shift = ctx.op("broadcast_mul", below, ctx.const(np.array([dim]), base + "#dim"),
                       out=base + "#shift")
        name = ctx.op("broadcast_add", name, shift, out=base + "#wrapped")
    return ctx.op("take", data, name, out=node.outputs[0], axis=axis)


# ---------------------------------------------------------------------------------------------
# Cast
# ---------------------------------------------------------------------------------------------

FLOAT_TYPES = ("float32", "float64")


def cast_node(ctx: Lowering, node: Node, args):
    """Integer to integer when every value fits the target type (exact, no instruction);
    integer to float32/float64: the values, read as a quantized tensor of scale 1; float32 to
    float32/float64 of a quantized tensor: unchanged (both hold its float32 values exactly)."""
    from .graph import _dtype, onnx_module
    target = _dtype(onnx_module(), node.attrs.get("to", 0))
    v = args[0]
    if isinstance(v, Int):
        if target in FLOAT_TYPES:
            return Q(v.name, (1.0,), (0,), v.qmin, v.qmax)
        lo, hi = TYPE_RANGES.get(target, (-INT64_MAX, INT64_MAX) if target == "int64"
                                 else (None, None))
        if lo is None:
            raise InvalidError(f"{node.describe()}: Cast to {target} is not supported")
        if v.qmin < lo or v.qmax > hi:
            raise InvalidError(f"{node.describe()}: Cast of values in [{v.qmin}, {v.qmax}] to "
                               f"{target} could wrap; not supported")
        return v
    if isinstance(v, (Q, Acc)) and target in FLOAT_TYPES:
        return v
    what = "a quantized tensor" if isinstance(v, (Q, Acc)) else _kind(v)
    raise InvalidError(f"{node.describe()}: Cast of {what} to {target} is not supported (only "
                       "integer casts that cannot wrap, integer to float, and float to "
                       "float32/float64)")
