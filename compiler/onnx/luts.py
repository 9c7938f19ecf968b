"""Where islands end: ``lut`` instructions and the jobs that fill their tables.

* the QuantizeLinear of an :class:`Island` (QDQ models);
* the elementwise QLinear* nodes of QOperator models (QLinearSigmoid, QLinearLeakyRelu,
  QLinearMul, QLinearAdd) and QLinearConcat;
* a Concat of differently scaled quantized tensors followed by a QuantizeLinear.

Each emits its ``lut`` with a placeholder table and records a :class:`tables.Job`: the cut of
the ONNX graph from the island's 8-bit inputs to its integer result. :func:`complete` runs
every job in one onnxruntime session and fills the tables before the program is built.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ops.base import precision_for
from vm.errors import InvalidError
from vm.program import storage_dtype

from . import quantops
from .graph import MS_DOMAIN, Node
from .islands import FLOAT_OPS, _exact, _grow, _one_table_arg, _state, clamp_op, \
    float_op, island_aware, move_op, passthrough, resolve
from .cuts import axis_zero, cut
from .lower import Lowering
from .pattern import add_positions, pattern, refine
from .quantops import as_q, qparams, type_range
from .tables import Arg, Job, evaluate
from .values import NO_CLAMP, Const, Int, Island, Q

MAX_PAIRS = 1 << 16
MOVES = ("MaxPool", "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze")
"""Ops between an island and its QuantizeLinear that the quantization commutes with."""


# ---------------------------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------------------------

@island_aware
def quantize_linear(ctx: Lowering, node: Node, args):
    v = args[0]
    if not isinstance(v, Island) or (ctx.rounding == "half_even" and v.exact is not None):
        return quantops.quantize_linear(ctx, node, [resolve(ctx, node, a) for a in args])
    scale, zero, dtype = qparams(node, args, 1)
    if len(set(scale.tolist())) > 1 or len(set(zero.tolist())) > 1:
        raise InvalidError(f"{node.describe()}: a per-channel QuantizeLinear of float ops is "
                           "not supported (one table per channel)")
    if not v.moves:
        return emit(ctx, node, v, type_range(dtype, node))
    out = f"{v.tensor}#{node.outputs[0]}"
    final = replace(node, inputs=[v.tensor] + node.inputs[1:], outputs=[out],
                    proto=_reading(node, v.tensor, out))
    out = emit(ctx, final, v, type_range(dtype, node))
    for handler, move, move_args in v.moves:                # they commute with the Q
        out = handler(ctx, move, [out] + list(move_args[1:]))
    return out


def _reading(node: Node, tensor: str, out: str):
    """A copy of ``node``'s proto that reads ``tensor`` and writes ``out``."""
    import onnx
    copy = onnx.NodeProto()
    copy.CopyFrom(node.proto)
    copy.input[0], copy.output[0] = tensor, out
    return copy


@island_aware
def concat(ctx: Lowering, node: Node, args):
    """A Concat of quantized tensors with different scales: an island with one table per
    input (``fp32``; ``half_even`` and other consumers: quantops' common-scale sum)."""
    exact = _exact(ctx, node, args, quantops.concat)
    if ctx.rounding == "fp32" and node.outputs[0] not in ctx.graph.outputs \
            and len(args) > 1 and all(isinstance(a, Q) and _one_table_arg(a) and
                                      a.clamp == NO_CLAMP for a in args) \
            and len({(a.scale, a.zero) for a in args}) > 1:
        shape = list(ctx.shape(args[0].name))
        axis = node.attrs.get("axis", 1) % len(shape)
        shape[axis] = sum(ctx.shape(a.name)[axis] for a in args)
        return Island("Concat", tuple(zip(node.inputs, args)), tuple(shape), node.outputs[0],
                      exact, axis)
    return exact()


def qlinear_unary(ctx: Lowering, node: Node, args):
    """com.microsoft QLinearSigmoid, QLinearLeakyRelu: (x, x_scale, x_zero, y_scale, y_zero)."""
    x = as_q(args[0], *qparams(node, args, 1)[:2], node)
    y_scale, y_zero, dtype = qparams(node, args, 3)
    island = _grow(ctx, node, [x])
    if island is None:
        raise InvalidError(f"{node.describe()}: needs a per-tensor quantized input")
    return emit(ctx, node, Island(node.op_type, *island, node.outputs[0]),
                type_range(dtype, node))


def qlinear_binary(fallback=None):
    """com.microsoft QLinearAdd, QLinearMul: (a, a_scale, a_zero, b, b_scale, b_zero,
    y_scale, y_zero); a constant operand is part of the table."""
    def handler(ctx: Lowering, node: Node, args):
        if fallback is not None and ctx.rounding == "half_even":
            return fallback(ctx, node, args)
        operands = [_qlinear_operand(node, args, 0), None, None,
                    _qlinear_operand(node, args, 3)]
        island = _grow(ctx, node, operands)
        if island is None:
            if fallback is not None:
                return fallback(ctx, node, args)
            raise InvalidError(f"{node.describe()}: needs per-tensor quantized inputs, a "
                               "constant one uniform")
        _, _, dtype = qparams(node, args, 6)
        return emit(ctx, node, Island(node.op_type, *island, node.outputs[0]),
                type_range(dtype, node))
    return handler


def _qlinear_operand(node: Node, args, k: int):
    scale, zero, _ = qparams(node, args, k + 1)
    if isinstance(args[k], Const):
        return quantops.QConst(args[k].value, scale, zero)
    return as_q(args[k], scale, zero, node)


def qlinear_concat(ctx: Lowering, node: Node, args):
    """com.microsoft QLinearConcat (y_scale, y_zero, x0, s0, z0, x1, ...): one table per
    input (``half_even``: quantops' requantize per input)."""
    if ctx.rounding == "half_even":
        return quantops.qlinear_concat(ctx, node, args)
    _, _, dtype = qparams(node, args, 0)
    parts = []
    for k in range(2, len(args), 3):
        q = as_q(args[k], *qparams(node, args, k + 1)[:2], node)
        if not _one_table_arg(q):
            raise InvalidError(f"{node.describe()}: input {node.inputs[k]!r} is not a "
                               "per-tensor quantized tensor")
        parts.append((node.inputs[k], q))
    shape = list(ctx.shape(parts[0][1].name))
    axis = node.attrs.get("axis", 1) % len(shape)
    shape[axis] = sum(ctx.shape(q.name)[axis] for _, q in parts)
    return emit(ctx, node, Island(node.op_type, tuple(parts), tuple(shape), node.outputs[0],
                                  None, axis), type_range(dtype, node))


# ---------------------------------------------------------------------------------------------
# Emitting a lut and its job
# ---------------------------------------------------------------------------------------------

def emit(ctx: Lowering, node: Node, island: Island, qrange) -> Int:
    """The ``lut`` (a Concat: one per input, then ``concatenate``) computing ``node``'s
    integer output from ``island``; its job is recorded."""
    qmin, qmax = qrange
    precision = precision_for(max(-qmin, qmax))
    nodes, consts, feeds = cut(ctx, node, island)
    out = node.outputs[0]
    if island.concat is not None:
        args = [Arg(feeds[name][0], q.qmin, q.qmax - q.qmin + 1, [feeds[name][1]])
                for name, q in island.sources]
        axis_zero(nodes)
        targets, parts = [], []
        for (name, q), arg in zip(island.sources, args):
            table, tid = _placeholder(ctx, f"{out}#table#{name}", (arg.count,), precision)
            targets.append(tid)
            parts.append(ctx.op("lut", table, q.name, out=f"{out}#{name}", low=[q.qmin]))
        result = ctx.op("concatenate", *parts, out=out, axis=island.concat)
        layout, add, shapes = "concat", None, ()
    else:
        order = list(dict.fromkeys(q.name for _, q in island.sources))
        views = {q.name: q for _, q in island.sources}
        args = [Arg(None, views[n].qmin, views[n].qmax - views[n].qmin + 1) for n in order]
        for name, q in island.sources:
            arg = args[order.index(q.name)]
            arg.dtype = arg.dtype or feeds[name][0]
            if feeds[name][1] is not None:
                arg.feeds.append(feeds[name][1])
        dims = tuple(a.count for a in args)
        if np.prod(dims) > MAX_PAIRS:
            raise InvalidError(f"{node.describe()}: a table of {' x '.join(map(str, dims))} "
                               f"entries is too large (at most {MAX_PAIRS})")
        table, tid = _placeholder(ctx, f"{out}#table", dims, precision)
        targets = [tid]
        result = ctx.op("lut", table, *order, out=out, low=[a.low for a in args])
        shapes = tuple(ctx.shape(n) for n in order)
        layout = "unary" if len(args) == 1 else pattern(*shapes)
        add = add_positions(nodes, dict(island.sources), order) if len(args) == 2 else None
    _state(ctx).jobs.append(Job(node.describe(), nodes, consts, args, out, layout, targets,
                                add, shapes))
    return Int(result, qmin, qmax)


def _placeholder(ctx: Lowering, name: str, dims, precision: int):
    """A zero table of ``precision`` (filled by :func:`complete`) and its tensor id."""
    name = ctx.b.const(ctx.name_for(name), np.zeros(dims, np.int64), precision=precision)
    return name, len(ctx.b.tensors) - 1


# ---------------------------------------------------------------------------------------------
# Filling the tables
# ---------------------------------------------------------------------------------------------

def complete(ctx: Lowering) -> None:
    """Evaluate every job (one onnxruntime session) and fill its tables in the program."""
    jobs = getattr(ctx, "islands", None)
    jobs = jobs.jobs if jobs is not None else []
    refine(jobs, ctx.graph)
    for job, tables in zip(jobs, evaluate(jobs, ctx.graph.opset)):
        for tid, table in zip(job.targets, tables):
            t = ctx.b.tensors[tid]
            ctx.b.consts[tid] = table.reshape(t.shape).astype(storage_dtype(t.precision))


def handlers(base: dict) -> dict:
    """The island-aware handlers; ``base`` holds the exact ones they fall back to."""
    table = {("", op): float_op() for op in FLOAT_OPS}
    table.update({
        ("", "Add"): float_op(base[("", "Add")]),
        ("", "Relu"): clamp_op(base[("", "Relu")]),
        ("", "Clip"): clamp_op(base[("", "Clip")]),
        ("", "Identity"): passthrough, ("", "Dropout"): passthrough,
        **{("", op): move_op(base[("", op)]) for op in MOVES},
        ("", "QuantizeLinear"): quantize_linear, ("", "Concat"): concat,
        (MS_DOMAIN, "QLinearAdd"): qlinear_binary(base[(MS_DOMAIN, "QLinearAdd")]),
        (MS_DOMAIN, "QLinearMul"): qlinear_binary(),
        (MS_DOMAIN, "QLinearSigmoid"): qlinear_unary,
        (MS_DOMAIN, "QLinearLeakyRelu"): qlinear_unary,
        (MS_DOMAIN, "QLinearConcat"): qlinear_concat,
    })
    return table
