"""Law-suite cases for ops/quant.py and ops/pool.py."""
import hypothesis.strategies as st

from ops.base import bound, size_of

from . import Input, OpCase, shapes
from .nn import conv2d, dense

ZERO_POINTS = st.one_of(st.integers(-300, 300), st.sampled_from([0, 128, -128, 255, 1 << 16]))


@st.composite
def quantized(draw, base, data_precision: int, weight_precision: int):
    """A case of ``base`` (conv2d / dense) as its q-op: data precision up to
    ``data_precision``, weights up to ``weight_precision``, a zero point."""
    case = draw(base())
    case.inputs[0].precision = draw(st.integers(1, data_precision))
    case.inputs[1].precision = draw(st.integers(1, weight_precision))
    case.attrs["zero_point"] = draw(ZERO_POINTS)
    return case


def _ties(p: int, shift: int, zin: int, n: int):
    """n values of precision p whose product with multiplier 1 falls on or next to a tie."""
    r, half = bound(p), (1 << (shift - 1)) if shift else 0
    pool = [v + zin for k in range(-4, 5) for v in (k * half, k * half + 1, k * half - 1)]
    pool = [v for v in pool if abs(v) <= r] or [0]
    return st.lists(st.sampled_from(pool), min_size=n, max_size=n)


@st.composite
def requantize(draw):
    shape = draw(shapes(1, 4))
    p0 = draw(st.one_of(st.integers(1, 32), st.sampled_from([9, 24, 25, 31, 32])))
    rounding = draw(st.sampled_from(["half_even", "half_up", "fp32"]))
    top = (1 << 24) - 1 if rounding == "fp32" else (1 << 31) - 1
    axis = draw(st.integers(0, len(shape) - 1))
    n = draw(st.sampled_from([1, shape[axis]]))
    mult = st.one_of(st.integers(0, top), st.sampled_from([1, top, 1 << 23, (1 << 24) - 1]))
    multiplier = draw(st.lists(mult, min_size=n, max_size=n))
    shift = draw(st.lists(st.one_of(st.integers(0, 62), st.sampled_from([0, 1, 31, 62])),
                          min_size=n, max_size=n))
    qmin, qmax = sorted(draw(st.lists(st.one_of(st.integers(-300, 300),
                                                st.sampled_from([-128, 127, 0, 255])),
                                      min_size=2, max_size=2)))
    zin, zp = draw(ZERO_POINTS), draw(st.integers(-300, 300))
    x = Input(shape, p0)
    if n == 1 and draw(st.booleans()):
        multiplier = [1]
        x.values = draw(_ties(p0, shift[0], zin, size_of(shape)))
    return OpCase([x], dict(multiplier=multiplier, shift=shift, axis=axis, zero_point_in=zin,
                            zero_point=zp, qmin=qmin, qmax=qmax, rounding=rounding))


@st.composite
def sum_pool2d(draw):
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))
    h, w = draw(st.integers(max(1, kh - 2 * ph), 6)), draw(st.integers(max(1, kw - 2 * pw), 6))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 3)), h, w)
    return OpCase([Input(shape, draw(st.integers(1, 16)))],
                  dict(pool_size=(kh, kw), strides=(draw(st.integers(1, 3)),
                                                    draw(st.integers(1, 3))),
                       padding=(ph, pw), zero_point=draw(ZERO_POINTS),
                       count_include_pad=draw(st.booleans())))


@st.composite
def pad(draw):
    shape = draw(shapes(1, 4, 1, 3))
    mode = draw(st.sampled_from(["constant", "edge", "reflect"]))
    hi = [d - 1 if mode == "reflect" else 3 for d in shape]
    pads = [draw(st.integers(0, h)) for h in hi] + [draw(st.integers(0, h)) for h in hi]
    value = draw(st.one_of(st.integers(-300, 300), st.sampled_from([0, (1 << 31) - 1])))
    return OpCase([Input(shape, draw(st.integers(1, 32)))],
                  dict(pads=pads, value=value, mode=mode))


@st.composite
def argmax(draw):
    shape = draw(shapes(1, 4))
    x = Input(shape, draw(st.integers(1, 32)))
    if x.precision > 1 and draw(st.booleans()):        # many ties
        x.values = draw(st.lists(st.integers(-1, 1), min_size=size_of(shape),
                                 max_size=size_of(shape)))
    return OpCase([x], dict(axis=draw(st.integers(-len(shape), len(shape) - 1)),
                            keepdims=draw(st.booleans()),
                            select_last_index=draw(st.booleans())))


CASES = {"qconv2d": quantized(conv2d, 10, 9), "qdense": quantized(dense, 16, 10), "requantize": requantize(),
         "sum_pool2d": sum_pool2d(), "pad": pad(), "argmax": argmax()}
