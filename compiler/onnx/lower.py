"""Lowering an ONNX graph to a detvm program: one pass over the nodes in order.

Every ONNX tensor gets a value (compiler/onnx/values.py); handlers (linear.py, quantops.py,
layout.py) turn a node's values into Builder instructions and the values of its outputs.
Graph inputs quantized by a QuantizeLinear become integer inputs, graph outputs keep their ONNX
names; the scales and zero points of both travel in the metadata (``float_io``, docs/onnx.md).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from compiler.builder import Builder
from ops.base import precision_for
from vm.errors import InvalidError

from .fixed import ROUNDINGS, fl32, ort_scales
from .graph import Graph, Node
from .values import Acc, Const, FloatIn, Int, QConst, TYPE_RANGES, describe

FAILED = object()
"""The value of a tensor whose node could not be lowered."""
REPORTED = 8
"""Failures quoted in full in one error; the rest are counted."""


def failure_report(failures: list[str]) -> str:
    if len(failures) == 1:
        return failures[0]
    shown = "; ".join(failures[:REPORTED])
    more = f"; and {len(failures) - REPORTED} more" if len(failures) > REPORTED else ""
    return f"{len(failures)} ONNX nodes cannot be imported: {shown}{more}"


class Lowering:
    """The state of one import: the Builder, the value of every ONNX tensor, the metadata."""

    def __init__(self, graph: Graph, name: str, rounding: str):
        if rounding not in ROUNDINGS:
            raise InvalidError(f"unknown rounding {rounding!r} (known: {', '.join(ROUNDINGS)})")
        self.graph, self.rounding = graph, rounding
        self.b = Builder(name)
        self.values: dict[str, object] = {k: Const(v) for k, v in graph.consts.items()}
        self.outputs: set[str] = set()
        self.failures: list[str] = []          # a message per node that cannot be lowered
        self.meta: dict[str, str] = {"source": "onnx", "onnx.opset": str(graph.opset),
                                     "requantize.rounding": rounding}
        if graph.producer:
            self.meta["onnx.producer"] = graph.producer

    # -- the pass -----------------------------------------------------------------------------
    def run(self, handlers: dict) -> None:
        """Lower the inputs and every node, in order (compiler/onnx/outputs.py finishes);
        every node that cannot be lowered is reported in one error (the nodes that depend
        on it are not tried)."""
        for name, dtype, shape in self.graph.inputs:
            self.values[name] = self._input(name, dtype, shape)
        for node in self.graph.nodes:
            args = [self.values.get(i) if i else None for i in node.inputs]
            if any(a is FAILED for a in args):
                results = [FAILED] * len(node.outputs)
            else:
                try:
                    results = self._lower(handlers, node, args)
                except InvalidError as e:
                    self.failures.append(e.message)
                    results = [FAILED] * len(node.outputs)
            for out, value in zip(node.outputs, results):
                if out:
                    self.values[out] = value
        if self.failures:
            raise InvalidError(failure_report(self.failures))

    def _lower(self, handlers: dict, node: Node, args: list) -> list:
        missing = [i for i, v in zip(node.inputs, args) if i and v is None]
        if missing:
            raise InvalidError(f"{node.describe()}: undefined input {missing[0]!r}")
        try:
            results = handlers[(node.domain, node.op_type)](self, node, args)
        except InvalidError as e:            # e.g. from the Builder: say which node
            if node.describe() in e.message:
                raise
            raise InvalidError(f"{node.describe()}: {e.message}") from e
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as e:
            inputs = ", ".join(f"{name!r} ({describe(v)})" for name, v in zip(node.inputs, args)
                               if name)
            raise InvalidError(f"{node.describe()}: this combination of inputs or attributes "
                               f"is not supported (inputs: {inputs or 'none'})") from e
        return results if isinstance(results, list) else [results]

    def _input(self, name: str, dtype: str, shape: tuple) -> object:
        if dtype in ("float32", "float16", "float64"):
            return FloatIn(name, shape, shape)
        if dtype not in TYPE_RANGES:
            raise InvalidError(f"ONNX input {name!r}: element type {dtype} is not supported")
        lo, hi = TYPE_RANGES[dtype]
        name = self.b.input(self.name_for(name), shape, precision_for(max(-lo, hi)))
        self.meta[f"input.{name}.dtype"] = dtype
        return Int(name, lo, hi)

    # -- helpers for the handlers -------------------------------------------------------------
    def name_for(self, base: str) -> str:
        """A fresh printable tensor name derived from ``base``."""
        base = "".join(c if c.isprintable() else "_" for c in base)[:200] or "t"
        name, k = base, 1
        while name in self.b:
            name, k = f"{base}#{k}", k + 1
        return name

    def op(self, op_name: str, *inputs: str, out: str, **attrs) -> str:
        return self.b.apply(op_name, inputs, attrs, [self.name_for(out)])

    def const(self, values, out: str) -> str:
        """A constant of the smallest precision holding ``values`` (exact ints)."""
        return self.b.const(self.name_for(out), np.asarray(values).astype(np.int64))

    def shape(self, name: str) -> tuple[int, ...]:
        return self.b.tensor(name).shape

    def shape_of(self, v) -> tuple[int, ...]:
        return v.shape if isinstance(v, FloatIn) else self.shape(v.name)

    def quantize_input(self, v: FloatIn, scale: np.ndarray, zero: np.ndarray, axis: int,
                       dtype: str) -> Int:
        """The model input of a float graph input (its QuantizeLinear)."""
        if dtype not in TYPE_RANGES:
            raise InvalidError(f"QuantizeLinear of input {v.name!r} to {dtype} is not supported")
        if isinstance(self.values.get(v.name), Int):
            raise InvalidError(f"float input {v.name!r} is quantized twice")
        if v.moves and np.size(scale) > 1:
            raise InvalidError(f"float input {v.name!r}: a per-channel quantization after a "
                               "data movement is not supported")
        lo, hi = TYPE_RANGES[dtype]
        name = self.b.input(self.name_for(v.name), v.base, precision_for(max(-lo, hi)))
        key = f"input.{name}."
        self.meta.update({key + "scale": floats(scale), key + "zero_point": ints(zero),
                          key + "dtype": dtype})
        if np.size(scale) > 1:
            self.meta[key + "axis"] = str(axis)
        self.values[v.name] = Int(name, lo, hi)
        for op, attrs, out, *consts in v.moves:        # they commute with the quantization
            extra = [self.const(values, c) for values, c in (consts[0] if consts else ())]
            name = self.op(op, name, *extra, out=out, **attrs)
        return Int(name, lo, hi)

def scale32(v) -> list:
    """The float32 scales float_io multiplies by (for an Acc with ORT factors: ORT's own)."""
    if isinstance(v, Acc) and v.ort is not None:
        return ort_scales(v.ort)
    if isinstance(v, Acc):
        return [fl32(float(Fraction(s))) for s in v.scale]
    return [fl32(s) for s in v.scale]


def floats(values) -> str:
    return ",".join(repr(float(np.float32(x))) for x in np.asarray(values).reshape(-1))


def ints(values) -> str:
    return ",".join(str(int(x)) for x in np.asarray(values).reshape(-1))


def constant(v, node: Node, what: str) -> np.ndarray:
    """The array of a constant input, or a clear error."""
    if isinstance(v, Const):
        return v.value
    raise InvalidError(f"{node.describe()}: {what} must be a constant")


def dequantized_const(v, node: Node, what: str) -> QConst:
    if isinstance(v, QConst):
        return v
    raise InvalidError(f"{node.describe()}: {what} must be a quantized constant "
                       "(DequantizeLinear of an initializer)")
