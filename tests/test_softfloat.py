"""ops/softfloat.py's signed float32 steps (qconv2d_transpose rounding=fp32) against exact
rationals rounded to float32: sums that cancel, ties, subnormal results, far exponents."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ops import softfloat as sf


def floats32(lo: int = -160, hi: int = 40):
    """Float32 values (zero, subnormal, normal) as Fractions."""
    return st.builds(lambda m, e: sf.sfl32(Fraction(m) * Fraction(2) ** e),
                     st.integers(-(1 << 24), 1 << 24), st.integers(lo, hi))


def pairs(values):
    split = [sf.ssplit(v) for v in values]
    return (np.array([m for m, _ in split], np.int64), np.array([e for _, e in split], np.int64))


def values(pair):
    return [Fraction(int(m)) * Fraction(2) ** int(e) for m, e in zip(*pair)]


triples = st.lists(st.tuples(floats32(), floats32(), floats32()), min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(triples, st.data())
def test_fma_add_mul_are_float32_roundings(rows, data):
    a, b, c = (list(t) for t in zip(*rows))
    near = data.draw(st.lists(st.integers(-3, 3), min_size=len(a), max_size=len(a)))
    c = [sf.sfl32(-x * y + k * Fraction(2) ** -60) if k else z     # cancellation
         for x, y, z, k in zip(a, b, c, near)]
    A, B, C = pairs(a), pairs(b), pairs(c)
    assert values(sf.fma(np, A, B, C)) == [sf.sfl32(x * y + z) for x, y, z in zip(a, b, c)]
    assert values(sf.sadd(np, A, C)) == [sf.sfl32(x + z) for x, z in zip(a, c)]
    assert values(sf.smul(np, A, B)) == [sf.sfl32(x * y) for x, y in zip(a, b)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(floats32(-60, 10), floats32(-60, 10), floats32(-100, 20)),
                min_size=1, max_size=40))
def test_fma_normal_equals_fma_without_subnormals(rows):
    a, b, c = (list(t) for t in zip(*rows))
    A, B, C = pairs(a), pairs(b), pairs(c)
    got, want = sf.fma_normal(np, A, B, C), sf.fma(np, A, B, C)
    assert values(got) == values(want) == [sf.sfl32(x * y + z) for x, y, z in zip(a, b, c)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(floats32(), floats32(-120, 30).filter(lambda v: v > 2 ** -126)),
                min_size=1, max_size=40),
       st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=20))
def test_division_rounding_to_integers_and_conversion(rows, ints):
    a, b = (list(t) for t in zip(*rows))
    got = values(sf.sdiv(np, pairs(a), pairs(b)))
    assert got == [sf.sfl32(x / y) for x, y in zip(a, b)]
    rounded = sf.to_int_sat(np, pairs(got))
    assert rounded.tolist() == [max(-sf.SATURATE, min(sf.SATURATE, round(v))) for v in got]
    assert values(sf.from_int(np, np.array(ints, np.int64))) == [sf.sfl32(Fraction(v))
                                                                 for v in ints]
