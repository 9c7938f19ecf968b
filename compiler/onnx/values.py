"""What an ONNX tensor is while a graph is lowered: the exact integer view of each value.

* :class:`Int`    an integer tensor held in the VM (an ONNX int8/uint8/int16/uint16/int32
                  tensor: a QuantizeLinear or QLinear* output, an integer graph input).
* :class:`Q`      a float ONNX tensor held exactly as integers: real = (q - zero) * scale
                  (a DequantizeLinear output, and what max pool or reshape make of one).
* :class:`Acc`    a float ONNX tensor held as an exact accumulator: real = acc * scale[c]
                  (a Conv / Gemm / MatMul / Add / average pool result before its QuantizeLinear).
* :class:`Const`  a compile-time constant (initializer, Constant node, folded subgraph).
* :class:`QConst` a dequantized constant: real = (q - zero) * scale (weights, biases).
* :class:`FloatIn` a float graph input; its QuantizeLinear becomes the model's input (data
                  movements before it commute with a per-tensor quantization: replayed after).
* :class:`Post`   a float op left to the output boundary (Softmax): applied by float_io.

Q and Acc carry ``clamp``: a pending real-valued clip [lo, hi] (Relu, Clip) that the next
QuantizeLinear applies exactly, since rounding is monotonic: Q(clip(v, lo, hi)) =
clip(Q(v), Q(lo), Q(hi)).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

NO_CLAMP = (-math.inf, math.inf)


@dataclass(frozen=True)
class Int:
    name: str
    qmin: int
    qmax: int


@dataclass(frozen=True)
class Q:
    name: str
    scale: tuple[float, ...]          # float32 values; one (per tensor) or one per channel
    zero: tuple[int, ...]             # one, or one per channel (outputs only)
    qmin: int
    qmax: int
    axis: int = 1
    clamp: tuple = NO_CLAMP

    def fractions(self) -> list[Fraction]:
        return [Fraction(s) for s in self.scale]


@dataclass(frozen=True)
class Acc:
    name: str
    scale: tuple[Fraction, ...]       # exact; one (per tensor) or one per channel
    axis: int = 1
    ort: tuple | None = None          # how ORT forms its float32 scale (fixed.ort_ratios)
    clamp: tuple = NO_CLAMP
    pool: tuple | None = None         # an average pool's sum: its input (avgpool.pool_origin)

    def fractions(self) -> list[Fraction]:
        return list(self.scale)


@dataclass(frozen=True)
class Const:
    value: np.ndarray


@dataclass(frozen=True)
class QConst:
    q: np.ndarray
    scale: np.ndarray                 # float32, shape () or (C,)
    zero: np.ndarray                  # integer, shape () or (C,)
    axis: int = 1


@dataclass(frozen=True)
class FloatIn:
    name: str
    shape: tuple[int, ...]            # after ``moves``
    base: tuple[int, ...] = ()        # the graph input's shape
    moves: tuple = ()                 # (op, attrs, out[, ((const, name), ...)]) data movements
                                      # before quantization (constants: extra inputs)


@dataclass(frozen=True)
class Post:
    kind: str                         # "softmax"
    value: object                     # the Q or Acc it applies to
    axis: int = -1
    extra: dict = field(default_factory=dict)


def with_clamp(v, lo: float, hi: float):
    """``v`` (a Q or Acc) with the real clip [lo, hi] composed onto its pending clamp."""
    old = v.clamp
    return replace(v, clamp=(max(old[0], lo), min(old[1], hi)))


def per_tensor(v) -> bool:
    return len(v.scale) == 1


TYPE_RANGES = {
    "int2": (-2, 1), "uint2": (0, 3), "int4": (-8, 7), "uint4": (0, 15),
    "int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767), "uint16": (0, 65535),
    "int32": (-(1 << 31) + 1, (1 << 31) - 1),
}
"""Integer ONNX element types the VM holds, and their ranges (int32 excludes -2^31: the VM's
precisions are symmetric)."""


def describe(v) -> str:
    """What a value is, in the terms of the ONNX graph (for error messages)."""
    if isinstance(v, Post):
        return f"a float {v.kind.capitalize()} result, which only a graph output may be"
    if isinstance(v, FloatIn):
        return "a float graph input before its QuantizeLinear"
    for kind, text in DESCRIPTIONS.items():
        if isinstance(v, kind):
            return text
    return "a tensor of an unsupported kind"


DESCRIPTIONS = {
    Int: "an integer tensor",
    Q: "a dequantized tensor",
    Acc: "a float result before its QuantizeLinear",
    Const: "a constant",
    QConst: "a dequantized constant",
}
"""Descriptions of the value kinds, for :func:`describe`."""


@dataclass(frozen=True)
class Island:
    """A float tensor computed by elementwise float ops from one or two quantized tensors
    (compiler/onnx/islands.py). Its QuantizeLinear becomes a lookup table (``lut``) that
    onnxruntime fills; ``exact`` (where the ops have one: Add, Relu, Clip, Concat) computes
    the exact integer view instead, for ``half_even`` and for consumers that are not float ops.

    ``sources``: (ONNX name, quantized view) of every tensor the island reads; ``tensor``: the
    ONNX name of its float result and ``shape`` its shape; ``concat``: the axis when the
    island is a Concat of its sources (one table per source); ``moves``: data movements and
    max pools applied to that result since (they commute with the QuantizeLinear: replayed
    on the table's output)."""

    op: str                                   # the ONNX node that made it (for messages)
    sources: tuple                            # ((onnx name, Q), ...)
    shape: tuple[int, ...]
    tensor: str
    exact: object = None                      # a zero-argument callable, or None
    concat: int | None = None
    moves: tuple = ()                         # ((handler, node, args), ...)


DESCRIPTIONS[Island] = "the float result of elementwise float ops before its QuantizeLinear"
