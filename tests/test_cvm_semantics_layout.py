"""Concrete CVM facts for the layout ops (spec/cvm-observed.md, "Semantic facts"), checked on
both the numpy kernel and the scalar reference; plus rejections of malformed attributes."""
import numpy as np
import pytest

import ops
from ops.base import OpError, Ref


def run_both(name, arrays, **attrs):
    """The op's output from the kernel and from the scalar reference (both as int lists)."""
    op = ops.get(name)
    canon = op.check_attrs(attrs)
    shape = op.infer_shapes([a.shape for a in arrays], canon)[0]
    got = op.kernel(np, *arrays, **canon)
    ref = op.scalar([Ref.from_array(a) for a in arrays], canon)
    assert tuple(got.shape) == tuple(shape) == ref.shape
    assert got.reshape(-1).tolist() == ref.data
    return got


def test_strided_slice_negative_strides():
    # begin (2,3), end (0,0), stride (-1,-2) picks rows 2,1 and cols 3,1
    x = np.arange(20, dtype=np.int8).reshape(4, 5)
    y = run_both("strided_slice", [x], begin=(2, 3), end=(0, 0), stride=(-1, -2))
    assert y.tolist() == x[[2, 1]][:, [3, 1]].tolist() == [[13, 11], [8, 6]]


def test_strided_slice_end_only_sets_size_and_clamps_to_minus_one():
    x = np.arange(5, dtype=np.int8)
    # end -6 -> -1 after + dim: runs down to index 0 (python slicing with stop -1 would not)
    assert run_both("strided_slice", [x], begin=(4,), end=(-6,), stride=(-1,)).tolist() == \
        [4, 3, 2, 1, 0]
    # begin beyond the end clamps to dim - 1 for a negative stride
    assert run_both("strided_slice", [x], begin=(9,), end=(-9,), stride=(-2,)).tolist() == \
        [4, 2, 0]


def test_take_and_lut_clamp_not_wrap():
    table = np.arange(100, 116, dtype=np.int32)                       # 16 entries
    idx = np.array([-3, 16, 0, 15, 7], dtype=np.int8)
    expected = [100, 115, 100, 115, 107]                               # -3 -> 0, 16 -> 15
    assert run_both("take", [table, idx]).tolist() == expected
    assert run_both("take", [table, idx], axis=0).tolist() == expected
    assert run_both("cvm_lut", [idx, table], in_dim=16).tolist() == expected


def test_take_without_axis_indexes_the_flattened_array():
    x = np.arange(16, dtype=np.int8).reshape(4, 4)
    idx = np.array([[-3, 16], [5, 10]], dtype=np.int8)
    assert run_both("take", [x, idx]).tolist() == [[0, 15], [5, 10]]
    # with axis 1 the clamp is to that axis' dim
    assert run_both("take", [x, idx], axis=1).tolist() == \
        [[[0, 3], [3, 3]], [[4, 7], [7, 7]], [[8, 11], [11, 11]], [[12, 15], [15, 15]]]


def test_where_row_select_copies_full_rows():
    x = np.arange(8, dtype=np.int8).reshape(2, 4)
    y = -np.arange(8, dtype=np.int32).reshape(2, 4) * 1000
    cond = np.array([0, 3], dtype=np.int8)
    out = run_both("where", [cond, x, y])
    assert out.tolist() == [[0, -1000, -2000, -3000], [4, 5, 6, 7]]
    assert ops.get("where").infer_precisions([2, 8, 16], [(2,), (2, 4), (2, 4)], {}) == [16]


@pytest.mark.parametrize("name, shapes, attrs", [
    ("reshape", [(2, 3)], dict(shape=(4, -1))),                     # 6 not divisible by 4
    ("reshape", [(2, 3)], dict(shape=(-1, -1))),                    # two inferred dims
    ("reshape", [(2, 3)], dict(shape=(-3, -3))),                    # nothing left to merge
    ("reshape", [(6,)], dict(shape=(-4, -1, -1))),                  # split dims both -1
    ("reshape", [(6,)], dict(shape=(-4, 4, -1))),                   # 4 does not divide 6
    ("reshape", [(6,)], dict(shape=(-4, 2))),                       # -4 needs two values
    ("reshape", [(6,)], dict(shape=(-5,))),                         # unknown code
    ("reshape", [(6,)], dict(shape=())),                            # empty spec
    ("squeeze", [(2, 1)], dict(axis=(0,))),                         # not size 1
    ("transpose", [(2, 3, 4)], dict(axes=(0, 1))),                  # not a permutation
    ("transpose", [(2, 3)], dict(axes=(0, -2))),                    # repeated axis
    ("expand_dims", [(2, 3)], dict(axis=3)),                        # axis > n
    ("concatenate", [(2, 3), (3, 3)], dict(axis=1)),                # off-axis dims differ
    ("strided_slice", [(4,)], dict(begin=(1,), end=(1,))),          # empty slice
    ("strided_slice", [(4,)], dict(begin=(1,), end=(3,), stride=(-1,))),
    ("strided_slice", [(4,)], dict(begin=(0,), end=(3,), stride=(0,))),
    ("slice_like", [(2, 3), (3, 3)], {}),                           # like larger than x
    ("take", [(2, 3), (2,)], dict(axis=2)),
    ("cvm_lut", [(3,), (16,)], dict(in_dim=15)),                    # in_dim != table size
    ("where", [(3,), (2, 3), (2, 3)], {}),                          # bad cond shape
    ("where", [(2,), (2, 3), (2, 4)], {}),                          # x, y shapes differ
])
def test_malformed_is_rejected(name, shapes, attrs):
    op = ops.get(name)
    with pytest.raises(OpError):
        op.infer_shapes(shapes, op.check_attrs(attrs))
