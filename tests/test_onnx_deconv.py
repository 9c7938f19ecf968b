"""ConvTranspose (qconv2d_transpose) against onnxruntime, which runs it in float32 between
DequantizeLinear and QuantizeLinear: exact integer accumulation, then one requantize."""
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


def deconv_model(cin, cout, groups, kernel, attrs, per_channel, bias, rng, size=(5, 6)):
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
    return qdq_model(nodes, [x], [Port("y", shape, 0.3, 128)], inits), x


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("per_channel, bias", [(True, True), (False, False)])
def test_agrees_with_onnxruntime(case, per_channel, bias):
    rng = np.random.default_rng(case)
    model, x = deconv_model(*CASES[case], per_channel, bias, rng)
    ours, theirs = compare(model, random_feeds(model, rng, [x]))
    assert np.abs(ours - theirs).max() <= 1
    assert (ours == theirs).mean() >= 0.99
