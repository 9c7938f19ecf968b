"""Ground evaluation: Z3 computes an op's encoding on numerals, one operation at a time.

When every input of an instruction is a known numeral, its encoding (the op's ``z3`` rule) is a
*ground* term: a tree of Z3 operations over numerals. Z3 gives such a term exactly one value,
and that value is the bottom-up composition of the values of its operations (the semantics of
ground terms in SMT-LIB). :class:`EvalDomain` runs the op's rule in an arithmetic namespace
whose terms are :class:`V` values: every operation the rule performs — a namespace method such
as ``zx.shr`` or ``zx.ite``, or a Python operator on terms — is built as the same Z3 term over
numerals of the same sorts and rewritten by Z3's simplifier to a numeral (:func:`reduce`). Z3's
rewriter is sound (its result is equal to its input in every model), so the numeral is the
operation's unique value. Equal operations on equal numerals are rewritten once (memo): an
operation is a function of its arguments. Python only composes the numerals Z3 returns; it
never decides a value. An operation Z3 does not rewrite to a numeral (an integer division by
zero, which SMT-LIB leaves unspecified) raises :class:`NotGround`.
"""
from __future__ import annotations

import operator
import struct

import z3

BOOL = "bool"
"""The sort key of Boolean values; integers are keyed None, bit-vectors by their width."""
F32 = "f32"
"""The sort key of IEEE-754 binary32 values (their Python float, exactly)."""


class NotGround(Exception):
    """Z3 did not rewrite a ground operation to a numeral: its value is not determined."""


class OutOfSteps(Exception):
    """Z3's rewriter reached its step limit (``STEPS``) before a numeral: unknown."""


STEPS = 200_000_000
"""Rewrite steps allowed to one call of Z3's simplifier (deterministic, like an rlimit)."""


def simplify(t):
    """``z3.simplify`` within ``STEPS`` rewrite steps (else :class:`OutOfSteps`)."""
    try:
        return z3.simplify(t, max_steps=STEPS)
    except z3.Z3Exception as e:
        if "max. steps" in str(e):
            raise OutOfSteps(f"z3's rewriter stopped after {STEPS} steps") from None
        raise


class V:
    """A numeral of the rule's terms: the Python value ``v`` and its sort key ``s``."""

    __slots__ = ("v", "s", "e")

    def __init__(self, v, s, e: "EvalDomain"):
        self.v, self.s, self.e = v, s, e

    def __repr__(self) -> str:
        return f"V({self.v}, {self.s})"

    def __bool__(self):
        raise TypeError("a term of an encoding has no Python truth value")

    __hash__ = None


def _binary(name: str, fn, swap: bool = False):
    def method(self, other):
        a, b = (other, self) if swap else (self, other)
        return self.e.apply(name, fn, a, b)
    return method


for _name, _fn in (("add", operator.add), ("sub", operator.sub), ("mul", operator.mul),
                   ("truediv", operator.truediv), ("mod", operator.mod),
                   ("rshift", operator.rshift), ("lshift", operator.lshift),
                   ("and", operator.and_), ("or", operator.or_)):
    setattr(V, f"__{_name}__", _binary(_name, _fn))
    setattr(V, f"__r{_name}__", _binary(_name, _fn, swap=True))
for _name, _fn in (("lt", operator.lt), ("le", operator.le), ("gt", operator.gt),
                   ("ge", operator.ge), ("eq", operator.eq), ("ne", operator.ne)):
    setattr(V, f"__{_name}__", _binary(_name, _fn))
V.__neg__ = lambda self: self.e.apply("neg", operator.neg, self)


class EvalDomain:
    """The namespace ``base`` (verify/domains.py) evaluated on numerals by Z3 (module doc)."""

    def __init__(self, base, memo: dict | None = None):
        self.base, self.name = base, base.name
        self.memo = {} if memo is None else memo
        self._key = None if base.name == "int" else base.width
        self._terms: dict = {}
        self.rewrites = 0

    # -- numerals ----------------------------------------------------------------------------
    def num(self, v) -> V:
        return V(int(v), self._key, self)

    def lift(self, value: int) -> V:
        return V(value, self._key, self)

    def term(self, x):
        """The Z3 numeral of a value (ints stay ints: z3 coerces them like the rule's)."""
        if not isinstance(x, V):
            return x
        key = (x.v, x.s)
        t = self._terms.get(key)
        if t is None:
            t = (z3.BoolVal(x.v) if x.s == BOOL else z3.FPVal(x.v, z3.Float32()) if x.s == F32
                 else z3.IntVal(x.v) if x.s is None else z3.BitVecVal(x.v, x.s))
            self._terms[key] = t
        return t

    def apply(self, name: str, build, *args):
        """The value of ``build(*numerals)``, rewritten by Z3 (once per distinct arguments)."""
        key = (name, self._key) + tuple(_key(a) for a in args)
        hit = self.memo.get(key)
        if hit is None:
            hit = self.memo[key] = self._reduce(build(*[self._terms_of(a) for a in args]))
        return V(hit[0], hit[1], self)

    def _terms_of(self, a):
        if isinstance(a, (list, tuple)):
            return [self.term(x) for x in a]
        return self.term(a)

    def _reduce(self, t) -> tuple:
        self.rewrites += 1
        return reduce(t)

    # -- the namespace (verify/domains.py), each method one evaluated operation ---------------
    def _method(self, name: str, *args):
        return self.apply(name, getattr(self.base, name), *args)

    def shr(self, x, s):
        return self._method("shr", x, s)

    def shl(self, x, s):
        return self._method("shl", x, s)

    def tdiv(self, a, b):
        return self._method("tdiv", a, b)

    def store(self, t, bits):
        return self._method("store", t, bits)

    def load(self, t, bits):
        return self._method("load", t, bits)

    def to_wide(self, x):
        return self._method("to_wide", x)

    def ite(self, c, a, b):
        return self._method("ite", c, a, b)

    def max(self, a, b):
        return self._method("max", a, b)

    def min(self, a, b):
        return self._method("min", a, b)

    def clip(self, x, lo, hi):
        return self._method("clip", x, lo, hi)

    def abs(self, x):
        return self._method("abs", x)

    def flag(self, c):
        return self._method("flag", c)

    def sum(self, terms):
        terms = list(terms)
        return self.apply("sum", lambda ts: self.base.sum(ts), terms)

    def And(self, *args):
        return self.apply("And", lambda ts: z3.And(ts), _flat(args))

    def Or(self, *args):
        return self.apply("Or", lambda ts: z3.Or(ts), _flat(args))

    def Not(self, c):
        return self.apply("Not", z3.Not, c)

    def select(self, index, options):
        """The base namespace's clamped lookup at a numeral index: an entry of ``options``."""
        return self.base.select(self.term(index), options)

    def table(self, options):
        look = self.base.table([self.num(v) if isinstance(v, int) else v for v in options])
        return lambda index: look(self.term(index))

    def value(self, t) -> int | None:
        return t.v if isinstance(t, V) and t.s not in (BOOL, F32) else None

    @property
    def f32(self) -> "EvalFloat32":
        return EvalFloat32(self)

    def sort(self, bits=None):
        return self.base.sort(bits)

    def wide(self) -> "EvalDomain":
        return EvalDomain(self.base.wide(), self.memo)


class EvalFloat32:
    """The base namespace's float32 operations (verify/domains.py Float32), each evaluated on
    numerals by Z3 like every other operation."""

    def __init__(self, e: EvalDomain):
        self.e, self.base = e, e.base.f32

    def const(self, value):
        return V(float(value), F32, self.e)       # a float32 value: exact as a Python float

    def _op(self, name: str, *args):
        return self.e.apply("f32." + name, getattr(self.base, name), *args)

    def from_int(self, v):
        return self._op("from_int", v)

    def mul(self, a, b):
        return self._op("mul", a, b)

    def add(self, a, b):
        return self._op("add", a, b)

    def div(self, a, b):
        return self._op("div", a, b)

    def fma(self, a, b, c):
        return self._op("fma", a, b, c)

    def to_int_sat(self, a):
        return self._op("to_int_sat", a)


def _flat(args) -> list:
    if len(args) == 1 and isinstance(args[0], (list, tuple)):
        return list(args[0])
    return list(args)


def _key(a):
    if isinstance(a, V):
        return (a.v, a.s)
    if isinstance(a, (list, tuple)):
        return tuple(_key(x) for x in a)
    return a


def reduce(t) -> tuple:
    """(value, sort key) of the numeral Z3's simplifier rewrites the ground term ``t`` to."""
    r = simplify(t)
    if z3.is_true(r) or z3.is_false(r):
        return z3.is_true(r), BOOL
    if z3.is_int_value(r):
        return r.as_long(), None
    if z3.is_bv_value(r):
        return r.as_signed_long(), r.size()
    if z3.is_fp_value(r) and not r.isNaN():
        bits = simplify(z3.fpToIEEEBV(r)).as_long()
        return struct.unpack("<f", struct.pack("<I", bits))[0], F32
    raise NotGround(f"z3 leaves {_short(t)} as {_short(r)}")


def evaluate_at(template, names: list, rows, zx) -> list[int]:
    """The value of the term ``template`` for each row of numerals assigned to ``names``: Z3's
    model evaluator, given a model with exactly those assignments, evaluates the ground
    instance (one fresh model per row)."""
    out = []
    for row in rows:
        model = z3.Model()
        for name, value in zip(names, row):
            model.update_value(name, zx.num(int(value)))
        r = model.eval(template, model_completion=True)
        if z3.is_bv_value(r):
            out.append(r.as_signed_long())
        elif z3.is_int_value(r):
            out.append(r.as_long())
        else:
            raise NotGround(f"z3 evaluates {_short(template)} to {_short(r)}")
    return out


def reduce_all(terms: list, chunk: int = 4096) -> list[int]:
    """The integer values of many ground terms, rewritten together (shared subterms once)."""
    out = []
    for k in range(0, len(terms), chunk):
        part = terms[k:k + chunk]
        if len(part) == 1:
            out.append(reduce(part[0])[0])
            continue
        f = z3.Function("values", *[t.sort() for t in part], z3.IntSort())
        r = simplify(f(*part))
        for t, v in zip(part, r.children()):
            if z3.is_bv_value(v):
                out.append(v.as_signed_long())
            elif z3.is_int_value(v):
                out.append(v.as_long())
            else:
                raise NotGround(f"z3 leaves {_short(t)} as {_short(v)}")
    return out


def _short(t) -> str:
    text = str(t)
    return text if len(text) <= 120 else text[:117] + "..."
