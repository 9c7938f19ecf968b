"""A float ONNX model with one branch per kind of float island, and helpers to quantize it
with onnxruntime's quantize_static and to feed every 8-bit code.

Inputs ``a``, ``b`` [N, 4, 8, 8], ``c`` [N, 4, 1, 1] (a scalar per innermost span), ``s``
[1, 1, 1, 1] (one element), each through a 1x1 Conv with identity weights, as the layer
before an island of a real model. Every output is one island kind (its name says which),
through another identity Conv, as the layer after it."""
from __future__ import annotations

import numpy as np

OPSET, IR = 17, 8


def _branches():
    """(output, nodes, constants) of every branch; node outputs are prefixed by the output."""
    from onnx import helper

    def node(op, ins, out, **attrs):
        return helper.make_node(op, ins, [out], **attrs)

    six, half, root2, one = ("six", 6.0), ("half", 0.5), ("root2", 2 ** 0.5), ("one", 1.0)
    return [
        ("sigmoid", [node("Sigmoid", ["a"], "sigmoid")], []),
        ("tanh", [node("Tanh", ["a"], "tanh")], []),
        ("exp", [node("Exp", ["a"], "exp")], []),
        ("softplus", [node("Softplus", ["a"], "softplus")], []),
        ("leaky", [node("LeakyRelu", ["a"], "leaky", alpha=0.1)], []),
        ("hsig", [node("HardSigmoid", ["a"], "hsig", alpha=1 / 6, beta=0.5)], []),
        ("hswish", [node("HardSwish", ["a"], "hswish")], []),
        ("silu", [node("Sigmoid", ["a"], "silu.s"), node("Mul", ["a", "silu.s"], "silu")], []),
        ("gelu", [node("Div", ["a", "root2"], "gelu.d"), node("Erf", ["gelu.d"], "gelu.e"),
                  node("Add", ["gelu.e", "one"], "gelu.p"), node("Mul", ["a", "gelu.p"], "gelu.m"),
                  node("Mul", ["gelu.m", "half"], "gelu")], [root2, one, half]),
        ("div6", [node("Div", ["a", "six"], "div6")], [six]),
        ("add3", [node("Add", ["a", "three"], "add3")], [("three", 3.0)]),
        ("rsub", [node("Sub", ["three", "a"], "rsub")], [("three", 3.0)]),
        ("add", [node("Add", ["a", "b"], "add")], []),
        ("sub", [node("Sub", ["a", "b"], "sub")], []),
        ("mul", [node("Mul", ["a", "b"], "mul")], []),
        ("add_ac", [node("Add", ["a", "c"], "add_ac")], []),
        ("add_ca", [node("Add", ["c", "a"], "add_ca")], []),
        ("mul_ca", [node("Mul", ["c", "a"], "mul_ca")], []),
        ("sub_ca", [node("Sub", ["c", "a"], "sub_ca")], []),
        ("add_sa", [node("Add", ["s", "a"], "add_sa")], []),
        ("add_as", [node("Add", ["a", "s"], "add_as")], []),
        ("div_ab", [node("Sigmoid", ["b"], "div_ab.s"), node("Add", ["div_ab.s", "one"],
                                                             "div_ab.p"),
                    node("Div", ["a", "div_ab.p"], "div_ab")], [one]),
        ("chain", [node("Sub", ["a", "b"], "chain.d"), node("Div", ["chain.d", "six"], "chain.q"),
                   node("HardSigmoid", ["chain.q"], "chain")], [six]),
        ("concat", [node("Concat", ["a", "sigmoid.r"], "concat", axis=1)], []),
        ("anchor_sub", [node("Sub", ["anchors", "a"], "anchor_sub")], [ANCHORS]),
        ("anchor_add", [node("Add", ["a", "anchors"], "anchor_add")], [ANCHORS]),
        ("stride_mul", [node("Mul", ["a", "strides"], "stride_mul")], [STRIDES]),
        ("pooled", [node("HardSigmoid", ["a"], "pooled.h"),
                    node("MaxPool", ["pooled.h"], "pooled", kernel_shape=[2, 2],
                         strides=[2, 2])], []),
    ]


ANCHORS = ("anchors", np.arange(256, dtype=np.float32).reshape(1, 4, 8, 8) % 16 / 2 + 0.5)
STRIDES = ("strides", np.array([8, 16, 32, 8], np.float32).reshape(1, 4, 1, 1))
"""Constants that vary along the tensor (a detector's anchor points and strides)."""


def islands_model():
    """The float model; outputs in the order of ``outputs()``. Each branch ends in a 1x1
    Conv with identity weights (the next layer of a real model: onnxruntime's quantizer
    quantizes its input, which ends the island)."""
    from onnx import TensorProto, helper, numpy_helper
    eye = {c: numpy_helper.from_array(np.eye(c, dtype=np.float32).reshape(c, c, 1, 1),
                                      f"eye{c}") for c in (4, 8)}
    eye[1] = numpy_helper.from_array(np.ones((1, 1, 1, 1), np.float32), "eye1")
    nodes, inits = [], {e.name: e for e in eye.values()}
    for name in ("a", "b", "c", "s"):
        nodes.append(helper.make_node("Conv", [f"{name}_in", f"eye{1 if name == 's' else 4}"],
                                      [name]))
    for name, ns, consts in _branches():
        ns[-1].output[0] = f"{name}.r"
        channels = 8 if name == "concat" else 4
        nodes += ns + [helper.make_node("Conv", [f"{name}.r", f"eye{channels}"], [name])]
        inits.update({name: numpy_helper.from_array(np.asarray(v, np.float32), name)
                      for name, v in consts})
    shapes = {"a_in": ["N", 4, 8, 8], "b_in": ["N", 4, 8, 8], "c_in": ["N", 4, 1, 1],
              "s_in": [1, 1, 1, 1]}
    inputs = [helper.make_tensor_value_info(k, TensorProto.FLOAT, v) for k, v in shapes.items()]
    results = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
               for name in outputs()]
    graph = helper.make_graph(nodes, "islands", inputs, results, list(inits.values()))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR)


def outputs() -> list[str]:
    return [name for name, _, _ in _branches()]


def samples(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"a_in": rng.normal(0, 2, (n, 4, 8, 8)).astype(np.float32),
            "b_in": rng.normal(0, 2, (n, 4, 8, 8)).astype(np.float32),
            "c_in": rng.normal(0, 2, (n, 4, 1, 1)).astype(np.float32),
            "s_in": rng.normal(0, 2, (1, 1, 1, 1)).astype(np.float32)}


def quantize(path, out, *, fmt: str = "qdq", activation: str = "uint8"):
    """onnxruntime's quantize_static on 16 random samples (MinMax, per-tensor)."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)
    data = samples(16, seed=1)
    batches = iter([{k: v[i:i + 4] if k != "s_in" else v for k, v in data.items()}
                    for i in range(0, 16, 4)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    kind = QuantType.QUInt8 if activation == "uint8" else QuantType.QInt8
    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ if fmt == "qdq"
                    else QuantFormat.QOperator, activation_type=kind, weight_type=QuantType.QInt8)
    return out


def every_code(metadata: dict, n: int) -> dict[str, np.ndarray]:
    """Float inputs whose quantized codes run through every value of their type: ``a`` and
    ``b`` together through every pair (n * 256 elements each: n = 256 gives all 65,536)
    before their identity Convs."""
    rng = np.random.default_rng(2)
    out = {}
    for name, shape in (("a_in", (n, 4, 8, 8)), ("b_in", (n, 4, 8, 8)),
                        ("c_in", (n, 4, 1, 1)), ("s_in", (1, 1, 1, 1))):
        scale = np.float32(metadata[f"input.{name}.scale"])
        zero = int(metadata[f"input.{name}.zero_point"])
        lo = -128 if metadata[f"input.{name}.dtype"] == "int8" else 0
        size = int(np.prod(shape))
        if name == "a_in":
            codes = np.arange(size) // 256 % 256 + lo
        elif name == "b_in":
            codes = np.arange(size) % 256 + lo
        else:
            codes = rng.integers(lo, lo + 256, size)
        out[name] = ((codes - zero).astype(np.float32) * scale).reshape(shape)
    return out
