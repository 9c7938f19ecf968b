"""Data-movement nodes (Flatten, Reshape, Transpose, Squeeze, Unsqueeze, SpaceToDepth,
DepthToSpace, Identity, Pad, MaxPool), the output-only float ops (Softmax, ArgMax) and
compile-time constants (Constant, Shape, and any foldable node whose inputs are all
constants)."""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ops.base import bound
from vm.errors import InvalidError

from .fixed import quantize_real
from .graph import Node
from .lower import Lowering, constant
from .quantops import materialize, one_zero
from .values import Acc, Const, FloatIn, Int, Post, Q, describe
from .window import window


def _moved(ctx: Lowering, v, name: str, axis_map=None):
    """``v`` now held in ``name``; a per-channel axis follows ``axis_map(axis)``."""
    if isinstance(v, Int):
        return replace(v, name=name)
    if not isinstance(v, (Q, Acc)):
        raise InvalidError(f"tensor {name!r}: cannot move {describe(v)}")
    axis = v.axis
    if len(v.scale) > 1:
        axis = axis_map(axis) if axis_map else None
        if axis is None:
            raise InvalidError(f"tensor {name!r}: this layout change moves a per-channel axis")
    return replace(v, name=name, axis=axis)


def _reshaped_axis(old: tuple, new: tuple):
    def axis_map(axis):
        before = math.prod(old[:axis])
        for k in range(len(new)):
            if math.prod(new[:k]) == before and new[k] == old[axis]:
                return k
        return None
    return axis_map


def _float_move(v: FloatIn, node: Node, op: str, new_shape: tuple, **attrs) -> FloatIn:
    """A data movement of a float input, replayed after its quantization."""
    return replace(v, shape=tuple(new_shape), moves=v.moves + ((op, attrs, node.outputs[0]),))


def reshape_to(ctx: Lowering, node: Node, v, shape: tuple):
    old = ctx.shape_of(v)
    if tuple(shape) == tuple(old):
        return v
    if isinstance(v, FloatIn):
        return _float_move(v, node, "reshape", shape, shape=list(shape))
    name = ctx.op("reshape", v.name, out=node.outputs[0], shape=list(shape))
    return _moved(ctx, v, name, _reshaped_axis(old, tuple(shape)))


def flatten(ctx: Lowering, node: Node, args):
    shape = ctx.shape_of(args[0])
    axis = node.attrs.get("axis", 1) % (len(shape) + 1)
    return reshape_to(ctx, node, args[0], (math.prod(shape[:axis]), math.prod(shape[axis:])))


def reshape(ctx: Lowering, node: Node, args):
    old = ctx.shape_of(args[0])
    spec = [int(d) for d in constant(args[1], node, "the shape")]
    if not node.attrs.get("allowzero", 0):
        spec = [old[k] if d == 0 else d for k, d in enumerate(spec)]
    if -1 in spec:
        known = math.prod(d for d in spec if d != -1)
        spec[spec.index(-1)] = math.prod(old) // max(known, 1)
    return reshape_to(ctx, node, args[0], tuple(spec))


def _axes(node: Node, args) -> list[int] | None:
    """The raw axes of Squeeze / Unsqueeze: the input (opset >= 13) or the attribute."""
    axes = node.attrs.get("axes")
    if len(args) > 1 and args[1] is not None:
        axes = constant(args[1], node, "axes").tolist()
    return None if axes is None else [int(a) for a in axes]


def squeeze(ctx: Lowering, node: Node, args):
    shape = ctx.shape_of(args[0])
    axes = _axes(node, args)
    drop = {k for k, d in enumerate(shape) if d == 1} if axes is None else \
        {a % len(shape) for a in axes}
    return reshape_to(ctx, node, args[0],
                      tuple(d for k, d in enumerate(shape) if k not in drop) or (1,))


def unsqueeze(ctx: Lowering, node: Node, args):
    shape = list(ctx.shape_of(args[0]))
    axes = _axes(node, args) or []
    for a in sorted(a % (len(shape) + len(axes)) for a in axes):
        shape.insert(a, 1)
    return reshape_to(ctx, node, args[0], tuple(shape))


def transpose(ctx: Lowering, node: Node, args):
    shape = ctx.shape_of(args[0])
    return transpose_to(ctx, node, args[0],
                        list(node.attrs.get("perm", range(len(shape) - 1, -1, -1))))


def transpose_to(ctx: Lowering, node: Node, v, perm: list):
    shape = ctx.shape_of(v)
    if isinstance(v, FloatIn):
        return _float_move(v, node, "transpose", tuple(shape[p] for p in perm), axes=perm)
    name = ctx.op("transpose", v.name, out=node.outputs[0], axes=perm)
    return _moved(ctx, v, name, perm.index)


def _blocks(ctx: Lowering, node: Node, v) -> tuple[int, ...]:
    """(N, C, H, W, blocksize) of a SpaceToDepth / DepthToSpace input."""
    shape, b = ctx.shape_of(v), int(node.attrs.get("blocksize", 0))
    if len(shape) != 4 or b < 1:
        raise InvalidError(f"{node.describe()}: needs a 4-D input and a blocksize >= 1")
    return (*shape, b)


def _mode(node: Node) -> bool:
    """True for DCR (the default; SpaceToDepth's only order before opset 28), False for CRD."""
    mode = node.attrs.get("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("DCR", "CRD"):
        raise InvalidError(f"{node.describe()}: mode {mode!r} (ONNX defines DCR and CRD)")
    return mode == "DCR"


def _inner(node: Node, suffix: str) -> Node:
    return replace(node, outputs=[node.outputs[0] + suffix])


def space_to_depth(ctx: Lowering, node: Node, args):
    """Blocks of b x b pixels to channels: reshape (N, C, H/b, b, W/b, b), transpose
    (0, 3, 5, 1, 2, 4) (DCR: channel (i b + j) C + c) or (0, 1, 3, 5, 2, 4) (CRD: channel
    c b^2 + i b + j), reshape (N, C b^2, H/b, W/b): only moves."""
    n, c, h, w, b = _blocks(ctx, node, args[0])
    if h % b or w % b:
        raise InvalidError(f"{node.describe()}: height {h} and width {w} must be multiples "
                           f"of the blocksize {b}")
    v = reshape_to(ctx, _inner(node, "#blocks"), args[0], (n, c, h // b, b, w // b, b))
    v = transpose_to(ctx, _inner(node, "#moved"), v,
                     [0, 3, 5, 1, 2, 4] if _mode(node) else [0, 1, 3, 5, 2, 4])
    return reshape_to(ctx, node, v, (n, c * b * b, h // b, w // b))


def depth_to_space(ctx: Lowering, node: Node, args):
    """Channels to blocks of b x b pixels, ONNX's DCR (default) or CRD order: reshape to 6-D,
    transpose, reshape (N, C / b^2, H b, W b): only moves."""
    n, c, h, w, b = _blocks(ctx, node, args[0])
    if c % (b * b):
        raise InvalidError(f"{node.describe()}: {c} channels are not a multiple of "
                           f"blocksize^2 = {b * b}")
    dcr = _mode(node)
    six = (n, b, b, c // (b * b), h, w) if dcr else (n, c // (b * b), b, b, h, w)
    v = reshape_to(ctx, _inner(node, "#blocks"), args[0], six)
    v = transpose_to(ctx, _inner(node, "#moved"), v,
                     [0, 3, 4, 1, 5, 2] if dcr else [0, 1, 4, 2, 5, 3])
    return reshape_to(ctx, node, v, (n, c // (b * b), h * b, w * b))


def identity(ctx: Lowering, node: Node, args):
    return args[0]


def pad(ctx: Lowering, node: Node, args):
    v = args[0]
    ndim = len(ctx.shape(v.name))
    pads = node.attrs.get("pads")
    if len(args) > 1 and args[1] is not None:
        pads = constant(args[1], node, "pads").tolist()
    if len(args) > 3 and args[3] is not None:             # opset 18 axes
        full = [0] * (2 * ndim)
        for k, a in enumerate(a % ndim for a in constant(args[3], node, "axes").tolist()):
            full[a], full[a + ndim] = pads[k], pads[k + len(pads) // 2]
        pads = full
    mode = node.attrs.get("mode", "constant")
    if min(pads) < 0 or mode not in ("constant", "edge", "reflect"):
        raise InvalidError(f"{node.describe()}: negative pads or mode {mode!r} unsupported")
    real = node.attrs.get("value", 0.0)
    if len(args) > 2 and args[2] is not None:
        real = constant(args[2], node, "the pad value").reshape(-1)[0]
    value = _pad_value(v, real, node)
    v = materialize(ctx, v, node) if isinstance(v, (Q, Acc)) else v
    name = ctx.op("pad", v.name, out=node.outputs[0], pads=[int(p) for p in pads],
                  value=value, mode=mode)
    return _moved(ctx, v, name, lambda a: a)


def _pad_value(v, real, node: Node) -> int:
    if isinstance(v, Int):
        return int(real)
    if isinstance(v, Q) and len(v.scale) == 1:
        return quantize_real(float(real), v.scale[0], one_zero(v, node))
    if float(real) == 0:
        return one_zero(v, node) if isinstance(v, Q) else 0
    raise InvalidError(f"{node.describe()}: a non-zero pad value needs a per-tensor scale")


def max_pool(ctx: Lowering, node: Node, args):
    v = args[0]
    if not isinstance(v, (Q, Acc, Int)):
        raise InvalidError(f"{node.describe()}: its input is {describe(v)}: not supported")
    shape = ctx.shape(v.name)
    ceil = bool(node.attrs.get("ceil_mode", 0))
    w = window(Node(node.name, node.op_type, node.domain, node.inputs, node.outputs,
                    {**node.attrs, "ceil_mode": 0}), shape)
    if w.dilations != (1, 1):
        raise InvalidError(f"{node.describe()}: dilations are not supported")
    name, padding = v.name, w.begin
    if not w.symmetric:
        low = v.qmin if isinstance(v, (Q, Int)) else -bound(ctx.b.tensor(v.name).precision)
        (t, l), (b, r) = w.begin, w.end
        name = ctx.op("pad", name, out=node.outputs[0] + "#pad", pads=[0, 0, t, l, 0, 0, b, r],
                      value=low)
        padding = (0, 0)
    out = ctx.op("max_pool2d", name, out=node.outputs[0], pool_size=w.kernel,
                 strides=w.strides, padding=padding, ceil_mode=ceil)
    return _moved(ctx, v, out, lambda a: a)


# ---------------------------------------------------------------------------------------------
# Softmax, ArgMax
# ---------------------------------------------------------------------------------------------

def softmax(ctx: Lowering, node: Node, args):
    v = args[0]
    if not isinstance(v, (Q, Acc)):
        raise InvalidError(f"{node.describe()}: Softmax needs a quantized input")
    ndim = len(ctx.shape(v.name))
    axis = node.attrs.get("axis", -1 if ctx.graph.opset >= 13 else 1) % ndim
    if ctx.graph.opset < 13 and axis != ndim - 1:
        raise InvalidError(f"{node.describe()}: opset < 13 Softmax must be on the last axis")
    return Post("softmax", v, axis)


def argmax(ctx: Lowering, node: Node, args):
    v = args[0]
    ndim = len(ctx.shape(v.value.name if isinstance(v, Post) else v.name))
    axis = node.attrs.get("axis", 0) % ndim
    if isinstance(v, Post):
        if v.axis != axis:
            raise InvalidError(f"{node.describe()}: ArgMax of a Softmax on another axis")
        v = v.value
    if isinstance(v, (Q, Acc)):
        if len(v.scale) > 1 and v.axis == axis:
            raise InvalidError(f"{node.describe()}: per-channel scales along the ArgMax axis")
        v = materialize(ctx, v, node)
    elif not isinstance(v, Int):
        raise InvalidError(f"{node.describe()}: its input is {describe(v)}: not supported")
    name = ctx.op("argmax", v.name, out=node.outputs[0], axis=axis,
                  keepdims=bool(node.attrs.get("keepdims", 1)),
                  select_last_index=bool(node.attrs.get("select_last_index", 0)))
    return Int(name, 0, ctx.shape(v.name)[axis] - 1)


# ---------------------------------------------------------------------------------------------
# Constants
# ---------------------------------------------------------------------------------------------

def constant_node(ctx: Lowering, node: Node, args):
    a = node.attrs
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in a:
            dtype = np.float32 if "float" in key else (np.int64 if "int" in key else None)
            return Const(np.asarray(a[key], dtype=dtype))
    raise InvalidError(f"{node.describe()}: unsupported Constant attribute")


def shape_node(ctx: Lowering, node: Node, args):
    v = args[0]
    shape = v.value.shape if isinstance(v, Const) else ctx.shape(v.name)
    start, end = node.attrs.get("start", 0), node.attrs.get("end", len(shape))
    return Const(np.array(shape[start:end], dtype=np.int64))


def fold(node: Node, args) -> list:
    """Evaluate a node whose inputs are all constants with onnx's reference implementation."""
    from onnx.reference import ReferenceEvaluator
    feeds = {n: a.value for n, a in zip(node.inputs, args) if n}
    try:
        results = ReferenceEvaluator(node.proto).run(None, feeds)
    except Exception as e:
        raise InvalidError(f"{node.describe()}: cannot fold its constant inputs: {e}") from None
    return [Const(np.asarray(r)) for r in results]
