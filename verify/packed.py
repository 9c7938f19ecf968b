"""Linear ops on known inputs, checked by Z3 on packed integers (Kronecker substitution).

conv2d, dense, qconv2d and qdense compute, per group, a matrix product plus a bias:
``Y[r, q] = b[r] + sum_k W[r, k] * (X[k, q] - zp)`` (for a conv, X is the im2col matrix: row
k = (input channel, kernel row, kernel column), column q = (image, output row, output column);
a tap outside the input holds ``zp`` so that it contributes 0, exactly as the op's encoding
skips it). Z3 evaluates these sums on numerals without one term per product: a vector v of
integers becomes the single integer ``P(v) = sum_i v[i] * 2^(S*i)`` (slots of S bits), and,
for every row r, Z3 rewrites to ``true`` the ground equation

    sum_k W[r, k] * (P(X[k, :]) - zp * P(1)) + b[r] * P(1) == P(Y[r, :])

(or, when the matrix has fewer columns than rows, the same equation per column q with the roles
of W and X exchanged). Its left side is, by distributivity, ``sum_q c[q] * 2^(S*q)`` where c[q]
is the exact sum of products of output element (r, q). S is chosen so that every c[q] and every
candidate Y[r, q] lies strictly inside (-2^(S-1), 2^(S-1)); then the equation holds if and only
if c[q] == Y[r, q] for every q (``lemma:digits``: an integer d with |d| < 2^S and
d = -2^S * T is 0; by induction from the lowest slot). Z3 thus performs every multiplication
and addition of the op, inside its big-integer arithmetic. The candidate Y is the CPU kernel's
result: it is only a claim, accepted when Z3 confirms it.

Trusted here (tested against the op's own encoding on every law-suite case,
tests/test_formal_steps.py): the index map from the op's tensors to W, X, Y (im2col, groups,
the zero point's padding) and the transport of Python integers into Z3 numerals.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import z3

from ops.base import bitlen

from .domains import solver
from .ground import simplify

OPS = ("conv2d", "qconv2d", "dense", "qdense")
LEAF_SLOTS = 64
"""Slots per leaf numeral when a packed vector is transported into Z3."""
CLAIM_BYTES = 64 << 20
"""Bytes of big-integer intermediates one Z3 rewrite may hold (rows are checked in chunks)."""


@dataclass
class Product:
    """One group of a linear op: ``y = b + W @ (x - zp)`` with ``y`` the claimed result."""

    w: np.ndarray            # (R, K) int64
    x: np.ndarray            # (K, Q) int64, padding taps hold zp
    zp: int
    b: np.ndarray | None     # (R,) int64
    y: np.ndarray            # (R, Q) int64


def products(op: str, args: list, attrs: dict, y: np.ndarray) -> list[Product]:
    """The groups of ``op`` on known inputs ``args`` with the claimed result ``y``."""
    zp = int(attrs.get("zero_point", 0))
    x, w = (np.asarray(a, dtype=np.int64) for a in args[:2])
    b = np.asarray(args[2], dtype=np.int64) if len(args) > 2 else None
    y = np.asarray(y, dtype=np.int64)
    if op in ("dense", "qdense"):
        return [Product(w, x.T, zp, b, y.T)]
    groups, oc = attrs["groups"], w.shape[0]
    cols = _im2col(x, w.shape[2:], attrs, zp)                  # (N, C*KH*KW, P)
    n, p = cols.shape[0], cols.shape[2]
    k = w[0].size
    cols = cols.reshape(n, groups, k, p).transpose(1, 2, 0, 3).reshape(groups, k, n * p)
    ys = y.reshape(n, groups, oc // groups, p).transpose(1, 2, 0, 3).reshape(groups, -1, n * p)
    ws = w.reshape(groups, oc // groups, k)
    bs = b.reshape(groups, -1) if b is not None else [None] * groups
    return [Product(ws[g], cols[g], zp, bs[g], ys[g]) for g in range(groups)]


def _im2col(x: np.ndarray, kernel, attrs, zp: int) -> np.ndarray:
    """(N, C*KH*KW, OH*OW): row (c, r, s), column (p, q) holds x[n, c, p*SH + r*DH - PH,
    q*SW + s*DW - PW], or zp outside the input."""
    n, c, h, wd = x.shape
    kh, kw = kernel
    (sh, sw), (ph, pw), (dh, dw) = attrs["strides"], attrs["padding"], attrs["dilation"]
    oh = (h + 2 * ph - (1 + (kh - 1) * dh)) // sh + 1
    ow = (wd + 2 * pw - (1 + (kw - 1) * dw)) // sw + 1
    xs = np.full((n, c, h + 2 * ph, wd + 2 * pw), zp, dtype=np.int64)
    xs[:, :, ph:ph + h, pw:pw + wd] = x
    cols = np.empty((n, c, kh, kw, oh, ow), dtype=np.int64)
    for r in range(kh):
        for s in range(kw):
            cols[:, :, r, s] = xs[:, :, r * dh:r * dh + sh * (oh - 1) + 1:sh,
                                  s * dw:s * dw + sw * (ow - 1) + 1:sw]
    return cols.reshape(n, c * kh * kw, oh * ow)


def slot_bits(g: Product) -> int:
    """S, a multiple of 8, with every exact sum, every claimed value and every transported
    value inside (-2^(S-2), 2^(S-2)) (exact Python integers)."""
    data = int(np.abs(g.x - g.zp).max(initial=0))
    weights = max((int(v) for v in np.abs(g.w).sum(axis=1)), default=0)
    top = weights * data + (int(np.abs(g.b).max(initial=0)) if g.b is not None else 0)
    top = max(top, int(np.abs(g.y).max(initial=0)), int(np.abs(g.x).max(initial=0)),
              int(np.abs(g.w).max(initial=0)))         # the weights, packed by column
    return 8 * -(-(bitlen(top) + 2) // 8)


def check(g: Product) -> tuple[bool, int]:
    """Z3 rewrites the packed equations of group ``g`` to true: (all true?, equations).

    The equations are written as SMT-LIB text over named constants (the packed vectors, P(1),
    the packed bias and claims), parsed by Z3 and instantiated with the packed numerals by
    Z3's substitution: Z3 builds every term, with no Python object per product."""
    s = slot_bits(g)
    if s > 64:
        raise ValueError(f"slots of {s} bits (values beyond int64)")
    t = Transport(s)
    r, q = g.y.shape
    by_row = r <= q
    if by_row:                                # claim j: sum_k W[j,k] X~[k] + b[j] P(1) == P(Y[j])
        vectors, coefs, width, claims = g.x, g.w, q, g.y
    else:                                     # claim j: sum_k X~[k,j] W[:,k] + P(b) == P(Y[:,j])
        vectors, coefs, width, claims = g.w.T, (g.x - g.zp).T, r, g.y.T
    ones = t.numeral(np.ones(width, dtype=np.int64))
    packed = [t.numeral(v) for v in vectors]
    if by_row and g.zp:                               # the centred rows P(X[k]) - zp * P(1)
        packed = [simplify(v - g.zp * ones) for v in packed]
    names = {f"{PREFIX}v{k}": v for k, v in enumerate(packed)}
    names[f"{PREFIX}one"] = ones
    if g.b is not None and not by_row:
        names[f"{PREFIX}bias"] = t.numeral(g.b)
    step = max(1, CLAIM_BYTES // max(1, len(packed) * width * s // 8))
    for k in range(0, len(claims), step):
        rows = range(k, min(k + step, len(claims)))
        claim_names = {f"{PREFIX}y{j}": t.numeral(claims[j]) for j in rows}
        text = _equations(coefs, g.b, by_row, rows)
        if not z3.is_true(simplify(_instantiate(text, {**names, **claim_names}))):
            return False, len(claims)
    return True, len(claims)


PREFIX = "packed!"
"""The prefix of the constants the equations' text names (replaced by numerals)."""


def _equations(coefs: np.ndarray, bias, by_row: bool, rows) -> str:
    """The SMT-LIB conjunction of the equations of ``rows`` (coefficients ``coefs[j]``)."""
    eqs = []
    for j in rows:
        row = coefs[j]
        terms = [f"(* {_lit(int(row[k]))} {PREFIX}v{k})" for k in np.flatnonzero(row)]
        if bias is not None:
            terms.append(f"(* {_lit(int(bias[j]))} {PREFIX}one)" if by_row else f"{PREFIX}bias")
        eqs.append(f"(= (+ 0 {' '.join(terms)}) {PREFIX}y{j})")
    return f"(and true {' '.join(eqs)})"


def _lit(v: int) -> str:
    return str(v) if v >= 0 else f"(- {-v})"


def _instantiate(text: str, values: dict):
    """The formula ``text`` over the Int constants named in ``values``, each replaced by its
    numeral (Z3's parser and substitution)."""
    decls = "".join(f"(declare-const {n} Int)" for n in values)
    (formula,) = z3.parse_smt2_string(f"{decls}(assert {text})")
    return z3.substitute(formula, *[(z3.Int(n), v) for n, v in values.items()])


class Transport:
    """Python integers into Z3 numerals: ``numeral(v)`` is P(v) (slots of ``s`` bits), built
    from leaf numerals of LEAF_SLOTS slots joined in a balanced tree that Z3 rewrites."""

    def __init__(self, s: int):
        self.s, self.width = s, s // 8
        self.half = 1 << (s - 1)
        self.powers: dict[int, object] = {}
        self.offsets: dict[int, int] = {}

    def numeral(self, v: np.ndarray):
        v = np.asarray(v, dtype=np.int64).reshape(-1)
        leaves = [self._leaf(v[k:k + LEAF_SLOTS]) for k in range(0, max(len(v), 1), LEAF_SLOTS)]
        bits = self.s * LEAF_SLOTS
        while len(leaves) > 1:
            p = self._power(bits)
            pairs = [leaves[k] + leaves[k + 1] * p for k in range(0, len(leaves) - 1, 2)]
            leaves = pairs + leaves[len(leaves) - len(leaves) % 2:]
            bits *= 2
        return simplify(leaves[0])

    def _leaf(self, v: np.ndarray):
        """sum_i v[i] 2^(s*i) as a numeral: offset digits v + 2^(s-1) are non-negative and
        below 2^s, so their little-endian bytes are the integer plus the offset."""
        if len(v) and int(np.abs(v).max()) >= self.half:
            raise ValueError(f"a value does not fit slots of {self.s} bits")
        digits = (v + self.half).astype("<u8").view(np.uint8).reshape(-1, 8)[:, :self.width]
        return z3.IntVal(int.from_bytes(digits.tobytes(), "little") - self._offset(len(v)))

    def _offset(self, n: int) -> int:
        """sum_{i < n} 2^(s-1) 2^(s*i)."""
        if n not in self.offsets:
            self.offsets[n] = self.half * (((1 << (self.s * n)) - 1) // ((1 << self.s) - 1))
        return self.offsets[n]

    def _power(self, bits: int):
        """The numeral 2^bits, bits = s * LEAF_SLOTS * 2^j (Z3 squares the previous one)."""
        if bits not in self.powers:
            if bits == self.s * LEAF_SLOTS:
                self.powers[bits] = z3.IntVal(1 << bits)
            else:
                half = self._power(bits // 2)
                self.powers[bits] = simplify(half * half)
        return self.powers[bits]


_LEMMA: list = []


def digits_lemma() -> tuple[str, float, str]:
    """``lemma:digits``, proved by Z3 once per process: for integers B >= 2, d and T with
    |d| < B, d + B*T = 0 implies d = 0. Applied from the lowest slot up (B = 2^S,
    d = c[q] - Y[r, q], |d| < 2^S), it turns one packed equation into equal slots.
    Returns (status, seconds, detail)."""
    if not _LEMMA:
        start = time.perf_counter()
        d, t, b = z3.Ints("d T B")
        s = solver(5_000_000)
        s.add(b >= 2, d < b, -d < b, d + b * t == 0, d != 0)
        answer = s.check()
        _LEMMA.append(("proved" if answer == z3.unsat else "unknown",
                       time.perf_counter() - start,
                       f"|d| < B and d + B*T = 0 with d != 0 is {answer}"))
    return _LEMMA[0]
