"""Law-suite cases for ops/elemwise.py and ops/broadcast.py."""
import hypothesis.strategies as st

from ops.base import bound, size_of

from . import Input, OpCase, shapes

INT31 = (1 << 31) - 1


def precs(lo=1, hi=32):
    """Precisions in [lo, hi] with the edges (1, 8, 9, 16, 31, 32 when inside) over-drawn."""
    edges = [p for p in (1, 8, 9, 16, 31, 32) if lo <= p <= hi] or [lo]
    return st.one_of(st.integers(lo, hi), st.sampled_from(edges))


@st.composite
def unary(draw, p_hi=32):
    return OpCase([Input(draw(shapes()), draw(precs(1, p_hi)))])


@st.composite
def same_shape_binary(draw):
    shape = draw(shapes())
    return OpCase([Input(shape, draw(precs(1, 31))), Input(shape, draw(precs(1, 31)))])


@st.composite
def clip(draw):
    bounds = st.one_of(st.integers(-INT31, INT31), st.integers(-300, 300),
                       st.sampled_from([-INT31, INT31, -127, 127, -126, 126, 0, 1, -1]))
    a_min, a_max = draw(bounds), draw(bounds)
    a_min, a_max = min(a_min, a_max), max(a_min, a_max)
    if a_min == a_max:
        a_min, a_max = (a_min, a_max + 1) if a_max < INT31 else (a_min - 1, a_max)
    return OpCase([Input(draw(shapes()), draw(precs()))], dict(a_min=a_min, a_max=a_max))


@st.composite
def cvm_clip(draw):
    return OpCase([Input(draw(shapes()), draw(precs()))],
                  dict(precision=draw(precs()), is_sign=draw(st.booleans())))


@st.composite
def cvm_left_shift(draw):
    p0 = draw(precs(1, 31))
    shift = draw(st.one_of(st.integers(1, 32 - p0), st.just(32 - p0)))
    return OpCase([Input(draw(shapes()), p0)], dict(precision=draw(precs()), shift_bit=shift))


@st.composite
def cvm_right_shift(draw):
    shape = draw(shapes())
    p0 = draw(precs())
    shift = draw(st.one_of(st.integers(1, 32), st.sampled_from([1, 2, 30, 31, 32])))
    x = Input(shape, p0)
    if draw(st.booleans()):          # half-way points (ties) and their neighbours
        r, half = bound(p0), 1 << (shift - 1)
        pool = [v for k in range(-3, 4) for v in (k * half, k * half + 1, k * half - 1)
                if abs(v) <= r] or [0]
        x = Input(shape, p0, values=[draw(st.sampled_from(pool)) for _ in range(size_of(shape))])
    return OpCase([x], dict(precision=draw(precs()), shift_bit=shift))


@st.composite
def broadcast_pair(draw):
    """Two shapes that broadcast: suffixes of one output shape with some dims set to 1."""
    out = draw(shapes(max_dims=4))

    def operand():
        k = draw(st.integers(1, len(out)))
        return tuple(1 if draw(st.booleans()) and draw(st.booleans()) else d for d in out[-k:])

    a, b = operand(), operand()
    if draw(st.booleans()):
        a, b = b, a
    return a, b


@st.composite
def broadcast(draw, p_hi=31, total=None, zero_divisors=False):
    a, b = draw(broadcast_pair())
    p0 = draw(precs(1, p_hi))
    p1 = draw(precs(1, min(p_hi, total - p0) if total else p_hi))
    y = Input(b, p1)
    if zero_divisors and draw(st.booleans()):     # many zeros, and small divisors
        r = bound(p1)
        y = Input(b, p1, values=[draw(st.sampled_from(sorted({0, 0, min(1, r), -min(1, r),
                                                              min(2, r), -min(2, r), r, -r})))
                                 for _ in range(size_of(b))])
    return OpCase([Input(a, p0), y])


CASES = {
    "abs": unary(), "negative": unary(), "cvm_precision": unary(),
    "elemwise_add": same_shape_binary(), "elemwise_sub": same_shape_binary(),
    "clip": clip(), "cvm_clip": cvm_clip(),
    "cvm_left_shift": cvm_left_shift(), "cvm_right_shift": cvm_right_shift(),
    "broadcast_add": broadcast(), "broadcast_sub": broadcast(),
    "broadcast_mul": broadcast(p_hi=31, total=32),
    "broadcast_div": broadcast(p_hi=32, zero_divisors=True),
    "broadcast_max": broadcast(p_hi=32), "broadcast_greater": broadcast(p_hi=32),
}
