"""Arithmetic namespaces for the ops' ``z3`` rules (the ``zx`` argument, like ``xp`` for kernels).

An op's Z3 rule is ``z3(zx, *tensors, **attrs)``: tensors are :class:`ops.base.Ref` whose
``data`` are Z3 terms, and every operation that is not ``+ - *`` or a comparison goes through
``zx``. Two namespaces implement the same integer semantics:

* :class:`IntDomain` (``"int"``): unbounded mathematical integers (linear integer arithmetic
  whenever one factor of every product is a numeral). Used where bounds are proven: there it is
  exact, because every proven intermediate lies far inside int64.
* :class:`BVDomain` (``"bv"``): two's-complement bit-vectors of ``width`` bits (64: numpy's
  int64 kernels) with signed comparisons, arithmetic shifts and truncating division, i.e. the
  exact machine behaviour, wrap-around included. :meth:`BVDomain.store` narrows a value to its
  storage width exactly like ``astype(int8/int32)``.

``wide()`` gives a namespace able to hold exact products of two values (NMS areas); for ints
it is the same namespace.
"""
from __future__ import annotations

import threading

import z3

# z3 objects release their terms from Python's __del__, in whatever thread drops them; let the
# shared context take those releases from any thread. Everything else that builds or solves
# terms holds Z3_LOCK: formal runs and loads, certify, check_certificate.
z3.Z3_enable_concurrent_dec_ref(z3.main_ctx().ref())
Z3_LOCK = threading.RLock()
"""z3's Python API shares one context per process: one user at a time (re-entrant)."""

SEED = 0
"""Every solver is created with this seed (and a resource limit): results are deterministic."""


def _coerce(zx, v):
    return zx.num(v) if isinstance(v, int) else v


class _Common:
    """Operations shared by both namespaces (built from the sort-specific primitives)."""

    def ite(self, c, a, b):
        """``a`` if ``c`` else ``b``."""
        return z3.If(c, _coerce(self, a), _coerce(self, b))

    def max(self, a, b):
        a, b = _coerce(self, a), _coerce(self, b)
        return z3.If(a >= b, a, b)

    def min(self, a, b):
        a, b = _coerce(self, a), _coerce(self, b)
        return z3.If(a <= b, a, b)

    def clip(self, x, lo: int, hi: int):
        """min(max(x, lo), hi) for integer constants lo <= hi."""
        return self.min(self.max(x, lo), hi)

    def abs(self, x):
        return z3.If(x >= 0, x, -x)

    def flag(self, c):
        """1 if ``c`` else 0."""
        return z3.If(c, self.num(1), self.num(0))

    def sum(self, terms):
        """The exact sum of ``terms`` (0 for none)."""
        terms = list(terms)
        if not terms:
            return self.num(0)
        return terms[0] if len(terms) == 1 else z3.Sum(terms)

    def select(self, index, options):
        """options[clip(index, 0, n - 1)]: a clamped lookup (take, cvm_lut)."""
        known = self.value(index)
        if known is not None:
            return options[min(max(known, 0), len(options) - 1)]
        out = options[-1]
        for k in range(len(options) - 2, -1, -1):
            out = z3.If(index <= k if k == 0 else index == k, options[k], out)
        return out

    def table(self, options):
        """The clamped lookup ``index -> options[clip(index, 0, n - 1)]`` for many indices into
        one long table (lut): a numeral index reads its entry; any other index selects from
        a Z3 array built once (an if-then-else chain per index would be as long as the
        table)."""
        options, n, array = list(options), len(options), []

        def look(index):
            known = self.value(index)
            if known is not None:
                return _coerce(self, options[min(max(known, 0), n - 1)])
            if not array:
                array.append(self._array(options))
            return z3.Select(array[0], self.clip(index, 0, n - 1))
        return look

    def _array(self, options):
        out = z3.K(self.sort(), _coerce(self, options[-1]))
        for k, v in enumerate(options[:-1]):
            out = z3.Store(out, self.num(k), _coerce(self, v))
        return out

    And, Or, Not = staticmethod(z3.And), staticmethod(z3.Or), staticmethod(z3.Not)


class Float32:
    """IEEE-754 binary32 arithmetic on Z3's floating-point theory, rounding to nearest even,
    for the rules of ops that reproduce a float32 kernel (qconv2d_transpose rounding=fp32):
    values enter from the domain's integers and leave as integers."""

    def __init__(self, zx):
        self.zx, self.sort, self.rm = zx, z3.Float32(), z3.RNE()

    def const(self, value):
        """A float32 constant (a Fraction that is exactly a float32 value)."""
        return z3.FPVal(float(value), self.sort)

    def from_int(self, v):
        return self.zx._int_to_fp(_coerce(self.zx, v), self.rm, self.sort)

    def mul(self, a, b):
        return z3.fpMul(self.rm, a, b)

    def add(self, a, b):
        return z3.fpAdd(self.rm, a, b)

    def div(self, a, b):
        return z3.fpDiv(self.rm, a, b)

    def fma(self, a, b, c):
        return z3.fpFMA(self.rm, a, b, c)

    def to_int_sat(self, a, limit: int = 1 << 31):
        """The integer nearest to ``a`` (ties to even), saturated to +-limit."""
        r = z3.fpRoundToIntegral(self.rm, a)
        hi, lo = self.const(limit), self.const(-limit)
        return z3.If(z3.fpGEQ(r, hi), self.zx.num(limit),
                     z3.If(z3.fpLEQ(r, lo), self.zx.num(-limit), self.zx._fp_to_int(r)))


class IntDomain(_Common):
    """Mathematical integers (SMT-LIB Int)."""

    name = "int"

    def num(self, v: int):
        return z3.IntVal(int(v))

    def var(self, name: str, bits: int | None = None):
        return z3.Int(name)

    def shr(self, x, s: int):
        """floor(x / 2**s) (an arithmetic right shift)."""
        return x / (1 << s)          # SMT-LIB div: floor for a positive divisor

    def shl(self, x, s: int):
        return x * (1 << s)

    def tdiv(self, a, b):
        """a / b truncated toward zero (b != 0; the value for b == 0 is unspecified)."""
        q = self.abs(a) / self.abs(b)
        return z3.If((a >= 0) == (b >= 0), q, -q)

    def value(self, t) -> int | None:
        """The Python int of a numeral term, else None."""
        return t.as_long() if z3.is_int_value(t) else None

    def store(self, term, bits: int):
        """The value as held in a ``bits``-wide storage slot: unchanged (exact integers)."""
        return term

    def load(self, term, bits: int | None):
        return term

    def sort(self, bits: int | None = None):
        return z3.IntSort()

    @property
    def f32(self) -> Float32:
        return Float32(self)

    @staticmethod
    def _int_to_fp(v, rm, sort):
        return z3.fpToFP(rm, z3.ToReal(v), sort)

    @staticmethod
    def _fp_to_int(r):
        return z3.ToInt(z3.fpToReal(r))

    def wide(self) -> "IntDomain":
        return self

    def to_wide(self, x):
        return x


class BVDomain(_Common):
    """Signed two's-complement bit-vectors of ``width`` bits (machine arithmetic)."""

    name = "bv"

    def __init__(self, width: int = 64):
        self.width = width

    def num(self, v: int):
        return z3.BitVecVal(int(v), self.width)

    def var(self, name: str, bits: int | None = None):
        return z3.BitVec(name, bits or self.width)

    def shr(self, x, s: int):
        return x >> s                # bvashr: arithmetic

    def shl(self, x, s: int):
        return x << s

    def tdiv(self, a, b):
        return a / b                 # bvsdiv truncates toward zero

    def value(self, t) -> int | None:
        return t.as_signed_long() if z3.is_bv_value(t) else None

    def store(self, term, bits: int):
        """The low ``bits`` bits (numpy's astype to a narrower signed integer type)."""
        return term if bits == self.width else z3.Extract(bits - 1, 0, term)

    def load(self, term, bits: int | None):
        """A ``bits``-wide stored value sign-extended to the working width."""
        if bits is None or bits == self.width:
            return term
        return z3.SignExt(self.width - bits, term)

    def sort(self, bits: int | None = None):
        return z3.BitVecSort(bits or self.width)

    @property
    def f32(self) -> Float32:
        return Float32(self)

    @staticmethod
    def _int_to_fp(v, rm, sort):
        return z3.fpSignedToFP(rm, v, sort)

    def _fp_to_int(self, r):
        return z3.fpToSBV(z3.RTZ(), r, z3.BitVecSort(self.width))

    def wide(self) -> "BVDomain":
        return BVDomain(2 * self.width + 8)

    def to_wide(self, x):
        return z3.SignExt(self.width + 8, x)


def domain(name: str):
    """The namespace called ``name``: ``"int"`` or ``"bv"`` (64-bit)."""
    if name == "int":
        return IntDomain()
    if name == "bv":
        return BVDomain(64)
    raise ValueError(f"unknown formal domain {name!r} (int or bv)")


def solver(rlimit: int = 50_000_000, timeout_s: float | None = None) -> z3.Solver:
    """A solver with the pinned seed and deterministic resource limit (``timeout_s`` is an
    extra wall-clock guard: hitting it gives ``unknown``, never a wrong answer)."""
    s = z3.Solver()
    s.set("random_seed", SEED)
    s.set("rlimit", rlimit)
    if timeout_s:
        s.set("timeout", int(timeout_s * 1000))
    return s


def as_int(term) -> int:
    """The Python int of a (simplified) numeral of either sort (bit-vectors read signed)."""
    if z3.is_bv_value(term):
        return term.as_signed_long()
    if z3.is_int_value(term):
        return term.as_long()
    raise ValueError(f"not a numeral: {term}")
