"""IEEE-754 binary32 arithmetic on integers: the float32 steps of an imported kernel, named.

A runtime's float32 kernel (onnxruntime's QLinearSoftmax) computes with roundings that an
integer program can reproduce exactly: every float32 value is an integer pair (m, e), value
m * 2^e, and every operation is the exact result rounded to the nearest float32, ties to even
(``fl``). Three forms of each operation, which must agree:

* the scalar reference: exact rationals (``fractions.Fraction``) rounded by :func:`fl32`;
* the array kernels: int64 pairs, normalized (2^23 <= m < 2^24, or e = EMIN and m < 2^23:
  subnormal, or m = 0);
* the Z3 rules: the same integer steps as if-then-else chains over constant shifts.

Only non-negative values occur (exponentials and their sums), no overflow (callers bound it).
Products below 2^-126 are rounded as if the exponent range were unbounded; they only ever
feed a rounding to an integer, which gives 0 either way.
"""
from __future__ import annotations

from fractions import Fraction

from .base import bitlen
from .quant import _bitlen_xp as bitlen_xp, _round_shift_xp as round_shift_xp

EMIN = -149
"""Exponent of the smallest float32 (2^-149): the quantum of subnormals."""
BITS = 24
NEGLIGIBLE = 30
"""An addend 30 or more binades below the other is below a quarter of its ulp: it vanishes."""


# ---------------------------------------------------------------------------------------------
# Scalar reference (exact rationals)
# ---------------------------------------------------------------------------------------------

def fl32(x: Fraction) -> Fraction:
    """The float32 nearest to x >= 0, ties to even (subnormals included)."""
    if x == 0:
        return Fraction(0)
    exp = max(_floor_log2(x) - (BITS - 1), EMIN)
    quantum = Fraction(2) ** exp
    return round(x / quantum) * quantum           # Fraction rounds half to even


def _floor_log2(x: Fraction) -> int:
    k = x.numerator.bit_length() - x.denominator.bit_length()
    return k - 1 if Fraction(2) ** k > x else k


def value(m: int, e: int) -> Fraction:
    return m * Fraction(2) ** e


def split(x: Fraction) -> tuple[int, int]:
    """The normalized (m, e) of a float32 value x >= 0."""
    if x == 0:
        return 0, EMIN
    e = max(_floor_log2(x) - (BITS - 1), EMIN)
    m = x / Fraction(2) ** e
    assert m.denominator == 1 and m < 1 << BITS, "not a float32 value"
    return int(m), e


# ---------------------------------------------------------------------------------------------
# Array kernels: (m, e) int64 pairs
# ---------------------------------------------------------------------------------------------

def _round_bits(xp, s, e):
    """s * 2^e (s >= 2^23 or e = EMIN, s < 2^62) rounded to 24 significant bits, ties even."""
    t = xp.maximum(bitlen_xp(xp, s) - BITS, 0)
    m = round_shift_xp(xp, s, t, "half_even")
    carry = (m >> BITS).astype(xp.int64)            # rounded up to 2^24
    return m >> carry, e + t + carry


def add(xp, a, b):
    """fl(a + b) of normalized pairs."""
    (ma, ea), (mb, eb) = a, b
    first = ea >= eb
    m_hi, e_hi = xp.where(first, ma, mb), xp.where(first, ea, eb)
    m_lo, e_lo = xp.where(first, mb, ma), xp.where(first, eb, ea)
    d = e_hi - e_lo
    s = (m_hi << xp.minimum(d, NEGLIGIBLE)) + m_lo
    m, e = _round_bits(xp, s, e_lo)
    far = d >= NEGLIGIBLE
    return xp.where(far, m_hi, m), xp.where(far, e_hi, e)


def div_int(xp, n: int, b):
    """fl(n / b): an integer 1 <= n < 2^24 over a normal b (2^23 <= m_b < 2^24)."""
    mb, eb = b
    k = 50 - bitlen(n)                              # n * 2^k < 2^50, quotient in (2^25, 2^27)
    q = (n << k) // mb
    sticky = (q * mb != (n << k)).astype(xp.int64)
    t = 2 + (q >> 26)                               # bits above the 24 kept: 2 or 3
    m = q >> t
    rest = q - (m << t)
    half = xp.left_shift(xp.ones_like(t), t - 1)
    up = (rest > half) | ((rest == half) & ((sticky == 1) | ((m & 1) == 1)))
    m = m + up.astype(xp.int64)
    carry = (m >> BITS).astype(xp.int64)
    return m >> carry, t + carry - k - eb


def mul(xp, a, b):
    """fl(a * b) (products below 2^-126 not rounded as subnormals: see the module doc)."""
    (ma, ea), (mb, eb) = a, b
    return _round_bits(xp, ma * mb, ea + eb)


def to_int(xp, a, limit: int = 40):
    """The integer nearest to a = m * 2^e (ties to even); a < 2^(BITS + 1)."""
    m, e = a
    up = xp.left_shift(m, xp.maximum(e, 0))
    down = round_shift_xp(xp, m, xp.minimum(xp.maximum(-e, 0), limit), "half_even")
    return xp.where(e >= 0, up, down)


# ---------------------------------------------------------------------------------------------
# Z3 rules: the same steps on terms
# ---------------------------------------------------------------------------------------------

def _z3_shift_round(zx, v, t: int):
    """round_half_even(v / 2^t) for a term v >= 0 and a constant t >= 0."""
    if t == 0:
        return v
    q = zx.shr(v, t)
    rem, half = v - zx.shl(q, t), 1 << (t - 1)
    odd = q - zx.shl(zx.shr(q, 1), 1)
    return q + zx.ite(zx.Or(rem > half, zx.And(rem == half, odd == 1)), 1, 0)


def z3_round_bits(zx, s, e, top: int):
    """:func:`_round_bits` of a term 0 <= s < 2^top: a chain over s's bit length."""
    m_out, e_out = s, e
    for n in range(BITS + 1, top + 1):
        t = n - BITS
        m = _z3_shift_round(zx, s, t)
        carry = m >= (1 << BITS)
        m = zx.ite(carry, zx.shr(m, 1), m)
        wide = s >= (1 << (n - 1))
        m_out = zx.ite(wide, m, m_out)
        e_out = zx.ite(wide, e + t + zx.ite(carry, 1, 0), e_out)
    return m_out, e_out


def z3_add(zx, a, b):
    (ma, ea), (mb, eb) = a, b
    first = ea >= eb
    m_hi, e_hi = zx.ite(first, ma, mb), zx.ite(first, ea, eb)
    m_lo, e_lo = zx.ite(first, mb, ma), zx.ite(first, eb, ea)
    d = e_hi - e_lo
    shifted = zx.shl(m_hi, NEGLIGIBLE - 1)
    for k in range(NEGLIGIBLE - 2, -1, -1):
        shifted = zx.ite(d == k, zx.shl(m_hi, k), shifted)
    m, e = z3_round_bits(zx, shifted + m_lo, e_lo, BITS + NEGLIGIBLE)
    far = d >= NEGLIGIBLE
    return zx.ite(far, m_hi, m), zx.ite(far, e_hi, e)


def z3_div_int(zx, n: int, b):
    mb, eb = b
    k = 50 - bitlen(n)
    q = zx.tdiv(zx.num(n << k), mb)
    sticky = q * mb != (n << k)
    m_out, e_out = None, None
    for t in (2, 3):
        m = zx.shr(q, t)
        rest, half = q - zx.shl(m, t), 1 << (t - 1)
        odd = m - zx.shl(zx.shr(m, 1), 1)
        m = m + zx.ite(zx.Or(rest > half, zx.And(rest == half, zx.Or(sticky, odd == 1))), 1, 0)
        carry = m >= (1 << BITS)
        m, e = zx.ite(carry, zx.shr(m, 1), m), t + zx.ite(carry, 1, 0) - k - eb
        m_out = m if m_out is None else zx.ite(q >= (1 << 26), m, m_out)
        e_out = e if e_out is None else zx.ite(q >= (1 << 26), e, e_out)
    return m_out, e_out


def z3_mul(zx, a, b):
    (ma, ea), (mb, eb) = a, b
    return z3_round_bits(zx, ma * mb, ea + eb, 2 * BITS)


def z3_to_int(zx, a, limit: int = 40, top_exp: int = 1):
    """:func:`to_int` for a value below 2^(BITS + 1): exponents above ``top_exp`` excluded."""
    m, e = a
    out = zx.num(0)                                  # e <= -limit: below one half
    for k in range(limit - 1, 0, -1):
        out = zx.ite(e == -k, _z3_shift_round(zx, m, k), out)
    for k in range(0, top_exp + 1):
        out = zx.ite(e == k, zx.shl(m, k), out)
    return out
