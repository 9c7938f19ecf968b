"""Errors for people: one error lists every unsupported op type with counts and node names
(ops fed by constants included), recurrent layers and control flow are named as such, several
failing nodes are reported together, and messages speak ONNX, never Python internals."""
from __future__ import annotations

import re

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra: pip install "
                                          "'detvm[onnx]'")

import vm  # noqa: E402
from compiler.onnx import diagnose, import_onnx  # noqa: E402

INTERNAL = re.compile(r"FloatIn|Post\b|Acc\b|QConst|Const\(|AttributeError|TypeError|KeyError|"
                      r"has no attribute|object")


def _tensor(name, shape, elem=None):
    from onnx import TensorProto, helper
    return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, shape)


def _model(nodes, inits=(), inputs=None, outputs=None, opset=17):
    from onnx import helper
    graph = helper.make_graph(nodes, "g", inputs or [_tensor("x", [1, 4])],
                              outputs or [_tensor("y", [1, 4])], list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _qdq(src: str, dst: str, tag: str):
    """QuantizeLinear then DequantizeLinear of ``src`` (uint8, scale 1/64)."""
    from onnx import helper
    return [helper.make_node("QuantizeLinear", [src, "s", "z"], [f"{tag}_q"], name=f"{tag}Q"),
            helper.make_node("DequantizeLinear", [f"{tag}_q", "s", "z"], [dst], name=f"{tag}D")]


def _scales():
    from onnx import numpy_helper
    return [numpy_helper.from_array(np.array(1 / 64, np.float32), "s"),
            numpy_helper.from_array(np.array(128, np.uint8), "z"),
            numpy_helper.from_array(np.full((1, 4), 0.5, np.float32), "half")]


def _error(model) -> str:
    with pytest.raises(vm.InvalidError) as e:
        import_onnx(model)
    message = str(e.value)
    assert not INTERNAL.search(message), message
    return message


def test_ops_fed_by_a_constant_are_listed_with_counts():
    from onnx import helper
    nodes = [*_qdq("x", "a", "in"),
             helper.make_node("Equal", ["a", "half"], ["e"], name="equal"),
             helper.make_node("Where", ["e", "a", "half"], ["w1"], name="pick1"),
             helper.make_node("Where", ["e", "w1", "half"], ["w2"], name="pick2"),
             *_qdq("w2", "y", "out")]
    message = _error(_model(nodes, _scales()))
    assert "unsupported ONNX ops (3 nodes): Equal (1 node: equal); Where (2 nodes: pick1, " \
        "pick2)" in message


def test_folded_constants_are_not_listed():
    from onnx import helper
    nodes = [helper.make_node("Mul", ["half", "half"], ["quarter"], name="fold"),
             helper.make_node("Shape", ["x"], ["shape"], name="shape"),
             helper.make_node("Cast", ["shape"], ["fshape"], to=1, name="cast"),
             helper.make_node("Sin", ["x"], ["y"], name="sine")]
    assert _error(_model(nodes, _scales())).endswith("(1 node): Sin (1 node: sine)")


def test_long_listings_show_the_first_names():
    from onnx import helper
    nodes = [helper.make_node("Sin", ["x" if k == 0 else f"t{k}"], [f"t{k + 1}"], name=f"n{k}")
             for k in range(7)] + [helper.make_node("Identity", ["t7"], ["y"])]
    assert "Sin (7 nodes: n0, n1, n2, n3, ...)" in _error(_model(nodes))


def test_recurrent_layers_are_not_supported_yet():
    from onnx import helper, numpy_helper
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(0, 1, s).astype(np.float32), n)
             for n, s in (("W", (1, 32, 4)), ("R", (1, 32, 8)))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=8, name="lstm")]
    model = _model(nodes, inits, [_tensor("x", [5, 1, 4])], [_tensor("y", [5, 1, 1, 8])])
    assert "LSTM (1 node: lstm): recurrent layers (LSTM, GRU, RNN) are not supported yet" \
        in _error(model)


def test_a_recurrent_layer_inside_control_flow_is_named():
    from onnx import TensorProto, helper
    branch = lambda tag: helper.make_graph(  # noqa: E731
        [helper.make_node("GRU", ["x", "W", "R"], [f"{tag}_y"], hidden_size=2, name="gru")],
        tag, [], [_tensor(f"{tag}_y", None)])
    nodes = [helper.make_node("If", ["c"], ["y"], name="branch",
                              then_branch=branch("then"), else_branch=branch("else"))]
    model = _model(nodes, inputs=[_tensor("x", [1, 4]), _tensor("c", [], TensorProto.BOOL)])
    message = _error(model)
    assert "If (1 node: branch): control flow (If, Loop, Scan) is not supported" in message
    assert "GRU (2 nodes: gru in branch, gru in branch): recurrent layers" in message


def test_dynamic_quantization_gets_advice():
    from onnx import TensorProto, helper
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "ys", "yz"], name="dq")]
    model = _model(nodes, outputs=[_tensor("y", [1, 4], TensorProto.UINT8),
                                   _tensor("ys", []), _tensor("yz", [], TensorProto.UINT8)])
    assert "quantize the float model statically (detvm quantize)" in _error(model)


def test_a_float_only_output_feeding_a_layout_op_is_said_in_onnx_terms():
    """A Softmax (float, allowed only at an output) feeding a Reshape."""
    from onnx import helper, numpy_helper
    nodes = [*_qdq("x", "a", "in"), helper.make_node("Softmax", ["a"], ["p"], name="soft"),
             helper.make_node("Reshape", ["p", "shape"], ["y"], name="flat")]
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    message = _error(_model(nodes, [*_scales(), shape]))
    assert "ONNX node 'flat' (Reshape)" in message and "'p' (a float Softmax result, which " \
        "only a graph output may be)" in message


def test_a_float_input_without_quantize_linear_is_said_in_onnx_terms():
    from onnx import helper
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"), *_qdq("r", "y", "out")]
    message = _error(_model(nodes, _scales()))
    assert "ONNX node 'relu' (Relu): its input is a float graph input before its " \
           "QuantizeLinear" in message


def test_every_failing_node_is_reported_in_one_error_and_diagnose_lists_them():
    from onnx import helper
    nodes = [helper.make_node("Relu", ["x"], ["r1"], name="first"),
             helper.make_node("Relu", ["x"], ["r2"], name="second"),
             helper.make_node("Add", ["r1", "r2"], ["r3"], name="after"),   # not tried
             *_qdq("x", "a", "in"),
             helper.make_node("Add", ["a", "r3"], ["y"], name="sum")]
    model = _model(nodes, _scales())
    message = _error(model)
    assert message.startswith("invalid: 2 ONNX nodes cannot be imported: ONNX node 'first'")
    assert "ONNX node 'second' (Relu)" in message and "'after'" not in message
    failures = diagnose(model)
    assert len(failures) == 2 and all("float graph input" in f for f in failures)
    assert diagnose(_model([*_qdq("x", "y", "io")], _scales())) == []
