"""ConvTranspose (qconv2d_transpose) against onnxruntime, which runs it in float32 between
DequantizeLinear and QuantizeLinear. Without a bias, ``fp32`` rounding reproduces that float32
path (rounding=fp32: identical values); with a bias, or ``half_even``, the sum is exact and one
requantize follows (within 1 LSB)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import helper  # noqa: E402

from compiler.onnx.deconv import transpose_crops  # noqa: E402
from tests.onnx_qdq import Port, compare, qdq_model, random_feeds  # noqa: E402

CASES = [  # (channels in, out, groups, kernel, attrs)
    (8, 6, 1, (2, 2), dict(strides=[2, 2])),                              # PP-OCR's DB head
    (4, 6, 2, (3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1])),
    (3, 4, 1, (3, 2), dict(strides=[1, 2], dilations=[2, 1], pads=[0, 1, 2, 0])),
    (4, 4, 1, (3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    (4, 2, 1, (4, 4), dict(strides=[3, 3], output_shape=[13, 14])),
]


def deconv_model(cin, cout, groups, kernel, attrs, per_channel, bias, rng, size=(5, 6),
                 s_y=0.3):
    from onnx import numpy_helper
    w = rng.integers(-127, 128, (cin, cout // groups) + kernel).astype(np.int8)
    s_x = np.float32(0.02)
    s_w = (rng.uniform(0.002, 0.01, cout // groups) if per_channel else
           np.array(0.005)).astype(np.float32)
    inits = {"w_q": w, "w_s": s_w, "w_z": np.zeros(s_w.shape, np.int8)}
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], axis=1)]
    inputs = ["x", "w"]
    if bias:
        inits.update(b_q=rng.integers(-3000, 3000, cout).astype(np.int32),
                     b_s=(s_x * np.resize(s_w, cout)).astype(np.float32))
        nodes.append(helper.make_node("DequantizeLinear", ["b_q", "b_s"], ["b"], axis=0))
        inputs.append("b")
    nodes.append(helper.make_node("ConvTranspose", inputs, ["y"], group=groups, **attrs))
    x = Port("x", (2, cin) + size, float(s_x), 120)
    out = [(size[k] - 1) * attrs.get("strides", [1, 1])[k]
           + (kernel[k] - 1) * attrs.get("dilations", [1, 1])[k] + 1 for k in range(2)]
    begin, end = transpose_crops(attrs, size, kernel)
    shape = (2, cout, out[0] - begin[0] - end[0], out[1] - begin[1] - end[1])
    return qdq_model(nodes, [x], [Port("y", shape, s_y, 128)], inits), x


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("per_channel, bias", [(True, True), (False, False), (True, False)])
def test_agrees_with_onnxruntime(case, per_channel, bias):
    rng = np.random.default_rng(case)
    model, x = deconv_model(*CASES[case], per_channel, bias, rng)
    feeds = random_feeds(model, rng, [x])
    ours, theirs = compare(model, feeds)
    if bias:
        assert np.abs(ours - theirs).max() <= 1
        assert (ours == theirs).mean() >= 0.99
    else:
        assert np.array_equal(ours, theirs)
    exact, _ = compare(model, feeds, rounding="half_even")
    assert np.abs(exact - theirs).max() <= 1


def test_float32_sums_are_onnxruntimes_bit_for_bit():
    """The float32 values before QuantizeLinear: onnxruntime's float ConvTranspose output on
    DequantizeLinear inputs equals ops/deconv32.py's integer pairs bit for bit (300 input
    channels: SGEMM blocks of 128, 128 and 44; an overlapping 3x3 kernel at stride 2: col2im
    additions), where the exact sum differs from most of them."""
    from fractions import Fraction

    from onnx import TensorProto, numpy_helper

    from ops import deconv32
    from ops.softfloat import split
    from tests.onnx_qdq import run_ort
    rng = np.random.default_rng(7)
    cin, cout, size = 300, 3, (6, 7)
    x = rng.integers(0, 256, (1, cin) + size).astype(np.uint8)
    w = rng.integers(-127, 128, (cin, cout, 3, 3)).astype(np.int8)
    s_x, s_w = np.float32(0.0113), rng.uniform(0.001, 0.01, cout).astype(np.float32)
    inits = [numpy_helper.from_array(v, k) for k, v in dict(
        s_x=np.array(s_x), z_x=np.array(np.uint8(120)), w=w, s_w=s_w,
        z_w=np.zeros(cout, np.int8)).items()]
    graph = helper.make_graph([
        helper.make_node("DequantizeLinear", ["x", "s_x", "z_x"], ["xf"]),
        helper.make_node("DequantizeLinear", ["w", "s_w", "z_w"], ["wf"], axis=1),
        helper.make_node("ConvTranspose", ["xf", "wf"], ["y"], strides=[2, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, x.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)
    theirs = run_ort(model, {"x": x})[0]
    pair = lambda v: split(Fraction(float(v)))
    attrs = dict(channels=cout, kernel_size=(3, 3), strides=(2, 2), dilation=(1, 1),
                 groups=1, zero_point=120, x_scale=pair(s_x),
                 w_mantissa=[pair(v)[0] for v in s_w], w_exponent=[pair(v)[1] for v in s_w])
    m, e = deconv32.kernel(np, x.astype(np.int64), w.astype(np.int64), attrs, theirs.shape)
    ours = np.ldexp(m.astype(np.float64), e.astype(np.int32)).astype(np.float32)
    assert np.array_equal(ours, theirs)
    xs = (x.astype(np.float64) - 120) * np.float64(s_x)
    ws = w.astype(np.float64) * s_w.astype(np.float64).reshape(1, -1, 1, 1)
    exact = np.zeros(theirs.shape)
    for r in range(3):
        for c in range(3):
            exact[:, :, r:r + 11:2, c:c + 13:2] += np.einsum("nchw,cm->nmhw", xs, ws[:, :, r, c])
    assert (exact.astype(np.float32) != theirs).mean() > 0.5
