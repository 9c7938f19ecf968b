"""The formal executor one instruction at a time (verify/steps.py): each method against the op's
own encoding, the packed equations of linear ops, wrong encodings caught, the digits CNN."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
import vm
from compiler import Builder
from tests.cases import all_cases, values_for
from detvm.common import DEMO_DIR

z3 = pytest.importorskip("z3")
import verify  # noqa: E402
from verify import packed, steps  # noqa: E402
from verify.domains import domain  # noqa: E402

CASES = all_cases()
FEW = settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))


def draw_args(name, data):
    """A law-suite case of op ``name``: its canonical attrs and int64 input arrays."""
    op = ops.get(name)
    case = data.draw(CASES[name])
    attrs = op.check_attrs(case.attrs)
    arrays = [np.array(i.values if i.values is not None
                       else data.draw(values_for(i.shape, i.precision)),
                       dtype=np.int64).reshape(i.shape) for i in case.inputs]
    return op, attrs, arrays


def encoding_values(op, arrays, attrs, zx):
    values, _, status, _ = steps._encoding(op, arrays, attrs, zx, None)
    assert status == "proved"
    return values


def packed_holds(name, arrays, attrs, claim) -> bool:
    return all(packed.check(g)[0] for g in packed.products(name, arrays, attrs, claim))


@pytest.mark.parametrize("name", packed.OPS)
def test_packed_equations_accept_exactly_the_encodings_values(name):
    """The packed equations hold for the values of the op's own (per-element) encoding, and
    fail as soon as one value is off by one: their index map is the encoding's."""
    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        op, attrs, arrays = draw_args(name, data)
        (want,) = encoding_values(op, arrays, attrs, domain("int"))
        assert packed_holds(name, arrays, attrs, want)
        k = data.draw(st.integers(0, want.size - 1))
        bad = want.copy()
        bad.reshape(-1)[k] += data.draw(st.sampled_from([-1, 1]))
        assert not packed_holds(name, arrays, attrs, bad)
    check()


@pytest.mark.parametrize("name", steps.UNIFORM)
def test_uniform_method_equals_the_joint_solution(name):
    """Distinct input tuples through one instantiated element give what solving the whole
    instruction's encoding gives (broadcasting and per-channel attributes included)."""
    @settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data):
        op, attrs, arrays = draw_args(name, data)
        for zx in (domain("bv"), domain("int")):
            got, facts, status, _ = steps._uniform(op, arrays, attrs, zx, None)
            want, _, joint, _ = steps._joint(op, arrays, attrs, zx, None)
            assert status == joint == "proved" and facts >= 1
            assert [g.tolist() for g in got] == [w.tolist() for w in want]
    check()


def test_encoding_method_equals_the_joint_solution():
    """Every operation rewritten on numerals (memoised) gives the instruction's unique
    solution: ops of every kind."""
    for name in ("max_pool2d", "sum", "take", "cvm_lut", "lut", "get_valid_counts", "argmax",
                 "resize_linear", "transpose", "where", "qsoftmax"):
        @settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def check(data):
            op, attrs, arrays = draw_args(name, data)
            zx = domain("bv")
            got = encoding_values(op, arrays, attrs, zx)
            want, _, status, _ = steps._joint(op, arrays, attrs, zx, None)
            assert status == "proved"
            assert [g.tolist() for g in got] == [w.tolist() for w in want], name
        check()


def test_digits_cnn_formal_run_is_proved_and_equals_the_shipped_bytes():
    model = vm.load(DEMO_DIR / "digits.dvm")
    data = np.load(DEMO_DIR / "digits_inputs.npz")
    expected = dict(np.load(DEMO_DIR / "digits_expected.npz"))
    outputs, proof = verify.formal_run(model, {"image": data["image"].astype(np.int16)})
    assert proof.proved
    methods = {p.op: p.method for p in proof.steps}
    assert methods["qconv2d"] == methods["qdense"] == "packed"
    assert methods["requantize"] == "uniform" and methods["lemma:digits"] == "lemma"
    assert all(p.proved for p in proof.steps)
    assert all(outputs[k].tobytes() == expected[k].tobytes() for k in outputs)


def relu_program():
    b = Builder("relu")
    b.output(b.op("relu", b.input("x", (2, 3), 8)))
    return b.build()


def test_a_wrong_pointwise_encoding_changes_the_formal_output(monkeypatch):
    """The formal executor computes with the encodings, not with the CPU's kernels: a wrong
    relu encoding gives other bytes than the CPU (and than the correct encoding)."""
    x = {"x": np.array([[-5, 0, 3], [7, -1, 0]], np.int8)}
    right = vm.load(relu_program(), vm.formal()).run(x)["relu_0"]
    assert right.tolist() == vm.load(relu_program()).run(x)["relu_0"].tolist()
    relu = ops.get("relu")
    monkeypatch.setitem(ops.REGISTRY, "relu", dataclasses.replace(
        relu, z3=lambda zx, t: ops.base.Ref(t.shape, [zx.max(v, 1) for v in t.data])))
    wrong = vm.load(relu_program(), vm.formal()).run(x)["relu_0"]
    assert wrong.tolist() != right.tolist() and wrong.min() == 1


def test_packed_slots_hold_the_weights_they_carry():
    """Where the equations run by column the weights are packed: their slots must hold the
    largest weight even when every product is 0 (zero data, a weight of 128)."""
    attrs = ops.get("qconv2d").check_attrs(dict(channels=3, kernel_size=(1, 1),
                                                strides=(1, 3), use_bias=False))
    arrays = [np.zeros((2, 1, 1, 3), np.int64), np.array([0, 0, 128]).reshape(3, 1, 1, 1)]
    want = np.zeros((2, 3, 1, 1), np.int64)
    assert packed_holds("qconv2d", arrays, attrs, want)
    want[1, 2] = 1
    assert not packed_holds("qconv2d", arrays, attrs, want)


def test_a_wrong_conv_encoding_is_caught_by_the_packed_equations(monkeypatch):
    """A deliberately wrong conv2d encoding (one tap dropped) no longer agrees with the packed
    equations that the formal executor checks the CPU's conv against."""
    rng = np.random.default_rng(1)
    attrs = ops.get("conv2d").check_attrs(dict(channels=2, kernel_size=(3, 3),
                                               padding=(1, 1), use_bias=False))
    arrays = [rng.integers(-127, 128, (1, 2, 4, 4)), rng.integers(-127, 128, (2, 2, 3, 3))]
    conv = ops.get("conv2d")
    (want,) = encoding_values(conv, arrays, attrs, domain("int"))
    assert packed_holds("conv2d", arrays, attrs, want)

    def dropped_tap(zx, x, w, b=None, **a):
        w = ops.base.Ref(w.shape, [0] + list(w.data[1:]))
        return conv.z3(zx, x, w, b, **a)
    wrong = dataclasses.replace(conv, z3=dropped_tap)
    (bad,) = encoding_values(wrong, arrays, attrs, domain("int"))
    assert not packed_holds("conv2d", arrays, attrs, bad)


def test_values_beyond_storage_are_stored_as_the_encoding_stores_them():
    """A program the validator refuses (p8 + p8 declared p8): known inputs whose sum leaves
    int8 are stored wrapped, as z3's store (the low bits) and numpy's astype do."""
    from vm.executors import Context, Executor
    from vm.interp import Plan
    from vm.program import Instr, Program, Tensor
    from verify.executor import FormalExecutor, solve
    from verify.witness import _analysis
    program = Program("wrap", [Tensor("a", (3,), 8, "input"), Tensor("b", (3,), 8, "input"),
                               Tensor("y", (3,), 8, "value")], {},
                      [Instr("elemwise_add", (0, 1), (2,), {})], [2])
    a, b = np.array([100, -100, 5], np.int8), np.array([100, -100, 5], np.int8)
    cpu = Plan(program, _analysis(program), Executor(Context("cpu"))).run({0: a, 1: b})[0]
    formal = FormalExecutor(Context("formal"))
    out = Plan(program, _analysis(program), formal).run(
        {0: formal.from_host(a), 1: formal.from_host(b)})
    (got,), proof = solve(out)
    assert proof.proved and got.tolist() == cpu.tolist() == [-56, 56, 10]


def test_monotone_hull_proves_many_values_and_never_trusts_a_wrong_claim(monkeypatch):
    """cvm_right_shift on thousands of distinct values: Z3 proves it non-decreasing on their
    range and evaluates the ends of each output level; a CPU kernel that is wrong on one value
    cannot make that value proved (the hull fails and every value is evaluated by Z3)."""
    op = ops.get("cvm_right_shift")
    attrs = op.check_attrs(dict(precision=8, shift_bit=6))
    x = np.random.default_rng(3).integers(-20000, 20000, (4, 600))
    right = op.kernel(np, x, **attrs)
    got, facts, status, _ = steps._uniform(op, [x], attrs, domain("bv"), None)
    assert status == "proved" and got[0].tolist() == right.tolist()
    assert facts < 600                                # the hull, not one fact per value
    victim = int(x[1, 7])
    kernel = op.kernel
    wrong = lambda xp, v, **a: kernel(xp, v, **a) + (np.asarray(v) == victim)
    monkeypatch.setitem(ops.REGISTRY, "cvm_right_shift", dataclasses.replace(op, kernel=wrong))
    got, facts, status, _ = steps._uniform(ops.get("cvm_right_shift"), [x], attrs,
                                           domain("bv"), None)
    assert status == "proved" and got[0].tolist() == right.tolist()
    assert facts >= len(np.unique(x))                 # every value evaluated
