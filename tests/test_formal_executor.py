"""The formal executor: outputs derived from the constraints, proved unique, equal to the CPU's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from compiler import Builder, parse
from tests.conftest import random_input, small_cnn
from tests.test_differential import CASES, check_every_case, random_feeds
from tests.test_text import programs
from detvm.common import DEMO_DIR
from vm.errors import EnvironmentFault

pytest.importorskip("z3")
import verify  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def zoo_program():
    """Many op kinds in one small program: broadcast, layout, lookups, select, reductions,
    int32 storage and a two-output op."""
    rng = np.random.default_rng(5)
    b = Builder("zoo")
    x = b.input("x", (2, 3, 4), 8)
    idx = b.input("idx", (2, 2), 4)
    c = b.const("c", rng.integers(-100, 101, (3, 1)), precision=8)
    table = b.const("table", rng.integers(-50, 51, (16,)), precision=7)
    y = b.op("broadcast_mul", x, c)
    y = b.op("broadcast_sub", y, b.op("abs", x))
    y = b.op("cvm_right_shift", y, precision=10, shift_bit=3)
    t = b.op("transpose", y, axes=(2, 0, 1))
    t = b.op("reshape", t, shape=(4, 6))
    s = b.op("strided_slice", t, begin=(1, 5), end=(4, 0), stride=(1, -2))
    g = b.op("take", x, idx, axis=2)
    lut = b.op("cvm_lut", idx, table, in_dim=16)
    m = b.op("max", g, axis=(1,))
    w = b.op("where", b.op("broadcast_greater", x, c), x, b.op("negative", x))
    z = b.op("concatenate", b.op("flatten", w), b.op("flatten", y), axis=1)
    boxes = b.const("boxes", [[[0, 5, 0, 0, 4, 4], [0, 7, 1, 1, 5, 5], [1, 3, 0, 0, 4, 4]]],
                    precision=8)
    count, rows = b.op("get_valid_counts", boxes, score_threshold=4)
    nms = b.op("non_max_suppression", rows, count, iou_threshold=30)
    b.output(s, lut, m, z, nms, count)
    return b.build()


def formal_equals_cpu(program, inputs):
    cpu = vm.load(program).run(inputs)
    formal = vm.load(program, vm.formal()).run(inputs)
    assert list(formal) == list(cpu)
    for k in cpu:
        assert formal[k].dtype == cpu[k].dtype and formal[k].tobytes() == cpu[k].tobytes(), k
    return cpu


def test_small_cnn_formal_equals_cpu():
    program = small_cnn(batch=1)
    formal_equals_cpu(program, random_input(vm.load(program)))


def test_demo_formal_equals_expected_bytes():
    model = vm.load(DEMO_DIR / "demo.dvm")
    inputs = dict(np.load(DEMO_DIR / "demo_inputs.npz"))
    expected = dict(np.load(DEMO_DIR / "demo_expected.npz"))
    outputs, proof = verify.formal_run(model, inputs)
    assert proof.proved and proof.constraints > 0
    assert all(outputs[k].tobytes() == expected[k].tobytes() for k in expected)


def test_example_formal_equals_cpu():
    program = parse((EXAMPLES / "tiny_cnn.dvmt").read_text())
    formal_equals_cpu(program, random_input(vm.load(program), 3))


def test_zoo_formal_equals_cpu_in_both_domains():
    program = zoo_program()
    model = vm.load(program)
    inputs = {"x": np.random.default_rng(0).integers(-127, 128, (2, 3, 4)).astype(np.int8),
              "idx": np.array([[0, 3], [-5, 7]], np.int8)}
    cpu = formal_equals_cpu(program, inputs)
    outputs, proof = verify.formal_run(model, inputs, domain="int")
    assert proof.proved
    assert all(outputs[k].tobytes() == cpu[k].tobytes() for k in cpu)


def test_edge_inputs_formal_equals_cpu():
    formal_equals_cpu(small_cnn(batch=1), {"x": np.full((1, 3, 8, 8), -127, np.int8)})


@pytest.mark.parametrize("mode", ["steps", "joint"])
def test_an_unproved_output_is_never_returned(monkeypatch, mode):
    import verify.executor as ex
    import verify.ground as ground
    import verify.steps as steps
    monkeypatch.setattr(ex, "RLIMIT", 1)          # the solver gives up: unknown
    monkeypatch.setattr(steps, "RLIMIT", 1)
    monkeypatch.setattr(ground, "STEPS", 1)       # so does the rewriter
    b = Builder("tiny")
    b.output(b.op("dense", b.input("x", (1, 3), 8), b.const("w", [[1, -2, 3]]), units=1,
                  use_bias=False))
    x = {"x": np.array([[1, 2, 3]], np.int8)}
    if mode == "steps":
        with pytest.raises(EnvironmentFault, match="could not be proved unique"):
            vm.load(b.build(), vm.formal()).run(x)
    outputs, proof = verify.formal_run(vm.load(b.build()), x, mode=mode)
    assert outputs == {} and proof.status == "unknown" and not proof.proved


def test_formal_inputs_are_checked_like_cpu():
    model = vm.load(small_cnn(batch=1), vm.formal())
    with pytest.raises(vm.TrapError):
        model.run({"x": np.full((1, 3, 8, 8), -128, np.int16)})


FEW = settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_through_the_formal_vm(name):
    """Each op as a whole program (inputs and constants mixed): formal bytes == cpu bytes."""
    check_every_case(name, formal_equals_cpu, FEW)


@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs(), st.data())
def test_random_programs_formal_equals_cpu(program, data):
    formal_equals_cpu(program, random_feeds(vm.load(program), data))


def test_formal_runs_from_several_threads():
    """z3 shares one context per process: formal loads and runs from four threads at once
    (two sharing a model, two loading their own) are serialized by the executor's lock, and
    each gives the CPU's bytes."""
    from concurrent.futures import ThreadPoolExecutor
    program = small_cnn(batch=1)
    cpu, formal = vm.load(program), vm.load(program, vm.formal())
    feeds = [random_input(cpu, seed=k) for k in range(4)]
    runs = [formal.run, formal.run, lambda x: vm.load(program, vm.formal()).run(x),
            lambda x: vm.load(program, vm.formal()).run(x)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda job: job[0](job[1]), zip(runs, feeds)))
    for x, out in zip(feeds, got):
        want = cpu.run(x)
        assert all(out[k].tobytes() == want[k].tobytes() for k in want)
