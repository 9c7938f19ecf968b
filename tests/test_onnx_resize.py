"""Resize against onnxruntime: nearest bit for bit in every coordinate and rounding mode
(it moves integers along onnxruntime's own index maps), linear within 1 LSB (onnxruntime
interpolates the dequantized tensor in float32), and the index maps themselves against
onnxruntime's float Resize on random sizes and scales."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from compiler.onnx.resize import COORDINATE_MODES, Plan, nearest_map  # noqa: E402
from tests.onnx_qdq import Port, compare, optimized_ops, qdq_model, random_feeds  # noqa: E402
from vm.errors import InvalidError  # noqa: E402

f32 = np.float32
ROUNDINGS = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
SIZES = [(5, 7, 2.0, 3.0), (6, 4, 0.5, 1.5), (3, 9, 1.7, 0.6), (8, 8, 0.37, 2.9)]


def resize_model(mode, coordinate, nearest, h, w, sh, sw, port=None):
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode=mode,
                            coordinate_transformation_mode=coordinate, nearest_mode=nearest)
    x = port or Port("x", (2, 3, h, w))
    out = Port("y", (x.shape[0], x.shape[1], int(f32(sh) * h), int(f32(sw) * w)),
               x.scale, x.zero, x.dtype)
    return qdq_model([node], [x], [out], {"sc": np.array([1, 1, sh, sw], f32)}), x


@pytest.fixture(scope="module")
def ort_resize_1d():
    """onnxruntime's float nearest Resize of a 1-D arange, per (coordinate, rounding) mode."""
    import onnxruntime as ort
    sessions = {}

    def run(coordinate, nearest, n, scale):
        key = (coordinate, nearest)
        if key not in sessions:
            node = helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="nearest",
                                    coordinate_transformation_mode=coordinate,
                                    nearest_mode=nearest)
            graph = helper.make_graph(
                [node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                            (1, 1, 1, None)),
                              helper.make_tensor_value_info("sc", TensorProto.FLOAT, (4,))],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                      ir_version=8)
            sessions[key] = ort.InferenceSession(model.SerializeToString(),
                                                 providers=["CPUExecutionProvider"])
        x = np.arange(n, dtype=f32).reshape(1, 1, 1, n)
        y = sessions[key].run(None, {"x": x, "sc": np.array([1, 1, 1, scale], f32)})[0]
        return y.reshape(-1).astype(int).tolist()
    return run


@pytest.mark.parametrize("coordinate", COORDINATE_MODES)
def test_nearest_index_maps_are_onnxruntime_s(ort_resize_1d, coordinate):
    """Random lengths and scales, ties within 1e-6 included (onnxruntime 1.32 rounds
    7.4999995 up under round_prefer_ceil: it takes such a coordinate as a half)."""
    rng = np.random.default_rng(5)
    cases = [(9, f32(0.6)), (20, f32(6 / 20)), (51, f32(1.2))] + [
        (int(rng.integers(1, 60)), f32(rng.choice([rng.uniform(0.1, 4),
                                                   rng.integers(1, 7) / rng.integers(1, 7)])))
        for _ in range(60)]
    for nearest in ROUNDINGS:
        for n, scale in cases:
            out = int(scale * f32(n))
            if out < 1 or out == n:
                continue
            assert nearest_map(Plan(n, out, scale), coordinate, nearest) == \
                ort_resize_1d(coordinate, nearest, n, scale), (nearest, n, scale)


@pytest.mark.parametrize("coordinate", COORDINATE_MODES)
def test_nearest_quantized_is_bit_exact(coordinate):
    rng = np.random.default_rng(0)
    for nearest in ROUNDINGS:
        for h, w, sh, sw in SIZES:
            model, x = resize_model("nearest", coordinate, nearest, h, w, sh, sw)
            ours, theirs = compare(model, random_feeds(model, rng, [x]))
            assert np.array_equal(ours, theirs), (nearest, h, w, sh, sw)


def test_nearest_runs_on_the_8bit_tensor_in_onnxruntime():
    """onnxruntime drops the Q/DQ pair around a nearest Resize (so integers move there
    too), and keeps it around a linear one (float32 interpolation)."""
    nearest, _ = resize_model("nearest", "asymmetric", "floor", 4, 4, 2.0, 2.0)
    linear, _ = resize_model("linear", "asymmetric", "floor", 4, 4, 2.0, 2.0)
    assert "DequantizeLinear" not in optimized_ops(nearest)
    assert "DequantizeLinear" in optimized_ops(linear)


def test_nearest_integer_factor_is_one_upsampling():
    from compiler.onnx import import_onnx
    model, _ = resize_model("nearest", "asymmetric", "floor", 4, 5, 2.0, 2.0)
    assert [i.op for i in import_onnx(model).code] == ["upsampling"]


@pytest.mark.parametrize("coordinate", [m for m in COORDINATE_MODES
                                        if m != "tf_half_pixel_for_nn"])
@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_linear_within_one_lsb(coordinate, dtype):
    rng = np.random.default_rng(1)
    same = total = 0
    for h, w, sh, sw in SIZES:
        port = Port("x", (2, 3, h, w), 0.05, 128 if dtype == "uint8" else -3, dtype)
        model, x = resize_model("linear", coordinate, "floor", h, w, sh, sw, port)
        ours, theirs = compare(model, random_feeds(model, rng, [x]))
        assert np.abs(ours - theirs).max() <= 1
        same, total = same + (ours == theirs).sum(), total + ours.size
    assert same / total >= 0.95


def test_sizes_input_and_one_resized_axis():
    node = helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="linear")
    x = Port("x", (1, 2, 6, 5))
    model = qdq_model([node], [x], [Port("y", (1, 2, 6, 9))],
                      {"sz": np.array([1, 2, 6, 9], np.int64)})
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(2), [x]))
    assert np.abs(ours - theirs).max() <= 1


def test_same_shape_is_a_copy():
    """onnxruntime copies the input when the output shape equals it, whatever the scale."""
    from compiler.onnx import import_onnx
    model, x = resize_model("nearest", "asymmetric", "floor", 4, 4, 1.1, 1.2)
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(3), [x]))
    assert np.array_equal(ours, theirs)
    assert [i.op for i in import_onnx(model).code] == ["reshape"]     # the output's copy


@pytest.mark.parametrize("scales", [(2, 3), (0.5, 0.75)])
def test_resize_opset10(scales):
    """Resize-10: scales as its second input, asymmetric coordinates, truncation (ceil when
    downsampling)."""
    node = helper.make_node("Resize", ["x", "sc"], ["y"], mode="nearest")
    x = Port("x", (1, 2, 4, 8))
    out = (1, 2, int(4 * scales[0]), int(8 * scales[1]))
    model = qdq_model([node], [x], [Port("y", out)],
                      {"sc": np.array([1, 1, *scales], f32)}, opset=10)
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(4), [x]))
    assert np.array_equal(ours, theirs)


def test_integer_tensor_resize():
    """A Resize of an 8-bit tensor itself (QOperator models): nearest exact; linear rounds
    the exact interpolation down, as onnxruntime's truncation does for uint8 values."""
    rng = np.random.default_rng(5)
    for mode, limit in (("nearest", 0), ("linear", 1)):
        node = helper.make_node("Resize", ["x_q", "", "sc"], ["y_q"], mode=mode)
        graph = helper.make_graph(
            [node], "r", [helper.make_tensor_value_info("x_q", TensorProto.UINT8, (1, 3, 5, 6))],
            [helper.make_tensor_value_info("y_q", TensorProto.UINT8, (1, 3, 10, 9))],
            [onnx.numpy_helper.from_array(np.array([1, 1, 2, 1.5], f32), "sc")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                  ir_version=8)
        feeds = {"x_q": rng.integers(0, 256, (1, 3, 5, 6)).astype(np.uint8)}
        ours, theirs = compare(model, feeds)
        assert np.abs(ours - theirs).max() <= limit, mode


@pytest.mark.parametrize("attrs, message", [
    (dict(mode="cubic"), "mode 'cubic'"),
    (dict(coordinate_transformation_mode="tf_crop_and_resize"), "tf_crop_and_resize"),
])
def test_unsupported_modes_are_named(attrs, message):
    from compiler.onnx import import_onnx
    node = helper.make_node("Resize", ["x", "", "sc"], ["y"], **attrs)
    x = Port("x", (1, 1, 2, 2))
    model = qdq_model([node], [x], [Port("y", (1, 1, 4, 4))],
                      {"sc": np.array([1, 1, 2, 2], f32)})
    with pytest.raises(InvalidError, match=message):
        import_onnx(model)
