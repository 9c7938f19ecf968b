"""Trace hashes (vm/audit.py): canonical tensor bytes, the RFC 6962 Merkle root, and traces
that are the same on every executor by construction."""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import vm
from tests.conftest import random_input, small_cnn
from tests.test_symbolic_rules import small
from vm.audit import canonical_bytes, merkle_root, tensor_hash
from vm.errors import InternalError, TrapError

INT_DTYPES = st.sampled_from(["i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8"])
H = lambda data: hashlib.sha256(data).digest()


def spec_bytes(a: np.ndarray) -> bytes:
    """docs/audit.md, written out with struct: tag, u8 ndim, u64 dims, little-endian data."""
    tag = f"{a.dtype.kind}{a.dtype.itemsize}".encode()
    fmt = {1: "b", 2: "h", 4: "i", 8: "q"}[a.dtype.itemsize]
    fmt = fmt.upper() if a.dtype.kind == "u" else fmt
    values = [int(v) for v in a.reshape(-1).tolist()]
    return (tag + struct.pack("<B", a.ndim) + struct.pack(f"<{a.ndim}Q", *a.shape)
            + struct.pack(f"<{len(values)}{fmt}", *values))


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(INT_DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0,
                                                max_side=5)))
def test_canonical_bytes_follow_the_spec(a):
    assert canonical_bytes(a) == spec_bytes(a)
    assert tensor_hash(a) == hashlib.sha256(spec_bytes(a)).hexdigest()
    swapped = a.astype(a.dtype.newbyteorder(">"))                   # byte order: irrelevant
    assert tensor_hash(swapped) == tensor_hash(a)
    assert tensor_hash(a.T.copy().T) == tensor_hash(a)              # memory layout too


@settings(max_examples=40, deadline=None)
@given(hnp.arrays("i1", hnp.array_shapes(max_dims=3, max_side=4)))
def test_hash_in_a_storage_dtype_ignores_the_holding_dtype(a):
    """An executor holding int64 (or Python ints) hashes the same bytes as one holding int8."""
    assert tensor_hash(a.astype(np.int64), np.int8) == tensor_hash(a)
    assert tensor_hash(a.tolist() if a.ndim else int(a), np.int8) == tensor_hash(a)


def test_shape_and_dtype_are_part_of_the_hash():
    a = np.arange(6, dtype=np.int8)
    assert len({tensor_hash(a), tensor_hash(a.reshape(2, 3)), tensor_hash(a.reshape(3, 2)),
                tensor_hash(a, np.int32), tensor_hash(a, np.uint8)}) == 5


def test_values_that_do_not_fit_and_non_integers_are_refused():
    with pytest.raises(TrapError, match="value 128 at flat index 2 does not fit int8"):
        tensor_hash(np.array([1, -128, 128]), np.int8)
    with pytest.raises(TrapError, match="not an integer type"):
        tensor_hash(np.array([1.0]))
    with pytest.raises(TrapError, match="not an integer type"):
        tensor_hash(np.array([1]), np.float32)


def digests(n: int) -> list[bytes]:
    return [H(bytes([k])) for k in range(n)]


def test_merkle_root_is_rfc6962():
    d = digests(7)
    leaf = lambda x: H(b"\x00" + x)
    node = lambda a, b: H(b"\x01" + a + b)
    assert merkle_root([]) == H(b"").hex()
    assert merkle_root(d[:1]) == leaf(d[0]).hex()
    assert merkle_root(d[:2]) == node(leaf(d[0]), leaf(d[1])).hex()
    assert merkle_root(d[:3]) == node(node(leaf(d[0]), leaf(d[1])), leaf(d[2])).hex()
    four = node(node(leaf(d[0]), leaf(d[1])), node(leaf(d[2]), leaf(d[3])))
    assert merkle_root(d[:5]) == node(four, leaf(d[4])).hex()
    assert merkle_root(d[:7]) == node(four, node(node(leaf(d[4]), leaf(d[5])),
                                                 leaf(d[6]))).hex()
    assert merkle_root([x.hex() for x in d]) == merkle_root(d)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.data())
def test_merkle_root_sees_every_leaf_and_its_place(n, data):
    d = digests(n)
    root = merkle_root(d)
    k = data.draw(st.integers(0, n - 1))
    changed = d[:k] + [H(b"other")] + d[k + 1:]
    assert merkle_root(changed) != root
    if n > 1:
        j = data.draw(st.integers(0, n - 1).filter(lambda j: d[j] != d[k]))
        swapped = list(d)
        swapped[j], swapped[k] = swapped[k], swapped[j]
        assert merkle_root(swapped) != root
    assert merkle_root(d + d[-1:]) != root          # no duplicate-last-leaf ambiguity


def test_leaves_and_nodes_are_separated():
    """A two-leaf tree's root is not the leaf hash of its children concatenated."""
    d = digests(2)
    assert merkle_root(d) != H(b"\x00" + d[0] + d[1]).hex()
    with pytest.raises(TrapError, match="32 bytes"):
        merkle_root([b"short"])


# ---------------------------------------------------------------------------------------------
# Traces
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cnn():
    program = small_cnn()
    return program, random_input(vm.load(program))


def test_trace_hashes_every_instruction_output(cnn):
    program, x = cnn
    model = vm.load(program)
    tr = vm.trace(model, x, keep="all")
    assert [e.index for e in tr.entries] == list(range(len(program.code)))
    for e in tr.entries:
        for o, tid in zip(e.outputs, program.code[e.index].outputs):
            t = program.tensors[tid]
            assert (o.name, o.shape, o.dtype) == (t.name, t.shape, t.dtype.name)
            assert o.sha256 == tensor_hash(o.values, t.dtype)
    assert tr.root == merkle_root(tr.leaves())
    out = model.run(x)                                  # the fused path: the same outputs
    assert [o.sha256 for o in tr.outputs] == [tensor_hash(out[t.name]) for t in model.outputs]
    assert tr.outputs[0].sha256 == tr.entries[-1].outputs[0].sha256
    assert tr.inputs[0].sha256 == tensor_hash(x["x"])
    assert model.trace(x).root == tr.root


@pytest.mark.parametrize("ctx", [vm.reference, vm.formal])
def test_every_executor_gives_the_same_trace(ctx):
    program = small_cnn(batch=1)
    x = random_input(vm.load(program), seed=5)
    cpu = vm.trace(vm.load(program), x)
    other = vm.trace(vm.load(program, ctx()), x)
    assert other.executor == ctx().device_type
    assert [e.outputs for e in other.entries] == [e.outputs for e in cpu.entries]
    assert other.root == cpu.root and other.outputs == cpu.outputs


def test_gpu_gives_the_same_trace(cnn):
    program, x = cnn
    try:
        gpu = vm.load(program, vm.gpu())
    except vm.EnvironmentFault as e:
        pytest.skip(f"no GPU: {e.message}")
    assert vm.trace(gpu, x).root == vm.trace(vm.load(program), x).root


def test_the_root_does_not_depend_on_threads(cnn):
    pytest.importorskip("threadpoolctl")
    program, x = cnn
    roots = set()
    for n in (1, 3):
        with vm.load(program, threads=n) as model:        # close the lanes' threads
            roots.add(vm.trace(model, x).root)
    assert len(roots) == 1


def test_inputs_are_checked_like_run(cnn):
    program, x = cnn
    with pytest.raises(vm.TrapError, match="missing input"):
        vm.trace(vm.load(program), {})


def test_a_value_outside_its_storage_type_is_an_internal_error(cnn, monkeypatch):
    """Validation proved it cannot happen; a broken executor that lets one through is caught
    by a strict trace and recorded by a lenient one."""
    program, x = cnn
    model = vm.load(program, vm.reference())
    original = model.plan.steps[2].kernel

    def broken(xp, *args, **kw):
        out = original(xp, *args, **kw)
        out.data[3] = 1000
        return out
    model.plan.steps[2] = model.plan.steps[2].__class__(
        **{**model.plan.steps[2].__dict__, "kernel": broken})
    with pytest.raises(InternalError, match=r"instruction 2 .*relu.*value 1000 at flat index 3"):
        vm.trace(model, x)
    lenient = vm.trace(model, x, strict=False)
    assert lenient.entries[2].outputs[0].sha256 is None and lenient.root is None
    assert "1000" in lenient.entries[2].outputs[0].problem


@settings(max_examples=12, deadline=None)
@given(st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_per_element_traces_are_each_elements_own(n, seed):
    """trace_rows of a batch of N: element k's trace is that of element k run alone."""
    from vm.audit import trace_rows
    model = vm.load(small())
    x = np.random.default_rng(seed).integers(-127, 128, (n, 1, 4, 4)).astype(np.int8)
    rows = trace_rows(model, {"x": x})
    assert len(rows) == n
    for k, row in enumerate(rows):
        alone = vm.trace(model, {"x": x[k:k + 1]})
        assert (row.entries, row.inputs, row.outputs, row.gas) == \
            (alone.entries, alone.inputs, alone.outputs, alone.gas)
        assert row.root == alone.root
        assert all(np.array_equal(row.results[t], alone.results[t]) for t in alone.results)
