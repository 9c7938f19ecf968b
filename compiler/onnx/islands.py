"""Float islands: float ops between DequantizeLinear and QuantizeLinear become lookup tables.

An elementwise float op (Sigmoid, HardSwish, Div, Mul, Add...) on quantized tensors, and any
chain of them, computes a value that depends only on one or two 8-bit inputs. Its result is
an :class:`Island`; the QuantizeLinear that ends it (or the QLinear* node of a QOperator
model) emits one ``lut`` whose table onnxruntime fills at the end of the import with what it
computes for that island (tables.py), bit for bit. A Concat of differently scaled tensors
gets one table per input, as onnxruntime's QLinearConcat does.

Ops that also have an exact integer path (Add, Relu, Clip, Concat: quantops.py) keep it as
``Island.exact``: ``half_even`` rounding uses it, and so does any consumer that is not a float
op. Every other consumer of an island needs its quantized result: a clear error otherwise.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ops.base import OpError
from ops.broadcast import broadcast_shape
from ops.table import MAX_ENTRIES
from vm.errors import InvalidError

from . import quantops
from .graph import Node
from .lower import Lowering
from .tables import Job
from .values import NO_CLAMP, TYPE_RANGES, Acc, Const, Island, Q, QConst

FLOAT_OPS = ("Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Exp", "Log", "Erf", "Softplus",
             "Softsign", "Sqrt", "Reciprocal", "Neg", "Abs", "Elu", "Selu", "Celu",
             "LeakyRelu", "ThresholdedRelu", "Gelu", "Mish", "Floor", "Ceil",
             "Round", "Sign", "Sub", "Mul", "Div", "Pow", "Max", "Min", "PRelu")
"""Elementwise float ops that only ever run inside an island."""


class _State:
    """Per import: the node producing each ONNX tensor, and the table jobs."""

    def __init__(self, ctx: Lowering):
        self.producers = {o: n for n in ctx.graph.nodes for o in n.outputs if o}
        self.jobs: list[Job] = []
        self.constants: dict[str, Q | None] = {}      # ONNX name -> view as a table argument
        self.lookups: dict[str, np.ndarray] = {}       # ONNX name -> a float constant's values


def _state(ctx: Lowering) -> _State:
    if not hasattr(ctx, "islands"):
        ctx.islands = _State(ctx)
    return ctx.islands


def island_aware(handler):
    handler.islands = True
    return handler


# ---------------------------------------------------------------------------------------------
# Growing islands
# ---------------------------------------------------------------------------------------------

def float_op(fallback=None):
    """The handler of an elementwise float op: an island, else ``fallback`` (an exact
    quantops handler) on the exact views of its inputs."""
    @island_aware
    def handler(ctx: Lowering, node: Node, args):
        island = None if node.outputs[0] in ctx.graph.outputs else _grow(ctx, node, args)
        if island is not None:
            return Island(node.op_type, island[0], island[1], node.outputs[0],
                          _exact(ctx, node, args, fallback) if fallback else None)
        if fallback is None:
            raise InvalidError(_not_island(ctx, node, args))
        return fallback(ctx, node, [resolve(ctx, node, a) for a in args])
    return handler


def clamp_op(fallback):
    """Relu, Clip: they join an island they read; on a quantized tensor they stay the exact
    pending clamp of quantops."""
    grow = float_op(fallback)

    @island_aware
    def handler(ctx: Lowering, node: Node, args):
        if isinstance(args[0], Island):
            return grow(ctx, node, args)
        return fallback(ctx, node, [resolve(ctx, node, a) for a in args])
    return handler


@island_aware
def passthrough(ctx: Lowering, node: Node, args):
    """Identity, Dropout: the value itself (an island stays one)."""
    return args[0]


def move_op(handler):
    """MaxPool and data movements (Reshape, Transpose...) of an island: recorded, replayed on
    its table's output (a QuantizeLinear is monotonic: it commutes with them, and
    onnxruntime moves it before them)."""
    @island_aware
    def move(ctx: Lowering, node: Node, args):
        v = args[0]
        if not isinstance(v, Island) or node.outputs[0] in ctx.graph.outputs:
            return handler(ctx, node, [resolve(ctx, node, a) for a in args])
        exact = _exact(ctx, node, args, handler) if v.exact is not None else None
        return replace(v, exact=exact, moves=v.moves + ((handler, node, args),))
    return move


def _grow(ctx: Lowering, node: Node, args):
    """(sources, shape) of the island ``node`` makes, or None when it cannot make one."""
    sources, shapes, data_shapes = {}, [], []
    for name, v in zip(node.inputs, args):
        if v is None:
            continue
        if isinstance(v, Island) and v.concat is None and not v.moves:
            sources.update(v.sources)
            shapes.append(v.shape)
            data_shapes.append(v.shape)
        elif isinstance(v, Q) and _one_table_arg(v):
            name, v = _origin(ctx, name, v, node)
            sources[name] = v
            shapes.append(ctx.shape(v.name))
            data_shapes.append(shapes[-1])
        elif isinstance(v, (Const, QConst)) and _uniform(v):
            shapes.append(np.shape(quantops.real_value(v)))
        elif isinstance(v, (Const, QConst)) and _constant_source(ctx, name, v) is not None:
            sources[name] = _constant_source(ctx, name, v)
            shapes.append(ctx.shape(sources[name].name))
            data_shapes.append(shapes[-1])
        else:
            return None
    args_count = len({q.name for q in sources.values()})
    if not data_shapes or args_count > 2:
        return None
    try:
        shape, data = _broadcast(shapes), _broadcast(data_shapes)
    except OpError:
        return None
    return (tuple(sources.items()), shape) if shape == data else None


def _one_table_arg(q: Q) -> bool:
    """A per-tensor quantized tensor of at most 2^16 values can be a table argument."""
    return len(q.scale) == 1 and len(set(q.zero)) == 1 and q.qmax - q.qmin < MAX_ENTRIES


def _uniform(c) -> bool:
    """A constant whose every element is the same real value (it broadcasts like a scalar)."""
    real = quantops.real_value(c)
    return real.size > 0 and bool(np.all(real == real.reshape(-1)[0]))


def _constant_source(ctx: Lowering, name: str, c) -> Q | None:
    """A constant that varies along the tensor as a table argument: its codes become a
    program constant (a quantized constant's integers; a float constant's index among its at
    most 256 distinct values, kept for the table's job)."""
    state = _state(ctx)
    if name not in state.constants:
        state.constants[name] = None
        if isinstance(c, QConst) and c.scale.size == 1 and c.zero.size == 1 \
                and c.q.dtype.name in TYPE_RANGES and c.q.ndim:
            lo, hi = TYPE_RANGES[c.q.dtype.name]
            state.constants[name] = Q(ctx.const(c.q, f"{name}#codes"), (float(c.scale[0]),),
                                      (int(c.zero[0]),), lo, hi)
        elif isinstance(c, Const) and c.value.dtype.kind == "f" and c.value.ndim:
            distinct = np.unique(c.value)
            if distinct.size <= 256:
                codes = np.searchsorted(distinct, c.value)
                state.constants[name] = Q(ctx.const(codes, f"{name}#codes"), (1.0,), (0,), 0,
                                          distinct.size - 1)
                state.lookups[name] = distinct
    return state.constants[name]


def _broadcast(shapes) -> tuple:
    out = ()
    for s in shapes:
        out = broadcast_shape(out, tuple(s), "island")
    return out


def _origin(ctx: Lowering, name: str, q: Q, node: Node):
    """(ONNX name, view) of the unclamped quantized tensor ``q`` reads: through the Relu /
    Clip nodes that made its pending clamp (they join the island), else the clamp applied."""
    while q.clamp != NO_CLAMP:
        producer = _state(ctx).producers.get(name)
        prior = ctx.values.get(producer.inputs[0]) if producer is not None else None
        if producer is None or producer.op_type not in ("Relu", "Clip") \
                or not isinstance(prior, Q):
            return name, quantops.materialize(ctx, q, node)
        name, q = producer.inputs[0], prior
    return name, q


def _exact(ctx: Lowering, node: Node, args, fallback):
    """The exact integer view of ``node`` (computed once, when first asked for)."""
    done = []

    def exact():
        if not done:
            done.append(fallback(ctx, node, [resolve(ctx, node, a) for a in args]))
        return done[0]
    return exact


def resolve(ctx: Lowering, node: Node, v):
    """``v`` for a consumer that is not a float op: an island's exact view, or an error."""
    if not isinstance(v, Island):
        return v
    if v.exact is None:
        raise InvalidError(f"{node.describe()} reads the float result of an island ending in "
                           f"{v.op} (elementwise float ops on quantized tensors), which detvm "
                           "computes as a lookup table of its quantized value: a "
                           "QuantizeLinear must follow it")
    return v.exact()


def _not_island(ctx: Lowering, node: Node, args) -> str:
    kinds = []
    for name, v in zip(node.inputs, args):
        if isinstance(v, Island):
            kinds.append(f"{name!r} (float ops of {len(v.sources)} tensors)")
        elif isinstance(v, Q) and not _one_table_arg(v):
            kinds.append(f"{name!r} (per-channel scales)")
        elif isinstance(v, (Const, QConst)) and not _uniform(v):
            kinds.append(f"{name!r} (a constant that varies along the tensor)")
        elif isinstance(v, Acc):
            kinds.append(f"{name!r} (an unquantized Conv/Gemm/MatMul result)")
    where = "; ".join(kinds) or "inputs that are not quantized tensors"
    if node.outputs[0] in ctx.graph.outputs:
        where = f"its float result is a graph output ({node.outputs[0]!r}), not quantized"
    return (f"{node.describe()}: detvm computes float ops as lookup tables of one or two "
            f"quantized per-tensor inputs whose result is quantized; here: {where}")
