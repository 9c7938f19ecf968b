"""The ops of imported models (ops/quant.py, ops/pool.py) against independent oracles: numpy
float32 arithmetic for requantize's fp32 rounding, exact rationals for half_even, numpy's pad
and argmax; and a whole quantized program through every executor and the certificate."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import ops
import vm
from compiler import Builder, disassemble, parse
from ops.pool import pool_lcm
from ops.quant import requantize_value

RQ = ops.get("requantize")


def fp32_pair(scale: np.float32) -> tuple[int, int]:
    m, e = np.frexp(np.float64(scale))
    return int(m * (1 << 24)), 24 - int(e)


def test_fp32_rounding_is_numpy_float32_bit_for_bit():
    """round(fl32(fl32(x) * scale)) with ties to even, clamped: ORT's requantize."""
    rng = np.random.default_rng(0)
    for _ in range(300):
        scale = np.float32(rng.uniform(1e-6, 0.5))
        m, s = fp32_pair(scale)
        x = np.concatenate([rng.integers(-(1 << 31) + 1, 1 << 31, 200),
                            rng.integers(-(1 << 20), 1 << 20, 200)]).astype(np.int32)
        want = np.clip(np.rint(x.astype(np.float32) * scale), -300, 300)
        attrs = RQ.check_attrs(dict(multiplier=[m], shift=[s], qmin=-300, qmax=300,
                                    rounding="fp32"))
        assert np.array_equal(RQ.kernel(np, x, **attrs), want.astype(np.int64))


@pytest.mark.parametrize("rounding", ["half_even", "half_up"])
def test_fixed_point_rounding_is_exact_rational_rounding(rounding):
    rng = np.random.default_rng(1)
    for _ in range(50):
        m, s = int(rng.integers(1, 1 << 31)), int(rng.integers(0, 63))
        a = RQ.check_attrs(dict(multiplier=[m], shift=[s], zero_point_in=-7, zero_point=3,
                                qmin=-(1 << 31) + 1, qmax=(1 << 31) - 1, rounding=rounding))
        for x in rng.integers(-(1 << 31) + 1, 1 << 31, 20).tolist() + [7, 8, 6]:
            exact = Fraction((x + 7) * m, 1 << s)
            want = round(exact) if rounding == "half_even" else int(np.floor(exact + Fraction(1, 2)))
            want = min(max(want + 3, a["qmin"]), a["qmax"])
            assert requantize_value(x, m, s, a) == want


def test_half_even_ties():
    a = RQ.check_attrs(dict(multiplier=[1], shift=[1], qmin=-100, qmax=100))
    got = RQ.kernel(np, np.array([-5, -3, -1, 1, 3, 5], np.int32), **a)
    assert got.tolist() == [-2, -2, 0, 0, 2, 2]


def test_sum_pool_is_the_average_numerator():
    """Y / L is the exact average over the in-range cells (count_include_pad off)."""
    op = ops.get("sum_pool2d")
    x = np.arange(1, 26, dtype=np.int32).reshape(1, 1, 5, 5)
    a = op.check_attrs(dict(pool_size=3, strides=2, padding=1, zero_point=1))
    lcm = pool_lcm(x.shape, a)
    y = op.kernel(np, x, **a)
    xs = np.pad(x[0, 0].astype(float) - 1, 1, constant_values=np.nan)
    for p in range(3):
        for q in range(3):
            window = xs[2 * p:2 * p + 3, 2 * q:2 * q + 3]
            assert Fraction(int(y[0, 0, p, q]), lcm) == Fraction(
                int(np.nansum(window)), int(np.sum(~np.isnan(window))))


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 4),
       st.integers(-300, 300), st.booleans(), st.integers(0, 2 ** 32 - 1))
def test_whole_plane_sum_pool_is_the_reference(n, h, w, c, zp, include_pad, seed):
    """A window that is the whole unpadded plane (global average pooling) takes one reduction
    on numpy: the same values as the reference executor."""
    b = Builder("global-pool")
    x = b.input("x", (n, c, h, w), 12)
    b.output(b.sum_pool2d(x, pool_size=(h, w), strides=(1 + seed % 3, 1), padding=0,
                          zero_point=zp, count_include_pad=include_pad))
    program = b.build()
    feeds = {"x": np.random.default_rng(seed).integers(-2047, 2048, (n, c, h, w))}
    got = vm.load(program, vm.cpu(backend="numpy")).run(feeds)
    want = vm.load(program, vm.reference()).run(feeds)
    assert got.keys() == want.keys() and all(got[k].tobytes() == want[k].tobytes() for k in got)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9), st.integers(1, 5), st.integers(0, 8),
       st.integers(1, 40), st.integers(1, 9), st.integers(1, 5), st.integers(0, 8))
def test_pool_lcm_is_the_lcm_of_every_window_count(h, kh, sh, ph, w, kw, sw, pw):
    """The O(attributes) rule equals the lcm over the whole output (brute force)."""
    assume(ph < kh and pw < kw and h + 2 * ph >= kh and w + 2 * pw >= kw)
    a = dict(pool_size=(kh, kw), strides=(sh, sw), padding=(ph, pw), count_include_pad=False)
    count = lambda o, size, k, s, p: min(o * s - p + k, size) - max(o * s - p, 0)
    rows = [count(o, h, kh, sh, ph) for o in range((h + 2 * ph - kh) // sh + 1)]
    cols = [count(o, w, kw, sw, pw) for o in range((w + 2 * pw - kw) // sw + 1)]
    assert pool_lcm((1, 1, h, w), a) == math.lcm(*(r * c for r in rows for c in cols))


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect"])
def test_pad_matches_numpy(mode):
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    op = ops.get("pad")
    a = op.check_attrs(dict(pads=[1, 2, 2, 1], value=-9, mode=mode))
    kw = {"constant_values": -9} if mode == "constant" else {}
    assert np.array_equal(op.kernel(np, x, **a), np.pad(x, ((1, 2), (2, 1)), mode=mode, **kw))


def test_argmax_first_and_last():
    op = ops.get("argmax")
    x = np.array([[1, 5, 5, 0], [2, 2, 2, 2]], np.int8)
    first = op.kernel(np, x, **op.check_attrs(dict(axis=1, keepdims=False)))
    last = op.kernel(np, x, **op.check_attrs(dict(axis=-1, select_last_index=True)))
    assert first.tolist() == [1, 0] and last.tolist() == [[2], [3]]


def quantized_program(rounding: str):
    """qconv2d - requantize (per channel) - sum_pool2d - requantize - pad - qdense - argmax."""
    rng = np.random.default_rng(0)
    b = Builder(f"q-{rounding}")
    x = b.input("x", (1, 2, 6, 6), 9)
    y = b.qconv2d(x, b.const("w", rng.integers(-127, 128, (4, 2, 3, 3)), precision=8),
                  b.const("b", rng.integers(-2000, 2000, (4,))), channels=4, kernel_size=3,
                  padding=1, zero_point=128)
    y = b.requantize(y, multiplier=[(1 << 23) + k for k in range(4)], shift=[33, 34, 35, 36],
                     zero_point=-128, qmin=-128, qmax=127, rounding=rounding)
    y = b.sum_pool2d(y, pool_size=3, strides=2, padding=1, zero_point=-128)
    y = b.requantize(y, multiplier=[12345], shift=[20], qmin=-128, qmax=127, rounding=rounding)
    y = b.flatten(b.pad(y, pads=[0, 0, 1, 1, 0, 0, 1, 1], value=-128))
    y = b.qdense(y, b.const("w2", rng.integers(-127, 128, (5, 100)), precision=8), units=5,
                 use_bias=False, zero_point=-128)
    return b.output(y, b.argmax(y, axis=1, keepdims=False)).build()


@pytest.mark.parametrize("rounding", ["half_even", "fp32"])
def test_quantized_program_on_every_executor_and_certified(rounding):
    import verify
    program = quantized_program(rounding)
    assert disassemble(parse(disassemble(program))) == disassemble(program)
    x = {"x": np.random.default_rng(1).integers(0, 256, (1, 2, 6, 6))}
    cpu = vm.load(program).run(x)
    contexts = [vm.reference()] + ([vm.formal()] if rounding == "half_even" else [])
    for ctx in contexts:              # (fp32's Z3 rule: tests/test_formal_encodings.py)
        other = vm.load(program, ctx).run(x)
        assert all(cpu[k].tobytes() == other[k].tobytes() for k in cpu)
    cert = verify.certify(vm.load(program))
    assert cert.proved, [(o.name, o.detail) for o in cert.obligations if o.status != "proved"]


def wide_bias_program(bias0: int, dense: bool = False):
    """A qconv2d (or qdense) whose per-tensor bound needs 33 bits: channel 0 has a bias near
    2^31 and weights of 1, channel 1 weights of 127 and no bias."""
    b = Builder("wide-bias")
    if dense:
        x = b.input("x", (2, 9), 9)
        w = b.const("w", np.array([[1] * 9, [127] * 9]), precision=8)
        y = b.qdense(x, w, b.const("b", np.array([bias0, 0])), units=2, zero_point=0)
    else:
        x = b.input("x", (1, 1, 3, 3), 9)
        w = b.const("w", np.array([1] * 9 + [127] * 9).reshape(2, 1, 3, 3), precision=8)
        y = b.qconv2d(x, w, b.const("b", np.array([bias0, 0])), channels=2, kernel_size=3,
                      zero_point=0)
    return b.output(y).build()


@pytest.mark.parametrize("dense", [False, True])
def test_constant_weights_bound_each_channel(dense):
    """9 * 255 * 127 + R(p32) needs 33 bits per tensor; per channel the widest sum is
    |bias0| + 9 * 255 * 1 (channel 0): 32 bits when that is below 2^31, else refused."""
    import verify
    top = (1 << 31) - 1 - 9 * 255
    program = wide_bias_program(top, dense)
    assert program.tensors[program.outputs[0]].precision == 32
    shape = program.tensors[0].shape
    x = {"x": np.full(shape, 255)}
    got = vm.load(program).run(x)[program.tensors[program.outputs[0]].name]
    assert got.reshape(-1)[0] == (1 << 31) - 1 and got.reshape(-1)[-1] == 9 * 255 * 127
    assert got.tobytes() == vm.load(program, vm.reference()).run(x)[
        program.tensors[program.outputs[0]].name].tobytes()
    cert = verify.certify(vm.load(program))
    assert cert.proved, [(o.name, o.detail) for o in cert.obligations if o.status != "proved"]
    with pytest.raises(vm.InvalidError, match="needs precision 33 > 32"):
        wide_bias_program(top + 1, dense)
