"""Softmax inside the graph (qsoftmax, onnxruntime's QLinearSoftmax): equal to a numpy float32
replica of onnxruntime's formula on every element, and to onnxruntime itself where its float32
summation is not at a tie (see docs/onnx.md for the measured residual)."""
from __future__ import annotations

import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from compiler.onnx.softmax import numerator  # noqa: E402
from tests.onnx_qdq import Port, compare, optimized_ops, qdq_model, run_detvm  # noqa: E402

f32 = np.float32
FLT_MAX = float(np.finfo(f32).max)
TYPES = {"uint8": (0, 255, 0, f32(1 / 255)), "int8": (-128, 127, -128, f32(1 / 256))}


def replica(x, x_scale, y_scale, y_zero, lo, hi):
    """onnxruntime's QLinearSoftmax in numpy float32 (rows on the last axis)."""
    d = x.shape[-1]
    s = float(f32(x_scale))
    shift = max(0.0, math.log(FLT_MAX / d) - 5) / s
    table = np.array([f32(math.exp((i - 255 + shift) * s)) for i in range(256)], f32)
    xi = x.astype(np.int64)
    t = table[np.clip(xi - xi.max(axis=-1, keepdims=True) + 255, 0, 255)]
    total = np.zeros(t.shape[:-1], f32)
    for j in range(d):
        total = (total + t[..., j]).astype(f32)
    q = (f32(numerator(y_scale)) / total).astype(f32)
    y = np.rint((t * q[..., None]).astype(f32)).astype(np.int64) + y_zero
    return np.clip(y, lo, hi)


def softmax_model(shape, dtype, x_scale, axis=-1, opset=13):
    lo, hi, zero, y_scale = TYPES[dtype]
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    x = Port("x", shape, x_scale, 0, dtype)
    return qdq_model([node], [x], [Port("y", shape, y_scale, zero, dtype)], opset=opset)


def rows(rng, shape, dtype, ties: bool):
    lo, hi = TYPES[dtype][:2]
    if not ties:
        return rng.integers(lo, hi + 1, shape).astype(dtype)
    base = rng.integers(lo, hi + 1, shape[:-1] + (1,))
    spread = rng.integers(0, 12, shape[:-1] + (1,))
    return np.clip(base - rng.integers(0, 2, shape) * spread, lo, hi).astype(dtype)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
@pytest.mark.parametrize("d", [2, 7, 16, 33])
def test_equals_the_float32_replica(dtype, d):
    """The integer kernel is onnxruntime's float32 formula exactly, ties included."""
    rng = np.random.default_rng(d)
    lo, hi, zero, y_scale = TYPES[dtype]
    for x_scale in (0.004, 0.0911, 1.7):
        for ties in (False, True):
            x = rows(rng, (300, d), dtype, ties)
            ours = run_detvm(softmax_model((300, d), dtype, x_scale), {"x_q": x})[0]
            assert np.array_equal(ours, replica(x, x_scale, y_scale, zero, lo, hi)), \
                (x_scale, ties)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_agrees_with_onnxruntime(dtype):
    """Uniform random rows: identical but for rare float32 near-ties (measured in
    bench/qsoftmax.py); onnxruntime fuses the pattern into QLinearSoftmax."""
    rng = np.random.default_rng(7)
    same = total = 0
    for d in (3, 12, 16, 40):
        model = softmax_model((500, d), dtype, 0.0911)
        assert "QLinearSoftmax" in optimized_ops(model)
        ours, theirs = compare(model, {"x_q": rows(rng, (500, d), dtype, False)})
        assert np.abs(ours - theirs).max() <= 1
        same, total = same + (ours == theirs).sum(), total + ours.size
    assert same / total >= 0.9995


def test_yolov8_distribution_focal_rows_are_exact():
    """The shape of YOLOv8's DFL softmax (rows of 16 on axis 2, uint8, its scales)."""
    model = softmax_model((1, 4, 16, 210), "uint8", 0.0911, axis=2)
    x = np.random.default_rng(8).integers(0, 256, (1, 4, 16, 210)).astype(np.uint8)
    ours, theirs = compare(model, {"x_q": x})
    assert np.array_equal(ours, theirs)


def test_opset11_softmax_flattens_from_its_axis():
    model = softmax_model((4, 3, 5), "uint8", 0.05, axis=1, opset=11)
    x = np.random.default_rng(9).integers(0, 256, (4, 3, 5)).astype(np.uint8)
    ours, theirs = compare(model, {"x_q": x})
    assert np.array_equal(ours, theirs)


def test_qoperator_qlinear_softmax():
    from onnx import numpy_helper
    node = helper.make_node("QLinearSoftmax", ["x_q", "xs", "xz", "ys", "yz"], ["y_q"],
                            domain="com.microsoft", axis=-1, opset=13)
    consts = {"xs": np.array(0.07, f32), "xz": np.array(0, np.int8),
              "ys": np.array(1 / 256, f32), "yz": np.array(-128, np.int8)}
    graph = helper.make_graph(
        [node], "qs", [helper.make_tensor_value_info("x_q", TensorProto.INT8, (64, 10))],
        [helper.make_tensor_value_info("y_q", TensorProto.INT8, (64, 10))],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                    helper.make_opsetid("com.microsoft", 1)],
                              ir_version=8)
    x = np.random.default_rng(10).integers(-128, 128, (64, 10)).astype(np.int8)
    ours, theirs = compare(model, {"x_q": x})
    assert np.abs(ours - theirs).max() <= 1 and (ours == theirs).mean() >= 0.999


def test_numerator_is_onnxruntime_floor_of_the_inverse_scale():
    """floor(1 / s_y) in float32: 254 for s_y = float32(1/255) (not 255)."""
    assert numerator(f32(1 / 255)) == 254 and numerator(f32(1 / 256)) == 256
