"""MatMul of two activations (attention): qmatmul against onnxruntime's QLinearMatMul, bit for
bit (exact int32 accumulation, then its float32 requantize reproduced by the fp32 rounding).
onnxruntime fuses uint8 operands (measured); int8 ones it multiplies the dequantized
floats, and detvm's exact product can differ there by 1 LSB near ties."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from tests.onnx_qdq import Port, compare, optimized_ops, qdq_model, random_feeds  # noqa: E402

SHAPES = [((4, 6), (6, 5)), ((2, 3, 4, 8), (2, 3, 8, 4)), ((2, 1, 3, 5), (4, 5, 2)),
          ((7,), (7, 3)), ((3, 6), (6,))]


def product_shape(a, b):
    return np.matmul(np.zeros(a), np.zeros(b)).shape or (1,)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("a, b", SHAPES)
def test_qdq_matmul_of_two_activations(dtype, a, b):
    zero = 120 if dtype == "uint8" else -5
    x, y = Port("a", a, 0.02, zero, dtype), Port("b", b, 0.03, zero + 7, dtype)
    node = helper.make_node("MatMul", ["a", "b"], ["c"])
    model = qdq_model([node], [x, y], [Port("c", product_shape(a, b), 0.05, zero, dtype)])
    fused = "QLinearMatMul" in optimized_ops(model)
    assert fused == (dtype == "uint8")
    rng = np.random.default_rng(len(a) + len(b))
    ours, theirs = compare(model, random_feeds(model, rng, [x, y]))
    if fused:
        assert np.array_equal(ours, theirs)
    else:       # onnxruntime multiplies the dequantized floats: exact up to float32 roundings
        assert np.abs(ours - theirs).max() <= 1 and (ours == theirs).mean() >= 0.98


def test_attention_scores_softmax_values():
    """Q K^T -> Softmax -> @ V, all quantized: two qmatmul and a qsoftmax."""
    q, k, v = Port("q", (1, 2, 6, 4), 0.05, 128), Port("k", (1, 2, 4, 6), 0.05, 128), \
        Port("v", (1, 2, 6, 4), 0.04, 120)
    nodes = [helper.make_node("MatMul", ["q", "k"], ["s"]),
             helper.make_node("QuantizeLinear", ["s", "s_s", "s_z"], ["s_q"]),
             helper.make_node("DequantizeLinear", ["s_q", "s_s", "s_z"], ["s_d"]),
             helper.make_node("Softmax", ["s_d"], ["p"], axis=-1),
             helper.make_node("QuantizeLinear", ["p", "p_s", "p_z"], ["p_q"]),
             helper.make_node("DequantizeLinear", ["p_q", "p_s", "p_z"], ["p_d"]),
             helper.make_node("MatMul", ["p_d", "v"], ["o"])]
    inits = {"s_s": np.float32(0.1), "s_z": np.uint8(128), "p_s": np.float32(1 / 255),
             "p_z": np.uint8(0)}
    model = qdq_model(nodes, [q, k, v], [Port("o", (1, 2, 6, 4), 0.03, 128)], inits)
    ops = optimized_ops(model)
    assert ops.count("QLinearMatMul") == 2 and "QLinearSoftmax" in ops
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(3), [q, k, v]))
    assert np.array_equal(ours, theirs)


def test_qoperator_forms():
    """QLinearMatMul and MatMulInteger with both operands graph inputs."""
    rng = np.random.default_rng(4)
    consts = {"as": np.float32(0.02), "az": np.uint8(100), "bs": np.float32(0.04),
              "bz": np.uint8(90), "ys": np.float32(0.1), "yz": np.uint8(128)}
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                              ["y"]),
             helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["i"])]
    u8 = lambda n, s: helper.make_tensor_value_info(n, TensorProto.UINT8, s)   # noqa: E731
    graph = helper.make_graph(
        nodes, "mm", [u8("a", (3, 5, 9)), u8("b", (3, 9, 4))],
        [u8("y", (3, 5, 4)), helper.make_tensor_value_info("i", TensorProto.INT32, (3, 5, 4))],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    feeds = {"a": rng.integers(0, 256, (3, 5, 9)).astype(np.uint8),
             "b": rng.integers(0, 256, (3, 9, 4)).astype(np.uint8)}
    ours, theirs = compare(model, feeds)
    assert np.array_equal(ours, theirs)
