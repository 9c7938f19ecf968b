"""Fuzzers of every decoder, and a differential fuzzer of random valid programs.

    python -m tests.fuzz --minutes 10 [--target dvm,text,cvm,onnx,programs] [--seed N]

Targets (each the body of a hypothesis test, drawing from ``data``):

* ``dvm``      mutated .dvm bytes (hash fixed up or not): a Model that runs, or a
               deterministic DetvmError; whatever decodes re-encodes to the same bytes;
* ``text``     mutated assembly: a Program that round-trips, or a located detvm error;
* ``cvm``      CVM graph JSON with a value replaced, removed or added anywhere, and mutated
               params bytes: a model that runs, or a CVMError;
* ``onnx``     quantized ONNX models, mutated as protobuf bytes or field by field: a Program,
               or a DetvmError;
* ``programs`` random valid programs of every op (law cases, chained where types meet): the
               reference, numpy, onnxruntime (when importable) and formal executors give the
               same bytes.

The test suite runs each target at a small budget (tests/test_fuzz.py); long runs print each
failure (hypothesis's shrunk example) and exit 1; every crasher becomes a regression test in
tests/test_fuzz.py.
"""
from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import time
import traceback
import warnings
from functools import lru_cache

import numpy as np
from hypothesis import HealthCheck, assume, given, seed, settings, strategies as st

import vm
from compiler import Builder
from ops.base import OpError
from vm.errors import DetvmError

# -- dvm -------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def dvm_seeds() -> tuple[bytes, ...]:
    from tests.conftest import small_cnn
    return (vm.encode(small_cnn()), vm.encode(_symbolic_seed()))


def _symbolic_seed():
    b = Builder("sym")
    b.symbol("N", 8)
    x = b.input("x", ("N", 4), 8)
    w = b.const("w", np.arange(-6, 6).reshape(3, 4), 8)
    b.output(b.op("relu", b.op("dense", x, w, units=3, use_bias=False)))
    return b.build()


def mutate_bytes(data, body: bytearray, start: int) -> None:
    """One to four mutations of ``body`` at or after ``start``: a bit flipped, a byte set,
    inserted or deleted, or four bytes set to an extreme count."""
    for _ in range(data.draw(st.integers(1, 4))):
        if len(body) <= start + 1:
            return
        kind = data.draw(st.sampled_from(["flip", "set", "insert", "delete", "u32"]))
        at = data.draw(st.integers(start, len(body) - 1))
        if kind == "flip":
            body[at] ^= 1 << data.draw(st.integers(0, 7))
        elif kind == "set":
            body[at] = data.draw(st.integers(0, 255))
        elif kind == "insert":
            body.insert(at, data.draw(st.integers(0, 255)))
        elif kind == "delete":
            del body[at]
        else:                                   # a count or length field: extreme values
            value = data.draw(st.sampled_from([0, 1, 255, 65535, 1 << 31, (1 << 32) - 1]))
            body[at:at + 4] = value.to_bytes(4, "little")


def fuzz_dvm(data) -> None:
    from vm.encoding import HASH_BYTES, MAGIC
    import hashlib
    blob = data.draw(st.sampled_from(dvm_seeds()))
    body = bytearray(blob[:-HASH_BYTES])
    mutate_bytes(data, body, len(MAGIC))
    fixed = data.draw(st.booleans())
    blob = bytes(body) + (hashlib.sha256(body).digest() if fixed else blob[-HASH_BYTES:])
    try:
        program = vm.decode(blob)
    except DetvmError as e:
        assert e.deterministic, e
        return
    assert vm.encode(program) == blob              # canonical: one program, one byte string
    _load_and_run(blob)


def _load_and_run(source) -> None:
    try:
        model = vm.load(source, ctx=vm.cpu(backend="numpy"))
    except DetvmError as e:
        assert e.deterministic, e
        return
    if model.gas > 1 << 24:
        return
    feeds = {t.name: np.zeros(t.shape if not model.symbols else
                              tuple(1 if isinstance(d, str) else d for d in t.shape), t.dtype)
             for t in model.inputs}
    try:
        model.run(feeds)
    except DetvmError as e:
        assert e.deterministic, e


# -- text ------------------------------------------------------------------------------------

def fuzz_text(data) -> None:
    from tests.test_text import SEED, check_mutant, mutants
    check_mutant(data.draw(mutants(SEED)))


# -- cvm -------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(1 << 70), 1 << 70),
              st.sampled_from([0, 1, -1, 2 ** 31, 2 ** 63, 10 ** 300]),
              st.floats(allow_nan=False), st.text(max_size=6),
              st.sampled_from(["\ud800", "9" * 5000, "True", "(1, 2)", "[]", "{}", "-1"])),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=6), inner, max_size=3)),
    max_leaves=6)


def _paths(value, path=()):
    yield path
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, path + (k,))
    elif isinstance(value, list):
        for k, v in enumerate(value):
            yield from _paths(v, path + (k,))


def _mutate_json(data, g) -> object:
    """``g`` with one node replaced, removed, or a key/element added (strings of attribute
    dicts, the CVM way of writing them, are mutated as JSON too)."""
    paths = list(_paths(g))
    path = data.draw(st.sampled_from(paths))
    if not path:
        return data.draw(JSON_VALUES)
    parent = g
    for k in path[:-1]:
        parent = parent[k]
    key, kind = path[-1], data.draw(st.sampled_from(["replace", "remove", "add", "inner"]))
    target = parent[key]
    if kind == "inner" and isinstance(target, str) and target.startswith("{"):
        try:
            inner = json.loads(target)
        except ValueError:
            inner = None
        if isinstance(inner, dict):
            parent[key] = json.dumps(_mutate_json(data, inner))
            return g
    if kind == "remove":
        del parent[key]
    elif kind == "add" and isinstance(parent, list):
        parent.insert(key, data.draw(JSON_VALUES))
    elif kind == "add" and isinstance(parent, dict):
        parent[data.draw(st.text(max_size=8))] = data.draw(JSON_VALUES)
    else:
        parent[key] = data.draw(JSON_VALUES)
    return g


@lru_cache(maxsize=None)
def cvm_seeds() -> tuple:
    from tests.cvm_util import vectors
    return tuple((m["graph_json"], m["params_b64"]) for m in vectors()[:6])


def fuzz_cvm(data) -> None:
    from vm import runtime as rt
    graph_json, params_b64 = data.draw(st.sampled_from(cvm_seeds()))
    g, params = json.loads(graph_json), bytearray(base64.b64decode(params_b64))
    for _ in range(data.draw(st.integers(0, 3))):
        g = _mutate_json(data, g)
    if data.draw(st.booleans()):
        mutate_bytes(data, params, 0)
    try:
        text = json.dumps(g)
    except ValueError:
        return
    if data.draw(st.booleans()):                   # raw text edits as well
        k = data.draw(st.integers(0, len(text)))
        text = text[:k] + data.draw(st.sampled_from(["", "}", "\"", "\\u", "0", "\n"])) + \
            text[k + data.draw(st.integers(0, 2)):]
    try:
        rt.CVMAPIGetGasFromGraphFile(text)
    except rt.CVMError:
        pass
    try:
        net = rt.CVMAPILoadModel(text, bytes(params))
    except rt.CVMError:
        return
    try:
        if rt.CVMAPIGetGasFromModel(net) <= 1 << 24:
            rt.CVMAPIInference(net, bytes(rt.CVMAPIGetInputLength(net)))
    except rt.CVMError:
        pass
    finally:
        rt.CVMAPIFreeModel(net)


# -- onnx ------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def onnx_seeds() -> tuple[bytes, ...]:
    from onnx import helper
    from tests.onnx_qdq import Port, qdq_model
    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    conv = qdq_model(
        [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"], name="dq_w"),
         helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["y"], name="relu"),
         helper.make_node("MaxPool", ["y"], ["p"], name="pool", kernel_shape=[2, 2],
                          strides=[2, 2])],
        [Port("x", (1, 3, 8, 8))], [Port("p", (1, 4, 4, 4), 0.1)],
        inits={"w_q": w, "w_s": np.float32(0.02), "w_z": np.int8(0)})
    add = qdq_model([helper.make_node("Add", ["a", "b"], ["s"], name="add")],
                    [Port("a", (2, 5)), Port("b", (2, 5), 0.07, 100)], [Port("s", (2, 5), 0.1)])
    return tuple(m.SerializeToString() for m in (conv, add))


def fuzz_onnx(data) -> None:
    from onnx import ModelProto
    from compiler.onnx import import_onnx
    blob = data.draw(st.sampled_from(onnx_seeds()))
    if data.draw(st.booleans()):
        body = bytearray(blob)
        mutate_bytes(data, body, 0)
        source = bytes(body)
    else:                                          # field by field
        model = ModelProto()
        model.ParseFromString(blob)
        _mutate_onnx(data, model)
        source = model.SerializeToString()
    try:
        program = import_onnx(source)
    except DetvmError as e:
        assert e.deterministic, e
        return
    _load_and_run(vm.encode(program))


def _mutate_onnx(data, model) -> None:
    g = model.graph
    kind = data.draw(st.sampled_from(["attr", "input", "dims", "dtype", "op", "shape",
                                      "opset", "drop"]))
    if kind == "attr":
        node = data.draw(st.sampled_from(list(g.node)))
        if node.attribute:
            a = data.draw(st.sampled_from(list(node.attribute)))
            if a.ints:
                a.ints[data.draw(st.integers(0, len(a.ints) - 1))] = data.draw(
                    st.integers(-(1 << 40), 1 << 40))
            else:
                a.i = data.draw(st.integers(-(1 << 40), 1 << 40))
    elif kind == "input":
        node = data.draw(st.sampled_from(list(g.node)))
        if node.input:
            node.input[data.draw(st.integers(0, len(node.input) - 1))] = data.draw(
                st.sampled_from(["", "x_q", "nowhere", node.output[0]]))
    elif kind in ("dims", "dtype") and g.initializer:
        t = data.draw(st.sampled_from(list(g.initializer)))
        if kind == "dtype":
            t.data_type = data.draw(st.integers(0, 22))
        elif t.dims:
            t.dims[data.draw(st.integers(0, len(t.dims) - 1))] = data.draw(
                st.sampled_from([0, 1, 2, 1 << 20, 1 << 40, -1]))
    elif kind == "op":
        node = data.draw(st.sampled_from(list(g.node)))
        node.op_type = data.draw(st.sampled_from(["Conv", "Relu", "Add", "MaxPool", "Loop",
                                                  "QuantizeLinear", "Unknown", ""]))
    elif kind == "shape":
        dims = g.input[0].type.tensor_type.shape.dim
        if dims:
            d = dims[data.draw(st.integers(0, len(dims) - 1))]
            if data.draw(st.booleans()):
                d.dim_value = data.draw(st.sampled_from([0, 1, 3, 1 << 24, 1 << 40]))
            else:
                d.dim_param = data.draw(st.sampled_from(["N", "", "H"]))
    elif kind == "opset":
        model.opset_import[0].version = data.draw(st.integers(0, 30))
    elif g.node:
        del g.node[data.draw(st.integers(0, len(g.node) - 1))]


# -- random valid programs -------------------------------------------------------------------

@lru_cache(maxsize=None)
def law_cases() -> dict:
    from tests.cases import all_cases
    return all_cases()


@st.composite
def valid_programs(draw, max_ops: int = 3):
    """(program, feeds): 1..max_ops law cases of random ops; an input whose shape and precision
    an earlier tensor has may read that tensor instead (chains of ops)."""
    from tests.cases import values_for
    b, feeds, pool = Builder("fuzz"), {}, []
    names = sorted(law_cases())
    outputs = []
    for k in range(draw(st.integers(1, max_ops))):
        name = draw(st.sampled_from(names))
        case = draw(law_cases()[name])
        args = []
        for j, i in enumerate(case.inputs):
            same = [t for t, shape, p in pool if shape == tuple(i.shape) and p <= i.precision]
            if i.values is None and same and draw(st.booleans()):
                args.append(draw(st.sampled_from(same)))
                continue
            flat = i.values if i.values is not None else draw(values_for(i.shape, i.precision))
            try:
                ref = b.input(f"x{k}_{j}", tuple(i.shape), i.precision)
            except DetvmError:                  # a case only a constant may feed
                assume(False)
            feeds[ref] = np.array(flat, np.int64).reshape(i.shape)
            args.append(ref)
        try:
            out = b.op(name, *args, **case.attrs)
        except (DetvmError, OpError):
            assume(False)
        outs = out if isinstance(out, tuple) else (out,)
        for o in outs:
            t = b.tensor(o)
            pool.append((o, tuple(t.shape), t.precision))
        outputs.extend(outs)
    b.output(*dict.fromkeys(outputs))
    try:
        program = b.build()
    except DetvmError:
        assume(False)
    return program, feeds


def executors() -> list:
    out = [vm.cpu(backend="numpy")]
    try:
        import onnxruntime  # noqa: F401
        out.append(vm.cpu(backend="onnxruntime"))
    except ImportError:
        pass
    return out


def fuzz_programs(data, formal: bool = True) -> None:
    program, feeds = data.draw(valid_programs())
    blob = vm.encode(program)
    reference = vm.load(blob, vm.reference())
    typed = {t.name: feeds[t.name].astype(t.dtype) for t in reference.inputs}
    want = reference.run(typed)
    contexts = executors() + ([vm.formal()] if formal and reference.gas <= 4000 else [])
    for ctx in contexts:
        try:
            model = vm.load(blob, ctx)
        except vm.EnvironmentFault:             # onnxruntime's self-test failed here
            continue
        got = model.run(typed)
        assert list(got) == list(want), ctx
        for k in want:
            assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, (ctx, k)
            assert got[k].tobytes() == want[k].tobytes(), (ctx, k, program)


TARGETS = {"dvm": fuzz_dvm, "text": fuzz_text, "cvm": fuzz_cvm, "onnx": fuzz_onnx,
           "programs": fuzz_programs}


def hypothesis_test(target, examples: int, rng_seed: int | None = None):
    """``target`` as a hypothesis test of ``examples`` cases (no example database), numpy's
    RuntimeWarnings raised as errors."""
    def body(data):
        with warnings.catch_warnings():         # numpy's warnings mark values that differ by
            warnings.simplefilter("error", RuntimeWarning)              # machine (NaN casts)
            target(data)
    test = settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))(given(data=st.data())(body))
    return seed(rng_seed)(test) if rng_seed is not None else test


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Long fuzzing runs of detvm's decoders and "
                                            "executors (tests/fuzz.py).")
    p.add_argument("--minutes", type=float, default=1.0)
    p.add_argument("--target", default=",".join(TARGETS))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chunk", type=int, default=200, help="hypothesis cases per round")
    args = p.parse_args(argv)
    names = args.target.split(",")
    rng = random.Random(args.seed)
    end = time.monotonic() + 60 * args.minutes
    runs, failures = {n: 0 for n in names}, []
    while time.monotonic() < end:
        for name in names:
            if time.monotonic() >= end:
                break
            s = rng.randrange(1 << 32)
            try:
                hypothesis_test(TARGETS[name], args.chunk, s)()
            except Exception:                      # noqa: BLE001 - report every crasher
                failures.append((name, s, traceback.format_exc()))
                print(f"FAIL {name} seed {s}\n{failures[-1][2]}", flush=True)
            runs[name] += args.chunk
    print("cases run: " + ", ".join(f"{n} {k}" for n, k in runs.items()))
    print(f"{len(failures)} failing rounds")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
