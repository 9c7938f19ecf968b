"""Slice, Split, Gather and Cast on quantized tensors, against onnxruntime (bit for bit: they
move integers) and against numpy's slicing rules."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

from onnx import helper  # noqa: E402

from compiler.onnx.tensors import slice_range  # noqa: E402
from tests.onnx_qdq import Port, compare, qdq_model, random_feeds  # noqa: E402
from vm.errors import InvalidError  # noqa: E402

I64 = lambda *v: np.array(v, np.int64)   # noqa: E731


@pytest.fixture(scope="module")
def ort_slice():
    """onnxruntime's Slice on a 1-D float tensor with every parameter an input."""
    import onnxruntime as ort
    from onnx import TensorProto
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    vi = lambda n, t: helper.make_tensor_value_info(n, t, [None])   # noqa: E731
    graph = helper.make_graph([node], "s", [vi("x", TensorProto.FLOAT)] + [
        vi(n, TensorProto.INT64) for n in ("st", "en", "ax", "sp")], [vi("y", TensorProto.FLOAT)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda x, *p: session.run(None, {"x": x, **dict(zip(("st", "en", "ax", "sp"),
                                                             map(I64, p)))})[0]


@pytest.mark.parametrize("dim", [1, 2, 5])
def test_slice_range_is_onnxruntime_slicing(ort_slice, dim):
    """The kept indices equal onnxruntime's for every start/end/step (it clamps a
    negative-step start into [0, dim - 1] as the ONNX spec says, where Python slicing and
    onnx's reference evaluator give an empty range)."""
    x = np.arange(dim, dtype=np.float32)
    for start in range(-dim - 2, dim + 2):
        for end in list(range(-dim - 2, dim + 2)) + [-(1 << 62), (1 << 62)]:
            for step in (-3, -1, 1, 2):
                want = ort_slice(x, start, end, 0, step).astype(int).tolist()
                assert list(slice_range(dim, start, end, step)) == want, (start, end, step)


SLICES = [  # (starts, ends, axes, steps)
    ([1], [3], [2], [1]),
    ([0, -1], [2, -(1 << 62)], [1, 3], [1, -2]),
    ([5, 1], [1 << 62, 0], [3, 2], [1, -1]),
    ([-4], [1 << 62], [-1], [3]),
]


@pytest.mark.parametrize("starts, ends, axes, steps", SLICES)
def test_slice_matches_onnxruntime(starts, ends, axes, steps):
    node = helper.make_node("Slice", ["x", "st", "en", "ax", "sp"], ["y"])
    x = Port("x", (2, 3, 4, 6))
    shape = list(x.shape)
    for s, e, a, st in zip(starts, ends, axes, steps):
        shape[a] = len(slice_range(x.shape[a], s, e, st))
    model = qdq_model([node], [x], [Port("y", tuple(shape))],
                      {"st": I64(*starts), "en": I64(*ends), "ax": I64(*axes),
                       "sp": I64(*steps)})
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(0), [x]))
    assert np.array_equal(ours, theirs)


def test_split_matches_onnxruntime():
    node = helper.make_node("Split", ["x", "sizes"], ["a", "b", "c"], axis=1)
    x = Port("x", (1, 7, 3, 2), scale=0.1, zero=3, dtype="int8")
    outs = [Port(n, (1, k, 3, 2), scale=0.1, zero=3, dtype="int8")
            for n, k in zip("abc", (2, 4, 1))]
    model = qdq_model([node], [x], outs, {"sizes": I64(2, 4, 1)})
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(1), [x]))
    assert np.array_equal(ours, theirs)


def test_split_equal_parts_opset18():
    node = helper.make_node("Split", ["x"], ["a", "b"], axis=-1, num_outputs=2)
    x = Port("x", (2, 3, 5))
    model = qdq_model([node], [x], [Port("a", (2, 3, 3)), Port("b", (2, 3, 2))], opset=18)
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(2), [x]))
    assert np.array_equal(ours, theirs)


@pytest.mark.parametrize("indices, axis", [(I64(2, 0, -1, 2), 1), (I64([[1, 0], [-3, 2]]), 2),
                                           (np.array(-2, np.int64), 3)])
def test_gather_constant_indices(indices, axis):
    node = helper.make_node("Gather", ["x", "idx"], ["y"], axis=axis)
    x = Port("x", (2, 3, 4, 5))
    shape = np.take(np.zeros(x.shape), indices, axis=axis).shape
    model = qdq_model([node], [x], [Port("y", shape)], {"idx": indices})
    ours, theirs = compare(model, random_feeds(model, np.random.default_rng(3), [x]))
    assert np.array_equal(ours, theirs)


def test_gather_data_indices_wrap_negative():
    """Indices computed in the graph (an integer input): a negative index counts from the
    end, as in onnxruntime."""
    from onnx import TensorProto
    nodes = [helper.make_node("DequantizeLinear", ["x_q", "s", "z"], ["x"]),
             helper.make_node("Gather", ["x", "i"], ["y"], axis=1),
             helper.make_node("QuantizeLinear", ["y", "s", "z"], ["y_q"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x_q", TensorProto.UINT8, (2, 6)),
                     helper.make_tensor_value_info("i", TensorProto.INT32, (3, 2))],
        [helper.make_tensor_value_info("y_q", TensorProto.UINT8, (2, 3, 2))],
        [onnx.numpy_helper.from_array(np.array(0.5, np.float32), "s"),
         onnx.numpy_helper.from_array(np.array(7, np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    rng = np.random.default_rng(4)
    feeds = {"x_q": rng.integers(0, 256, (2, 6)).astype(np.uint8),
             "i": rng.integers(-6, 6, (3, 2)).astype(np.int32)}
    ours, theirs = compare(model, feeds)
    assert np.array_equal(ours, theirs)


def test_cast_of_an_integer_tensor():
    """uint8 -> int32 -> float (an exact view), then quantized again: the same integers."""
    from onnx import TensorProto
    nodes = [helper.make_node("Cast", ["x_q"], ["wide"], to=TensorProto.INT32),
             helper.make_node("Cast", ["wide"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("QuantizeLinear", ["f", "s", "z"], ["y_q"])]
    graph = helper.make_graph(
        nodes, "c", [helper.make_tensor_value_info("x_q", TensorProto.UINT8, (4, 5))],
        [helper.make_tensor_value_info("y_q", TensorProto.UINT8, (4, 5))],
        [onnx.numpy_helper.from_array(np.array(1.0, np.float32), "s"),
         onnx.numpy_helper.from_array(np.array(0, np.uint8), "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    feeds = {"x_q": np.arange(20, dtype=np.uint8).reshape(4, 5) * 12}
    ours, theirs = compare(model, feeds)
    assert np.array_equal(ours, theirs)


def test_cast_that_could_wrap_is_refused():
    from onnx import TensorProto
    nodes = [helper.make_node("Cast", ["x_q"], ["y"], to=TensorProto.INT8)]
    graph = helper.make_graph(
        nodes, "c", [helper.make_tensor_value_info("x_q", TensorProto.UINT8, (4,))],
        [helper.make_tensor_value_info("y", TensorProto.INT8, (4,))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    from compiler.onnx import import_onnx
    with pytest.raises(InvalidError, match=r"Cast of values in \[0, 255\] to int8 could wrap"):
        import_onnx(model)


def test_empty_slice_is_a_clear_error():
    node = helper.make_node("Slice", ["x", "st", "en"], ["y"])
    x = Port("x", (4,))
    model = qdq_model([node], [x], [Port("y", (1,))], {"st": I64(3), "en": I64(1)})
    from compiler.onnx import import_onnx
    with pytest.raises(InvalidError, match="would be empty"):
        import_onnx(model)


@pytest.mark.parametrize("mode", [None, "CRD"])
def test_focus_on_a_float_input(mode):
    """YOLOX's Focus after onnxruntime's pre-processing: the float graph input goes through
    SpaceToDepth and a Gather of constant channels before its QuantizeLinear; detvm replays
    both moves on the quantized input (opset 28 adds SpaceToDepth's CRD order)."""
    import vm
    from onnx import TensorProto
    from compiler.onnx import import_onnx
    from tests.onnx_qdq import run_ort
    order = I64(0, 1, 2, 6, 7, 8, 3, 4, 5, 9, 10, 11)
    extra = {"mode": mode} if mode else {}
    nodes = [helper.make_node("SpaceToDepth", ["x"], ["d"], blocksize=2, **extra),
             helper.make_node("Gather", ["d", "order"], ["g"], axis=1),
             helper.make_node("QuantizeLinear", ["g", "s", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "focus", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 3, 6, 8))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, (1, 12, 3, 4))],
        [onnx.numpy_helper.from_array(order, "order"),
         onnx.numpy_helper.from_array(np.array(0.01, np.float32), "s"),
         onnx.numpy_helper.from_array(np.array(3, np.uint8), "z")])
    opset = 28 if mode else 17
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              ir_version=8)
    x = np.random.default_rng(5).uniform(0, 2.5, (1, 3, 6, 8)).astype(np.float32)
    ours = vm.load(import_onnx(model)).run({"x": x}, float_io=True)["y"]
    want = np.clip(np.rint(x / np.float32(0.01)) + 3, 0, 255)
    want = np.take(want.reshape(1, 3, 3, 2, 4, 2).transpose(
        (0, 3, 5, 1, 2, 4) if mode is None else (0, 1, 3, 5, 2, 4)).reshape(1, 12, 3, 4),
        order, axis=1)
    assert np.array_equal(np.asarray(ours, np.int64), want.astype(np.int64))
    if mode is None:                 # onnxruntime 1.32 has no QuantizeLinear for opset 28
        assert np.array_equal(ours, run_ort(model, {"x": x})[0])
