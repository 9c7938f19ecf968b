"""Symbolic dims (``shapes=`` / ``--shape``) and the ``detvm quantize`` pipeline: dims fixed
before calibration, opset 13 for per-channel weights, a Concat at a graph output left float,
``--save-onnx``, progress and notes, early errors."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra: pip install "
                                          "'detvm[onnx]'")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime: pip install "
                                          "'detvm[onnx]'")

import vm  # noqa: E402
from compiler.onnx import import_onnx  # noqa: E402
from compiler.onnx.quantize import quantize_onnx  # noqa: E402
from tests.onnx_util import ort_session, two_heads  # noqa: E402
from detvm.cli import main  # noqa: E402

SHAPE = (2, 3, 6, 10)


@pytest.fixture(scope="module")
def calib():
    return np.random.default_rng(5).uniform(-1, 1, (8, *SHAPE[1:])).astype(np.float32)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("heads") / "heads.onnx"
    onnx.save(two_heads(0), path)
    return path


@pytest.fixture(scope="module")
def quantized(tmp_path_factory, float_model, calib):
    """The model quantized with its H, W fixed (batch kept symbolic), and the notes."""
    notes = []
    path = quantize_onnx(float_model, {"x": calib}, tmp_path_factory.mktemp("q") / "q.onnx",
                         shapes={"x": (1, *SHAPE[1:])}, activation="uint8",
                         notify=notes.append)
    return path, notes


def test_symbolic_dims_other_than_the_batch_name_the_input_and_the_option(quantized):
    path = quantized[0]
    with pytest.raises(vm.InvalidError, match=r"ONNX input 'x' has symbolic dims \(\[N, 3, H, "
                                              r"W\]\): fix them with --shape x=1,3,D2,D3"):
        import_onnx(_symbolic(path))


def _symbolic(path):
    """The quantized model with its input's H and W made symbolic again."""
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_param, dims[2].dim_param, dims[3].dim_param = "N", "H", "W"
    return model


@pytest.mark.parametrize("shape, message", [
    ({"x": (1, 3, 6)}, r"--shape x=1,3,6 does not fit the ONNX input's dims \(\[1, 3, 6, 10\]\)"),
    ({"x": (1, 4, 6, 10)}, r"does not fit"),
    ({"y": (1, 3, 6, 10)}, r"--shape names no ONNX input: 'y' \(inputs: 'x'\)"),
])
def test_a_shape_must_fit_the_input(quantized, shape, message):
    with pytest.raises(vm.InvalidError, match=message):
        import_onnx(quantized[0], shapes=shape)


def test_shapes_fix_the_dims_and_the_result_agrees_with_onnxruntime(quantized):
    model = vm.load(import_onnx(_symbolic(quantized[0]), shapes={"x": SHAPE}))
    assert model.inputs[0].shape == SHAPE
    x = np.random.default_rng(1).uniform(-1, 1, SHAPE).astype(np.float32)
    ours = model.run({"x": x}, float_io=True)["y"]
    theirs = ort_session(quantized[0]).run(None, {"x": x[:1]})[0]
    assert np.array_equal(ours[:1], theirs)


def test_a_concat_at_an_output_keeps_each_inputs_scale(quantized, calib):
    """Boxes (hundreds) and scores (below 1) keep their own scales: the Concat stays float
    in the quantized model, detvm writes one scale per channel, and the float outputs are
    onnxruntime's, bit for bit."""
    path, notes = quantized
    assert any("output 'y': its Concat" in n and "keeps its own scale" in n for n in notes)
    q = onnx.load(str(path))
    concat = next(n for n in q.graph.node if n.op_type == "Concat")
    assert concat.output[0] == "y"                         # not followed by a QuantizeLinear
    model = vm.load(import_onnx(path))
    scales = [float(s) for s in model.metadata["output.y.scale"].split(",")]
    assert len(set(scales[:4])) == 1 and len(set(scales[4:])) == 1
    assert scales[0] > 100 * scales[4] and model.metadata["output.y.axis"] == "1"
    x = calib[:1]
    ours = model.run({"x": x}, float_io=True)["y"]
    theirs = ort_session(path).run(None, {"x": x})[0]
    assert np.array_equal(ours, theirs)
    assert len(np.unique(theirs[:, 4:])) > 16             # the scores kept their levels


def test_no_split_outputs_gives_the_output_one_scale(tmp_path, float_model, calib):
    notes = []
    path = quantize_onnx(float_model, {"x": calib}, tmp_path / "q.onnx",
                         shapes={"x": (1, *SHAPE[1:])}, split_outputs=False,
                         notify=notes.append)
    assert not notes
    assert "," not in vm.load(import_onnx(path)).metadata["output.y.scale"]


def test_opset_11_is_converted_for_per_channel_weights(tmp_path, calib):
    onnx.save(two_heads(1, opset=11), tmp_path / "m11.onnx")
    notes = []
    path = quantize_onnx(tmp_path / "m11.onnx", {"x": calib}, tmp_path / "q.onnx",
                         shapes={"x": (1, *SHAPE[1:])}, notify=notes.append)
    assert any("opset 11 was converted to 13" in n for n in notes)
    q = onnx.load(str(path))
    assert {o.version for o in q.opset_import if o.domain in ("", "ai.onnx")} == {13}
    axes = [a.i for n in q.graph.node if n.op_type == "DequantizeLinear" for a in n.attribute]
    assert axes                                         # per-channel weights, loadable
    theirs = ort_session(path).run(None, {"x": calib[:1]})[0]
    ours = vm.load(import_onnx(path)).run({"x": calib[:1]}, float_io=True)["y"]
    assert np.array_equal(ours, theirs)


def test_per_tensor_keeps_the_opset(tmp_path, calib):
    onnx.save(two_heads(1, opset=11), tmp_path / "m11.onnx")
    notes = []
    path = quantize_onnx(tmp_path / "m11.onnx", {"x": calib}, tmp_path / "q.onnx",
                         shapes={"x": (1, *SHAPE[1:])}, per_channel=False,
                         notify=notes.append)
    assert not any("opset" in n for n in notes)
    assert {o.version for o in onnx.load(str(path)).opset_import if not o.domain} == {11}


def test_a_minus_one_batch_stays_symbolic_and_is_calibrated_in_chunks(tmp_path, calib):
    """A batch declared -1 (onnxruntime's quantizer collected no data from it before)."""
    onnx.save(two_heads(2, dims=(-1, *SHAPE[1:])), tmp_path / "m.onnx")
    calls = []
    path = quantize_onnx(tmp_path / "m.onnx", {"x": calib}, tmp_path / "q.onnx",
                         progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 1)]                                 # 8 samples, one run
    assert onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[0].dim_param
    model = vm.load(import_onnx(path, batch=3))
    ours = model.run({"x": calib[:3]}, float_io=True)["y"]
    assert np.array_equal(ours, ort_session(path).run(None, {"x": calib[:3]})[0])


def test_calibration_data_must_fit_the_fixed_dims(tmp_path, float_model, calib):
    with pytest.raises(vm.InvalidError, match=r"calibration data for input 'x' has shape "
                                              r"\[8, 3, 6, 10\]; the model needs \[N, 3, 6, 12\]"):
        quantize_onnx(float_model, {"x": calib}, tmp_path / "q.onnx", shapes={"x": (1, 3, 6, 12)})
    with pytest.raises(vm.InvalidError, match="holds 8 samples; the model's batch is 9"):
        quantize_onnx(float_model, {"x": calib}, tmp_path / "q.onnx",
                      shapes={"x": (9, *SHAPE[1:])})


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------

def test_cli_quantize_with_shape_progress_notes_and_save_onnx(tmp_path, capsys, float_model,
                                                             calib):
    np.savez(tmp_path / "calib.npz", x=calib)
    assert main(["quantize", str(float_model), "--calibration", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "m.dvm"), "--shape", "x=2,3,6,10", "--activation",
                 "uint8", "--save-onnx", str(tmp_path / "q.onnx")]) == 0
    err = capsys.readouterr().err
    assert "calibrating: batch 4/4" in err and "detvm: note: output 'y'" in err
    saved = vm.load(import_onnx(tmp_path / "q.onnx"))
    assert vm.load(tmp_path / "m.dvm").hash == saved.hash
    assert saved.inputs[0].shape == (2, 3, 6, 10)


def test_cli_quantize_refuses_a_symbolic_dim_before_calibrating(tmp_path, capsys,
                                                                 float_model, calib):
    np.savez(tmp_path / "calib.npz", x=calib)
    assert main(["quantize", str(float_model), "--calibration", str(tmp_path / "calib.npz"),
                 "-o", str(tmp_path / "m.dvm")]) == 1
    err = capsys.readouterr().err
    assert "fix them with --shape x=1,3,D2,D3" in err and "calibrating" not in err


def test_cli_quantize_refuses_unsupported_ops_before_calibrating(tmp_path, capsys, calib):
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Sin", ["x"], ["y"], name="sine")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 6, 10])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "sin.onnx")
    np.savez(tmp_path / "calib.npz", x=calib)
    assert main(["quantize", str(tmp_path / "sin.onnx"), "--calibration",
                 str(tmp_path / "calib.npz"), "-o", str(tmp_path / "m.dvm")]) == 1
    err = capsys.readouterr().err
    assert "unsupported ONNX ops (1 node): Sin (1 node: sine)" in err
    assert "calibrating" not in err


def test_cli_import_onnx_shape(tmp_path, capsys, quantized):
    onnx.save(_symbolic(quantized[0]), tmp_path / "sym.onnx")
    assert main(["import-onnx", str(tmp_path / "sym.onnx"), "-o", str(tmp_path / "m.dvm"),
                 "--shape", "x=3,3,6,10"]) == 0
    assert vm.load(tmp_path / "m.dvm").inputs[0].shape == (3, 3, 6, 10)
    assert main(["import-onnx", str(tmp_path / "sym.onnx"), "-o", str(tmp_path / "m.dvm"),
                 "--shape", "x=3,3,6,10", "--shape", "x=1,3,6,10"]) == 1
    assert "--shape gives input 'x' two shapes" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["x", "x=", "=1,2", "x=1,,2", "x=1,0", "x=a,b"])
def test_cli_shape_syntax_is_a_usage_error(tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as e:
        main(["import-onnx", "m.onnx", "-o", str(tmp_path / "m.dvm"), "--shape", bad])
    assert e.value.code == 2
    assert "is not NAME=D0,D1,... with positive integer dims" in capsys.readouterr().err


def test_a_scalar_constant_added_to_an_activation(tmp_path, calib):
    """x + 3 with a 0-d constant (HardSwish's first step): imported, within 1 LSB of ORT."""
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Add", ["c", "three"], ["y"])], "add3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 6, 10])],
        [numpy_helper.from_array(np.random.default_rng(0).normal(0, .5, (2, 3, 3, 3))
                                 .astype(np.float32), "w"),
         numpy_helper.from_array(np.array(3.0, np.float32), "three")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    path = quantize_onnx(tmp_path / "m.onnx", {"x": calib}, tmp_path / "q.onnx",
                         activation="uint8")
    model = vm.load(import_onnx(path, batch=8))
    ours = model.run({"x": calib}, float_io=True)["y"]
    theirs = ort_session(path).run(None, {"x": calib})[0]
    scale = float(model.metadata["output.y.scale"])
    assert np.abs(ours - theirs).max() <= scale * 1.001


def test_cli_warns_when_the_quantized_model_has_nodes_detvm_lacks(tmp_path, capsys, calib,
                                                                  monkeypatch):
    """QOperator with every op type: onnxruntime writes com.microsoft.QLinearSoftmax (taken
    away from the importer here, whether or not it has it)."""
    from compiler.onnx import HANDLERS
    from tests.onnx_util import cnn
    monkeypatch.delitem(HANDLERS, ("com.microsoft", "QLinearSoftmax"), raising=False)
    onnx.save(cnn(0, residual=False, softmax=True, side=6), tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=calib[:, :, :, :6])
    assert main(["quantize", str(tmp_path / "m.onnx"), "--calibration",
                 str(tmp_path / "calib.npz"), "-o", str(tmp_path / "m.dvm"), "--format",
                 "qoperator", "--op-types", "all", "--save-onnx", str(tmp_path / "q.onnx")]) == 1
    err = capsys.readouterr().err
    assert "detvm: warning: the quantized model has nodes that detvm cannot import" in err
    assert err.count("com.microsoft.QLinearSoftmax (1 node") == 2       # warning, error
    assert (tmp_path / "q.onnx").exists()                  # kept for onnxruntime


def test_a_channel_of_vanishing_weights_is_imported_exactly(tmp_path, calib):
    """onnxruntime gives a channel of vanishing weights a vanishing scale and a bias
    saturated near 2^31 (seen in PP-OCRv4): its output is the zero point whatever the int32
    accumulator; detvm zeroes that channel instead of widening the whole layer."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(4)
    w = rng.normal(0, .5, (3, 3, 3, 3)).astype(np.float32)
    w[1] *= 1e-33
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "dead",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 6, 10])],
        [numpy_helper.from_array(w, "w"),
         numpy_helper.from_array(np.array([0.1, 0.5, -0.2], np.float32), "b")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]),
              tmp_path / "m.onnx")
    path = quantize_onnx(tmp_path / "m.onnx", {"x": calib}, tmp_path / "q.onnx",
                         activation="uint8")
    bias = next(t for t in onnx.load(str(path)).graph.initializer if t.data_type == 6)
    assert abs(int(onnx.numpy_helper.to_array(bias)[1])) > 2 ** 30      # saturated
    model = vm.load(import_onnx(path, batch=8))
    ours = model.run({"x": calib}, float_io=True)["y"]
    assert np.array_equal(ours, ort_session(path).run(None, {"x": calib})[0])


def anchors_model():
    """A detector's head in small: a convolution plus an anchor grid computed from its shape
    (Shape -> Gather -> Range -> Add -> Reshape -> Expand, the same at every batch), then
    flattened by a reshape to the batch (Shape -> Gather 0 -> Concat, which depends on it)."""
    from onnx import TensorProto, helper, numpy_helper
    c = lambda name, v, dtype=np.int64: numpy_helper.from_array(np.array(v, dtype), name)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Shape", ["c"], ["shape"]),
             helper.make_node("Gather", ["shape", "three"], ["width"]),
             helper.make_node("Cast", ["width"], ["widthf"], to=TensorProto.FLOAT),
             helper.make_node("Range", ["zero", "widthf", "one"], ["xs"]),
             helper.make_node("Add", ["xs", "half"], ["centres"]),
             helper.make_node("Reshape", ["centres", "row"], ["grid"]),
             helper.make_node("Expand", ["grid", "planes"], ["anchors"]),
             helper.make_node("Add", ["c", "anchors"], ["y"]),
             helper.make_node("Gather", ["shape", "first"], ["n"]),
             helper.make_node("Concat", ["n", "minus_one"], ["flat"], axis=0),
             helper.make_node("Reshape", ["y", "flat"], ["out"])]
    inits = [numpy_helper.from_array(np.random.default_rng(0).normal(0, .5, (2, 3, 3, 3))
                                     .astype(np.float32), "w"),
             c("three", 3), c("zero", 0.0, np.float32), c("one", 1.0, np.float32),
             c("half", 0.5, np.float32), c("row", [1, 1, 1, -1]), c("planes", [1, 2, 6, 10]),
             c("first", [0]), c("minus_one", [-1])]
    graph = helper.make_graph(
        nodes, "anchors", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 10])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 120])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_shape_arithmetic_the_same_at_every_batch_is_folded_before_quantization(
        tmp_path, calib, monkeypatch):
    """Under a symbolic batch the anchor grid is folded into an initializer before
    onnxruntime quantizes (which would wrap its Add in QuantizeLinear / DequantizeLinear, and
    the importer could not fold it any more); the reshape to the batch stays, so the model
    imports with its batch symbolic and agrees with onnxruntime at batches 1 and 3."""
    from compiler.onnx import prepare
    onnx.save(anchors_model(), tmp_path / "m.onnx")
    notes = []
    path = quantize_onnx(tmp_path / "m.onnx", {"x": calib}, tmp_path / "q.onnx",
                         activation="uint8", op_types=None, notify=notes.append)
    assert any("6 nodes computing constants from shapes" in n for n in notes), notes
    folded = onnx.load(path)
    assert {"Shape", "Concat"} <= {n.op_type for n in folded.graph.node}
    assert not {"Range", "Expand"} & {n.op_type for n in folded.graph.node}
    model = vm.load(import_onnx(path))
    assert model.symbols
    session = ort_session(path)
    for n in (1, 3):
        ours = model.run({"x": calib[:n]}, float_io=True)["out"]
        assert ours.shape == (n, 120)
        assert np.array_equal(ours, session.run(None, {"x": calib[:n]})[0])
    monkeypatch.setattr(prepare, "fold_batch_constants", lambda model, dims, notify: model)
    path = quantize_onnx(tmp_path / "m.onnx", {"x": calib}, tmp_path / "q2.onnx",
                         activation="uint8", op_types=None)
    with pytest.raises(vm.InvalidError, match="Expand"):
        import_onnx(path)


def test_a_value_that_only_happens_to_agree_at_two_batches_is_not_folded():
    """N // 4 is 0 at batches 1 and 2: what decides is where the batch flows (the shape's
    element 0 into the division), not that two values agree."""
    from onnx import TensorProto, helper, numpy_helper
    from compiler.onnx import prepare
    from compiler.onnx.graph import read_graph
    c = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)
    graph = helper.make_graph(
        [helper.make_node("Shape", ["x"], ["shape"]),
         helper.make_node("Gather", ["shape", "first"], ["n"]),
         helper.make_node("Div", ["n", "four"], ["quarter"]),
         helper.make_node("Gather", ["shape", "last"], ["w"]),
         helper.make_node("Mul", ["w", "four"], ["w4"]),
         helper.make_node("Slice", ["shape", "one", "big"], ["tail"]),
         helper.make_node("Concat", ["quarter", "tail"], ["mixed"], axis=0)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 5])],
        [helper.make_tensor_value_info(o, TensorProto.INT64, None)
         for o in ("quarter", "w4", "tail", "mixed")],
        [c("first", [0]), c("last", 2), c("four", 4), c("one", [1]), c("big", [9])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    dims = {"x": (None, 3, 5)}
    g = read_graph(model, 1)
    names = ["shape", "n", "quarter", "w", "w4", "tail", "mixed"]
    at = [prepare._evaluated(model, names, g.inputs, dims, b) for b in (1, 2)]
    assert at[0]["quarter"] == at[1]["quarter"] == 0
    free = prepare._batch_free(g, set(names), at)
    assert free == {"w", "w4", "tail"}
