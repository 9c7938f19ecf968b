"""Small float ONNX models (random weights, built with onnx.helper) for the ONNX tests, and
helpers to quantize them with onnxruntime and compare detvm with it."""
from __future__ import annotations

import numpy as np

OPSET, IR = 17, 8
"""onnxruntime 1.31 reads at most IR 13 / opset 26: pin what the models declare."""


def _init(name, array):
    from onnx import numpy_helper
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def cnn(seed: int = 0, *, residual: bool = True, pool: str = "global", softmax: bool = False,
        channels: int = 3, side: int = 8):
    """Conv-Relu-MaxPool, a 1x1 Conv with a residual Add, a Concat, an average pool,
    Flatten, Gemm (and Softmax). Input ``x`` [N, channels, side, side], output ``y``."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(seed)
    n = lambda *s: rng.normal(0, 0.4, s)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2])]
    inits = [_init("w1", n(8, channels, 3, 3)), _init("b1", n(8))]
    last = "p1"
    if residual:
        nodes += [helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"]),
                  helper.make_node("Relu", ["c2"], ["r2"]),
                  helper.make_node("Add", ["r2", "p1"], ["a2"]),
                  helper.make_node("Concat", ["a2", "p1"], ["cat"], axis=1)]
        inits += [_init("w2", n(8, 8, 1, 1)), _init("b2", n(8))]
        last = "cat"
    width = 16 if residual else 8
    if pool == "global":
        nodes.append(helper.make_node("GlobalAveragePool", [last], ["gp"]))
    else:
        nodes.append(helper.make_node("AveragePool", [last], ["gp"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[2, 2]))
    side_out = 1 if pool == "global" else (side // 2 + 1) // 2
    nodes += [helper.make_node("Flatten", ["gp"], ["f"]),
              helper.make_node("Gemm", ["f", "wd", "bd"], ["y" if not softmax else "z"],
                               transB=1)]
    inits += [_init("wd", n(10, width * side_out * side_out)), _init("bd", n(10))]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["z"], ["y"], axis=1))
    graph = helper.make_graph(
        nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     ["N", channels, side, side])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR)


def ort_session(path):
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def to_int(y: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """ORT's dequantized float output back to its integers (exact for |q - z| < 2^24)."""
    return np.rint(y.astype(np.float64) / np.float64(np.float32(scale))).astype(np.int64) + zero


def mlp(seed: int = 0):
    """Transpose, Reshape, MatMul + Add bias, Clip(0, 6), Unsqueeze, Pad, Squeeze, MatMul,
    and an ArgMax output. Input ``x`` [N, 4, 6]; outputs ``y`` [N, 10], ``k`` [N]."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)
    ints = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Reshape", ["t", "shape"], ["r"]),
             helper.make_node("MatMul", ["r", "w1"], ["m1"]),
             helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Clip", ["a1", "lo", "hi"], ["c1"]),
             helper.make_node("Unsqueeze", ["c1", "ax"], ["u"]),
             helper.make_node("Pad", ["u", "pads"], ["pd"]),
             helper.make_node("Squeeze", ["pd", "ax"], ["s"]),
             helper.make_node("MatMul", ["s", "w2"], ["y"]),
             helper.make_node("ArgMax", ["y"], ["k"], axis=1, keepdims=0)]
    inits = [ints("shape", [-1, 24]), _init("w1", rng.normal(0, 0.4, (24, 16))),
             _init("b1", rng.normal(0, 0.3, 16)), _init("lo", 0.0), _init("hi", 6.0),
             ints("ax", [1]), ints("pads", [0, 0, 2, 0, 0, 0]),
             _init("w2", rng.normal(0, 0.4, (18, 10)))]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10]),
         helper.make_tensor_value_info("k", TensorProto.INT64, ["N"])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR)


def conv_bn(seed: int = 0):
    """Conv - BatchNormalization (one negative gamma) - Relu. Input ``x`` [N, 3, 6, 6]."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["y"])]
    inits = [_init("w", rng.normal(0, .5, (4, 3, 3, 3))),
             _init("g", rng.uniform(0.5, 2, 4) * [1, -1, 1, 1]), _init("b", rng.normal(0, 1, 4)),
             _init("m", rng.normal(0, 1, 4)), _init("v", rng.uniform(0.5, 2, 4))]
    graph = helper.make_graph(
        nodes, "conv-bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 6, 6])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                             ir_version=IR)


def two_heads(seed: int = 0, *, opset: int = OPSET, dims=("N", 3, "H", "W")):
    """A detector-like head: Conv 'boxes' (values in the hundreds) and Conv-Relu 'scores'
    (values below 1) concatenated into the one output ``y`` [N, 6, H, W]. Input ``x``."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Conv", ["x", "wb"], ["boxes"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "ws"], ["s"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["s"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["y"], axis=1)]
    inits = [_init("wb", rng.normal(0, 40, (4, 3, 3, 3))),
             _init("ws", rng.normal(0, 0.05, (2, 3, 3, 3)))]
    out = [dims[0], 6, *dims[2:]]
    graph = helper.make_graph(
        nodes, "two-heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(dims))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=IR)
