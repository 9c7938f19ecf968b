"""compiler/fold.py: chains of elementwise steps become one lut with the same bytes for every
input; dead instructions and constants are removed."""
from __future__ import annotations

import collections

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
from compiler import Builder
from compiler.fold import fold_tables, prune


def _chain_program(rng, extra_reader: bool):
    """x (p8) -> requantize -> lut -> lut(x, .) -> relu -> y, plus an unrelated branch."""
    b = Builder("chain")
    x = b.input("x", (3, 4, 5), 8)
    q = b.op("requantize", x, multiplier=[int(rng.integers(1, 1 << 20))],
             shift=[int(rng.integers(12, 22))], zero_point_in=int(rng.integers(-5, 5)),
             zero_point=3, qmin=-128, qmax=127, rounding="fp32", outputs=["q"])
    t1 = b.const("t1", rng.integers(0, 256, 256))
    s = b.op("lut", t1, q, low=[-128], outputs=["s"])
    t2 = b.const("t2", rng.integers(-100, 100, (255, 256)))
    m = b.op("lut", t2, x, s, low=[-127, 0], outputs=["m"])
    y = b.op("relu", m, outputs=["y"])
    z = b.op("negative", x, outputs=["z"])
    outputs = [y, z] + ([s] if extra_reader else [])
    return b.output(*outputs).build()


@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2 ** 32 - 1), extra_reader=st.booleans())
def test_a_chain_becomes_one_lut_with_the_same_bytes(seed, extra_reader):
    rng = np.random.default_rng(seed)
    program = _chain_program(rng, extra_reader)
    folded = fold_tables(program)
    ops = collections.Counter(i.op for i in folded.code)
    assert ops == {"lut": 2 if extra_reader else 1, "negative": 1}, ops
    for start in range(0, 255, 60):                     # every value of x
        feed = {"x": np.roll(np.arange(-127, 128), -start)[:60].reshape(3, 4, 5)
                .astype(np.int8)}
        a, b = vm.load(program).run(feed), vm.load(folded).run(feed)
        assert [a[k].tobytes() for k in a] == [b[k].tobytes() for k in a]
    assert vm.load(folded).gas < vm.load(program).gas


def test_per_channel_requantize_and_broadcast_luts_are_not_folded():
    b = Builder("kept")
    x = b.input("x", (2, 3), 9)
    q = b.op("requantize", x, multiplier=[1, 2, 3], shift=[0, 0, 0], qmin=-100, qmax=100,
             axis=1)
    t = b.const("t", np.arange(201))
    y = b.op("lut", t, q, low=[-100])
    c = b.input("c", (1, 3), 8)
    t2 = b.const("t2", np.zeros((255, 201), np.int64))
    w = b.op("lut", t2, c, y, low=[-127, 0])
    program = b.output(w).build()
    assert [i.op for i in fold_tables(program).code] == ["requantize", "lut", "lut"]


def test_prune_drops_dead_code_and_renumbers():
    b = Builder("dead")
    x = b.input("x", (4,), 8)
    unused = b.input("unused", (2,), 8)
    dead = b.op("negative", b.op("abs", x))
    k = b.const("k", [1, 2, 3, 4])
    y = b.op("elemwise_add", x, k)
    program = b.output(y).build()
    pruned = prune(program)
    assert [i.op for i in pruned.code] == ["elemwise_add"]
    assert [t.name for t in pruned.tensors] == ["x", "unused", "k", y]
    assert dead not in {t.name for t in pruned.tensors} and unused
    feed = {"x": np.array([1, -2, 3, 4], np.int8), "unused": np.zeros(2, np.int8)}
    assert vm.load(pruned).run(feed)[y].tolist() == [2, 0, 6, 8]


@pytest.mark.parametrize("root_precision", [4, 9])
def test_roots_of_any_small_range(root_precision):
    b = Builder("root")
    x = b.input("x", (7,), root_precision)
    r = b.op("relu", x)
    c = b.op("clip", r, a_min=1, a_max=5)
    program = b.output(c).build()
    folded = fold_tables(program)
    assert [i.op for i in folded.code] == ["lut"]
    lim = (1 << (root_precision - 1)) - 1
    feed = {"x": np.linspace(-lim, lim, 7).astype(np.int64).astype(program.tensors[0].dtype)}
    assert vm.load(folded).run(feed)[c].tolist() == vm.load(program).run(feed)[c].tolist()


def test_symbolic_batch_programs_fold_and_keep_their_symbols():
    b = Builder("batched")
    b.symbol("N", 8)
    x = b.input("x", ("N", 5), 8)
    t = b.const("t", np.arange(-100, 155) // 2)
    y = b.op("relu", b.op("lut", t, b.op("clip", x, a_min=-50, a_max=90), low=[-127]))
    program = b.output(y).build()
    folded = fold_tables(program)
    assert folded.symbols == {"N": 8} and [i.op for i in folded.code] == ["lut"]
    feed = {"x": np.arange(-127, 128)[::17][:15].reshape(3, 5).astype(np.int8)}
    assert vm.load(folded).run(feed)[y].tobytes() == vm.load(program).run(feed)[y].tobytes()
