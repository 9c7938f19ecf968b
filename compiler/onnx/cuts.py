"""The cut of an island: its ONNX nodes, from its 8-bit inputs to its integer result.

A job (tables.py) is evaluated on this cut. It keeps the model's own nodes: a source made by
the model's QuantizeLinear -> DequantizeLinear pair keeps both (a float graph input feeds the
QuantizeLinear, with floats that quantize exactly to every code), a DequantizeLinear of a
constant reads its codes from a graph input, a float constant that varies along the tensor
reads its distinct values, and a uniform constant becomes one element of the same rank (it
broadcasts the same way, so onnxruntime calls the same kernel path).
"""
from __future__ import annotations

import numpy as np

from vm.errors import InvalidError

from .graph import Node
from .islands import _state
from .lower import Lowering
from .tables import Feed
from .values import TYPE_RANGES, Const, Int, Island, Q, QConst


# ---------------------------------------------------------------------------------------------

def cut(ctx: Lowering, final: Node, island: Island):
    """(node protos in order, initializers, {source ONNX name: (dtype, Feed)}).

    A source made by the model's QuantizeLinear -> DequantizeLinear pair keeps both nodes (a
    float graph input feeds the QuantizeLinear): onnxruntime rewrites such pairs (int8 to
    uint8, fusions) and must see the island as it sees it in the model."""
    from onnx import helper
    producers = _state(ctx).producers
    sources = dict(island.sources)
    nodes, consts, feeds, seen = [], {}, {}, set()

    def visit(t: str) -> None:
        if not t or t in seen:
            return
        seen.add(t)
        if t in sources:
            return source(t, sources[t])
        v = ctx.values.get(t)
        if isinstance(v, Const):
            consts[t] = _reduced(v.value)
            return
        producer = producers.get(t)
        if producer is None or isinstance(v, Int):
            raise InvalidError(f"{final.describe()}: the float ops before it read {t!r}, "
                               "which is not one of their quantized inputs")
        for i in producer.inputs:
            visit(i)
        nodes.append(producer.proto)

    def source(t: str, q: Q) -> None:
        v, dq = ctx.values.get(t), producers.get(t)
        if isinstance(v, Int):                              # a QLinear* input
            feeds[t] = (_dtype(q, None), Feed(t))
            return
        if isinstance(v, Const) and t in _state(ctx).lookups:   # a float constant's values
            feeds[t] = (None, Feed(t, lookup=_state(ctx).lookups[t]))
            return
        if isinstance(v, Const):                            # a QLinear* constant's codes
            feeds[t] = (v.value.dtype.name, Feed(t))
            return
        if dq is not None and isinstance(v, QConst):       # its DequantizeLinear reads codes
            for i in dq.inputs[1:]:
                visit(i)
            nodes.append(dq.proto)
            feeds[t] = (v.q.dtype.name, Feed(dq.inputs[0]))
            return
        if dq is None or dq.op_type != "DequantizeLinear" \
                or not isinstance(ctx.values.get(dq.inputs[0]), Int):
            return synthesized(t, q)
        for i in dq.inputs[1:]:
            visit(i)
        zero = ctx.values.get(dq.inputs[2]) if len(dq.inputs) > 2 else None
        feed, quant = Feed(dq.inputs[0]), producers.get(dq.inputs[0])
        if dq.inputs[0] in seen:                            # fed through another source
            feed = None
        elif quant is not None and quant.op_type == "QuantizeLinear":
            feed = _quantized(quant, ctx, visit, nodes)
        seen.add(dq.inputs[0])
        nodes.append(dq.proto)
        feeds[t] = (_dtype(q, zero), feed)

    def synthesized(t: str, q: Q) -> None:
        dtype = _dtype(q, None)
        consts[t + "#scale"] = np.float32(q.scale[0])
        consts[t + "#zero"] = np.array(q.zero[0], dtype=dtype)
        nodes.append(helper.make_node("DequantizeLinear", [t + "#q", t + "#scale",
                                                           t + "#zero"], [t]))
        feeds[t] = (dtype, Feed(t + "#q"))

    for i in final.inputs:
        visit(i)
    nodes.append(final.proto)
    return nodes, consts, feeds


def _quantized(quant: Node, ctx: Lowering, visit, nodes: list) -> Feed:
    """The model's QuantizeLinear ``quant`` in a job, read from a float graph input."""
    import onnx
    for i in quant.inputs[1:]:
        visit(i)
    scale = np.asarray(ctx.values[quant.inputs[1]].value).reshape(-1)
    zero = (np.asarray(ctx.values[quant.inputs[2]].value).reshape(-1)
            if len(quant.inputs) > 2 and quant.inputs[2] else np.zeros(1, np.int64))
    copy = onnx.NodeProto()
    copy.CopyFrom(quant.proto)
    copy.input[0] = quant.inputs[0] + "#float"
    nodes.append(copy)
    return Feed(copy.input[0], float(scale[0]), int(zero[0]), scale.dtype.name)


def _reduced(value: np.ndarray) -> np.ndarray:
    """A uniform constant as one element of the same rank (it broadcasts the same way)."""
    value = np.asarray(value)
    flat = value.reshape(-1)
    if flat.size > 1 and np.all(flat == flat[0]):
        return flat[:1].reshape((1,) * value.ndim)
    return value


def _dtype(q: Q, zero) -> str:
    """The ONNX element type of the 8-bit tensor behind ``q``."""
    if isinstance(zero, Const) and zero.value.dtype.kind in "iu":
        return zero.value.dtype.name
    for name, (lo, hi) in TYPE_RANGES.items():
        if (lo, hi) == (q.qmin, q.qmax):
            return name
    for name in ("uint8", "int8", "uint16", "int16"):
        lo, hi = TYPE_RANGES[name]
        if lo <= min(q.qmin, q.zero[0]) and max(q.qmax, q.zero[0]) <= hi:
            return name
    raise InvalidError(f"tensor {q.name!r}: values {q.qmin}..{q.qmax} fit no 8- or 16-bit type")


def axis_zero(nodes: list) -> None:
    """The Concat of a concat job joins 1-D inputs: its axis becomes 0 (in a copy)."""
    import onnx
    for k, proto in enumerate(nodes):
        if proto.op_type in ("Concat", "QLinearConcat"):
            nodes[k] = onnx.NodeProto()
            nodes[k].CopyFrom(proto)
            for attr in nodes[k].attribute:
                if attr.name == "axis":
                    attr.i = 0
