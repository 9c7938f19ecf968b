"""The op law suite: for every registered op, on hypothesis inputs inside the declared precision,

* the numpy kernel equals the pure-Python scalar reference (every licensed GEMM path too),
* every output lies inside its inferred precision,
* the shape rule equals the kernel's output shape.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

import ops
from ops.base import Ref, bound
from tests.cases import all_cases, values_for

CASES = all_cases()
FLOAT_LIMIT = {"float32": 1 << 24, "float64": 1 << 53, "int64": 1 << 62}


def storage_dtype(p):
    return np.int8 if p <= 8 else np.int32


def test_every_op_has_a_case():
    missing = sorted(set(ops.REGISTRY) - set(CASES))
    assert not missing, f"ops without a law-suite case: {missing}"


def run_case(op, case, data):
    attrs = op.check_attrs(case.attrs)
    shapes = [tuple(i.shape) for i in case.inputs]
    precs = [i.precision for i in case.inputs]
    out_shapes = op.infer_shapes(shapes, attrs)
    out_precs = op.infer_precisions(precs, shapes, attrs)
    flat = [i.values if i.values is not None else data.draw(values_for(i.shape, i.precision))
            for i in case.inputs]
    for i, v in zip(case.inputs, flat):
        assert all(abs(x) <= bound(i.precision) for x in v), "case values outside precision"
    arrays = [np.array(v, dtype=storage_dtype(i.precision)).reshape(i.shape)
              for i, v in zip(case.inputs, flat)]
    refs = [Ref(i.shape, list(v)) for i, v in zip(case.inputs, flat)]
    expected = op.scalar(refs, attrs)
    expected = [expected] if len(op.outputs) == 1 else list(expected)
    paths = [{}]
    if op.acc_bound is not None:
        acc = op.acc_bound(precs, shapes, attrs, arrays)
        paths = [{"gemm": g} for g, lim in FLOAT_LIMIT.items() if acc < lim]
    for extra in paths:
        got = op.kernel(np, *[a.copy() for a in arrays], **attrs, **extra)
        got = [got] if len(op.outputs) == 1 else list(got)
        assert len(got) == len(expected) == len(out_shapes)
        for k, (g, e, s, p) in enumerate(zip(got, expected, out_shapes, out_precs)):
            assert np.issubdtype(g.dtype, np.integer), f"output {k} dtype {g.dtype}"
            assert tuple(g.shape) == tuple(s) == tuple(e.shape), (g.shape, s, e.shape)
            assert [int(v) for v in g.reshape(-1).tolist()] == e.data, f"output {k} {extra}"
            assert all(abs(v) <= bound(p) for v in e.data), f"output {k} outside p{p}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernel_equals_scalar_reference(name):
    op = ops.get(name)
    assert op is not None, f"case for unknown op {name}"

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=__import__("hypothesis").strategies.data())
    def check(data):
        case = data.draw(CASES[name])
        run_case(op, case, data)

    check()
