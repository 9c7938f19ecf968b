"""The CVM loader makes every load-time check CVM makes, with CVM's error codes
(cvm-observed.md §5), and gives a clean error or the right result where CVM crashes."""
from __future__ import annotations

import json

import numpy as np
import pytest

from compiler.cvm import import_cvm, save_params
from compiler.cvm.attrs import parse_attrs
from vm import runtime as rt
from tests.cvm_util import dumps, graph, input_bytes, params_of, vector

A = "a_dense_shift_clip"


def load(g, params=None, base=A):
    text = g if isinstance(g, (str, bytes)) else dumps(g)
    return rt.CVMAPILoadModel(text, params_of(vector(base)) if params is None else params)


def code_of(g, params=None, base=A) -> int:
    try:
        load(g, params, base)
    except rt.CVMError as e:
        return e.code
    return 0


def mutated(fn, base=A) -> dict:
    g = graph(base)
    fn(g)
    return g


def set_attrs(nid, text):
    return lambda g: g["attrs"]["op_attrs"][1].__setitem__(nid, text)


GRAPH_PROBES = {
    "unknown top-level key": (lambda g: g.update(foo=1), 2),
    "precision missing": (lambda g: g["attrs"].pop("precision"), 1),
    "dltype missing (v1.0.0)": (lambda g: g["attrs"].pop("dltype"), 1),
    "dltype missing (v1.1.0)": (lambda g: (g["attrs"].pop("dltype"),
                                           g.update(version="cvm_1.1.0")), 0),
    "v1.1.0 without node_row_ptr": (lambda g: (g.pop("node_row_ptr"),
                                               g.update(version="cvm_1.1.0")), 0),
    "v1.1.0 without arg_nodes": (lambda g: (g.pop("arg_nodes"),
                                            g.update(version="cvm_1.1.0")), 0),
    "v1.1.0 with a wrong node_row_ptr": (lambda g: g.update(version="cvm_1.1.0",
                                                            node_row_ptr=[0, 9]), 0),
    "wrong node_row_ptr (v1.0.0)": (lambda g: g["node_row_ptr"].__setitem__(6, 7), 1),
    "node_row_ptr missing (v1.0.0)": (lambda g: g.pop("node_row_ptr"), 1),
    "wrong arg_nodes (v1.0.0)": (lambda g: g.update(arg_nodes=[0, 1]), 1),
    "version missing": (lambda g: g.pop("version"), 0),
    "version cvm_2.0.0": (lambda g: g.update(version="cvm_2.0.0"), 2),
    "variable precision -1": (lambda g: g["attrs"]["precision"][1].__setitem__(0, -1), 1),
    "variable precision 33": (lambda g: g["attrs"]["precision"][1].__setitem__(0, 33), 1),
    "wrong op-entry precisions": (lambda g: g["attrs"]["precision"][1].__setitem__(4, 3), 0),
    "output shape wrong": (lambda g: g["attrs"]["shape"][1].__setitem__(5, [3, 6]), 1),
    "unknown op": (lambda g: g["nodes"][4]["attrs"].update(func_name="broadcast_mod"), 2),
    "func_name suffix": (lambda g: g["nodes"][3]["attrs"].update(func_name="dense_12"), 0),
    "node op neither null nor cvm_op": (lambda g: g["nodes"][3].update(op="tvm_op"), 2),
    "unknown node key": (lambda g: g["nodes"][3].update(foo="1"), 2),
    "node precision key": (lambda g: g["nodes"][3].update(precision="8"), 0),
    "attribute out of range": (set_attrs(4, '{"shift_bit": "0", "precision": "8"}'), 1),
    "unknown attribute key": (set_attrs(4, '{"shift_bit": "7", "precision": "8", "foo": "1"}'),
                              2),
    "hidden attribute key": (set_attrs(4, '{"shift_bit": "7", "precision": "8", "__x__": "1"}'),
                             0),
    "attribute not an int": (set_attrs(4, '{"shift_bit": "7.0", "precision": "8"}'), 2),
    "required attribute missing": (set_attrs(3, '{"use_bias": "True"}'), 2),
    "op_attrs not JSON": (set_attrs(3, "{units"), 2),
    "variable op_attrs never parsed": (set_attrs(0, "not json"), 0),
    "dense shares storage with input": (
        lambda g: g["attrs"]["storage_id"][1].__setitem__(3, 2), 1),
    "right shift shares storage (whitelisted)": (
        lambda g: g["attrs"]["storage_id"][1].__setitem__(4, 0), 0),
    "negative storage id": (lambda g: g["attrs"]["storage_id"][1].__setitem__(4, -1), 1),
    "device_index present": (lambda g: g["attrs"].update(device_index=["list_int", [1] * 6]), 1),
    "device_index empty": (lambda g: g["attrs"].update(device_index=["list_int", []]), 0),
    "skipped list_int graph attribute": (lambda g: g["attrs"].update(foo=["list_int", []]), 0),
    "unskippable graph attribute": (lambda g: g["attrs"].update(foo=["list_str", []]), 2),
    "not topologically ordered": (lambda g: g["nodes"][3]["inputs"].__setitem__(0, [4, 0, 0]),
                                  1),
    "unknown postprocess": (lambda g: g.update(postprocess="softmax"), 0),
    "duplicate variable name": (lambda g: g["nodes"][2].update(name="fc_w"), 2),
    "no data variable": (lambda g: g["nodes"][0].update(name="x"), 1),
    "head out of range": (lambda g: g.update(heads=[[9, 0, 0]]), 1),
    "dimension 0": (lambda g: g["attrs"]["shape"][1].__setitem__(0, [0, 16]), 1),
    "ndim 7": (lambda g: g["attrs"]["shape"][1].__setitem__(0, [1] * 7), 1),
}


@pytest.mark.parametrize("name", GRAPH_PROBES)
def test_graph_probe(name):
    fn, code = GRAPH_PROBES[name]
    assert code_of(mutated(fn)) == code


@pytest.mark.parametrize("text", ["", "hello", '{"nodes": [', "[]", "{}", b"\xff\xfe"])
def test_bad_json_is_a_runtime_error(text):
    assert code_of(text) == 2


def test_same_result_with_and_without_v11_lists():
    m = vector(A)
    g = graph(A)
    g.update(version="cvm_1.1.0")
    del g["node_row_ptr"], g["arg_nodes"]
    assert rt.CVMAPIInference(load(g), input_bytes(m)) == \
        rt.CVMAPIInference(load(m["graph_json"]), input_bytes(m))


def test_data_precision_16_feeding_dense():
    g = mutated(lambda g: g["attrs"]["precision"][1].__setitem__(0, 16))
    with pytest.raises(rt.CVMError) as e:
        load(g)
    assert e.value.code == 1 and "precision must be <= 8" in e.value.message


@pytest.mark.parametrize("layout, code", [("NCHW", 0), ("NHWC", 1)])
def test_conv_layout_attributes(layout, code):
    g = graph("b_cnn")
    conv = next(k for k, n in enumerate(g["nodes"]) if n["op"] != "null")
    attrs = json.loads(g["attrs"]["op_attrs"][1][conv])
    attrs.update(layout=layout, kernel_layout="OIHW", out_dtype="same")
    g["attrs"]["op_attrs"][1][conv] = json.dumps(attrs)
    assert code_of(g, base="b_cnn") == code


def test_no_param_ops_take_an_empty_dict():
    assert parse_attrs("broadcast_add", {"__hidden__": "1"}, "x") == {}
    with pytest.raises(Exception) as e:
        parse_attrs("relu", {"__hidden__": "1"}, "x")
    assert e.value.cvm_code == 2


@pytest.mark.parametrize("text, value", [("(3, 3)", (3, 3)), ("[3,3]", (3, 3)), ("3", (3,)),
                                         ("(1,)", (1,)), ("()", ()), (" ( -1 , +2 ) ", (-1, 2))])
def test_tuple_syntax(text, value):
    assert parse_attrs("transpose", {"axes": text}, "x") == {"axes": value}


@pytest.mark.parametrize("text, value", [("True", True), ("false", False), ("1", True),
                                         ("0", False), ("TRUE", True)])
def test_bool_syntax(text, value):
    assert parse_attrs("dense", {"units": "5", "use_bias": text}, "x")["use_bias"] is value


def test_optional_int_syntax():
    assert parse_attrs("take", {"axis": "None"}, "x") == {"axis": None}
    assert parse_attrs("take", {"axis": "-1"}, "x") == {"axis": -1}


# ---------------------------------------------------------------------------------------------
# params
# ---------------------------------------------------------------------------------------------

def params(**arrays) -> bytes:
    return save_params(arrays)


def good_params():
    m = vector(A)["params"]
    return {k: np.array(v["values"], np.int32).reshape(v["shape"]) for k, v in m.items()}


def with_params(**changes) -> dict:
    p = good_params()
    p.update(changes)
    return {k: v for k, v in p.items() if v is not None}


PARAM_PROBES = {
    "value 128 at precision 8": (lambda p: p["fc_w"].__setitem__((0, 0), 128), 1),
    "param missing": (lambda p: p.pop("fc_b"), 1),
    "unknown param name": (lambda p: p.update(extra=np.zeros(3, np.int32)), 2),
    "wrong shape": (lambda p: p.update(fc_b=np.zeros(16, np.int32)), 1),
    "stored as int8": (lambda p: p.update(fc_w=p["fc_w"].astype(np.int8)), 0),
    "an entry named data": (lambda p: p.update(data=np.full((3, 16), 500, np.int32)), 0),
}


@pytest.mark.parametrize("name", PARAM_PROBES)
def test_param_probe(name):
    fn, code = PARAM_PROBES[name]
    p = good_params()
    fn(p)
    assert code_of(vector(A)["graph_json"], save_params(p)) == code


@pytest.mark.parametrize("keep, code", [(lambda n: n - 10, 2), (lambda n: n // 2, 2),
                                        (lambda n: 0, 1), (lambda n: 30, 1)])
def test_truncated_params_are_a_clean_error(keep, code):
    blob = params_of(vector(A))
    blob = blob[:keep(len(blob))]
    assert code_of(vector(A)["graph_json"], blob) == code


def test_bad_list_magic_and_trailing_garbage():
    blob = params_of(vector(A))
    assert code_of(vector(A)["graph_json"], b"\0" + blob[1:]) == 1
    assert code_of(vector(A)["graph_json"], blob + b"garbage") == 0


def test_params_as_a_mapping():
    m = vector(A)
    assert import_cvm(m["graph_json"], good_params()).tensors[1].name == "fc_w"
