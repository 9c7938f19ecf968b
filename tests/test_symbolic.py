"""Programs with symbols (vm/symbolic.py): the .dvm format 2, validation, instances, runs.

The central property: for a random program with a symbolic batch, the outputs for N rows are
the N single-row outputs, byte for byte, on the CPU and the scalar reference; gas and peak
memory are the affine facts the validator stated."""
from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import vm
from compiler import disassemble, parse
from tests.cases import values_for
from tests.symbolic_programs import symbolic_program
from vm.symbolic import instantiate

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))


def feeds_for(model, data, n):
    feeds = {}
    for t in model.inputs:
        shape = (n, *t.shape[1:]) if t.symbol else t.shape
        flat = data.draw(values_for(shape, t.precision))
        feeds[t.name] = np.array(flat, dtype=t.dtype).reshape(shape)
    return feeds


def rows_of(model, feeds, n):
    return [{t.name: feeds[t.name][r:r + 1] if t.symbol else feeds[t.name]
             for t in model.inputs} for r in range(n)]


def same(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


@SETTINGS
@given(st.data())
def test_random_programs_batch_equals_rows(data):
    program = symbolic_program(data)
    model, ref = vm.load(program), vm.load(program, vm.reference())
    n = data.draw(st.integers(1, program.symbols["N"]))
    feeds = feeds_for(model, data, n)
    whole = model.run(feeds)
    same(whole, ref.run(feeds))
    rows = [model.run(r) for r in rows_of(model, feeds, n)]
    joined = {k: np.concatenate([r[k] for r in rows]) for k in whole}
    same(whole, joined)
    for got, want in zip(model.run_many(rows_of(model, feeds, n)), rows):
        same(got, want)
    inst = model.instance(N=n)
    assert model.gas_for(N=n) == vm.validate(instantiate(program, {"N": n})).gas \
        == inst.analysis.gas
    assert model.memory_for(N=n) == inst.analysis.peak_memory


@SETTINGS
@given(st.data())
def test_random_programs_round_trip(data):
    program = symbolic_program(data)
    blob = vm.encode(program)
    assert blob[8:10] == b"\x02\x00"
    again = vm.decode(blob)
    assert again.symbols == program.symbols and again.tensors == program.tensors
    assert again.code == program.code and vm.encode(again) == blob
    text = disassemble(program)
    assert vm.encode(parse(text)) == blob and disassemble(parse(text)) == text
