"""The numpy kernels of qsoftmax and qavg_pool2d on the machine's IEEE float32 (``_native`` in
ops/softmax.py, ops/qpool.py) against their soft-float kernels (every float32 step in
integers) and the exact-rational reference: long rows whose in-order sums round at every
step, tables with subnormal entries, ties at the final rounding; the float32 probe
(ops/softfloat.native_float32) and the fall-back it guards."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ops
from ops import softfloat as sf
from ops.base import Ref, bound

QSOFTMAX, QAVG_POOL = ops.get("qsoftmax"), ops.get("qavg_pool2d")


def table(scale: float, d: int):
    from compiler.onnx.softmax import softmax_table
    return softmax_table(scale, d)


def attrs(scale: float, d: int, numerator: int, zero_point: int = 0, axis: int = -1):
    mantissa, exponent = table(scale, d)
    return QSOFTMAX.check_attrs(dict(axis=axis, mantissa=mantissa, exponent=exponent,
                                     numerator=numerator, zero_point=zero_point, qmin=-300,
                                     qmax=70000))


def soft(monkeypatch, x, a, op=QSOFTMAX):
    """The soft-float kernel (the probe said no)."""
    with monkeypatch.context() as m:
        m.setattr(sf, "native_float32", lambda: False)
        return op.kernel(np, x, **a)


def test_the_probe_sees_ieee_float32_here():
    assert sf.native_float32()


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([0.004, 0.0911, 0.5, 1.7, 9.0, 40.0]), st.integers(1, 7000),
       st.sampled_from([1, 127, 255, 1000, 65535, (1 << 24) - 1]), st.integers(0, 2 ** 32 - 1))
def test_native_rows_equal_the_soft_float_kernel(monkeypatch, scale, d, numerator, seed):
    """Rows of up to 7,000 (the PP-OCR recognizer's 6,625 classes): one sum in order per
    row; scales up to 40 put most of the table below 2^-126 (subnormal or 0)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-300, 300, (3, d)).astype(np.int32)
    x[1] = x[1].max()                                   # a row of equal values
    a = attrs(scale, d, numerator)
    got = QSOFTMAX.kernel(np, x, **a)
    assert np.array_equal(got, soft(monkeypatch, x, a))


@pytest.mark.parametrize("scale, numerator", [(0.0911, 255), (40.0, 65535), (0.004, 1)])
def test_native_rows_equal_the_exact_reference(scale, numerator):
    """The exact-rational rule (ops' scalar form) on rows of 600, another axis than the
    last, a zero point."""
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 600, 2)).astype(np.int16)
    a = attrs(scale, 600, numerator, zero_point=-7, axis=1)
    want = QSOFTMAX.scalar([Ref.from_array(x)], a).to_array()
    assert np.array_equal(QSOFTMAX.kernel(np, x, **a), want)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_native_average_pools_equal_the_soft_float_kernel_and_the_reference(monkeypatch,
                                                                            data):
    """qavg_pool2d's cases (one scale for input and output among them: the ties of real
    models), on larger planes too: native, soft-float and exact-rational kernels agree."""
    from tests.cases.kernels import qavg_pool2d
    case = data.draw(qavg_pool2d())
    a = QAVG_POOL.check_attrs(case.attrs)
    (shape, precision), = [(i.shape, i.precision) for i in case.inputs]
    if data.draw(st.booleans()):                        # a plane of a real model's size
        shape = shape[:2] + (shape[2] + 12, shape[3] + 40)
    r = bound(precision)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.integers(-r, r + 1, shape).astype(np.int16)
    got = QAVG_POOL.kernel(np, x, **a)
    assert np.array_equal(got, soft(monkeypatch, x, a, QAVG_POOL))
    if x.size <= 64:
        assert np.array_equal(got, QAVG_POOL.scalar([Ref.from_array(x)], a).to_array())
