"""The LayerNorm pattern (ReduceMean, Sub, Transpose, Pow, ReduceMean, Add eps, Sqrt, Div) and
ReduceMean of a quantized tensor, against onnxruntime, which computes them in float32."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import helper  # noqa: E402

from compiler.onnx import import_onnx  # noqa: E402
from tests.onnx_qdq import Port, compare, qdq_model, random_feeds  # noqa: E402
from vm.errors import InvalidError  # noqa: E402

f32 = np.float32


def layer_norm(shape=(1, 120, 40), quantized_eps=True, divisor="Sqrt"):
    """PP-OCRv4's recognizer LayerNorm as onnxruntime's quantizer writes it: the mean over
    axis 1, a Transpose, the variance over the last axis quantized, eps added by a quantized
    Add (quantized_eps) or in float, its square root dividing the centred values."""
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node("Transpose", ["d"], ["dt"], perm=[0, 2, 1]),
             helper.make_node("Pow", ["dt", "two"], ["sq"]),
             helper.make_node("ReduceMean", ["sq"], ["var"], axes=[-1], keepdims=1)]
    inits = {"two": np.array(2.0, f32)}
    if quantized_eps:
        nodes += [helper.make_node("QuantizeLinear", ["var", "vs", "vz"], ["var_q"]),
                  helper.make_node("DequantizeLinear", ["var_q", "vs", "vz"], ["var_d"]),
                  helper.make_node("DequantizeLinear", ["eps_q", "es"], ["eps"]),
                  helper.make_node("Add", ["var_d", "eps"], ["ve"]),
                  helper.make_node("QuantizeLinear", ["ve", "ws", "wz"], ["ve_q"]),
                  helper.make_node("DequantizeLinear", ["ve_q", "ws", "wz"], ["ve_d"]),
                  helper.make_node(divisor, ["ve_d"], ["r"])]
        inits.update(vs=f32(0.0016246855), vz=np.uint8(0), eps_q=np.array([1], np.uint8),
                     es=f32(1e-5), ws=f32(0.0016247248), wz=np.uint8(0))
    else:
        nodes += [helper.make_node("Add", ["var", "eps"], ["ve"]),
                  helper.make_node(divisor, ["ve"], ["r"])]
        inits["eps"] = f32(1e-5)
    nodes.append(helper.make_node("Div", ["dt", "r"], ["y"]))
    x = Port("x", shape, 0.013343140, 21)
    y = Port("y", (shape[0], shape[2], shape[1]), 0.026280563, 54)
    return qdq_model(nodes, [x], [y], inits, opset=13)


def rows(seed: int, shape=(1, 120, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = seed % 4
    if kind == 0:
        x = rng.integers(0, 256, shape)
    elif kind == 1:                      # few distinct values: ties of the exact arithmetic
        x = rng.integers(0, 4, shape) * 60 + rng.integers(0, 3)
    elif kind == 2:                      # small variance
        x = rng.normal(128, 3, shape)
    else:
        x = rng.normal(rng.integers(0, 255), rng.integers(1, 60), shape)
    return np.clip(x, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("quantized_eps", [True, False])
def test_layer_norm_pattern_agrees_with_onnxruntime(quantized_eps):
    """Measured (docs/onnx.md): quantized eps (the recognizer's form) 100 % of 192,000
    elements; float eps 99.991 %, max 1 LSB."""
    model = layer_norm(quantized_eps=quantized_eps)
    ops = [i.op for i in import_onnx(model).code]
    assert ("qvariance" in ops) == quantized_eps and "qnorm" in ops
    same = total = 0
    for seed in range(8):
        ours, theirs = compare(model, {"x_q": rows(seed)})
        assert np.abs(ours - theirs).max() <= 1
        same, total = same + (ours == theirs).sum(), total + ours.size
    assert same / total >= 0.999


@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_mean_of_a_quantized_tensor(keepdims):
    """The exact sum of x - zero point, at scale s_x / D (one rounding): within 1 LSB of
    onnxruntime's float32 mean."""
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=keepdims)
    x = Port("x", (2, 8, 5, 7), 0.05, 100)
    model = qdq_model([node], [x], [Port("y", (2, 8, 1, 1) if keepdims else (2, 8), 0.04, 90)])
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(1), [x]))
    assert np.abs(ours - theirs).max() <= 1 and (ours == theirs).mean() >= 0.95


def test_other_divisors_are_refused_in_onnx_terms():
    with pytest.raises(InvalidError, match="divided by something other than a square root"):
        import_onnx(layer_norm(divisor="Sigmoid"))
