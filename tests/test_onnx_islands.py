"""Float islands become lookup tables that reproduce onnxruntime bit for bit: every island kind
(tests/onnx_islands.py) quantized by onnxruntime (QDQ uint8 / int8, QOperator), run on every
8-bit code and every pair of codes, against onnxruntime's default session."""
from __future__ import annotations

import collections

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="ONNX tests need the onnx extra")
pytest.importorskip("onnxruntime", reason="ONNX tests need onnxruntime")

import vm  # noqa: E402
from compiler.onnx import import_onnx  # noqa: E402
from tests.onnx_islands import every_code, islands_model, outputs, quantize  # noqa: E402
from tests.onnx_util import ort_session, to_int  # noqa: E402

N = 256


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("islands")
    onnx.save(islands_model(), root / "float.onnx")
    cache = {}

    def get(fmt: str, activation: str):
        if (fmt, activation) not in cache:
            path = quantize(root / "float.onnx", root / f"{fmt}-{activation}.onnx", fmt=fmt,
                            activation=activation)
            cache[fmt, activation] = path, vm.load(import_onnx(path, batch=N))
        return cache[fmt, activation]
    return get


def _mismatches(path, model) -> dict[str, int]:
    x = every_code(model.metadata, N)
    ours = model.run(x, float_io=True)
    theirs = dict(zip(outputs(), ort_session(path).run(outputs(), x)))
    bad = {}
    for name in outputs():
        scale = float(model.metadata[f"output.{name}.scale"])
        zero = int(model.metadata[f"output.{name}.zero_point"])
        diff = to_int(ours[name], scale, zero) != to_int(theirs[name], scale, zero)
        if diff.any():
            bad[name] = int(diff.sum())
    return bad


@pytest.mark.parametrize("fmt, activation", [("qdq", "uint8"), ("qdq", "int8"),
                                             ("qoperator", "uint8")])
def test_every_island_equals_onnxruntime(models, fmt, activation):
    path, model = models(fmt, activation)
    assert _mismatches(path, model) == {}


def test_islands_become_tables(models):
    _, model = models("qdq", "uint8")
    ops = collections.Counter(i.op for i in model.program.code)
    assert set(ops) == {"qconv2d", "requantize", "lut", "concatenate", "max_pool2d"}, ops
    assert ops["lut"] >= len(outputs()) + 1 and ops["qconv2d"] == len(outputs()) + 4
    luts = [i for i in model.program.code if i.op == "lut"]
    tables = [model.program.tensors[i.inputs[0]].shape for i in luts]
    assert (256,) in tables and (256, 256) in tables
    kinds = {model.program.tensors[i.inputs[-1]].kind for i in luts if len(i.inputs) == 3}
    assert kinds == {"value", "const"}          # anchors, strides: a constant argument


def test_half_even_keeps_the_exact_add(models):
    path, _ = models("qdq", "uint8")
    program = import_onnx(path, batch=2, rounding="half_even")
    ops = collections.Counter(i.op for i in program.code)
    assert ops["broadcast_add"] >= 5 and ops["lut"] >= 15


def _add_params(rng):
    """Scales and zero points for which onnxruntime's QLinearAdd rounds some pair
    differently when its first input is the per-span scalar (searched, then returned)."""
    from onnx import helper
    from compiler.onnx.tables import Arg, Feed, Job, evaluate
    while True:
        p = {k: np.float32(rng.uniform(0.005, 0.1)) for k in ("sa", "sb", "sy")}
        p.update({k: np.uint8(rng.integers(0, 256)) for k in ("za", "zb", "zy")})
        node = helper.make_node("QLinearAdd", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"],
                                ["y"], domain="com.microsoft")
        args = lambda: [Arg("uint8", 0, 256, [Feed("a")]), Arg("uint8", 0, 256, [Feed("b")])]
        flat, rows = evaluate([Job("t", [node], p, args(), "y", layout, [0])
                               for layout in ("flat", "rows_a")], 17)
        if (flat[0] != rows[0]).any():
            return p, flat[0]


def _add_model(p, fmt: str):
    """y0 = c + x (c a scalar per innermost span: onnxruntime's scalar-first call), y1 = x + c,
    on uint8 inputs c [256, 1, 1, 1] and x [256, 1, 1, 256]."""
    from onnx import TensorProto, helper, numpy_helper
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in p.items()]
    if fmt == "qoperator":
        nodes = [helper.make_node("QLinearAdd", [u, s, z, v, t, w, "sy", "zy"], [y],
                                  domain="com.microsoft")
                 for (u, s, z, v, t, w, y) in (("c", "sa", "za", "x", "sb", "zb", "y0"),
                                               ("x", "sb", "zb", "c", "sa", "za", "y1"))]
    else:
        nodes = [helper.make_node("DequantizeLinear", ["c", "sa", "za"], ["cf"]),
                 helper.make_node("DequantizeLinear", ["x", "sb", "zb"], ["xf"]),
                 helper.make_node("Add", ["cf", "xf"], ["s0"]),
                 helper.make_node("Add", ["xf", "cf"], ["s1"]),
                 helper.make_node("QuantizeLinear", ["s0", "sy", "zy"], ["y0"]),
                 helper.make_node("QuantizeLinear", ["s1", "sy", "zy"], ["y1"])]
    u8 = TensorProto.UINT8
    graph = helper.make_graph(
        nodes, "add", [helper.make_tensor_value_info("c", u8, [256, 1, 1, 1]),
                       helper.make_tensor_value_info("x", u8, [256, 1, 1, 256])],
        [helper.make_tensor_value_info(y, u8, None) for y in ("y0", "y1")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)],
                             ir_version=8)


@pytest.mark.parametrize("fmt", ["qdq", "qoperator"])
def test_add_tables_follow_the_call_pattern(tmp_path, fmt):
    p, flat = _add_params(np.random.default_rng(3))
    path = tmp_path / "add.onnx"
    onnx.save(_add_model(p, fmt), path)
    feeds = {"c": np.arange(256, dtype=np.uint8).reshape(256, 1, 1, 1),
             "x": np.tile(np.arange(256, dtype=np.uint8), (256, 1)).reshape(256, 1, 1, 256)}
    theirs = dict(zip(("y0", "y1"), ort_session(path).run(["y0", "y1"], feeds)))
    ours = vm.load(import_onnx(path)).run(feeds)
    for y in ("y0", "y1"):
        assert np.array_equal(ours[y], theirs[y].astype(np.int64)), y
    assert (theirs["y0"].reshape(256, 256) != flat).any()     # the flat table would differ


def _se_add_model(p):
    """out = y + x after identity 1x1 Convs (onnxruntime runs them, and the Add, in NHWC):
    y [128, 2, 1, 1] is a scalar per innermost span in the model's NCHW shapes, a vector of 2
    in onnxruntime's NHWC layout; x [128, 2, 16, 16]."""
    from onnx import TensorProto, helper, numpy_helper
    eye = np.array([[127, 0], [0, 127]], np.int8).reshape(2, 2, 1, 1)
    inits = {"w": eye, "sw": np.float32(1 / 127), "zw": np.int8(0), **p}
    nodes = []
    for name, s, z in (("y", "sa", "za"), ("x", "sb", "zb")):
        nodes += [helper.make_node("QuantizeLinear", [f"{name}_in", s, z], [f"{name}_q"]),
                  helper.make_node("DequantizeLinear", [f"{name}_q", s, z], [f"{name}_d"]),
                  helper.make_node("DequantizeLinear", ["w", "sw", "zw"], [f"{name}_w"]),
                  helper.make_node("Conv", [f"{name}_d", f"{name}_w"], [f"{name}_c"]),
                  helper.make_node("QuantizeLinear", [f"{name}_c", s, z], [f"{name}_cq"]),
                  helper.make_node("DequantizeLinear", [f"{name}_cq", s, z], [name])]
    nodes += [helper.make_node("Add", ["y", "x"], ["sum"]),
              helper.make_node("QuantizeLinear", ["sum", "sy", "zy"], ["out_q"]),
              helper.make_node("DequantizeLinear", ["out_q", "sy", "zy"], ["out"])]
    f = TensorProto.FLOAT
    graph = helper.make_graph(
        nodes, "se", [helper.make_tensor_value_info("y_in", f, [128, 2, 1, 1]),
                      helper.make_tensor_value_info("x_in", f, [128, 2, 16, 16])],
        [helper.make_tensor_value_info("out", f, None)],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_add_pattern_follows_onnxruntime_layout(tmp_path):
    """The pattern of a broadcast Add comes from onnxruntime's optimized graph (NHWC), not
    from the model's NCHW shapes: every pair of codes, bit for bit."""
    p, _ = _add_params(np.random.default_rng(3))
    path = tmp_path / "se.onnx"
    onnx.save(_se_add_model(p), path)
    code = lambda c, s, z: ((c.astype(np.int64) - int(z)) * np.float32(s)).astype(np.float32)
    y = code(np.arange(256).reshape(128, 2, 1, 1), p["sa"], p["za"])
    x = code(np.tile(np.arange(256), (128, 2, 1)).reshape(128, 2, 16, 16), p["sb"], p["zb"])
    theirs = ort_session(path).run(["out"], {"y_in": y, "x_in": x})[0]
    ours = vm.load(import_onnx(path)).run({"y_in": y, "x_in": x}, float_io=True)["out"]
    assert np.array_equal(ours, theirs)


def test_tables_are_evaluated_once_per_process(tmp_path, monkeypatch):
    """A model imported again (a symbolic batch is lowered at two batches) reuses its
    tables: the same program, no second onnxruntime evaluation."""
    from compiler.onnx import tables
    p, _ = _add_params(np.random.default_rng(4))
    path = tmp_path / "add.onnx"
    onnx.save(_add_model(p, "qdq"), path)
    monkeypatch.setattr(tables, "_CACHE", {})
    runs, run = [], tables._run
    monkeypatch.setattr(tables, "_run", lambda jobs, opset: runs.append(len(jobs)) or
                        run(jobs, opset))
    first, second = import_onnx(path), import_onnx(path)
    assert runs == [2, 0] and vm.encode(first) == vm.encode(second)
