"""(5) The CPU executor's licences: every exact float path the fast executor may take.

The licences come from the executor's own functions (vm.fusion.chains for the fused tails,
``Analysis.licences`` from ops.gemm.licence, vm.fusion's Winograd choice, ops.fastquant.prepare);
their claims are proved here independently, with the certificate's proven ranges:

* ``float32 chunks`` / ``float64`` / ``int64``: per chunk and output channel, the exact
  instance of ``lemma:linear_step`` (P / N of the chunk's weights, the data hull [lo0, hi0])
  bounds every partial sum of the chunk below the dtype's limit and below the claimed ``bound``;
  the whole sum is at most the claimed ``whole`` (chunks are summed in float64: < 2^53).
  Data proved >= 0 (vm.validate.nonnegative, proved by the pointwise queries) gives lo0 = 0.
* ``offset``: the offset bias + add of the fused tail rides on a row of ones (im2col) or an
  all-ones channel (shifted views), or is added to the float64 sum of chunks: whole + |offset|
  below that float's limit; the prescale by 2^-shift (shift <= 62) is exact in float32.
* ``winograd``: U = D G g G^T recomputed exactly from the weights equals the licence's U;
  V = B^T d B is bounded per position (a linear form in d); every transformed-domain product
  and partial sum over a channel chunk (instance of ``lemma:linear_step`` with weights U and
  data V) is below 2^24 and the claimed chunk bound; 12 x the whole-sum bound is at most the
  claimed output bound (the int32 / int64 choice); ``lemma:winograd`` proves 4Y = A0^T M A and
  that the shift of 4(Y + offset) by shift + 2 is the shift of Y + offset by shift.
* ``float requantize``: with the proven input range, |d| M + 2^s < 2^53 (half modes) or
  |d| < 2^53, M < 2^24 (fp32), and the clip bounds and qmin / qmax below the float's exact
  limit (2^24 for fp32, else 2^53).
* ``residual``: a residual add joined to a conv's epilogue runs in float32: the proven |q| +
  |other| + |add| and the clip bounds below 2^24.

A claim that fails is ``unknown`` (the bounds over-approximate), never ``proved``.
"""
from __future__ import annotations

import numpy as np
import z3

from ops import fastquant, gemm, winograd
from ops.tails import Requant
from vm import fusion

from .obligations import Obligation, any_of
from .smt2 import num, total

LIMITS = {"float32": 1 << 24, "float64": 1 << 53, "int64": 1 << 63}
I32 = 1 << 31
BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=np.int64)
A0T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.int64)
AT = np.array([[2, 1, 1, 0], [0, 1, -1, -2]], dtype=np.int64)
LINEAR_LEMMA, WINOGRAD_LEMMA = "lemma:linear_step", "lemma:winograd"


def winograd_lemma() -> Obligation:
    """F(2x2, 3x3) in integers: 4Y = A0^T ((D G g G^T) o (B^T d B)) A for every 3x3 g and
    4x4 tile d; and 4w >> (s + 2) = w >> s (floor division by 4k of 4w is that of w by k)."""
    def query():
        g = [[z3.Int(f"g{r}{s}") for s in range(3)] for r in range(3)]
        d = [[z3.Int(f"d{r}{s}") for s in range(4)] for r in range(4)]
        lin = lambda coef, xs: _sum([int(c) * x for c, x in zip(coef, xs) if c])
        gf, df = [v for row in g for v in row], [v for row in d for v in row]
        dg = winograd.D[:, None] * winograd.G
        u = [lin(np.outer(dg[i], winograd.G[j]).reshape(-1), gf) for i in range(4) for j in range(4)]
        v = [lin(np.outer(BT[i], BT[j]).reshape(-1), df) for i in range(4) for j in range(4)]
        m = [a * b for a, b in zip(u, v)]
        bad = []
        for a in range(2):
            for b in range(2):
                y4 = lin(np.outer(A0T[a], AT[b]).reshape(-1), m)
                y = z3.Sum([g[r][s] * d[a + r][b + s] for r in range(3) for s in range(3)])
                bad.append(y4 != 4 * y)
        w, q, r, k = z3.Ints("w q r k")
        div = z3.And(k > 0, w == q * k + r, 0 <= r, r < k)
        bad.append(z3.And(div, z3.Not(z3.And(4 * w == q * (4 * k) + 4 * r, 0 <= 4 * r,
                                             4 * r < 4 * k))))
        decls = [(str(x), "Int") for x in gf + df + [w, q, r, k]]
        return decls, [z3.Or(bad).sexpr()]
    return Obligation(WINOGRAD_LEMMA, "z3", query,
                      note="F(2x2,3x3) identity 4Y = A0^T (U o V) A, and the exact division back")


def _sum(terms: list):
    """z3.Sum, except that one term stays itself (SMT-LIB's + takes two or more arguments:
    cvc5 refuses a unary one)."""
    return terms[0] if len(terms) == 1 else z3.Sum(terms)


def _pn(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the sums of the positive / negative entries, as exact Python ints (int64
    sums are exact: at most 2^30 entries below 2^31)."""
    w = rows.astype(np.int64, copy=False)
    return (np.where(w > 0, w, 0).sum(axis=1).astype(object),
            np.where(w < 0, w, 0).sum(axis=1).astype(object))


def _acc(p, n, lo0: int, hi0: int) -> int:
    """The largest |partial sum| of the lemma's interval [lo0 P + hi0 N, hi0 P + lo0 N]."""
    if len(p) == 0:
        return 0
    return int(max(max(hi0 * p + lo0 * n), max(-(lo0 * p + hi0 * n))))


def _bound_query(groups: list, lo0: int, hi0: int, limit: int):
    """SMT-LIB of "some group's lemma bound reaches ``limit``"; ``groups`` are (tag, rows)."""
    decls, bad = [], []
    for tag, rows in groups:
        for c, row in enumerate(rows.tolist()):
            p, n = f"P{tag}_{c}", f"N{tag}_{c}"
            decls.append((p, "Int", total([num(v) for v in row if v > 0])))
            decls.append((n, "Int", total([num(v) for v in row if v < 0])))
            bad.append(f"(>= (+ (* {num(hi0)} {p}) (* {num(lo0)} {n})) {limit})")
            bad.append(f"(<= (+ (* {num(lo0)} {p}) (* {num(hi0)} {n})) {num(-limit)})")
    return decls, [any_of(bad)]


def _claims_query(claims: list[tuple[int, str, int]]):
    """SMT-LIB of "some exact claim fails": claims (a, op, b) with op in <, <=, =."""
    return [], [any_of([f"(not ({op} {num(a)} {num(b)}))" for a, op, b in claims])]


def _exact(claims: list[tuple[int, str, int, str]], proved: str):
    """Decide exact claims (a, op, b, what): proved, or unknown naming the first failure."""
    test = {"<": lambda a, b: a < b, "<=": lambda a, b: a <= b, "=": lambda a, b: a == b}
    for a, op, b, what in claims:
        if not test[op](a, b):
            return "unknown", f"not licensed: {what} ({a} {op} {b} fails)"
    return "proved", proved


class Licences:
    """The licence obligations of a validated program (``analysis``) given its proven
    ``ranges`` (verify/bounds.py)."""

    def __init__(self, program, analysis, ranges: dict):
        self.program, self.analysis, self.ranges = program, analysis, ranges

    def obligations(self) -> list[Obligation]:
        out, wino = [], []
        tails = {group[0]: tail for group, tail in fusion.chains(self.program)}
        for index in sorted(self.analysis.licences):
            out += self._gemm(index, tails.get(index, Requant()))
            lic = self._winograd(index)
            if lic is not None:
                wino.append(self._winograd_ob(index, lic, tails.get(index, Requant())))
        for index, ins in enumerate(self.program.code):
            if ins.op == "requantize" and index in tails and ins.inputs[0] not in \
                    self.program.consts:
                out += self._requantize(index, ins, tails[index])
        groups = fusion.chains(self.program)
        for n, (m, other) in fusion.joins(self.program, groups).items():
            if other is not None and fusion.residual_licence(
                    self.program, groups[n][0], groups[m][0], groups[m][1], other) is not None:
                out.append(self._residual(groups[n][0], groups[m], other))
        return ([winograd_lemma()] if wino else []) + out + wino

    def _name(self, index: int, what: str) -> str:
        ins = self.program.code[index]
        outs = ",".join("%" + self.program.tensors[i].name for i in ins.outputs)
        return f"licence[{index}] {ins.op} {outs}: {what}"

    def _hull(self, ins) -> tuple[int, int]:
        lo, hi = self.ranges[ins.inputs[0]]
        zp = ins.attrs.get("zero_point", 0)
        return min(lo - zp, 0), max(hi - zp, 0)

    def _const(self, ins, k: int):
        return self.program.consts.get(ins.inputs[k]) if len(ins.inputs) > k else None

    # -- chunked GEMM and the offset row ------------------------------------------------------
    def _gemm(self, index: int, tail) -> list[Obligation]:
        ins, lic = self.program.code[index], self.analysis.licences[index]
        weight = np.asarray(self._const(ins, 1)).astype(np.int64)
        oc, c = weight.shape[:2]
        w3 = weight.reshape(oc, c, -1)
        lo0, hi0 = self._hull(ins)
        spans = list(zip(lic.splits, lic.splits[1:]))
        groups = [(k, w3[:, s0:s1].reshape(oc, -1)) for k, (s0, s1) in enumerate(spans)]
        chunk = max(_acc(*_pn(rows), lo0, hi0) for _, rows in groups)
        whole = _acc(*_pn(weight.reshape(oc, -1)), lo0, hi0)
        limit = LIMITS[lic.dtype]
        ok_splits = lic.splits[0] == 0 and lic.splits[-1] == c and len(spans) <= gemm.MAX_CHUNKS \
            and all(a < b for a, b in spans)
        claims = [(int(ok_splits), "=", 1, f"splits {lic.splits} partition [0, {c})"),
                  (chunk, "<", limit, f"chunk bound below 2^{limit.bit_length() - 1}"),
                  (chunk, "<=", lic.bound, "chunk bound at most the claimed bound"),
                  (whole, "<=", lic.whole, "whole-sum bound at most the claimed whole")]
        if len(spans) > 1:
            claims.append((whole, "<", LIMITS["float64"], "float64 sum of the chunks"))
        sizes = sorted({(s1 - s0) * w3.shape[2] for s0, s1 in spans})
        what = (f"{lic.dtype} whole {c * w3.shape[2]}" if len(spans) == 1 else
                f"{lic.dtype} chunks {len(spans)}x{sizes[0]}" if len(sizes) == 1 else
                f"{lic.dtype} chunks " + "+".join(str((b - a) * w3.shape[2]) for a, b in spans))

        def query():      # chunk bounds < min(limit, bound + 1); whole < whole + 1 (, 2^53)
            d1, a1 = _bound_query(groups, lo0, hi0, min(limit, lic.bound + 1))
            d2, a2 = [], []
            if len(spans) > 1 or lic.whole < lic.bound:
                d2, a2 = _bound_query([("w", weight.reshape(oc, -1))], lo0, hi0,
                                      min(lic.whole + 1, LIMITS["float64"]))
            _, a3 = _claims_query([(int(ok_splits), "=", 1)])
            return d1 + d2, [any_of(a1 + a2 + a3)]
        status = lambda: _exact(claims, f"chunk bound {chunk} < 2^{limit.bit_length() - 1} "
                                        f"(claimed {lic.bound}); whole {whole} <= {lic.whole}")
        ob = Obligation(self._name(index, what), "exact", query, status,
                        "instance of lemma:linear_step per chunk and output channel")
        ob.facts = {"chunk_bound": chunk, "whole": whole, "limit": limit,
                    "rests_on": (LINEAR_LEMMA,)}
        return [ob, self._offset(index, ins, lic, tail, whole)]

    def _offset(self, index, ins, lic, tail, whole: int) -> Obligation:
        bias = self._const(ins, 2)
        offset = gemm.offsets(bias, tail, self.program.tensors[ins.inputs[1]].shape[0])
        mode, limit = gemm.kernel_mode(lic, offset, tail.span()), gemm.offset_limit(lic)
        reach = max(whole + int(np.abs(offset).max(initial=0)), tail.span())
        if mode == "int64":
            claims = [(reach, "<", LIMITS["int64"], "int64 sum with the offset")]
        else:
            claims = [(reach, "<", limit, "whole + |offset| and the clip bounds below the "
                       "float's limit"),
                      (tail.shift, "<=", 62, "2^-shift prescale exact")]
        what = {"ones": f"{lic.dtype} offset row, weights x 2^-{tail.shift}",
                "chunks": "float64 offset on the sum of chunks", "int64": "int64 offset"}[mode]
        lim = claims[0][2]
        ob = Obligation(self._name(index, what), "exact",
                        lambda: _claims_query([c[:3] for c in claims]),
                        lambda: _exact(claims, f"reach {reach} < 2^{lim.bit_length() - 1} "
                                               f"(shift {tail.shift})"),
                        "whole + |bias + add| (the fused tail's offset) stays exact")
        ob.facts = {"reach": reach, "limit": lim, "rests_on": (LINEAR_LEMMA,)}
        return ob

    # -- Winograd -----------------------------------------------------------------------------
    def _winograd(self, index: int):
        ins = self.program.code[index]
        if not ins.op.endswith("conv2d") or ins.attrs.get("groups") != 1:
            return None
        return fusion._winograd(self.program, self.analysis, index)

    def _winograd_ob(self, index: int, lic, tail) -> Obligation:
        ins = self.program.code[index]
        weight = np.asarray(self._const(ins, 1)).astype(np.int64)
        oc, c = weight.shape[:2]
        dg = winograd.D[:, None] * winograd.G
        u = np.einsum("ir,js,ocrs->ijoc", dg, winograd.G, weight).reshape(16, oc, c)
        same = int(np.array_equal(np.asarray(lic.u, np.float64), u.astype(np.float64)))
        lo0, hi0 = self._hull(ins)
        v = [np.outer(BT[i], BT[j]).reshape(1, -1) for i in range(4) for j in range(4)]
        vb = [(int(lo0 * p[0] + hi0 * n[0]), int(hi0 * p[0] + lo0 * n[0]))
              for p, n in map(_pn, v)]                     # V_p in [vlo, vhi], 0 inside
        x = max(-lo0, hi0)
        k, per = lic.chunks, c // lic.chunks
        chunk = max(_acc(*_pn(u[p][:, j * per:(j + 1) * per]), *vb[p])
                    for p in range(16) for j in range(k))
        wholes = [_acc(*_pn(u[p]), *vb[p]) for p in range(16)]
        out = winograd.OUT_GAIN * max(wholes)
        claims = [(same, "=", 1, "U = D G g G^T, exact"),
                  (k * per, "=", c, f"{k} equal chunks of {c} channels"),
                  (2 * x, "<", LIMITS["float32"], "input transform rows (2 |d|)"),
                  (max(max(-a, b) for a, b in vb), "<", LIMITS["float32"], "|V|"),
                  (chunk, "<", LIMITS["float32"], "transformed-domain chunk sums"),
                  (chunk, "<=", lic.chunk_bound, "at most the claimed chunk bound"),
                  (out, "<=", lic.out_bound, "output transform at most the claimed bound"),
                  (tail.shift + winograd.SCALE_SHIFT, "<=", 62, "the shift back")]
        offset = 4 * gemm.offsets(self._const(ins, 2), tail, oc)
        reach = out + int(np.abs(offset).max(initial=0))
        acc = "int32" if lic.out_bound + int(np.abs(offset).max(initial=0)) < I32 else "int64"
        claims.append((reach, "<", I32 if acc == "int32" else LIMITS["int64"],
                       f"{acc} output transform with the offset"))

        def query():
            decls, bad = [], []
            for p in range(16):              # position p: weights U[p], data V_p in vb[p]
                d, a = _bound_query([(f"{p}_{j}", u[p][:, j * per:(j + 1) * per])
                                     for j in range(k)], *vb[p], LIMITS["float32"])
                decls += d
                bad += a
            d, a = _claims_query([cl[:3] for cl in claims])
            return decls + d, [any_of(bad + a)]
        detail = (f"|V| <= {max(max(-a, b) for a, b in vb)}, chunk sums <= {chunk} < 2^24 "
                  f"(claimed {lic.chunk_bound}), output {reach} in {acc}")
        ob = Obligation(self._name(index, f"winograd F(2x2,3x3) {k} chunks"), "exact", query,
                        lambda: _exact(claims, detail),
                        "U exact; lemma:linear_step with weights U and data V per chunk")
        ob.facts = {"chunk_bound": chunk, "out_bound": out,
                    "rests_on": (LINEAR_LEMMA, WINOGRAD_LEMMA)}
        return ob

    # -- float requantize ---------------------------------------------------------------------
    def _residual(self, head: list[int], group, other: int) -> Obligation:
        """The add / sub of a residual block joined to its conv's epilogue (vm.fusion.joins):
        float32 holds q (+|-) other, + add, and the clip bounds exactly."""
        (index, *_), tail = group
        t = self.program.code[head[-1]].outputs[0]
        mag = lambda i: max(abs(v) for v in self.ranges[i])
        claims = [(max(tail.reach(mag(t) + mag(other)), tail.span()), "<", LIMITS["float32"],
                   "|q| + |other| + |add| and the clip bounds below 2^24"),
                  (tail.shift, "<=", 62, "2^-shift exact in float32")]
        return Obligation(self._name(index, "residual add in the conv's float32 epilogue"),
                          "exact", lambda: _claims_query([c[:3] for c in claims]),
                          lambda: _exact(claims, f"|q| <= {mag(t)}, |other| <= {mag(other)}"),
                          "ops/tails.py Residual exactness on the proven ranges")

    def _requantize(self, index: int, ins, tail) -> list[Obligation]:
        x = self.program.tensors[ins.inputs[0]]
        dtype = self.program.tensors[self.program.code[index].outputs[0]].dtype
        kernel = fastquant.prepare(ins.attrs, x.precision, len(x.shape), dtype, tail)
        if kernel is None:
            return []
        a = ins.attrs
        lo, hi = self.ranges[ins.inputs[0]]
        d = max(abs(lo - a["zero_point_in"]), abs(hi - a["zero_point_in"]))
        m = int(np.max(np.asarray(a["multiplier"], np.int64)))
        s = int(np.max(np.asarray(a["shift"], np.int64)))
        claims = [(kernel.clip_span, "<", kernel.limit,
                   "clip bounds and zero point's sum exact in the float")]
        if kernel.mode == "fp32":
            claims += [(d, "<", LIMITS["float64"], "|d| exact in float64"),
                       (m, "<", LIMITS["float32"], "multiplier exact in float32"),
                       (s, "<=", 100, "2^-shift normal in float32")]
        else:
            claims += [(d * m + (1 << s), "<", LIMITS["float64"], "|d| M + 2^s exact"),
                       (s, "<=", 900, "2^-shift normal in float64")]
        ob = Obligation(self._name(index, f"float requantize ({kernel.mode})"), "exact",
                        lambda: _claims_query([cl[:3] for cl in claims]),
                        lambda: _exact(claims, f"|d| <= {d}, M <= {m}, s <= {s}"),
                        "ops/fastquant.py exactness conditions on the proven input range")
        return [ob]
