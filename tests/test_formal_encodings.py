"""Every op's Z3 encoding, evaluated on concrete inputs, equals the scalar reference and the
numpy kernel: in unbounded integers and in 64-bit machine bit-vectors (the law-suite cases)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ops
from ops.base import Ref
from tests.cases import all_cases, values_for

z3 = pytest.importorskip("z3")
from verify.domains import as_int, domain  # noqa: E402

CASES = all_cases()
EXAMPLES = {"non_max_suppression": 6, "get_valid_counts": 8, "qsoftmax": 3, "qavg_pool2d": 4}


def storage(p):
    return np.int8 if p <= 8 else np.int32


def encode(op, zx, flat, case, attrs):
    tensors = [Ref(i.shape, [zx.num(v) for v in vals]) for i, vals in zip(case.inputs, flat)]
    out = op.z3(zx, *tensors, **attrs)
    outs = [out] if len(op.outputs) == 1 else list(out)
    return [(tuple(o.shape), evaluate(o.data)) for o in outs]


def evaluate(terms):
    """Simplify every term to a numeral in one call (shared subterms are simplified once)."""
    if not terms:
        return []
    sort = terms[0].sort()
    f = z3.Function("outputs", *([sort] * len(terms)), z3.IntSort())
    return [as_int(v) for v in z3.simplify(f(*terms)).children()]


def check_case(op, case, data):
    attrs = op.check_attrs(case.attrs)
    flat = [i.values if i.values is not None else data.draw(values_for(i.shape, i.precision))
            for i in case.inputs]
    expected = op.scalar([Ref(i.shape, list(v)) for i, v in zip(case.inputs, flat)], attrs)
    expected = [expected] if len(op.outputs) == 1 else list(expected)
    arrays = [np.array(v, dtype=storage(i.precision)).reshape(i.shape)
              for i, v in zip(case.inputs, flat)]
    kernel = op.kernel(np, *arrays, **attrs)
    kernel = [kernel] if len(op.outputs) == 1 else list(kernel)
    for name in ("int", "bv"):
        got = encode(op, domain(name), flat, case, attrs)
        for (shape, values), e, k in zip(got, expected, kernel):
            assert shape == tuple(e.shape) == tuple(k.shape), (name, shape, e.shape)
            assert values == e.data, f"{name} encoding != scalar reference"
            assert values == [int(v) for v in k.reshape(-1).tolist()], f"{name} != kernel"


def test_every_op_has_an_encoding_and_a_case():
    assert all(op.z3 is not None for op in ops.all_ops())
    assert not sorted(set(ops.REGISTRY) - set(CASES))


@pytest.mark.parametrize("name", sorted(CASES))
def test_encoding_equals_reference_and_kernel(name):
    op = ops.get(name)

    @settings(max_examples=EXAMPLES.get(name, 8), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def check(data):
        check_case(op, data.draw(CASES[name]), data)

    check()


def test_missing_z3_rule_is_an_import_time_error():
    from dataclasses import replace
    relu = ops.get("relu")
    with pytest.raises(TypeError, match="op 'relu': missing rule 'z3'"):
        replace(relu, z3=None)


def test_importing_ops_and_vm_does_not_import_z3():
    import subprocess
    import sys
    code = "import sys, ops, vm, detvm.cli, compiler; assert 'z3' not in sys.modules, 'z3 imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
