"""The numpy kernels of qsoftmax, qavg_pool2d and qconv2d_transpose's ``fp32`` rounding on the
machine's IEEE float32 (ops/softmax.py, ops/qpool.py, ops/deconv32.py) against their
soft-float kernels (every float32 step in integers) and the exact-rational reference: long
rows whose in-order sums round at every step, tables with subnormal entries, subnormal
products, fused multiply-adds at ties, more channels than one SGEMM block; the float32 probe
(ops/softfloat.native_float32) and the fall-back it guards."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import ops
from ops import softfloat as sf
from ops.base import Ref, bound

QSOFTMAX, QAVG_POOL = ops.get("qsoftmax"), ops.get("qavg_pool2d")
DECONV = ops.get("qconv2d_transpose")


def table(scale: float, d: int):
    from compiler.onnx.softmax import softmax_table
    return softmax_table(scale, d)


def attrs(scale: float, d: int, numerator: int, zero_point: int = 0, axis: int = -1):
    mantissa, exponent = table(scale, d)
    return QSOFTMAX.check_attrs(dict(axis=axis, mantissa=mantissa, exponent=exponent,
                                     numerator=numerator, zero_point=zero_point, qmin=-300,
                                     qmax=70000))


def soft(monkeypatch, x, a, op=QSOFTMAX, *more):
    """The soft-float kernel (the probe said no)."""
    with monkeypatch.context() as m:
        m.setattr(sf, "native_float32", lambda: False)
        return op.kernel(np, x, *more, **a)


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


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([0.004, 0.0911, 1.7, 40.0]), st.integers(1, 40),
       st.sampled_from([(1, 300), (4, 70), (2, 1), (1, 8400)]), st.integers(0, 3),
       st.sampled_from([255, 65535, (1 << 24) - 1]), st.integers(0, 2 ** 32 - 1))
def test_native_short_rows_along_any_axis_equal_the_soft_float_kernel(
        monkeypatch, scale, d, lead_and_rows, axis, numerator, seed):
    """Many short rows (YOLOv8n's 16-bin softmax over 8,400 boxes) summed a plane at a time
    (ops.softmax.ROWS_AT_ONCE), along the first, an inner or the last axis, and few rows
    through add.accumulate: the soft-float kernel's values (a numerator up to 2^24 - 1 makes
    every rounding of a sum show in the integers)."""
    lead, rows = lead_and_rows
    shape = [lead, rows, 1]
    shape.insert(axis, d)
    rng = np.random.default_rng(seed)
    x = rng.integers(-300, 300, shape).astype(np.int32)
    a = attrs(scale, d, numerator, axis=axis)
    got = QSOFTMAX.kernel(np, x, **a)
    assert np.array_equal(got, soft(monkeypatch, x, a))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.int64]),
       st.sampled_from([0.0911, 1.7]), st.integers(1, 300), st.integers(0, 2),
       st.sampled_from([255, 65535, (1 << 24) - 1]), st.integers(-(1 << 16), 1 << 16),
       st.sampled_from([(0, 255), (-128, 127), (-300, 70000), (-(1 << 31) + 1, (1 << 31) - 1),
                        (1 << 25, 1 << 26), (-(1 << 26), -(1 << 25)), (5, 5)]),
       st.integers(0, 2 ** 32 - 1))
def test_native_distances_and_clips_equal_the_soft_float_kernel(monkeypatch, dtype, scale, d,
                                                                axis, numerator, zero_point,
                                                                bounds, seed):
    """Every input dtype (bytes: distances to the row maximum as bytes, modulo 256; wider:
    clipped at 255), zero points and [qmin, qmax] within 2^24 of them (the clip in float32)
    or not (on int64), bounds every value lands outside of: the soft-float kernel's
    values, as int32."""
    info = np.iinfo(dtype)
    shape = [2, 3]
    shape.insert(axis, d)
    rng = np.random.default_rng(seed)
    x = rng.integers(max(info.min, -1000), min(info.max, 1000) + 1, shape).astype(dtype)
    x.reshape(-1)[::7] = max(info.min, -(1 << 31))      # distances over 255 where wider
    mantissa, exponent = table(scale, d)
    a = QSOFTMAX.check_attrs(dict(axis=axis, mantissa=mantissa, exponent=exponent,
                                  numerator=numerator, zero_point=zero_point,
                                  qmin=bounds[0], qmax=bounds[1]))
    got = QSOFTMAX.kernel(np, x, **a)
    assert got.dtype == np.int32 and np.array_equal(got, soft(monkeypatch, x, a))


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


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_native_transposed_convolutions_equal_the_soft_float_kernel(monkeypatch, data):
    """qconv2d_transpose's fp32 cases (scales whose products tie or are subnormal), with up
    to 140 input channels per group (two SGEMM blocks of K_BLOCK 128) on some: native and
    soft-float kernels agree, and the exact-rational rule on small ones."""
    from tests.cases.kernels import deconv_fp32_attrs, qconv2d_transpose
    case = data.draw(qconv2d_transpose())
    if "x_scale" not in case.attrs:
        case.attrs.update(deconv_fp32_attrs(data.draw, case.attrs["channels"] //
                                            case.attrs["groups"]))
        case.attrs["use_bias"] = False
        case.inputs = case.inputs[:2]
    (xs, xp_), (ws, wp) = [(i.shape, i.precision) for i in case.inputs]
    if data.draw(st.booleans()):                         # many channels: two K blocks
        g = case.attrs["groups"]
        c = g * data.draw(st.sampled_from([127, 128, 129, 140]))
        xs, ws = (xs[0], c) + xs[2:], (c,) + ws[1:]
    a = DECONV.check_attrs(case.attrs)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 32 - 1)))
    x = rng.integers(-bound(xp_), bound(xp_) + 1, xs).astype(np.int16)
    w = rng.integers(-bound(wp), bound(wp) + 1, ws).astype(np.int16)
    got = DECONV.kernel(np, x, w, **a)
    assert np.array_equal(got, soft(monkeypatch, x, a, DECONV, w))
    if x.size * w.shape[1] <= 64:
        want = DECONV.scalar([Ref.from_array(x), Ref.from_array(w)], a).to_array()
        assert np.array_equal(got, want)


def test_the_fused_multiply_add_rounds_once():
    """ops/deconv32._fma and _fma_normal on products that put a*b + c just off a float32 tie,
    where rounding to float64 first lands on the tie and a second rounding to float32 goes the
    wrong way (hundreds of these among the cases; checked to occur), and on exact ties: the
    exact sum rounded once; c broadcast against the product too."""
    from fractions import Fraction
    from ops.deconv32 import _fma, _fma_normal
    f32 = np.float32
    k = np.arange(1, 400, dtype=np.float64)
    a = np.concatenate([1 + k * 2.0 ** -23, 1 - k * 2.0 ** -23]).astype(f32)
    b = (2.0 ** -24 * np.concatenate([1 - k * 2.0 ** -23, 1 + k * 2.0 ** -23])).astype(f32)
    a, b = np.concatenate([a, a, -a]), np.concatenate([b, b, b])
    c = np.repeat(np.array([1.0, 1 + 2.0 ** -23, 1 + 2.0 ** -23], f32), k.size * 2)
    exact = np.array([float(sf.sfl32(Fraction(float(x)) * Fraction(float(y)) +
                                     Fraction(float(z)))) for x, y, z in zip(a, b, c)], f32)
    twice = (a.astype(np.float64) * b.astype(np.float64) + c.astype(np.float64)).astype(f32)
    assert (twice != exact).sum() > 100                  # the cases do tie
    for fma in (_fma, _fma_normal):
        assert np.array_equal(fma(a.astype(np.float64), b.astype(np.float64), c), exact)
    ties = np.array([1 + 2.0 ** -24, -(1 + 3 * 2.0 ** -24), 2.0 ** -23], np.float64)
    one = np.ones(1, np.float64)                          # a*b exact, c = 0: RN32 of a tie
    assert np.array_equal(_fma_normal(ties, one, np.zeros(3, f32)), ties.astype(f32))
    column = c.reshape(-1, 1)[:4]                         # c broadcast over the products
    rows = np.broadcast_shapes(column.shape, a[:6].shape)
    want = np.array([[float(sf.sfl32(Fraction(float(x)) * Fraction(float(y)) +
                                     Fraction(float(z)))) for x, y in zip(a[:6], b[:6])]
                     for z in column[:, 0]], f32)
    got = _fma_normal(a[:6].astype(np.float64), b[:6].astype(np.float64), column)
    assert got.shape == rows and np.array_equal(got, want)


@pytest.mark.parametrize("lane_probe", [True, False])
def test_native_transposed_convolution_rows_spread_over_lanes(monkeypatch, lane_probe):
    """The row blocks of a large fp32 transposed convolution run on the plan's lanes when
    every lane's thread passes the float32 probe (else all on the calling thread): the bytes
    of the run on one thread either way."""
    import threading
    from ops import deconv32
    from ops.scratch import Lanes, Workspace, using
    from tests.cases.kernels import _float32
    rng = np.random.default_rng(7)
    c, m, side = 16, 16, 64                               # 4M multiply-adds: two lanes
    ws = [_float32(v) for v in rng.uniform(0.001, 0.01, m)]
    a = DECONV.check_attrs(dict(
        channels=m, kernel_size=(2, 2), strides=(2, 2), dilation=(1, 1), groups=1,
        crop_begin=[0, 0], crop_end=[0, 0], use_bias=False, zero_point=3, rounding="fp32",
        x_scale=_float32(0.02), w_mantissa=[v for v, _ in ws], w_exponent=[e for _, e in ws],
        y_scale=_float32(0.017884752), y_zero_point=5, qmin=-128, qmax=127))
    x = rng.integers(-128, 128, (1, c, side, side)).astype(np.int16)
    w = rng.integers(-127, 128, (c, m, 2, 2)).astype(np.int16)
    alone = DECONV.kernel(np, x, w, **a)
    main, seen = threading.get_ident(), set()
    probe = sf.native_float32

    def lane_probe_result():
        seen.add(threading.get_ident())
        return probe() and (lane_probe or threading.get_ident() == main)
    monkeypatch.setattr(sf, "native_float32", lane_probe_result)
    lanes = Lanes(2)
    try:
        with using(Workspace(), lanes):
            assert deconv32._native_lanes(1 << 22) == (2 if lane_probe else 1)
            spread = DECONV.kernel(np, x, w, **a)
    finally:
        lanes.close()
    assert len(seen) == 2 and np.array_equal(spread, alone)


def test_the_integer_square_root_corrects_the_float64_root():
    """ops.norm's floor(sqrt(m)) for 0 <= m < 2^62 (qnorm's radicands): squares k^2 and
    k^2 - 1 (where float64's root rounds up to k), k^2 + 1, up to 2^62 - 1: math.isqrt's."""
    from math import isqrt
    from ops.norm import _isqrt_xp
    k = np.unique(np.concatenate([np.arange(0, 5000), np.geomspace(1, (1 << 31) - 1, 5000)
                                  .astype(np.int64), [(1 << 31) - 1]]))
    m = (k[:, None] * k[:, None] + np.array([-1, 0, 1])).reshape(-1)
    m = np.concatenate([m, [(1 << 62) - 1], np.random.default_rng(0).integers(0, 1 << 62,
                                                                               10000)])
    m = m[(m >= 0) & (m < 1 << 62)]
    assert _isqrt_xp(np, m).tolist() == [isqrt(int(v)) for v in m]
