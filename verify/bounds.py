"""(3) No overflow and (4) the float-BLAS licences.

Every tensor gets a proven range [lo, hi]: inputs the input domain, constants their exact
min/max, op results their declared precision's range R(p), narrowed by interval bounds where
those are exact and cheap. Per instruction, assuming its inputs lie in their ranges, one
obligation claims that every output element lies within its declared precision (so, with
``shapes``, within its storage type). How it is proved depends on the op's kind:

* linear (conv2d, dense, sum): the general lemma ``lemma:linear_step`` is proved once in Z3
  (nonlinear integers, symbolic weight): for lo <= 0 <= hi, lo <= x <= hi and S <= A,
  ``S + w*x <= A + max(w*lo, w*hi)`` and ``S <= A + max(w*lo, w*hi)`` (a skipped term, e.g.
  padding), and the mirror for lower bounds. By induction over the terms, every sum of any
  subset of the products of output channel c, in any order, lies in
  [lo*P_c + hi*N_c, hi*P_c + lo*N_c], P_c / N_c = the sums of c's positive / negative weights.
  The lemma is instantiated per channel with exact integers (the bias added exactly). The same
  bound without the bias bounds every partial sum: it is the accumulator bound that licenses
  float32 (< 2^24) or float64 (< 2^53) BLAS, or int64 (< 2^63).
* pointwise (elementwise, broadcast, where): every output element is the same function of one
  element of each input, so Z3 proves the bound on the op's own encoding (integers) applied to
  one symbolic element per input (and ``y >= 0`` for outputs vm.validate.nonnegative claims,
  which then get the lower bound 0: the nonnegative GEMM licences rest on it).
* selection (layout ops, take, cvm_lut, lut, max, max_pool2d, upsampling, non_max_suppression):
  every output element is one of the selected inputs' elements, or a fill constant (the
  encoding is built from the reference's index map, clamped lookups, max, or if-then-else
  chains over input rows); Z3 proves the hull lemma for the ranges.
* compaction (get_valid_counts): its rows are selections of input rows or the -1 fill (the
  hull lemma), and each count is a sum of N flags, so at most N (checked in the same query).
* The ops of imported models (ops/quant.py, ops/pool.py, ops/deconv.py, ...): qconv2d,
  qdense, qconv2d_transpose (output channel m reads the weights W[group(m), m mod M/G]) and
  qmatmul (both operands computed: the weight range is w's, less zero_point_b) are linear on
  the centred data x - zero_point (the data range is shifted by the zero point); sum_pool2d
  is linear with positive weights L / n summing to at most L per output (resize_linear: its
  four weights sum to 4^bits); pad is a selection (its constant fill included); requantize,
  qsoftmax, qvariance, qnorm and qavg_pool2d are clamped: their last step clips any integer to
  [qmin, qmax], and Z3 proves that clip within the declared precision; argmax is an index:
  its values lie in [0, D - 1] (exact).
* decoders (ops/post.py): topk's values are a selection of its input (the hull) and its
  indices positions in [0, D - 1]; ctc_greedy_decode's labels are -1 or a class in
  [0, C - 1], its lengths counts in [0, T] (exact).
"""
from __future__ import annotations

import numpy as np
import z3

from ops.base import Ref, bound
from ops.deconv import reduce_len as deconv_terms
from ops.pool import pool_lcm
from vm.program import Program
from vm.validate import GEMM_LIMITS, nonnegative

from .domains import IntDomain
from .obligations import Obligation, any_of
from .smt2 import num, total

LINEAR = ("conv2d", "dense", "sum", "qconv2d", "qdense", "sum_pool2d", "resize_linear",
          "qconv2d_transpose", "qmatmul")
POINTWISE = ("relu", "abs", "negative", "cvm_precision", "elemwise_add", "elemwise_sub", "clip",
             "cvm_clip", "cvm_left_shift", "cvm_right_shift", "broadcast_add", "broadcast_sub",
             "broadcast_mul", "broadcast_div", "broadcast_max", "broadcast_greater", "where")
SELECTION = {"max_pool2d": (0,), "upsampling": (0,), "max": (0,), "reshape": (0,),
             "flatten": (0,), "expand_dims": (0,), "squeeze": (0,), "transpose": (0,),
             "concatenate": None, "repeat": (0,), "tile": (0,), "strided_slice": (0,),
             "slice_like": (0,), "take": (0,), "cvm_lut": (1,), "non_max_suppression": (0,),
             "pad": (0,), "lut": (0,)}
FILL = {"non_max_suppression": lambda a: [-1],
        "pad": lambda a: [a["value"]] if a["mode"] == "constant" else []}
"""Selection ops that also write constants (NMS fills unused rows with -1, pad its value)."""
COMPACTION = ("get_valid_counts",)
CLAMPED = ("requantize", "qsoftmax", "qvariance", "qnorm", "qavg_pool2d")
INDEX = ("argmax",)
DECODED = {
    "topk": lambda hull, shape, a: [hull, (0, shape[a["axis"] % len(shape)] - 1)],
    "ctc_greedy_decode": lambda hull, shape, a: [(-1, shape[2] - 1), (0, shape[1])],
}
"""Decoders: the range of each output from the input's range and shape (their docs)."""
LIMITS = dict(GEMM_LIMITS) | {"int64": 1 << 63}


def kind_of(op_name: str, attrs=None) -> str:
    """The bound lemma of an op (of an instruction, with its ``attrs``: qconv2d_transpose with
    rounding=fp32 ends in a clip to [qmin, qmax], like requantize)."""
    if op_name == "qconv2d_transpose" and (attrs or {}).get("rounding") == "fp32":
        return "clamped"
    for kind, names in (("linear", LINEAR), ("pointwise", POINTWISE), ("selection", SELECTION),
                        ("compaction", COMPACTION), ("clamped", CLAMPED),
                        ("index", INDEX), ("decoded", DECODED)):
        if op_name in names:
            return kind
    raise KeyError(f"op {op_name!r} has no bound-lemma kind (verify/bounds.py)")


def _declared(t) -> tuple[int, int]:
    r = bound(t.precision)
    return -r, r


def _positive_weight_sum(op: str, shape, out_size: int, attrs) -> int:
    """The total weight of each output of an op whose weights are all >= 0: sum (1 per
    reduced element), sum_pool2d (L), resize_linear (4^bits)."""
    if op == "sum_pool2d":
        return pool_lcm(shape, attrs)
    if op == "resize_linear":
        return 1 << (2 * attrs["bits"])
    return int(np.prod(shape)) // out_size


def _channel_terms(op: str, data_shape, weight_shape, attrs) -> tuple[int, int]:
    """(output channels, most products summed into one output) of a weighted linear op."""
    if op == "qconv2d_transpose":
        return attrs["channels"], deconv_terms([data_shape, weight_shape], attrs)
    if op == "qmatmul":                 # x - zp against w - zero_point_b, K terms per output
        return 1, data_shape[-1]
    return weight_shape[0], int(np.prod(weight_shape)) // weight_shape[0]


def _channel_rows(op: str, weight: np.ndarray, attrs) -> np.ndarray:
    """The weights every output element is a dot product with, one row per output channel.

    qconv2d_transpose's weight is (C, M/groups, KH, KW): channel m reads its group's input
    channels at m mod M/G, and an output cell of phase (p + crop) mod stride, per axis, only
    the taps r with (phase - r * dilation) mod stride = 0 (ops/deconv.py ``sources``): one
    row per (channel, phase pair), the other taps zeroed, channel-major."""
    if op == "qconv2d_transpose":
        g = attrs["groups"]
        c, mg, kh, kw = weight.shape
        w = weight.reshape(g, c // g, mg, kh, kw).transpose(0, 2, 1, 3, 4)
        w = w.reshape(g * mg, 1, c // g, kh, kw)
        masks = np.array(_phase_masks(attrs, kh, kw), dtype=w.dtype)[None, :, None]
        return (w * masks).reshape(g * mg * masks.shape[1], -1)
    return weight.reshape(weight.shape[0], -1)


def _phase_masks(attrs, kh: int, kw: int) -> list:
    """For each output phase pair, the (KH, KW) 0/1 mask of the taps landing there."""
    (sh, sw), (dh, dw) = attrs["strides"], attrs["dilation"]
    axis = lambda k, s, d, rho: [int((rho - r * d) % s == 0) for r in range(k)]
    return [[[a * b for b in axis(kw, sw, dw, pw)] for a in axis(kh, sh, dh, ph)]
            for ph in range(sh) for pw in range(sw)]


def _intersect(a, b) -> tuple[int, int]:
    return max(a[0], b[0]), min(a[1], b[1])


# ---------------------------------------------------------------------------------------------
# The general lemma of linear ops
# ---------------------------------------------------------------------------------------------

def linear_lemma() -> Obligation:
    """The induction step of every dot-product bound (see the module doc), in Z3."""
    def query():
        s_, a_, w, x, lo, hi = z3.Ints("S A w x lo hi")
        top = z3.If(w * lo >= w * hi, w * lo, w * hi)
        low = z3.If(w * lo <= w * hi, w * lo, w * hi)
        hyp = z3.And(lo <= 0, 0 <= hi, lo <= x, x <= hi)
        claim = z3.And(z3.Implies(s_ <= a_, z3.And(s_ + w * x <= a_ + top, s_ <= a_ + top)),
                       z3.Implies(s_ >= a_, z3.And(s_ + w * x >= a_ + low, s_ >= a_ + low)))
        decls = [(n, "Int") for n in ("S", "A", "w", "x", "lo", "hi")]
        return decls, [hyp.sexpr(), z3.Not(claim).sexpr()]
    return Obligation("lemma:linear_step", "z3", query,
                      note="induction step of the dot-product bound (any weight, any order)")


# ---------------------------------------------------------------------------------------------
# Per-instruction obligations
# ---------------------------------------------------------------------------------------------

class Bounds:
    """Ranges of every tensor and the overflow / licence obligations of ``program``."""

    def __init__(self, program: Program, input_ranges: dict[int, tuple[int, int]],
                 gemm_paths: dict[int, str] | None = None):
        self.program, self.gemm_paths = program, gemm_paths or {}
        self.ranges: dict[int, tuple[int, int]] = dict(input_ranges)
        for i, data in program.consts.items():
            flat = np.asarray(data).reshape(-1)
            self.ranges[i] = (int(flat.min()), int(flat.max()))
        self.linear: dict[int, dict] = {}
        try:                  # claimed >= 0 by the plan fact; proved by the pointwise queries
            self.nonneg = nonnegative(program)
        except Exception:     # attributes of a program the validator would refuse
            self.nonneg = set()

    def obligations(self) -> list[Obligation]:
        """Overflow obligations in program order (lemma first), then the licences."""
        out, licences = [], []
        if any(kind_of(ins.op, ins.attrs) == "linear" for ins in self.program.code):
            out.append(linear_lemma())
        for index, ins in enumerate(self.program.code):
            try:
                kind = kind_of(ins.op, ins.attrs)
                out.append(getattr(self, f"_{kind}")(index, ins))
                if kind == "linear" and self.program.op(ins).acc_bound is not None:
                    licences.append(self._licence(index, ins))
            except Exception as e:      # e.g. a program the validator would refuse
                out.append(self._unstatable(index, ins, e))
        return out + licences

    def _unstatable(self, index: int, ins, error: Exception) -> Obligation:
        """An instruction whose bound cannot even be stated: unknown (its file asserts
        ``true``, which no solver answers unsat)."""
        for i in ins.outputs:
            if 0 <= i < len(self.program.tensors):
                self.ranges[i] = _declared(self.program.tensors[i])
        detail = f"cannot be stated: {type(error).__name__}: {error}"
        return Obligation(self._name("no_overflow", index, ins), "exact",
                          lambda: ([], ["true"]), lambda: ("unknown", detail))

    def _name(self, what: str, index: int, ins) -> str:
        outs = ",".join("%" + self.program.tensors[i].name for i in ins.outputs)
        return f"{what}[{index}] {ins.op} {outs}"

    def _range(self, i: int) -> tuple[int, int]:
        if i not in self.ranges:
            raise KeyError(f"tensor %{self.program.tensors[i].name} used before definition")
        return self.ranges[i]

    # -- linear -------------------------------------------------------------------------------
    def _linear_terms(self, index: int, ins) -> dict:
        """Per output channel: P (sum of positive weights), N (negative), bias interval;
        and the hull [lo0, hi0] of the data range with 0 (padding contributes 0)."""
        t, op, rows = self.program.tensors, ins.op, None
        lo, hi = self._range(ins.inputs[0])
        zp = ins.attrs.get("zero_point", 0)            # q-ops and sum_pool2d: x - zero_point
        lo0, hi0 = min(lo - zp, 0), max(hi - zp, 0)
        if op in ("sum", "sum_pool2d", "resize_linear"):
            n = _positive_weight_sum(op, t[ins.inputs[0]].shape, t[ins.outputs[0]].size,
                                     ins.attrs)
            p, neg, bias = np.array([n], dtype=object), np.array([0], dtype=object), None
        else:
            weight = self.program.consts.get(ins.inputs[1])
            units, k = _channel_terms(op, t[ins.inputs[0]].shape, t[ins.inputs[1]].shape,
                                      ins.attrs)
            if weight is not None:
                w = _channel_rows(op, np.asarray(weight).astype(np.int64), ins.attrs)
                p = np.where(w > 0, w, 0).sum(axis=1).astype(object)
                neg = np.where(w < 0, w, 0).sum(axis=1).astype(object)
                rows = w
            else:               # a symbolic weight in [wl, wh]: K corner products per channel
                zb = ins.attrs.get("zero_point_b", 0)         # qmatmul's second operand
                wl, wh = (v - zb for v in self._range(ins.inputs[1]))
                corners = [wl * lo0, wl * hi0, wh * lo0, wh * hi0]
                p = np.full(units, k * max(corners), dtype=object)
                neg = np.full(units, k * min(corners), dtype=object)
                lo0, hi0 = 1, 1                        # p, neg already hold the products
            bias = None
            if len(ins.inputs) > 2:
                data = self.program.consts.get(ins.inputs[2])
                bias = (np.asarray(data).astype(object).reshape(-1) if data is not None
                        else self._range(ins.inputs[2]))
                if rows is not None and not isinstance(bias, tuple):   # rows per phase
                    bias = np.repeat(bias, len(rows) // len(bias))
        up = hi0 * p + lo0 * neg
        dn = lo0 * p + hi0 * neg
        terms = dict(lo0=lo0, hi0=hi0, p=p, neg=neg, bias=bias, up=up, dn=dn, rows=rows)
        if isinstance(bias, tuple):
            terms.update(up_b=up + bias[1], dn_b=dn + bias[0])
        elif bias is not None:
            terms.update(up_b=up + bias, dn_b=dn + bias)
        else:
            terms.update(up_b=up, dn_b=dn)
        return terms

    def _linear(self, index: int, ins) -> Obligation:
        out = self.program.tensors[ins.outputs[0]]
        r = bound(out.precision)
        terms = self._linear_terms(index, ins)
        self.linear[index] = terms
        lo, hi = int(min(terms["dn_b"])), int(max(terms["up_b"]))
        self.ranges[ins.outputs[0]] = _intersect((lo, hi), _declared(out))

        def decide():
            if hi <= r and lo >= -r:
                return "proved", f"range [{lo}, {hi}] within p{out.precision} (|y| <= {r})"
            return "counterexample?", f"interval [{lo}, {hi}] exceeds p{out.precision}"

        def query():
            n = len(terms["p"])
            return _weight_sums(terms), [any_of(
                [f"(> {_channel_sum(terms, c, True, True)} {r})" for c in range(n)]
                + [f"(< {_channel_sum(terms, c, False, True)} {num(-r)})" for c in range(n)])]

        return Obligation(self._name("no_overflow", index, ins), "exact", query, decide,
                          "instance of lemma:linear_step per output channel")

    def _licence(self, index: int, ins) -> Obligation:
        terms = self.linear[index]
        acc = int(max(max(terms["up"]), -min(terms["dn"])))
        path = self.gemm_paths.get(index) or next(
            (name for name, lim in GEMM_LIMITS if acc < lim), "int64")
        limit = LIMITS[path]
        allowed = next((name for name, lim in LIMITS.items() if acc < lim), None)

        def decide():
            if acc < limit:
                return "proved", (f"accumulator bound {acc} < 2^{limit.bit_length() - 1}: "
                                  f"{path} is exact (best licensed path: {allowed})")
            return "unknown", f"accumulator bound {acc} does not license {path}"

        def query():
            n = len(terms["p"])
            return _weight_sums(terms), [any_of([f"(>= {_channel_sum(terms, c, True, False)} {limit})"
                                for c in range(n)]
                               + [f"(<= {_channel_sum(terms, c, False, False)} {num(-limit)})"
                                  for c in range(n)])]

        ob = Obligation(self._name("gemm_licence", index, ins), "exact", query, decide,
                        f"every partial sum stays below the {path} exact-integer limit")
        ob.facts = {"acc_bound": acc, "path": path, "allowed": allowed}
        return ob

    # -- pointwise, selection, whole ----------------------------------------------------------
    def _pointwise(self, index: int, ins) -> Obligation:
        t = self.program.tensors

        def instance(zx, names):
            return [Ref((1,) * len(t[i].shape), [v]) for i, v in zip(ins.inputs, names)]
        return self._z3_obligation(index, ins, instance)

    def _compaction(self, index: int, ins) -> Obligation:
        t = self.program.tensors
        count, rows = t[ins.outputs[0]], t[ins.outputs[1]]
        n = t[ins.inputs[0]].shape[1]
        lo, hi = self._range(ins.inputs[0])
        self.ranges[ins.outputs[0]] = _intersect((0, n), _declared(count))
        self.ranges[ins.outputs[1]] = _intersect((min(lo, -1), max(hi, -1)), _declared(rows))
        rc, rr = bound(count.precision), bound(rows.precision)

        def query():
            x, y = z3.Ints("x y")
            cons = [z3.And(lo <= x, x <= hi), z3.Or(y == x, y == -1),
                    z3.Or(y > rr, y < -rr, n > rc)]
            return [("x", "Int"), ("y", "Int")], [c.sexpr() for c in cons]
        return Obligation(self._name("no_overflow", index, ins), "z3", query,
                          note=f"rows: an input row's element or -1; counts: at most N = {n}")

    def _selection(self, index: int, ins) -> Obligation:
        t = self.program.tensors
        picked = SELECTION[ins.op] or tuple(range(len(ins.inputs)))
        sources = [self._range(ins.inputs[k]) for k in picked]
        fills = FILL[ins.op](ins.attrs) if ins.op in FILL else []
        hull = (min([s[0] for s in sources] + fills), max([s[1] for s in sources] + fills))
        outs = [t[i] for i in ins.outputs]
        for i, o in zip(ins.outputs, outs):
            self.ranges[i] = _intersect(hull, _declared(o))
        r = min(bound(o.precision) for o in outs)

        def query():
            xs = [z3.Int(f"x{k}") for k in range(len(sources))]
            y = z3.Int("y")
            cons = [z3.And(lo <= x, x <= hi) for x, (lo, hi) in zip(xs, sources)]
            cons += [z3.Or([y == x for x in xs] + [y == f for f in fills]), z3.Or(y > r, y < -r)]
            return [(str(v), "Int") for v in xs + [y]], [c.sexpr() for c in cons]
        return Obligation(self._name("no_overflow", index, ins), "z3", query,
                          note="every output element is one of the selected inputs' elements")

    def _clamped(self, index: int, ins) -> Obligation:
        """The last step of requantize, qsoftmax, qvariance, qnorm, qavg_pool2d and
        qconv2d_transpose (rounding=fp32) clips an integer to [qmin, qmax] (their docs): Z3
        proves that for every integer r, clip(r + zero_point, qmin, qmax) lies within the
        declared precision."""
        out, a = self.program.tensors[ins.outputs[0]], ins.attrs
        self._range(ins.inputs[0])
        self.ranges[ins.outputs[0]] = _intersect((a["qmin"], a["qmax"]), _declared(out))
        r = bound(out.precision)

        def query():
            v = z3.Int("r")
            y = IntDomain().clip(v + a["zero_point"], a["qmin"], a["qmax"])
            return [("r", "Int")], [z3.Or(y > r, y < -r).sexpr()]
        return Obligation(self._name("no_overflow", index, ins), "z3", query,
                          note="the final clip to [qmin, qmax] of any integer")

    def _index(self, index: int, ins) -> Obligation:
        t = self.program.tensors
        out, shape = t[ins.outputs[0]], t[ins.inputs[0]].shape
        n = shape[ins.attrs["axis"] % len(shape)]
        self.ranges[ins.outputs[0]] = _intersect((0, n - 1), _declared(out))
        r = bound(out.precision)

        def decide():
            if n - 1 <= r:
                return "proved", f"indices in [0, {n - 1}] within p{out.precision}"
            return "counterexample?", f"index {n - 1} exceeds p{out.precision}"

        def query():
            return [], [f"(> {n - 1} {r})"]
        return Obligation(self._name("no_overflow", index, ins), "exact", query, decide,
                          "an index along an axis of length " + str(n))

    def _decoded(self, index: int, ins) -> Obligation:
        t = self.program.tensors
        spans = DECODED[ins.op](self._range(ins.inputs[0]), t[ins.inputs[0]].shape, ins.attrs)
        outs = [t[i] for i in ins.outputs]
        for i, o, span in zip(ins.outputs, outs, spans):
            self.ranges[i] = _intersect(span, _declared(o))
        claims = [(lo, hi, bound(o.precision)) for (lo, hi), o in zip(spans, outs)]

        def decide():
            bad = [f"[{lo}, {hi}] exceeds p{o.precision}" for (lo, hi, _), o in
                   zip(claims, outs) if max(-lo, hi) > bound(o.precision)]
            if bad:
                return "counterexample?", bad[0]
            return "proved", ", ".join(f"[{lo}, {hi}]" for lo, hi, _ in claims) + \
                " within the declared precisions"

        def query():
            return [], [any_of([f"(> {num(max(-lo, hi))} {r})" for lo, hi, r in claims])]
        return Obligation(self._name("no_overflow", index, ins), "exact", query, decide,
                          "decoded outputs: a selection, positions, classes or counts")

    def _declare_outputs(self, ins) -> None:
        for i in ins.outputs:
            self.ranges[i] = _declared(self.program.tensors[i])

    def _z3_obligation(self, index: int, ins, instance):
        """Z3 on the op's integer encoding of an instance whose inputs range over their
        ranges: some output element outside its declared precision is expected unsat."""
        t, op = self.program.tensors, self.program.op(ins)
        ranges = [self._range(i) for i in ins.inputs]
        self._declare_outputs(ins)
        floor = {i: 0 if i in self.nonneg else -bound(t[i].precision) for i in ins.outputs}
        for i in ins.outputs:
            self.ranges[i] = (floor[i], self.ranges[i][1])

        def query():
            zx = IntDomain()
            refs = instance(zx, [z3.Int(f"x{k}") for k in range(len(ins.inputs))])
            decls, cons = [], []
            for ref, (lo, hi) in zip(refs, ranges):
                for v in ref.data:
                    decls.append((str(v), "Int"))
                    cons.append(z3.And(lo <= v, v <= hi))
            out = op.z3(zx, *refs, **ins.attrs)
            outs = [out] if len(op.outputs) == 1 else list(out)
            bad = [z3.Or(v > bound(t[i].precision), v < floor[i])
                   for ref, i in zip(outs, ins.outputs) for v in ref.data]
            return decls, [c.sexpr() for c in cons] + [z3.Or(bad).sexpr()]
        note = "the op's encoding on one symbolic element per input" + (
            "; the output is >= 0 (vm.validate.nonnegative)" if any(
                i in self.nonneg for i in ins.outputs) else "")
        return Obligation(self._name("no_overflow", index, ins), "z3", query, note=note)


def _weight_sums(terms: dict) -> list:
    """Definitions P_c / N_c = the sums of channel c's positive / negative constant weights
    (written out weight by weight, so a solver re-checks the sums too)."""
    rows = terms["rows"]
    if rows is None:
        return []
    out = []
    for c, row in enumerate(rows.tolist()):
        out.append((f"P{c}", "Int", total([str(v) for v in row if v > 0])))
        out.append((f"N{c}", "Int", total([num(v) for v in row if v < 0])))
    return out


def _channel_sum(terms: dict, c: int, upper: bool, with_bias: bool) -> str:
    """SMT-LIB term of channel ``c``'s bound: hi0*P + lo0*N (upper) or lo0*P + hi0*N, plus
    the bias when asked; P and N are the definitions of :func:`_weight_sums` when the weights
    are constants, else the numbers."""
    p, n = terms["p"][c], terms["neg"][c]
    if terms["rows"] is not None:
        p, n = f"P{c}", f"N{c}"
    else:
        p, n = num(int(p)), num(int(n))
    a, b = (terms["hi0"], terms["lo0"]) if upper else (terms["lo0"], terms["hi0"])
    parts = [f"(* {num(a)} {p})", f"(* {num(b)} {n})"]
    bias = terms["bias"]
    if with_bias and bias is not None:
        value = (bias[1] if upper else bias[0]) if isinstance(bias, tuple) else int(bias[c])
        parts.append(num(value))
    return total(parts)
