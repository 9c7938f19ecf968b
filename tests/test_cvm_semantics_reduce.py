"""Hand-checked examples for sum, max, get_valid_counts and non_max_suppression.

Each example runs on the numpy kernel and on the scalar reference; both must give the values
worked out by hand here (CVM's formal semantics, with detvm's documented fixes).
"""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings

import ops
from ops import vision
from ops.base import OpError, Ref
from ops.vision import iou_percent
from tests.cases.reduce_vision import non_max_suppression


def run(name, inputs, **attrs):
    """(kernel outputs, reference outputs) as nested lists; inputs are nested lists."""
    op = ops.get(name)
    attrs = op.check_attrs(attrs)
    arrays = [np.array(v, dtype=np.int32) for v in inputs]
    op.infer_shapes([a.shape for a in arrays], attrs)
    got = op.kernel(np, *arrays, **attrs)
    got = [got] if len(op.outputs) == 1 else list(got)
    ref = op.scalar([Ref.from_array(a) for a in arrays], attrs)
    ref = [ref] if len(op.outputs) == 1 else list(ref)
    got = [g.tolist() for g in got]
    ref = [r.to_array().tolist() for r in ref]
    assert got == ref
    return got[0] if len(got) == 1 else got


# ---------------------------------------------------------------------------------------------
# sum / max
# ---------------------------------------------------------------------------------------------

CVM_DOC = [[[1, 2], [2, 3], [1, 3]], [[1, 4], [4, 3], [5, 2]], [[7, 1], [7, 2], [7, 3]]]


def test_max_full_reduce_of_negative_data_is_the_true_max():
    # CVM cpu/formal return 0 here (accumulator starts at 0); detvm returns the true max.
    x = [[-3, -2], [-5, -7]]
    assert run("max", [x]) == [-2]
    assert run("max", [x], keepdims=True) == [[-2]]
    assert run("max", [x], axis=(0, 1)) == [-2]
    assert run("max", [x], axis=(1,)) == [-2, -5]
    assert run("sum", [x]) == [-17]


def test_sum_cvm_doc_example():
    assert run("sum", [CVM_DOC], axis=(1,)) == [[4, 8], [10, 9], [21, 6]]
    assert run("sum", [CVM_DOC], axis=(1, 2)) == [12, 19, 27]
    assert run("sum", [CVM_DOC], axis=(-1, -2)) == [12, 19, 27]
    assert run("sum", [CVM_DOC], axis=(0,), exclude=True) == [12, 19, 27]
    assert run("sum", [CVM_DOC], axis=(1,), keepdims=True) == [[[4, 8]], [[10, 9]], [[21, 6]]]
    assert run("max", [CVM_DOC], axis=(0, 2)) == [7, 7, 7]


def test_exclude_every_axis_copies_and_empty_axis_reduces_everything():
    assert run("sum", [CVM_DOC], axis=(0, 1, 2), exclude=True) == CVM_DOC
    assert run("max", [CVM_DOC], axis=(2, 0, 1), exclude=True, keepdims=True) == CVM_DOC
    assert run("sum", [CVM_DOC], exclude=True) == [58]
    assert run("sum", [CVM_DOC], keepdims=True) == [[[58]]]


def test_reduce_shape_precision_and_gas():
    op = ops.get("sum")
    a = op.check_attrs({"axis": (1,)})
    assert op.infer_shapes([(4, 3, 2)], a) == [(4, 2)]
    assert op.infer_precisions([8], [(4, 3, 2)], a) == [8 + 2]
    assert op.cost([(4, 3, 2)], a) == 3
    full = op.check_attrs({})
    assert op.infer_shapes([(4,)], full) == [(1,)]
    assert op.infer_precisions([8], [(4,)], full) == [11]    # observed: 4 int8 values -> p11
    assert ops.get("max").infer_precisions([8], [(4, 3)], full) == [8]
    assert ops.get("max").cost([(4, 3)], full) == 1


@pytest.mark.parametrize("axis", [(0, 0), (1, -1), (2,), (-3,)])
def test_bad_axes_are_rejected(axis):
    op = ops.get("max")
    with pytest.raises(OpError):
        op.infer_shapes([(2, 3)], op.check_attrs({"axis": axis}))


# ---------------------------------------------------------------------------------------------
# get_valid_counts
# ---------------------------------------------------------------------------------------------

def test_get_valid_counts_example():
    x = [[[0, 5, 1], [1, 0, 2], [2, 7, 3], [3, -1, 4]],
         [[4, 1, 1], [5, 2, 2], [6, 3, 3], [7, 4, 4]]]
    count, y = run("get_valid_counts", [x])
    assert count == [2, 4]
    assert y[0] == [[0, 5, 1], [2, 7, 3], [-1, -1, -1], [-1, -1, -1]]
    assert y[1] == x[1]
    count, y = run("get_valid_counts", [x], score_threshold=2)
    assert count == [2, 2]
    assert y[1] == [[6, 3, 3], [7, 4, 4], [-1, -1, -1], [-1, -1, -1]]
    count, y = run("get_valid_counts", [x], score_threshold=-2)
    assert count == [4, 4] and y == x


def test_get_valid_counts_rules():
    op = ops.get("get_valid_counts")
    a = op.check_attrs({})
    assert op.infer_shapes([(2, 4, 3)], a) == [(2,), (2, 4, 3)]
    # GetNumberPrecision(12) = bitlen(13) + 1 = 5; the -1 fill needs p >= 2 (detvm fix)
    assert op.infer_precisions([1], [(2, 4, 3)], a) == [5, 2]
    assert op.infer_precisions([8], [(2, 4, 3)], a) == [5, 8]
    for bad in [(2, 4, 1), (2, 4, 32), (4, 3)]:
        with pytest.raises(OpError):
            op.infer_shapes([bad], a)


# ---------------------------------------------------------------------------------------------
# non_max_suppression
# ---------------------------------------------------------------------------------------------

A = [0, 9, 0, 0, 10, 10]      # class 0, area 100
B = [0, 8, 1, 1, 11, 11]      # class 0, overlaps A: I = 81, U = 119, iou = 8100 // 119 = 68
C = [1, 7, 1, 1, 11, 11]      # class 1, same box as B: iou(A, C) = 68 too
D = [0, 6, 20, 20, 30, 30]    # class 0, far away
NONE = [-1] * 6


def nms(rows, count, **attrs):
    return run("non_max_suppression", [[rows], [count]], **attrs)[0]


def test_iou_percent_by_hand():
    assert iou_percent(A[2:], B[2:]) == 68
    assert iou_percent(A[2:], A[2:]) == 100
    assert iou_percent(A[2:], D[2:]) == 0
    assert iou_percent([0, 0, 0, 5], [0, 0, 0, 5]) == 0          # zero areas: S <= 0
    assert iou_percent([0, 0, 10, 10], [0, 0, 10, 10 - 20]) == 0  # S = 0


def test_nms_two_overlapping_boxes_of_one_class_and_one_of_another():
    rows = [C, A, D, B]   # unsorted on purpose
    assert nms(rows, 4) == [A, C, D, NONE]                        # B suppressed by A (68 >= 50)
    assert nms(rows, 4, iou_threshold=68) == [A, C, D, NONE]      # >= : the boundary suppresses
    assert nms(rows, 4, iou_threshold=69) == [A, B, C, D]
    assert nms(rows, 4, force_suppress=True) == [A, D, NONE, NONE]


def test_nms_limits_and_counts():
    rows = [C, A, D, B]
    assert nms(rows, 4, top_k=2) == [A, NONE, NONE, NONE]         # ranked A, B; B suppressed
    assert nms(rows, 4, top_k=3) == [A, C, NONE, NONE]
    assert nms(rows, 4, max_output_size=1) == [A, NONE, NONE, NONE]
    assert nms(rows, 4, max_output_size=0) == [NONE] * 4          # formal: 0 keeps nothing
    assert nms(rows, 2) == [A, C, NONE, NONE]                     # only rows C, A are valid
    assert nms(rows, 10) == [A, C, D, NONE]                       # clamped to N
    assert nms(rows, -1) == [NONE] * 4
    assert nms(rows, 0) == [NONE] * 4


def test_nms_is_stable_and_skips_negative_ids():
    e = [2, 5, 0, 0, 1, 1]
    f = [3, 5, 5, 5, 6, 6]
    bad = [-1, 9, 0, 0, 1, 1]
    assert nms([e, f, bad], 3) == [e, f, NONE]
    assert nms([f, e, bad], 3) == [f, e, NONE]
    assert nms([bad, f, e], 3, top_k=1) == [NONE] * 3             # the skipped row uses top_k


def test_nms_exact_iou_with_huge_coordinates():
    # u = 2**26: boxes of side 16u; ow = 15u, oh = 7u, I = 105 u**2, U = 512 u**2 - I = 407 u**2,
    # iou = 10500 // 407 = 25. 100 * I and 25 * U exceed int64 (a wrapping int64 kernel keeps
    # the second box); the kernel must stay exact.
    u = 1 << 26
    big = [0, 5, 0, 0, 16 * u, 16 * u]
    shifted = [0, 4, u, 9 * u, 17 * u, 25 * u]
    assert iou_percent(big[2:], shifted[2:]) == 25
    assert nms([big, shifted], 2, iou_threshold=25) == [big, NONE]
    assert nms([big, shifted], 2, iou_threshold=26) == [big, shifted]


def test_nms_rules():
    op = ops.get("non_max_suppression")
    a = op.check_attrs({})
    assert op.infer_shapes([(2, 5, 6), (2,)], a) == [(2, 5, 6)]
    assert op.infer_precisions([1, 8], [(2, 5, 6), (2,)], a) == [2]
    assert op.infer_precisions([16, 8], [(2, 5, 6), (2,)], a) == [16]
    assert op.cost([(2, 5, 6), (2,)], a) == 40
    for bad in [{"coord_start": 0}, {"score_index": 2}, {"id_index": 1}, {"iou_threshold": 0}]:
        with pytest.raises(OpError):
            op.check_attrs(bad)
    for bad in [{"return_indices": True}, {"invalid_to_bottom": False}]:
        with pytest.raises(OpError):
            op.infer_shapes([(2, 5, 6), (2,)], op.check_attrs(bad))
    for shapes in [[(2, 5, 5), (2,)], [(2, 5, 6), (3,)], [(5, 6), (5,)]]:
        with pytest.raises(OpError):
            op.infer_shapes(shapes, a)


@pytest.mark.parametrize("block,budget", [(1, 1), (3, 7), (8, 1 << 16)])
@settings(max_examples=40, deadline=None)
@given(case=non_max_suppression(max_n=40))
def test_nms_blocks_match_the_scalar_scan(block, budget, case):
    """The vectorized blocks of the greedy scan, at any block size and pair budget, give the
    scalar reference's rows (kept rows in rank order, then -1)."""
    data, count = case.inputs
    values = np.array(data.values, dtype=np.int64).reshape(data.shape)
    with mock.patch.object(vision, "NMS_BLOCK", block), \
            mock.patch.object(vision, "PAIR_BUDGET", budget):
        run("non_max_suppression", [values.tolist(), count.values], **case.attrs)


@pytest.mark.parametrize("layout", ["disjoint", "nested", "duplicates"])
def test_nms_pair_tests_stay_within_the_work_gas(layout):
    """The pair tests the kernel makes (counted) never exceed what its work rule charges for
    (N (N + NMS_BLOCK) / 2 per batch), on layouts that keep every box or none."""
    n = 700
    k = np.arange(n)
    boxes = {"disjoint": np.stack([k * 4, k * 0, k * 4 + 3, k * 0 + 3], 1),
             "nested": np.stack([k * 0, k * 0, 1000 + k, k * 0 + 1000], 1),
             "duplicates": np.tile([0, 0, 5, 5], (n, 1))}[layout]
    rows = np.concatenate([np.zeros((n, 1)), (n - k)[:, None], boxes], 1).astype(np.int64)
    pairs = []
    real = vision._pair_hits

    def counted(a, b, threshold):
        pairs.append(len(a) * len(b))
        return real(a, b, threshold)
    a = ops.get("non_max_suppression").check_attrs({"iou_threshold": 100})
    with mock.patch.object(vision, "_pair_hits", counted):
        kept = vision._nms_batch(rows, n, a)
    assert len(kept) == (1 if layout == "duplicates" else n)
    assert sum(pairs) <= n * (n + vision.NMS_BLOCK) // 2


def test_nms_work_grows_with_the_pairs():
    """Gas bounds time: the pairwise work is quadratic in N (CVM's weight is linear)."""
    op = ops.get("non_max_suppression")
    a = op.check_attrs({})
    small, large = (op.work([(1, n, 6), (1,)], [16, 16], a) for n in (1 << 10, 1 << 14))
    assert large >= 200 * small
    assert op.work([(1, 1 << 10, 6), (1,)], [30, 16], a) > 16 * small    # exact ints: slower
