"""Random CVM graphs round-trip: import -> export -> import gives the same program, and the
first import of an exported Builder program is that program."""
from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from compiler import Builder
from compiler.cvm import export_cvm, import_cvm

UNARY = ["relu", "abs", "negative", "cvm_precision", "flatten", "transpose", "sum", "max",
         "cvm_clip", "cvm_right_shift", "clip", "expand_dims", "repeat", "tile", "squeeze",
         "strided_slice", "reshape", "cvm_left_shift"]
BINARY = ["broadcast_add", "broadcast_sub", "broadcast_mul", "broadcast_max",
          "broadcast_greater", "broadcast_div", "elemwise_add", "concatenate", "where", "take"]


def unary_attrs(draw, op, t):
    n = len(t.shape)
    axis = draw(st.sampled_from([(), (0,), (n - 1,), tuple(range(n))]))
    return {
        "transpose": lambda: {"axes": tuple(reversed(range(n)))},
        "sum": lambda: {"axis": axis, "keepdims": draw(st.booleans())},
        "max": lambda: {"axis": axis, "exclude": draw(st.booleans())},
        "cvm_clip": lambda: {"precision": draw(st.integers(1, 12))},
        "cvm_right_shift": lambda: {"precision": draw(st.integers(1, 12)),
                                    "shift_bit": draw(st.integers(1, 32))},
        "cvm_left_shift": lambda: {"precision": draw(st.integers(1, 16)),
                                   "shift_bit": draw(st.integers(1, 4))},
        "clip": lambda: {"a_min": -draw(st.integers(0, 200)), "a_max": draw(st.integers(1, 300))},
        "expand_dims": lambda: {"axis": draw(st.integers(-n - 1, n))},
        "repeat": lambda: {"repeats": draw(st.integers(1, 2)),
                           "axis": draw(st.integers(-n, n - 1))},
        "tile": lambda: {"reps": (draw(st.integers(1, 2)),)},
        "strided_slice": lambda: {"begin": (0,) * n, "end": t.shape, "stride": (1,) * n},
        "reshape": lambda: {"shape": (-1,)},
    }.get(op, dict)()


def special(draw, b: Builder, x: str) -> str:
    """An op with weights or a fixed rank (InvalidError when ``x`` does not suit it)."""
    t, k = b.tensor(x), f"w{len(b.tensors)}"
    op = draw(st.sampled_from(["dense", "conv2d", "max_pool2d", "upsampling",
                               "get_valid_counts", "cvm_lut", "slice_like"]))
    if op == "dense":
        w = b.const(k, np.ones((2, t.shape[-1]), np.int8), precision=2)
        return b.dense(x, w, units=2, use_bias=False)
    if op == "conv2d":
        w = b.const(k, np.ones((2, (t.shape + (1, 1))[1], 1, 1), np.int8), precision=2)
        return b.conv2d(x, w, channels=2, kernel_size=(1, 1), use_bias=False)
    if op == "cvm_lut":
        table = b.const(k, list(range(-4, 4)), precision=4)
        return b.cvm_lut(x, table, in_dim=8)
    attrs = {"max_pool2d": {"pool_size": (1, 1)}, "upsampling": {"scale": 2}}.get(op, {})
    out = b.apply(op, [x, x] if op == "slice_like" else [x], attrs)
    return out[1] if isinstance(out, tuple) else out


def step(draw, b: Builder, names: list[str]) -> None:
    x = draw(st.sampled_from(names))
    t = b.tensor(x)
    if draw(st.integers(0, 3)) == 0:
        names.append(special(draw, b, x))
    elif draw(st.booleans()):
        op = draw(st.sampled_from(UNARY))
        names.append(b.apply(op, [x], unary_attrs(draw, op, t)))
    else:
        binary(draw, b, names, x)


def binary(draw, b: Builder, names: list[str], x: str) -> None:
    t = b.tensor(x)
    op = draw(st.sampled_from(BINARY))
    k = b.const(f"c{len(b.tensors)}", draw(st.lists(st.integers(-9, 9), min_size=t.shape[-1],
                                                     max_size=t.shape[-1])), precision=5)
    inputs = {"elemwise_add": [x, x], "concatenate": [x, x], "where": [x, x, x],
              "take": [k, x]}.get(op, [x, k])
    attrs = {"concatenate": {"axis": 0}, "take": {"axis": None}}.get(op, {})
    names.append(b.apply(op, inputs, attrs))


@st.composite
def programs(draw):
    b = Builder("rt")
    rank = draw(st.sampled_from([1, 2, 3, 3, 4, 4]))
    shape = tuple(draw(st.lists(st.integers(1, 3), min_size=rank - 1, max_size=rank - 1)))
    shape += (draw(st.integers(2, 3)),)
    names = [b.input("data", shape, draw(st.integers(2, 8)))]
    for _ in range(draw(st.integers(1, 6))):
        try:
            step(draw, b, names)
        except vm.InvalidError:
            pass                           # e.g. a precision above 32: try another step
    outs = draw(st.lists(st.sampled_from(names[1:] or names), min_size=1, max_size=2,
                         unique=True))
    b.output(*outs)
    b.meta("cvm.version", draw(st.sampled_from(["cvm_1.0.0", "cvm_1.1.0"])))
    b.meta("cvm.postprocess", draw(st.sampled_from(["", "argmax", "detection", "x"])))
    return b.build()


def own_pools(graph_json: str) -> str:
    """The same graph with one storage pool per entry (a safe, uncompiled plan)."""
    g = json.loads(graph_json)
    g["attrs"]["storage_id"][1] = list(range(len(g["attrs"]["storage_id"][1])))
    return json.dumps(g)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.sampled_from([None, "cvm"]), st.booleans())
def test_import_export_import(program, compat, pools):
    text, params = export_cvm(program)
    if pools:
        text = own_pools(text)
    first = import_cvm(text, params, compat, name="rt")
    text2, params2 = export_cvm(first)
    second = import_cvm(text2, params2, compat, name="rt")
    assert vm.encode(second) == vm.encode(first)
    assert export_cvm(second) == (text2, params2)
    if compat is None and not pools:
        assert (first.tensors, first.code, first.outputs) == \
            (program.tensors, program.code, program.outputs)
        assert all(np.array_equal(first.consts[i], a) for i, a in program.consts.items())
        assert int(first.metadata["cvm.gas"]) == vm.load(first).gas


def test_compat_full_max_exports_as_one_cvm_node():
    b = Builder("rt")
    x = b.input("data", (2, 3), 8)
    b.output(b.max(x), b.relu(b.max(x, axis=(0, 1))))
    text, params = export_cvm(b.build())
    first = import_cvm(text, params, "cvm", name="rt")
    assert [i.op for i in first.code] == ["max", "relu", "max", "relu"]
    text2, params2 = export_cvm(first)
    funcs = [n["attrs"]["func_name"] for n in json.loads(text2)["nodes"] if n["op"] != "null"]
    assert funcs == ["max", "max", "relu"]
    assert vm.encode(import_cvm(text2, params2, "cvm", name="rt")) == vm.encode(first)


def test_resnet18_storage_plan_matches_cvm():
    """CVM reports 54,775,008 bytes of storage for ResNet-18 (cvm-observed.md §6)."""
    import importlib.util
    from pathlib import Path
    from compiler.cvm import plan_program
    path = Path(__file__).resolve().parents[1] / "bench" / "resnet18.py"
    spec = importlib.util.spec_from_file_location("bench_resnet18", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert plan_program(bench.build_resnet18())[1] == 54_775_008
