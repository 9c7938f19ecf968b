"""vm.runtime: CVM's API, byte layouts, and the quirks compat mode reproduces."""
from __future__ import annotations

import numpy as np
import pytest

import vm
from vm import runtime as rt
from tests.cvm_util import cvm_model, decode, input_bytes, params_of, vector


def net_of(build, compat=None, **meta):
    return rt.CVMAPILoadModel(*cvm_model(build, **meta), compat=compat)


def run(net, values, dtype=np.int8) -> list[int]:
    out = rt.CVMAPIInference(net, np.array(values, dtype).tobytes())
    assert len(out) == rt.CVMAPIGetOutputLength(net)
    return decode(out, rt.CVMAPIGetOutputTypeSize(net))


def error_code(fn, *args) -> int:
    with pytest.raises(rt.CVMError) as e:
        fn(*args)
    return e.value.code


# ---------------------------------------------------------------------------------------------
# Compat quirks (each is a byte-layer behaviour or a lowering, never a wrong precision)
# ---------------------------------------------------------------------------------------------

def where_model(b):
    cond = b.input("data", (4,), 2)
    x = b.const("x", [300, -300, 5, 1000], precision=16)
    y = b.const("y", [-1000, 2, 3, 4], precision=16)
    b.output(b.where(cond, x, y))


def test_where_output_width_follows_the_condition_in_compat():
    fixed, compat = net_of(where_model), net_of(where_model, "cvm")
    assert rt.CVMAPIGetOutputTypeSize(fixed) == 4
    assert run(fixed, [1, 1, 0, 1]) == [300, -300, 3, 1000]
    assert rt.CVMAPIGetOutputTypeSize(compat) == 1          # CVM: precision of the condition
    assert run(compat, [1, 1, 0, 1]) == [44, -44, 3, -24]   # int8 truncations
    assert compat.model.program.tensors[-1].precision == 16  # the program stays honest


def row_where(b):
    x = b.const("x", np.arange(1, 7).reshape(2, 3), precision=8)
    y = b.const("y", -np.arange(1, 7).reshape(2, 3), precision=8)
    b.output(b.where(b.input("data", (2,), 2), x, y))


@pytest.mark.parametrize("compat", [None, "cvm"])
def test_where_with_a_row_condition_selects_whole_rows(compat):
    # CVM copies row_size bytes (stale memory in 3/4 of each row); detvm selects whole rows
    assert run(net_of(row_where, compat), [0, 1]) == [-1, -2, -3, 4, 5, 6]


def full_max(b):
    b.output(b.max(b.input("data", (2, 3), 8)))


def test_full_reduce_max_starts_at_zero_in_compat():
    values = [-5, -3, -9, -4, -7, -8]
    assert run(net_of(full_max), values) == [-3]
    compat = net_of(full_max, "cvm")
    assert run(compat, values) == [0]
    assert run(compat, [1, 2, 3, 4, 5, -6]) == [5]
    assert [i.op for i in compat.model.program.code] == ["max", "relu"]
    assert rt.CVMAPIGetGasFromModel(compat) == rt.CVMAPIGetGasFromModel(net_of(full_max))


def test_max_over_listed_axes_is_the_true_max_in_compat():
    net = net_of(lambda b: b.output(b.max(b.input("data", (2, 3), 8), axis=(0, 1))), "cvm")
    assert run(net, [-5, -3, -9, -4, -7, -8]) == [-3]


def test_inputs_are_clamped_in_compat_only():
    m = vector("k_int32_input")
    fixed = rt.CVMAPILoadModel(m["graph_json"], params_of(m))
    compat = rt.CVMAPILoadModel(m["graph_json"], params_of(m), compat="cvm")
    assert run(compat, [40000, -40000, 5, -5], np.int32) == \
        run(compat, [32767, -32767, 5, -5], np.int32)
    assert error_code(run, fixed, [40000, -40000, 5, -5], np.int32) == 1
    a = vector("a_dense_shift_clip")
    x = np.array(a["input"]["values"], np.int8)
    clamped = x.copy()
    x[0], clamped[0] = -128, -127
    net = rt.CVMAPILoadModel(a["graph_json"], params_of(a), compat="cvm")
    assert rt.CVMAPIInference(net, x.tobytes()) == rt.CVMAPIInference(net, clamped.tobytes())


def rows_model(b):
    x = b.input("data", (10, 4), 8)
    b.output(b.broadcast_mul(x, b.const("k", [2], precision=8)))


def test_argmax_rows():
    values = np.tile([1, 5, 100, 2], 10)            # 200 truncates to -56 in int8
    assert run(net_of(rows_model, postprocess="argmax"), values) == [2] * 10
    compat = run(net_of(rows_model, "cvm", postprocess="argmax"), values)
    assert compat == [1, 1, 1] + [0] * 7             # ceil(10 / 4) rows, int8 comparison


def two_outputs(shape, single=False):
    def build(b):
        x = b.input("data", shape, 8)
        b.output(b.relu(x)) if single else b.output(b.relu(x), b.abs(x))
    return build


def test_detection_layout():
    values = np.arange(-18, 18).reshape(2, 3, 6)
    fixed = net_of(two_outputs((2, 3, 6)), postprocess="detection")
    compat = net_of(two_outputs((2, 3, 6)), "cvm", postprocess="detection")
    want = np.concatenate([np.maximum(values, 0).reshape(6, 6), np.abs(values).reshape(6, 6)],
                          axis=1).reshape(-1).tolist()
    assert rt.CVMAPIGetOutputTypeSize(fixed) == 4 and run(fixed, values) == want
    assert rt.CVMAPIGetOutputLength(compat) == 4 * 3 * 12      # ignores the batch
    assert run(compat, values) == want[:36]


def test_single_output_detection():
    values = list(range(6))
    assert run(net_of(two_outputs((1, 6), True), postprocess="detection"), values) == values
    net = net_of(two_outputs((1, 6), True), "cvm", postprocess="detection")
    assert error_code(run, net, values) == 1


def test_outputs_with_unequal_rows_fail_at_inference():
    def build(b):
        x = b.input("data", (2, 3), 8)
        b.output(x, b.flatten(b.reshape(x, shape=(3, 2))))
    net = net_of(build)
    assert error_code(run, net, [1, 2, 3, 4, 5, 6]) == 1


def late_data(b):
    w = b.relu(b.const("w", [1, 2, 3], precision=8))
    b.output(b.broadcast_add(b.input("data", (2, 3), 8), w))


def test_data_after_an_operator_node():
    fixed, compat = net_of(late_data), net_of(late_data, "cvm")
    assert run(fixed, [1, 2, 3, 4, 5, 6]) == [2, 4, 6, 5, 7, 9]
    assert rt.CVMAPIGetInputLength(compat) == 3               # sized by the wrong entry
    assert error_code(run, compat, [1, 2, 3]) == 1
    assert error_code(run, compat, [1, 2, 3, 4, 5, 6]) == 1


# ---------------------------------------------------------------------------------------------
# The API itself
# ---------------------------------------------------------------------------------------------

def test_big_endian_chain_layout():
    m = vector("k_int32_input")
    net = rt.CVMAPILoadModel(m["graph_json"], params_of(m))
    x = np.array(m["input"]["values"], ">i4").tobytes()
    out = rt.CVMAPIInference(net, x, big_endian=True)
    assert np.frombuffer(out, ">i4").tolist() == m["cpu"]


@pytest.mark.parametrize("delta", [-1, 1])
def test_wrong_input_length(delta):
    m = vector("a_dense_shift_clip")
    net = rt.CVMAPILoadModel(m["graph_json"], params_of(m))
    data = input_bytes(m)
    data = data[:delta] if delta < 0 else data + b"\0"
    assert error_code(rt.CVMAPIInference, net, data) == 1


def test_info_functions_and_free():
    m = vector("b_cnn_argmax")
    net = rt.CVMAPILoadModel(m["graph_json"].encode(), params_of(m), vm.context(0))
    assert rt.CVMAPIGetVersion(net) == "cvm_1.0.0"
    assert rt.CVMAPIGetPostprocessMethod(net) == rt.CVMAPIGetPreprocessMethod(net) == "argmax"
    rt.CVMAPIFreeModel(net)
    assert error_code(rt.CVMAPIGetInputLength, net) == 1
    assert error_code(rt.CVMAPIInference, net, input_bytes(m)) == 1


def test_unavailable_contexts_are_runtime_errors():
    m = vector("k_int32_input")
    assert error_code(rt.CVMAPILoadModel, m["graph_json"], params_of(m), vm.gpu(99)) == 2
    assert error_code(rt.CVMAPILoadModel, m["graph_json"], params_of(m), "cpu") == 2


def test_reference_executor_gives_the_same_bytes():
    m = vector("b_cnn")
    net = rt.CVMAPILoadModel(m["graph_json"], params_of(m), vm.reference())
    assert decode(rt.CVMAPIInference(net, input_bytes(m)), 1) == m["cpu"]


def test_gas_from_graph_file_stops_at_nul():
    m = vector("a2_dense_raw")
    assert rt.CVMAPIGetGasFromGraphFile(m["graph_json"].encode() + b"\0junk") == 1475


def test_unknown_compat_mode():
    m = vector("k_int32_input")
    assert error_code(rt.CVMAPILoadModel, m["graph_json"], params_of(m), None, "tvm") == 1


def test_formal_context_gives_the_formal_vector_or_a_clean_error():
    m = vector("k_int32_input")
    try:
        net = rt.CVMAPILoadModel(m["graph_json"], params_of(m), vm.formal())
    except rt.CVMError as e:                   # the formal executor is not available here
        assert e.code == 2
        return
    assert decode(rt.CVMAPIInference(net, input_bytes(m)), 4) == m["formal"]


def test_bad_cvm_metadata_is_a_logic_error():
    from compiler import Builder
    b = Builder("m")
    b.output(b.relu(b.input("data", (2,), 8)))
    b.meta("cvm.compat", "cvm")
    assert error_code(rt.load_model, vm.load(b.build())) == 1


def test_a_plain_dvm_gets_derived_facts():
    from compiler import Builder
    b = Builder("m")
    b.output(b.relu(b.input("x", (2, 3), 16)))
    net = rt.load_model(vm.load(b.build()))
    assert (rt.CVMAPIGetInputTypeSize(net), rt.CVMAPIGetStorageSize(net)) == (4, 48)
    assert rt.CVMAPIGetGasFromModel(net) == net.model.gas
    assert run(net, [1, -2, 3, -4, 5, -6], np.int32) == [1, 0, 3, 0, 5, 0]
