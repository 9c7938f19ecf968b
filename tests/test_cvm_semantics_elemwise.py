"""CVM's observed and specified examples (cvm-observed.md section 8, cvm.md 3.2-3.3) for the
elementwise and broadcast ops: kernel (numpy) and scalar reference must both give them."""
import numpy as np
import pytest

import ops
from ops.base import OpError, Ref


def run(name, inputs, precs=None, **attrs):
    """Run ``name`` on lists of ints (1-D) through kernel and reference; return the list."""
    op = ops.get(name)
    attrs = op.check_attrs(attrs)
    shapes = [(len(v),) for v in inputs]
    op.infer_shapes(shapes, attrs)
    op.infer_precisions(precs or [32] * len(inputs), shapes, attrs)
    got = op.kernel(np, *[np.array(v, dtype=np.int32) for v in inputs], **attrs)
    ref = op.scalar([Ref(s, list(v)) for s, v in zip(shapes, inputs)], attrs)
    assert [int(v) for v in got.reshape(-1)] == ref.data
    return ref.data


def test_right_shift_rounds_half_up():
    assert run("cvm_right_shift", [[-5, -7, 5, 7, 3, -3, -1]], precision=8, shift_bit=1) == \
        [-2, -3, 3, 4, 2, -1, 0]
    assert run("cvm_right_shift", [[-6, 6, -5]], precision=8, shift_bit=2) == [-1, 2, -1]


def test_right_shift_clips_and_p1_is_zero():
    assert run("cvm_right_shift", [[1000, -1000]], precision=4, shift_bit=1) == [7, -7]
    assert run("cvm_right_shift", [[1000, -1000, 3]], precision=1, shift_bit=1) == [0, 0, 0]


def test_right_shift_31_32_follow_the_formal_rule():
    big = (1 << 31) - 1
    # formal: 0 for negative inputs at s=31 (cpu's x >> 31 would give -1), rounding kept
    assert run("cvm_right_shift", [[-1, -4, -(1 << 30), big, -big]], precision=8,
               shift_bit=31) == [0, 0, 0, 1, -1]
    assert run("cvm_right_shift", [[-1, big, -big]], precision=8, shift_bit=32) == [0, 0, 0]


def test_broadcast_div_truncates_and_divides_by_zero_to_zero():
    assert run("broadcast_div", [[-127, -7, 7, 7, -7, 5], [3, -2, -2, 2, 2, 0]]) == \
        [-42, 3, -3, 3, -3, 0]


def test_broadcast_div_by_zero_broadcast():
    op = ops.get("broadcast_div")
    a, b = np.array([[4, -9], [0, 7]], dtype=np.int8), np.array([0], dtype=np.int8)
    assert op.kernel(np, a, b).tolist() == [[0, 0], [0, 0]]


@pytest.mark.parametrize("m, p", [(127, 9), (126, 8), (1, 3), (2, 3), ((1 << 31) - 1, 33)])
def test_clip_precision_over_counts(m, p):
    op = ops.get("clip")
    assert op.infer_precisions([8], [(3,)], op.check_attrs(dict(a_min=-m, a_max=m))) == [p]


def test_clip_values_and_bad_bounds():
    assert run("clip", [[-200, 5, 200]], a_min=-127, a_max=127) == [-127, 5, 127]
    with pytest.raises(OpError):
        ops.get("clip").infer_shapes([(3,)], dict(a_min=5, a_max=5))


def test_cvm_precision_bit_length():
    assert run("cvm_precision", [[0, 1, 2, 3, 4, 7, 8, -1, -8, (1 << 31) - 1]]) == \
        [1, 1, 2, 2, 3, 3, 4, 1, 4, 31]


def test_cvm_clip_ignores_is_sign():
    assert run("cvm_clip", [[-300, 300, 5]], precision=8, is_sign=False) == [-127, 127, 5]


def test_left_shift_precision_rule():
    assert run("cvm_left_shift", [[3, -3, 100]], precs=[8], precision=8, shift_bit=2) == \
        [12, -12, 127]
    op = ops.get("cvm_left_shift")
    with pytest.raises(OpError):
        op.infer_precisions([8], [(3,)], op.check_attrs(dict(precision=8, shift_bit=25)))


def test_greater_takes_left_precision():
    op = ops.get("broadcast_greater")
    assert op.infer_precisions([8, 16], [(2,), (2,)], {}) == [8]
    assert op.infer_precisions([16, 8], [(2,), (2,)], {}) == [16]
    assert run("broadcast_greater", [[1, 2, 3], [2, 2, 2]]) == [0, 0, 1]


def test_broadcast_shapes():
    op = ops.get("broadcast_add")
    assert op.infer_shapes([(2, 1, 3), (4, 1)], {}) == [(2, 4, 3)]
    with pytest.raises(OpError):
        op.infer_shapes([(2, 3), (4,)], {})
    with pytest.raises(OpError):
        ops.get("elemwise_add").infer_shapes([(2, 3), (3,)], {})


def test_gas_and_inplace():
    names = ["abs", "negative", "cvm_precision", "elemwise_add", "elemwise_sub", "clip",
             "cvm_clip", "cvm_left_shift", "cvm_right_shift", "broadcast_add", "broadcast_sub",
             "broadcast_mul", "broadcast_div", "broadcast_max", "broadcast_greater"]
    assert all(ops.get(n).cost([(3,)], {}) == 1 for n in names)
    assert {n for n in names if ops.get(n).inplace} == set(names[:9]) - {"negative"}
