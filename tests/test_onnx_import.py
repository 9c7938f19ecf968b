"""ONNX import against onnxruntime on small synthetic models quantized by onnxruntime itself:
QDQ and QOperator, int8 and uint8 activations, per-channel and per-tensor weights."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra: pip install "
                                          "'detvm[onnx]'")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime: pip install "
                                          "'detvm[onnx]'")

import vm  # noqa: E402
from compiler.onnx import import_onnx  # noqa: E402
from compiler.onnx.quantize import quantize_onnx  # noqa: E402
from tests.onnx_util import cnn, conv_bn, mlp, ort_session, to_int  # noqa: E402
from detvm.cli import main  # noqa: E402

CONFIGS = list(itertools.product(["qdq", "qoperator"], ["int8", "uint8"], [True, False]))
BATCH = 32


@pytest.fixture(scope="session")
def data():
    rng = np.random.default_rng(7)
    return (rng.normal(0, 1, (48, 3, 8, 8)).astype(np.float32),
            rng.normal(0, 1, (BATCH, 3, 8, 8)).astype(np.float32),
            rng.normal(0, 1, (48, 4, 6)).astype(np.float32),
            rng.normal(0, 1, (BATCH, 4, 6)).astype(np.float32))


@pytest.fixture(scope="session")
def quantized(tmp_path_factory, data):
    """{(variant, format, activation, per_channel): quantized .onnx path}, built lazily."""
    root, cache = tmp_path_factory.mktemp("onnx"), {}

    def get(variant: str, fmt: str, act: str, per_channel: bool):
        key = (variant, fmt, act, per_channel)
        if key not in cache:
            float_path = root / f"{variant}.onnx"
            if not float_path.exists():
                onnx.save(mlp(0) if variant == "mlp" else cnn(0, **VARIANTS[variant]),
                          float_path)
            calibration = data[2] if variant == "mlp" else data[0]
            cache[key] = quantize_onnx(float_path, {"x": calibration}, root / ("_".join(
                map(str, key)) + ".onnx"), fmt=fmt, activation=act, per_channel=per_channel,
                op_types=OP_TYPES.get(variant))
        return cache[key]
    return get


VARIANTS = {"residual": dict(residual=True), "plain": dict(residual=False),
            "softmax": dict(residual=False, softmax=True), "avg": dict(residual=False,
                                                                      pool="avg"),
            "float-softmax": dict(residual=False, softmax=True)}
OP_TYPES = {"float-softmax": ("Conv", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm")}
"""Op types quantized per variant (default: every type onnxruntime quantizes)."""


def compare(path, x, rounding):
    model = vm.load(import_onnx(path, batch=BATCH, rounding=rounding))
    ours = model.run({"x": x}, float_io=True)["y"]
    theirs = ort_session(path).run(None, {"x": x})[0]
    scale, zero = (float(model.metadata["output.y.scale"]),
                   int(model.metadata["output.y.zero_point"]))
    diff = np.abs(to_int(ours, scale, zero) - to_int(theirs, scale, zero))
    return diff, (ours.argmax(1) == theirs.argmax(1)).mean(), model


@pytest.mark.parametrize("fmt, act, per_channel", CONFIGS)
def test_agrees_with_onnxruntime(quantized, data, fmt, act, per_channel):
    """fp32 rounding reproduces onnxruntime bit for bit; half_even stays within 1 LSB."""
    path = quantized("residual", fmt, act, per_channel)
    diff, top1, model = compare(path, data[1], "fp32")
    assert diff.max() == 0 and top1 == 1.0
    diff, top1, _ = compare(path, data[1], "half_even")
    assert diff.max() <= 1 and top1 >= 0.995
    assert not any(isinstance(v, float) for i in model.program.code for v in i.attrs.values())


@pytest.mark.parametrize("fmt, act", [("qdq", "int8"), ("qoperator", "uint8")])
def test_matmul_layout_clip_pad_argmax(quantized, data, fmt, act):
    """Transpose (before the input's QuantizeLinear), Reshape, MatMul + bias, Clip,
    Unsqueeze, Pad, Squeeze, ArgMax: the same integers and indices as onnxruntime."""
    path = quantized("mlp", fmt, act, True)
    model = vm.load(import_onnx(path, batch=BATCH))
    ours = model.run({"x": data[3]}, float_io=True)
    y, k = ort_session(path).run(None, {"x": data[3]})
    scale, zero = (float(model.metadata["output.y.scale"]),
                   int(model.metadata["output.y.zero_point"]))
    assert np.array_equal(to_int(ours["y"], scale, zero), to_int(y, scale, zero))
    assert np.array_equal(ours["k"], k) and "output.k.scale" not in model.metadata


def test_program_is_integer_only_with_io_metadata(quantized):
    program = import_onnx(quantized("plain", "qdq", "uint8", True), batch=2)
    assert {i.op for i in program.code} <= {"qconv2d", "requantize", "max_pool2d", "qdense",
                                            "sum_pool2d", "reshape"}
    assert program.metadata["input.x.dtype"] == "uint8"
    assert float(program.metadata["input.x.scale"]) > 0
    assert [program.tensors[i].name for i in program.outputs] == ["y"]
    assert all(c.dtype.kind == "i" for c in program.consts.values())


def test_a_quantized_softmax_is_computed_in_the_program(quantized, data):
    """By default onnxruntime quantizes the Softmax too: QLinearSoftmax, imported as qsoftmax
    (docs/onnx.md: its agreement with onnxruntime)."""
    path = quantized("softmax", "qdq", "uint8", True)
    model = vm.load(import_onnx(path, batch=BATCH))
    assert "qsoftmax" in {i.op for i in model.program.code}
    assert "output.y.post" not in model.metadata
    ours = model.run({"x": data[1]}, float_io=True)["y"]
    theirs = ort_session(path).run(None, {"x": data[1]})[0]
    scale = float(model.metadata["output.y.scale"])
    assert np.abs(ours - theirs).max() <= scale * 1.001 and np.mean(ours == theirs) >= 0.99


def test_softmax_at_the_output_is_applied_by_float_io(quantized, data):
    """A Softmax left float at the output (not among the quantized op types)."""
    path = quantized("float-softmax", "qdq", "int8", True)
    model = vm.load(import_onnx(path, batch=BATCH))
    assert model.metadata["output.y.post"] == "softmax:1"
    probs = model.run({"x": data[1]}, float_io=True)["y"]
    theirs = ort_session(path).run(None, {"x": data[1]})[0]
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert np.allclose(probs, theirs, atol=1e-5)
    from vm.floatio import quantize_inputs
    raw = model.run(quantize_inputs(model, {"x": data[1]}))["y"]      # the integer logits
    assert raw.dtype.kind == "i" and (raw.argmax(1) == probs.argmax(1)).all()


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_average_pool_model_within_one_lsb(quantized, data, fmt):
    """AveragePool (pads, count_include_pad=0): QLinearAveragePool in QOperator."""
    diff, top1, _ = compare(quantized("avg", fmt, "uint8", True), data[1], "fp32")
    assert diff.max() <= 1 and top1 >= 0.995


def test_average_pool_within_one_lsb(tmp_path, data):
    """DQ - AveragePool - Q: detvm's sum and one rounding vs ORT's float32 average."""
    from onnx import TensorProto, helper, numpy_helper
    s = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)
    z = numpy_helper.from_array(np.array(3, np.int8), "z")
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]),
             helper.make_node("AveragePool", ["d"], ["a"], kernel_shape=[3, 3],
                              pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("QuantizeLinear", ["a", "s2", "z"], ["q2"]),
             helper.make_node("DequantizeLinear", ["q2", "s2", "z"], ["y"])]
    graph = helper.make_graph(
        nodes, "avg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 3, 4, 4])],
        [s("s", 0.02), s("s2", 0.015), z])
    path = tmp_path / "avg.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                ir_version=8), path)
    model = vm.load(import_onnx(path))
    ours = model.run({"x": data[1]}, float_io=True)["y"]
    theirs = ort_session(path).run(None, {"x": data[1]})[0]
    assert np.abs(to_int(ours, 0.015, 3) - to_int(theirs, 0.015, 3)).max() <= 1


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_batch_norm_folded_by_quantize_or_imported(tmp_path, fmt):
    """detvm quantize folds BatchNormalization (ORT pre-processing); a model quantized
    without it keeps a float BatchNormalization, imported as a per-channel affine map."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    onnx.save(conv_bn(3), tmp_path / "bn.onnx")
    rng = np.random.default_rng(3)
    calib, x = (rng.normal(0, 1, (n, 3, 6, 6)).astype(np.float32) for n in (16, 8))
    folded = quantize_onnx(tmp_path / "bn.onnx", {"x": calib}, tmp_path / "f.onnx", fmt=fmt)
    assert "broadcast_mul" not in {i.op for i in import_onnx(folded).code}

    class Reader:
        def __init__(self):
            self.left = [{"x": calib}]

        def get_next(self):
            return self.left.pop() if self.left else None
    quantize_static(str(tmp_path / "bn.onnx"), str(tmp_path / "q.onnx"), Reader(),
                    quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator)
    model = vm.load(import_onnx(tmp_path / "q.onnx", batch=8))
    assert "broadcast_mul" in {i.op for i in model.program.code}
    theirs = ort_session(tmp_path / "q.onnx").run(None, {"x": x})[0]
    assert np.allclose(model.run({"x": x}, float_io=True)["y"], theirs, rtol=1e-5, atol=1e-5)


def test_unsupported_ops_are_listed_in_one_error():
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Sin", ["x"], ["a"], name="s1"),
             helper.make_node("Cos", ["a"], ["b"], name="c1"),
             helper.make_node("Sin", ["b"], ["y"], name="s2")]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(vm.InvalidError, match=r"unsupported ONNX ops \(3 nodes\): Sin \(2 nodes: "
                                              r"s1, s2\); Cos \(1 node: c1\)$"):
        import_onnx(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def test_a_float_model_is_refused_with_advice(tmp_path):
    path = tmp_path / "float.onnx"
    onnx.save(cnn(1, residual=False), path)
    with pytest.raises(vm.InvalidError, match="not quantized"):
        import_onnx(path)


def test_cli_quantize_then_import(tmp_path, capsys, data):
    onnx.save(cnn(2, residual=False), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=data[0])
    assert main(["quantize", str(tmp_path / "m.onnx"), "--calibration",
                 str(tmp_path / "calib.npz"), "-o", str(tmp_path / "m.dvm"), "--batch", "4",
                 "--keep-onnx", str(tmp_path / "q.onnx")]) == 0
    out = capsys.readouterr()
    assert "calibrating: batch 3/3" in out.err and "m.dvm" in out.out
    assert main(["import-onnx", str(tmp_path / "q.onnx"), "-o", str(tmp_path / "n.dvm"),
                 "--batch", "4", "--rounding", "fp32"]) == 0
    assert vm.load(tmp_path / "m.dvm").hash == vm.load(tmp_path / "n.dvm").hash
