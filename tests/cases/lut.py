"""Law-suite cases for ops/table.py (lut)."""
import hypothesis.strategies as st

from ops.base import bound, size_of

from . import Input, OpCase
from .elemwise import broadcast_pair, precs, shapes


@st.composite
def _argument(draw, shape, n: int):
    """A data input whose values mostly select a table row, some fall outside (clamped)."""
    p = draw(precs(1, 16))
    r = bound(p)
    low = draw(st.one_of(st.integers(-r - 2, r + 2), st.sampled_from([0, -128, -r])))
    if draw(st.booleans()):
        inside = st.integers(max(low, -r), min(low + n - 1, r)) if low <= r and low + n - 1 >= -r \
            else st.integers(-r, r)
        edge = st.sampled_from([-r, r, max(-r, min(r, low - 1)), max(-r, min(r, low + n))])
        values = [draw(st.one_of(inside, inside, edge)) for _ in range(size_of(shape))]
        return Input(shape, p, values), low
    return Input(shape, p), low


@st.composite
def _table(draw, shape):
    """A table of any precision; its entries from a seeded generator (tables are long)."""
    p = draw(precs(1, 32))
    r, rng = bound(p), draw(st.randoms(use_true_random=False))
    return Input(shape, p, [rng.choice((-r, r, 0, rng.randint(-r, r)))
                            for _ in range(size_of(shape))])


@st.composite
def lut(draw):
    sides = st.one_of(st.integers(1, 6), st.sampled_from([16, 256]))
    if draw(st.booleans()):
        n = draw(sides)
        a, low = draw(_argument(draw(shapes()), n))
        return OpCase([draw(_table((n,))), a], dict(low=[low]))
    n, m = draw(sides), draw(sides)
    m = m if n * m <= 4096 else 16                 # the 256 x 256 form: tests/test_lut.py
    sa, sb = draw(broadcast_pair())
    (a, low_a), (b, low_b) = draw(_argument(sa, n)), draw(_argument(sb, m))
    return OpCase([draw(_table((n, m))), a, b], dict(low=[low_a, low_b]))


CASES = {"lut": lut()}
