"""Differential tests through the whole VM: Builder -> .dvm bytes -> decode -> validate ->
the interpreter loop, on the CPU (numpy kernels) and on the pure-Python reference executor
(scalar rules). The bytes must be identical."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings, strategies as st

import vm
from compiler import Builder
from ops.base import bound
from tests.cases import all_cases, values_for
from tests.test_text import programs

CASES = all_cases()
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def random_feeds(model, data) -> dict:
    feeds = {}
    for t in model.inputs:
        flat = data.draw(values_for(t.shape, t.precision))
        feeds[t.name] = np.array(flat, dtype=t.dtype).reshape(t.shape)
    return feeds


def assert_same_bytes(program, feeds):
    blob = vm.encode(program)
    cpu, ref = vm.load(blob), vm.load(blob, vm.reference())
    got, want = cpu.run(feeds), ref.run(feeds)
    assert list(got) == list(want)
    for k in got:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        assert got[k].tobytes() == want[k].tobytes(), k


@SETTINGS
@given(programs(), st.data())
def test_random_programs_cpu_equals_reference(program, data):
    assert_same_bytes(program, random_feeds(vm.load(program), data))


def build_one(name, case, data):
    """A program applying ``name`` once, its inputs randomly made inputs or constants."""
    b = Builder(f"one-{name}")
    feeds, args = {}, []
    for k, i in enumerate(case.inputs):
        flat = i.values if i.values is not None else data.draw(values_for(i.shape, i.precision))
        array = np.array(flat, dtype=np.int64).reshape(i.shape)
        if data.draw(st.booleans()):
            args.append(b.const(f"c{k}", array, precision=i.precision))
        else:
            args.append(b.input(f"x{k}", i.shape, i.precision))
            feeds[f"x{k}"] = array
    out = b.op(name, *args, **case.attrs)
    b.output(*(out if isinstance(out, tuple) else (out,)))
    return b.build(), feeds


def check_every_case(name: str, check, settings_=SETTINGS) -> None:
    """Run ``check(program, feeds)`` on hypothesis cases of op ``name``, each built as a whole
    program; cases the op allows but the format's limits refuse are skipped."""

    @settings_
    @given(st.data())
    def run(data):
        try:
            program, feeds = build_one(name, data.draw(CASES[name]), data)
        except vm.InvalidError as e:
            assert "ndim" in str(e) or "> 32" in str(e) or "outside [1, 32]" in str(e), e
            reject()
        check(program, feeds)

    run()


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_through_the_vm(name):
    """Each op's law-suite cases, as whole programs with inputs and constants mixed."""

    def check(program, feeds):
        assert_same_bytes(program, feeds)
        for o in vm.load(program).run(feeds).values():
            assert o.size == 0 or int(np.abs(o.astype(np.int64)).max()) <= bound(32)

    check_every_case(name, check)
