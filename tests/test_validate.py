"""Validation: each invalid program is rejected with InvalidError naming what is wrong,
before anything is allocated."""
from __future__ import annotations

import copy
import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vm
from vm.errors import InvalidError
from vm.program import Instr, Program, Tensor
from vm.validate import Limits, validate
from tests.conftest import small_cnn


def mutate(fn):
    p = copy.deepcopy(small_cnn())
    fn(p)
    return p


def set_tensor(p, tensor, **changes):
    i = p.tensor_id(tensor)
    p.tensors[i] = replace(p.tensors[i], **changes)


def conv_index(p):
    return next(k for k, ins in enumerate(p.code) if ins.op == "conv2d")


def test_valid_program_passes():
    a = validate(small_cnn())
    assert a.gas > 0 and a.peak_memory > 0
    assert set(a.gemm.values()) <= {"float32", "float64", "int64"}


CASES = {
    "use before definition": (lambda p: p.code.insert(0, p.code.pop(2)), "before definition"),
    "written twice": (lambda p: p.code.append(p.code[2]), "written twice"),
    "declared shape wrong": (lambda p: set_tensor(p, "logits", shape=(2, 11)),
                             "declared shape"),
    "precision too small": (lambda p: set_tensor(p, p.tensors[p.code[0].outputs[0]].name,
                                                 precision=16), "declared precision 16"),
    "unknown op": (lambda p: p.code.__setitem__(0, replace(p.code[0], op="nope")),
                   "unknown op 'nope'"),
    "bad attribute value": (lambda p: p.code.__setitem__(1, Instr(
        p.code[1].op, p.code[1].inputs, p.code[1].outputs,
        {**p.code[1].attrs, "shift_bit": 0})), "shift_bit value 0 out of range"),
    "non-canonical attrs": (lambda p: p.code.__setitem__(0, Instr(
        "conv2d", p.code[0].inputs, p.code[0].outputs,
        {k: v for k, v in p.code[0].attrs.items() if k != "strides"})), "not canonical"),
    "const out of precision": (lambda p: p.consts.__setitem__(
        p.tensor_id("w1"), np.full((4, 3, 3, 3), -128, np.int8)), "exceeds precision 8"),
    "const wrong dtype": (lambda p: p.consts.__setitem__(
        p.tensor_id("w1"), p.consts[p.tensor_id("w1")].astype(np.int32)), "storage dtype"),
    "duplicate name": (lambda p: set_tensor(p, "w2", name="w1"), "duplicate name"),
    "ndim 7": (lambda p: set_tensor(p, "x", shape=(1,) * 7), "ndim 7"),
    "dim too large": (lambda p: set_tensor(p, "x", shape=(2, 3, 8, (1 << 24) + 1)),
                      "outside [1, 2^24]"),
    "too many elements": (lambda p: set_tensor(p, "x", shape=(1 << 12, 1 << 12, 1 << 7)),
                          "2^30"),
    "precision 33": (lambda p: set_tensor(p, "x", precision=33), "precision 33"),
    "no outputs": (lambda p: p.outputs.clear(), "no output"),
    "writes an input": (lambda p: p.code.__setitem__(0, replace(p.code[0], outputs=(0,))),
                        "writes the input"),
    "id out of range": (lambda p: p.code.__setitem__(0, replace(p.code[0], inputs=(0, 99, 2))),
                        "out of range"),
    "conv weight shape disagrees": (lambda p: p.code.__setitem__(0, Instr(
        "conv2d", p.code[0].inputs, p.code[0].outputs,
        {**p.code[0].attrs, "channels": 8})), "weight shape"),
    "wrong arity": (lambda p: p.code.__setitem__(2, replace(p.code[2],
                                                           inputs=p.code[2].inputs * 2)),
                    "takes 1 inputs"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_invalid_program_is_rejected(case):
    fn, message = CASES[case]
    with pytest.raises(InvalidError, match=re.escape(message)):
        validate(mutate(fn))


def test_instruction_is_quoted():
    p = mutate(lambda p: set_tensor(p, "logits", shape=(2, 11)))
    with pytest.raises(InvalidError) as e:
        validate(p)
    assert "cvm_right_shift" in str(e.value) and "%logits" in str(e.value)


def test_precision_beyond_storage_is_rejected():
    """broadcast_mul of two p20 tensors needs 40 bits: it could leave int32 storage."""
    t = [Tensor("a", (4,), 20, "input"), Tensor("b", (4,), 20, "input"),
         Tensor("c", (4,), 32, "value")]
    p = Program("mul", t, {}, [Instr("broadcast_mul", (0, 1), (2,), {})], [2])
    with pytest.raises(InvalidError, match=r"instruction 0 .*precision 40 > 32"):
        validate(p)


def test_gas_and_memory_ceilings():
    p = small_cnn()
    gas = validate(p).gas
    with pytest.raises(InvalidError, match="gas"):
        validate(p, Limits(max_gas=gas - 1))
    validate(p, Limits(max_gas=gas))
    with pytest.raises(InvalidError, match="peak memory"):
        validate(p, Limits(max_memory=100))


def test_huge_model_rejected_before_allocation():
    """A 2^30-element int32 input passes the format limits but not the default memory ceiling."""
    t = [Tensor("x", (1 << 15, 1 << 15), 16, "input"),
         Tensor("y", (1 << 15, 1 << 15), 16, "value")]
    p = Program("big", t, {}, [Instr("relu", (0,), (1,), {})], [1])
    with pytest.raises(InvalidError, match="peak memory"):
        vm.load(p)


def test_ceilings_are_configurable():
    t = [Tensor("x", (4,), 8, "input"), Tensor("y", (4,), 8, "value")]
    p = Program("tiny", t, {}, [Instr("relu", (0,), (1,), {})], [1])
    with pytest.raises(InvalidError, match="instructions"):
        validate(p, Limits(max_instructions=0))


@pytest.mark.parametrize("op,attr,first,second", [
    ("cvm_right_shift", "shift_bit", 9, 9.0), ("cvm_right_shift", "shift_bit", 1, True),
    ("max_pool2d", "pool_size", (1, 1), (1.0, 1))])
def test_an_attribute_equal_across_types_does_not_skip_its_check(op, attr, first, second):
    """Instructions of one kind are checked once; a value equal to a checked one but of
    another type (9.0 == 9, True == 1) is not of that kind."""
    import ops
    shape = (1, 1, 4, 4)
    tensors = [Tensor("x", shape, 20, "input"), Tensor("a", shape, 20, "value"),
               Tensor("b", shape, 20, "value")]
    attrs = ops.get(op).check_attrs({attr: first, **({"precision": 8} if op.startswith("cvm")
                                                     else {})})
    code = [Instr(op, (0,), (1,), attrs), Instr(op, (0,), (2,), {**attrs, attr: second})]
    with pytest.raises(InvalidError, match=f"instruction 1 .*{attr}"):
        validate(Program("p", tensors, {}, code, [1, 2]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["i1", "u1", "i2", "u2", "i4", "u4", "i8", "u8", ">i4", "<u2"]),
       st.integers(1, 256), st.sampled_from([(0, 255), (-511, 511), (-127, 127), (0, 65535),
                                              (-1, 0), (3, 300), (-32767, 32767)]),
       st.integers(0, 2 ** 32 - 1))
def test_the_small_scan_matches_the_values(dtype, n, window, seed):
    """Up to SMALL_SCAN values, first_outside first asks whether every value's bytes lie in
    [0, 2^k) (one masked Python integer; vm/ort's bytes_only asks the same for k = 8): every
    dtype and byte order, windows whose 2^k is and is not the top, values on both sides."""
    from vm.ort.kernels import bytes_only
    from vm.validate import first_outside
    dt, rng = np.dtype(dtype), np.random.default_rng(seed)
    info = np.iinfo(dt.newbyteorder("="))
    lo, hi = window
    if lo < info.min or hi > info.max:
        return
    values = rng.integers(max(info.min, lo - 3), min(info.max, hi + 3) + 1, n)
    if rng.random() < 0.5:                    # mostly inside, a stray value or none
        values = np.clip(values, lo, hi)
        values[rng.integers(n)] = rng.integers(max(info.min, -300), min(info.max, 300) + 1)
    x = values.astype(dt)
    wide = x.astype(np.int64)
    outside = np.flatnonzero((wide < lo) | (wide > hi))
    assert first_outside(x, lo, hi) == (int(outside[0]) if outside.size else None)
    assert bytes_only(x) == bool(((wide >= 0) & (wide <= 255)).all())


@pytest.mark.parametrize("n", [1, 5, 256, 257, 70000])
@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16])
def test_first_outside_finds_the_first_value_outside(n, dtype):
    """first_outside on both of its paths (Python integers up to SMALL_SCAN elements, numpy
    reductions chunk by chunk beyond): the first flat index outside [lo, hi], or None."""
    from vm.validate import SMALL_SCAN, first_outside
    assert SMALL_SCAN == 256
    rng = np.random.default_rng(n)
    lo, hi = (0, 100) if np.dtype(dtype).kind == "u" else (-100, 100)
    x = rng.integers(lo, hi + 1, (n,)).astype(dtype)
    assert first_outside(x.reshape(1, -1), lo, hi) is None
    for k in sorted({0, n // 3, n - 1}, reverse=True):
        x[k] = hi + 1 if k % 2 or lo == 0 else lo - 1
        assert first_outside(x, lo, hi) == k
    assert first_outside(x[:0], lo, hi) is None
