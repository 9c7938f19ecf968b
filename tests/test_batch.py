"""The batch law of every op (OpDef.batch): whenever the VM accepts an op applied to inputs with
a symbolic first axis, its output for N rows is, row by row, its output on each row alone,
for the numpy kernel and the scalar reference (hypothesis cases of the op law suite)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import ops
from ops.base import OpError, Ref
from tests.cases import all_cases, values_for
from vm.symbolic import infer_batched

CASES = all_cases()
NOT_BATCHED = {}
"""Ops without a batch rule, with the reason (none today: every op declares one)."""
ACCEPTED: dict[str, int] = {}


def test_every_op_declares_a_batch_rule():
    missing = sorted(op.name for op in ops.all_ops()
                     if op.batch is None and op.name not in NOT_BATCHED)
    assert not missing, f"ops without a batch rule (declare OpDef.batch): {missing}"


def _storage(p):
    return np.int8 if p <= 8 else np.int32


def _outputs(op, arrays, refs, attrs):
    got = op.kernel(np, *[a.copy() for a in arrays], **attrs)
    want = op.scalar(refs, attrs)
    got = [got] if len(op.outputs) == 1 else list(got)
    want = [want] if len(op.outputs) == 1 else list(want)
    return [np.asarray(g).astype(np.int64) for g in got], [w.to_array() for w in want]


def check_law(name, data):
    op = ops.get(name)
    case = data.draw(CASES[name])
    attrs = op.check_attrs(case.attrs)
    ranks = [len(i.shape) for i in case.inputs]
    try:
        allowed = op.batchable(attrs, ranks, 1 << 24)
    except OpError:
        reject()
    allowed = [k for k in allowed if k < len(case.inputs) and case.inputs[k].shape]
    if not allowed:
        reject()
    first = allowed[0]
    n = case.inputs[first].shape[0]
    limit = n + data.draw(st.integers(0, 2))
    try:
        op.batchable(attrs, ranks, limit)
    except OpError:
        reject()
    batched = [k for k in allowed if k == first or (
        case.inputs[k].shape[0] == n and data.draw(st.booleans()))]
    shapes = [("N", *i.shape[1:]) if k in batched else tuple(i.shape)
              for k, i in enumerate(case.inputs)]
    try:
        infer_batched(name, shapes, [i.precision for i in case.inputs], attrs, {"N": limit})
    except OpError as e:
        if "gas weight" not in str(e):     # refused for its gas alone: the law still holds
            reject()
    ACCEPTED[name] = ACCEPTED.get(name, 0) + 1
    flat = [i.values if i.values is not None else data.draw(values_for(i.shape, i.precision))
            for i in case.inputs]
    arrays = [np.array(v, dtype=_storage(i.precision)).reshape(i.shape)
              for i, v in zip(case.inputs, flat)]
    extra = {"gemm": "int64"} if op.acc_bound is not None else {}
    whole, whole_ref = _outputs(op, arrays, [Ref.from_array(a) for a in arrays],
                                {**attrs, **extra})
    for r in range(n):
        rows = [a[r:r + 1] if k in batched else a for k, a in enumerate(arrays)]
        got, ref = _outputs(op, rows, [Ref.from_array(a) for a in rows], {**attrs, **extra})
        for k, (w, wr, g, gr) in enumerate(zip(whole, whole_ref, got, ref)):
            assert np.array_equal(w[r:r + 1], g), f"{name} output {k}, row {r} (kernel)"
            assert np.array_equal(wr[r:r + 1], gr), f"{name} output {k}, row {r} (scalar)"


@pytest.mark.parametrize("name", sorted(n for n in CASES if ops.get(n).batch is not None))
def test_batch_law(name):
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        check_law(name, data)

    ACCEPTED.pop(name, None)
    run()
    assert ACCEPTED.get(name, 0) > 0, f"{name}: no case was accepted as batch-parallel"
