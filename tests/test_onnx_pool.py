"""AveragePool between a DequantizeLinear and a QuantizeLinear: onnxruntime fuses it into
QLinearAveragePool (float32 steps), which detvm reproduces with qavg_pool2d (``fp32``)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import helper  # noqa: E402

from tests.onnx_qdq import Port, compare, optimized_ops, qdq_model, random_feeds  # noqa: E402

GEOMETRIES = [dict(kernel_shape=[3, 2], strides=[3, 2]),
              dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
              dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
              dict(kernel_shape=[2, 3], strides=[2, 1], pads=[0, 1, 0, 1])]


def pool_model(attrs, dtype: str, same_scale: bool):
    zero = 3 if dtype == "uint8" else -5
    x = Port("x", (1, 4, 9, 10), scale=0.40795398, zero=zero, dtype=dtype)
    node = helper.make_node("AveragePool", ["x"], ["y"], **attrs)
    pads = attrs.get("pads", [0] * 4)
    shape = (1, 4, *[(d + pads[k] + pads[k + 2] - kernel) // stride + 1 for k, (d, kernel, stride)
                     in enumerate(zip((9, 10), attrs["kernel_shape"], attrs["strides"]))])
    out = Port("y", shape, scale=0.40795398 if same_scale else 0.0917, zero=zero, dtype=dtype)
    return qdq_model([node], [x], [out]), x


@pytest.mark.parametrize("attrs", GEOMETRIES)
@pytest.mark.parametrize("dtype, same_scale", [("uint8", True), ("uint8", False),
                                               ("int8", True)])
def test_average_pool_is_onnxruntime_bit_for_bit(attrs, dtype, same_scale):
    model, x = pool_model(attrs, dtype, same_scale)
    assert "QLinearAveragePool" in optimized_ops(model)
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(7), [x]))
    assert np.array_equal(ours, theirs)


def test_half_even_keeps_the_exact_average():
    """``half_even``: the exact sum and one requantize (within 1 LSB of onnxruntime)."""
    from compiler.onnx import import_onnx
    model, x = pool_model(GEOMETRIES[0], "uint8", True)
    program = import_onnx(model, rounding="half_even")
    assert "qavg_pool2d" not in {i.op for i in program.code}
    assert "qavg_pool2d" in {i.op for i in import_onnx(model).code}
    feeds = random_feeds(model, np.random.default_rng(8), [x])
    ours, theirs = compare(model, feeds, rounding="half_even")
    assert np.abs(ours - theirs).max() <= 1
