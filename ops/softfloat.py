"""IEEE-754 binary32 arithmetic on integers: the float32 steps of an imported kernel, named.

A runtime's float32 kernel (onnxruntime's QLinearSoftmax) computes with roundings that an
integer program can reproduce exactly: every float32 value is an integer pair (m, e), value
m * 2^e, and every operation is the exact result rounded to the nearest float32, ties to even
(``fl``). Three forms of each operation, which must agree:

* the scalar reference: exact rationals (``fractions.Fraction``) rounded by :func:`fl32`;
* the array kernels: int64 pairs, normalized (2^23 <= m < 2^24, or e = EMIN and m < 2^23:
  subnormal, or m = 0);
* the Z3 rules: the same integer steps as if-then-else chains over constant shifts.

The first helpers take non-negative values only (exponentials and their sums, qsoftmax); their
products below 2^-126 are rounded as if the exponent range were unbounded (they only ever feed
a rounding to an integer, which gives 0 either way). The signed helpers (``s`` prefix or
section "Signed values") handle any sign and subnormal results exactly: a float32 GEMM
(qconv2d_transpose's ``fp32`` rounding). No overflow in either (callers bound it).
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

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


def float32_of(m, e) -> np.ndarray:
    """The float32 values m * 2^e of (mantissa, exponent) pairs (scalars or sequences), exact:
    float64 holds m * 2^e exactly and the value is a float32."""
    return np.ldexp(np.asarray(m, np.float64), np.asarray(e, np.int64)).astype(np.float32)


def native_float32() -> bool:
    """Whether this thread's numpy float32 arithmetic is IEEE-754 binary32 as ``fl`` says:
    ties to even, subnormal operands and results kept (no flush- or denormals-to-zero, which a
    library may switch on in a thread's floating-point control register). Probed with the
    array loops the kernels use, on operands whose exact results are known."""
    with np.errstate(all="ignore"):
        tiny = np.array([2.0 ** -149, 2.0 ** -126], np.float32)
        sums = np.add(tiny, tiny)                       # denormals-are-zero: 0, 0
        halves = np.multiply(tiny, np.float32(0.5))     # flush-to-zero: 0; 2^-150: tie to 0
        ties = np.add(np.array([1.0, 1.0], np.float32),
                      np.array([2.0 ** -24, 3 * 2.0 ** -24], np.float32))
        quotient = np.divide(np.float32(1.0), np.array([3.0], np.float32))
    return sums.tolist() == [2.0 ** -148, 2.0 ** -125] and \
        halves.tolist() == [0.0, 2.0 ** -127] and \
        ties.tolist() == [1.0, 1.0 + 2.0 ** -22] and \
        quotient.tolist() == [11184811 * 2.0 ** -25]


# ---------------------------------------------------------------------------------------------
# Signed values: scalar reference and array kernels (signed int64 pairs, |m| < 2^24)
# ---------------------------------------------------------------------------------------------

def sfl32(x: Fraction) -> Fraction:
    """The float32 nearest to x (any sign), ties to even."""
    return -fl32(-x) if x < 0 else fl32(x)


def ssplit(x: Fraction) -> tuple[int, int]:
    """The normalized signed (m, e) of a float32 value."""
    m, e = split(abs(x))
    return (-m if x < 0 else m), e


WINDOW = 50
"""Bit of the larger addend's top in the exact sum window: every sum stays below 2^52."""
SATURATE = 1 << 31
""":func:`to_int_sat` saturates here (every quantized range lies within +-2^31)."""
NONE = -(1 << 40)
"""The top of zero (below every value's)."""


def small_bitlen(xp, a):
    """bitlen of an int64 array 0 <= a < 2^53, read from the exponent of its float64
    conversion (exact for integers below 2^53 on every IEEE-754 machine: an exact device, by
    that bound; frexp(0) gives 0)."""
    return xp.frexp(a.astype(xp.float64))[1].astype(xp.int64)


def normalize(xp, m, e):
    """fl(m * 2^e) for signed int64 m, |m| < 2^53: a normalized signed pair (subnormal results
    rounded to the 2^-149 quantum; zero is (0, EMIN))."""
    a = xp.abs(m)
    t = xp.maximum(small_bitlen(xp, a) - BITS, EMIN - e)
    r = xp.where(t <= 0, xp.left_shift(a, xp.clip(-t, 0, 62)),
                 round_shift_xp(xp, a, xp.clip(t, 0, 62), "half_even"))
    carry = xp.right_shift(r, BITS)                 # rounded up to 2^24
    r = xp.right_shift(r, carry)
    return xp.where(m < 0, -r, r), xp.where(r == 0, EMIN, e + t + carry)


def from_int(xp, v):
    """fl(v) of a signed int64 array, |v| < 2^53."""
    return normalize(xp, v, xp.zeros_like(v))


def _exact_sum(xp, a, b):
    """fl(a + b) for signed pairs with |m| < 2^48 (values or exact products): the larger
    addend's top placed at bit WINDOW, the smaller one aligned, its bits below the window
    jammed into one sticky bit (the sum then has >= 49 bits, so the jam lies far below the
    rounding position)."""
    (ma, ea), (mb, eb) = a, b
    aa, ab = xp.abs(ma), xp.abs(mb)
    la, lb = small_bitlen(xp, aa), small_bitlen(xp, ab)
    first = xp.where(aa == 0, NONE, ea + la) >= xp.where(ab == 0, NONE, eb + lb)
    a_hi, a_lo = xp.where(first, aa, ab), xp.where(first, ab, aa)
    neg_hi, neg_lo = xp.where(first, ma, mb) < 0, xp.where(first, mb, ma) < 0
    sh = WINDOW - xp.where(first, la, lb)
    top = xp.where(first, ea, eb) - sh
    hi = xp.left_shift(a_hi, sh)
    d = xp.where(first, eb, ea) - top
    r = xp.clip(-d, 0, 62)
    kept = xp.right_shift(a_lo, r)
    lo = xp.where(d >= 0, xp.left_shift(a_lo, xp.clip(d, 0, 62)),
                  kept | (xp.left_shift(kept, r) != a_lo))
    return normalize(xp, xp.where(neg_hi, -hi, hi) + xp.where(neg_lo, -lo, lo), top)


def fma_normal(xp, a, b, c):
    """:func:`fma` when no value of the computation is subnormal (a, b, c normal or zero, and
    so every partial result: the caller's proven condition), faster: the bit lengths follow
    from normality (a product has 47 or 48 bits, a value 24) and only sums that cancel below
    2^(WINDOW - 1) take the general rounding."""
    p, ep = a[0] * b[0], a[1] + b[1]
    ap, ac = xp.abs(p), xp.abs(c[0])
    lp = 47 + xp.right_shift(ap, 47)
    first = xp.where(ap == 0, NONE, ep + lp) >= xp.where(ac == 0, NONE, c[1] + BITS)
    a_hi, a_lo = xp.where(first, ap, ac), xp.where(first, ac, ap)
    neg_hi, neg_lo = xp.where(first, p, c[0]) < 0, xp.where(first, c[0], p) < 0
    top = xp.where(first, ep - (WINDOW - lp), c[1] - (WINDOW - BITS))
    hi = xp.left_shift(a_hi, xp.where(first, WINDOW - lp, WINDOW - BITS))
    d = xp.where(first, c[1], ep) - top
    r = xp.clip(-d, 0, 62)
    kept = xp.right_shift(a_lo, r)
    lo = xp.where(d >= 0, xp.left_shift(a_lo, xp.clip(d, 0, 62)),
                  kept | (xp.left_shift(kept, r) != a_lo))
    s = xp.where(neg_hi, -hi, hi) + xp.where(neg_lo, -lo, lo)
    mag = xp.abs(s)
    t = WINDOW - BITS + xp.right_shift(mag, WINDOW)          # mag in [2^(W-1), 2^(W+1))
    m = round_shift_xp(xp, mag, t, "half_even")
    carry = xp.right_shift(m, BITS)
    m = xp.right_shift(m, carry)
    m, e = xp.where(s < 0, -m, m), top + t + carry
    small = xp.nonzero(mag < (1 << (WINDOW - 1)))
    if small[0].size:                                        # cancellation: exact bit length
        m[small], e[small] = normalize(xp, s[small], top[small])
    return m, e


def sadd(xp, a, b):
    """fl(a + b) of signed pairs."""
    return _exact_sum(xp, a, b)


def smul(xp, a, b):
    """fl(a * b) of signed pairs."""
    return normalize(xp, a[0] * b[0], a[1] + b[1])


def fma(xp, a, b, c):
    """fl(a * b + c), one rounding (a fused multiply-add)."""
    return _exact_sum(xp, (a[0] * b[0], a[1] + b[1]), c)


def sdiv(xp, a, b):
    """fl(a / b) for a signed pair a over a positive normal pair b (2^23 <= m_b < 2^24)."""
    (ma, ea), (mb, eb) = a, b
    mag = xp.abs(ma)
    k = 50 - small_bitlen(xp, mag)                      # |m_a| * 2^k has 50 bits
    n = xp.left_shift(mag, xp.clip(k, 0, 50))
    q = n // mb                                      # 2^25 < q < 2^27
    s = xp.left_shift(q, 1) | (q * mb != n).astype(xp.int64)
    m, e = normalize(xp, xp.where(ma < 0, -s, s), ea - k - eb - 1)
    return xp.where(ma == 0, 0, m), xp.where(ma == 0, EMIN, e)


def to_int_sat(xp, a):
    """The integer nearest to a (ties to even), saturated to +-2^31."""
    m, e = a
    mag = xp.abs(m)
    up = xp.left_shift(mag, xp.clip(e, 0, 7))
    down = round_shift_xp(xp, mag, xp.clip(-e, 0, 62), "half_even")
    v = xp.where(e >= 8, SATURATE, xp.where(e >= 0, up, down))
    return xp.where(m < 0, -v, v)


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
