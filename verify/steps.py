"""One instruction on known inputs: Z3 derives its outputs and proves them unique.

The formal executor's default mode runs the program one instruction at a time. When every input
of an instruction is known (a numeral, proved by the instructions before it), its encoding is a
ground term and Z3 gives it exactly one value; :func:`prove` obtains that value by one of four
methods, cheapest that applies first:

* ``packed`` (conv2d, dense, qconv2d, qdense): the CPU kernel's result is a claim, confirmed by
  Z3 on packed integers (verify/packed.py);
* ``uniform`` (the elementwise and broadcasting ops of verify/bounds.py's pointwise kind, and
  requantize per channel): every output element is the same function of one element of each
  input (at numpy-broadcast positions), so the op's encoding is instantiated once on symbolic
  elements and Z3 rewrites it once per *distinct* tuple of input values;
* ``encoding``: the op's own encoding, every operation rewritten by Z3 on numerals
  (verify/ground.py);
* ``joint``: the op's encoding as constraints ``t == op(inputs)`` on fresh constants, solved
  and then asked for a second solution (must be ``unsat``) — used when a rewrite does not end
  in a numeral.

Why proving instructions one at a time proves the run: the program's constraints are one
equation ``t_i == op_i(inputs of i)`` per instruction (SSA). If, for every instruction, its
equation with its inputs fixed to their proved values has exactly one solution, then by
induction in program order every model of all the constraints gives every tensor its proved
value: the outputs are the only ones the program's Z3 semantics allows.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import z3

import ops
from ops.base import Ref

from . import packed
from .bounds import POINTWISE
from .domains import solver
from .ground import EvalDomain, NotGround, OutOfSteps, evaluate_at

UNIFORM = tuple(n for n in POINTWISE if n != "where") + ("requantize",)
"""Ops whose output element i is one function of the inputs' elements at the numpy-broadcast
source positions of i (requantize: one function per channel along its axis)."""
RLIMIT = 200_000_000
"""Resource limit of the ``joint`` method's solver calls."""


@dataclass
class StepProof:
    """How one instruction's outputs were proved: ``status`` proved / counterexample /
    unknown, the ``method``, the ground facts Z3 decided and the time."""

    op: str
    method: str
    status: str
    seconds: float
    facts: int
    detail: str = ""

    @property
    def proved(self) -> bool:
        return self.status == "proved"


@dataclass(eq=False)
class Known:
    """A tensor whose values are proved (or given: inputs and constants). ``array`` holds them
    in their storage dtype; ``proof`` is the step that derived them, ``parents`` the tensors
    it was computed from."""

    array: np.ndarray
    proof: StepProof | None = None
    parents: tuple = ()
    defs: tuple = field(default=(), repr=False)

    @property
    def shape(self) -> tuple:
        return tuple(self.array.shape)


def prove(op, args: list[np.ndarray], kwargs: dict, zx, timeout_s=None):
    """``(values, StepProof)``: the op's outputs (int64 arrays, before storage) on ``args``."""
    start = time.perf_counter()
    notes = []
    for method in _methods(op.name):
        try:
            values, facts, status, detail = method(op, args, kwargs, zx, timeout_s)
        except (NotGround, _Fallback, TypeError) as e:
            notes.append(f"{method.__name__[1:]}: {e}")
            continue
        except OutOfSteps as e:
            values, facts, status, detail = None, 0, "unknown", str(e)
        detail = "; ".join(notes + [detail]) if notes else detail
        name = method.__name__[1:]
        return values, StepProof(op.name, name, status, time.perf_counter() - start, facts, detail)
    return None, StepProof(op.name, "joint", "unknown", time.perf_counter() - start, 0,
                           "; ".join(notes))


def digits_lemma() -> StepProof:
    """The proof of ``lemma:digits`` (verify/packed.py), on which every packed step rests."""
    status, seconds, detail = packed.digits_lemma()
    return StepProof("lemma:digits", "lemma", status, seconds, 1, detail)


class _Fallback(Exception):
    """A method does not apply (or its claim failed): try the next one."""


def _methods(name: str):
    if name in packed.OPS:
        return (_packed, _encoding, _joint)
    if name in UNIFORM:
        return (_uniform, _encoding, _joint)
    return (_encoding, _joint)


# -- packed ------------------------------------------------------------------------------------
def _packed(op, args, kwargs, zx, timeout_s):
    attrs = {k: v for k, v in kwargs.items()}
    claim = np.asarray(op.kernel(np, *args, **attrs), dtype=np.int64)
    try:
        groups = packed.products(op.name, args, kwargs, claim)
        results = [packed.check(g) for g in groups]
    except ValueError as e:
        raise _Fallback(str(e)) from None
    if not all(ok for ok, _ in results):
        raise _Fallback("the CPU kernel's values fail the packed equations")
    facts = sum(n for _, n in results)
    return [claim], facts, "proved", f"{facts} packed equations rewritten to true"


# -- uniform -----------------------------------------------------------------------------------
def _uniform(op, args, kwargs, zx, timeout_s):
    shape = np.broadcast_shapes(*[a.shape for a in args])
    columns = [np.broadcast_to(np.asarray(a, dtype=np.int64), shape).reshape(-1) for a in args]
    channels, attrs_of = _channels(op.name, kwargs, shape)
    columns.append(channels.reshape(-1))
    distinct, inverse = np.unique(np.stack(columns, axis=1), axis=0, return_inverse=True)
    values = np.empty(len(distinct), dtype=object)
    names = [zx.var(f"u{k}") for k in range(len(args))]
    facts = 0
    for c in np.unique(distinct[:, -1]):
        rows = np.flatnonzero(distinct[:, -1] == c)
        attrs = attrs_of(int(c))
        template = _one(op, op.z3(zx, *[Ref((1,), [v]) for v in names], **attrs))
        hull = _hull(op, template, names, distinct[rows, :-1], attrs, zx, timeout_s)
        if hull is not None:
            values[rows], counted = hull
            facts += counted
            continue
        values[rows] = evaluate_at(template, names, distinct[rows, :-1], zx)
        facts += len(rows)
    out = np.asarray(_int64(values), dtype=np.int64)[inverse.reshape(-1)].reshape(shape)
    return [out], facts, "proved", (f"{len(distinct)} distinct input tuples: {facts} evaluated "
                                    "to numerals or proved by monotonicity")


def _hull(op, template, names, rows: np.ndarray, attrs: dict, zx, timeout_s):
    """For a one-input op on many distinct values: (values, facts) from Z3's proof that the
    op is non-decreasing on [min x, max x] (``lemma:monotone``, a bounded query) and its
    evaluation at the two ends of each output level's hull (the CPU kernel's values say which
    level each x claims); a value between two ends with equal outputs has that output. None
    when it does not apply or is not proved (the caller evaluates every value)."""
    if len(names) != 1 or len(rows) < HULL_MIN or _multiplies(template):
        return None
    xs = rows[:, 0]
    claim = np.asarray(op.kernel(np, xs, **attrs), dtype=np.int64)
    if not _monotone(template, names[0], int(xs.min()), int(xs.max()), zx, timeout_s):
        return None
    order = np.lexsort((xs, claim))
    levels, first = np.unique(claim[order], return_index=True)
    last = np.append(first[1:], len(order)) - 1
    ends = np.concatenate([xs[order][first], xs[order][last]])
    got = evaluate_at(template, names, ends.reshape(-1, 1), zx)
    if got != np.concatenate([levels, levels]).tolist():
        return None
    return claim.tolist(), 1 + len(ends)


HULL_MIN = 256
"""Distinct values of a one-input op from which its monotone hull is tried (not for terms
with multiplications: bit-blasting them costs more than evaluating every value)."""
HULL_RLIMIT = 3_000_000
"""Resource limit of one monotonicity query (small: a failure falls back to evaluation)."""


def _multiplies(term) -> bool:
    seen, stack = set(), [term]
    while stack:
        t = stack.pop()
        if t.get_id() in seen:
            continue
        seen.add(t.get_id())
        if z3.is_app_of(t, z3.Z3_OP_BMUL) or z3.is_mul(t):
            return True
        stack.extend(t.children())
    return False


def _monotone(template, name, lo: int, hi: int, zx, timeout_s) -> bool:
    """Z3: for lo <= a <= b <= hi, template(a) <= template(b) (unsat of a counterexample)."""
    a, b = zx.var("mono_a"), zx.var("mono_b")
    s = solver(HULL_RLIMIT, timeout_s)
    s.add(zx.num(lo) <= a, a <= b, b <= zx.num(hi),
          z3.substitute(template, (name, a)) > z3.substitute(template, (name, b)))
    return s.check() == z3.unsat


def _channels(name: str, kwargs: dict, shape: tuple):
    """Per element, the index of its parameter set, and the attributes of each set
    (requantize: one multiplier/shift pair per channel along ``axis``)."""
    if name != "requantize" or len(kwargs["multiplier"]) == 1:
        return np.zeros(shape, dtype=np.int64), lambda c: kwargs
    axis = kwargs["axis"]
    index = np.arange(shape[axis]).reshape([-1 if d == axis else 1 for d in range(len(shape))])

    def attrs(c: int) -> dict:
        return dict(kwargs, multiplier=[kwargs["multiplier"][c]], shift=[kwargs["shift"][c]])
    return np.broadcast_to(index, shape), attrs


def _one(op, out) -> object:
    if len(op.outputs) != 1 or len(out.data) != 1:
        raise _Fallback("not one output element per input element")
    return out.data[0]


# -- encoding ----------------------------------------------------------------------------------
def _encoding(op, args, kwargs, zx, timeout_s):
    ev = EvalDomain(zx)
    refs = [Ref(a.shape, [ev.lift(int(v)) for v in a.reshape(-1).tolist()]) for a in args]
    outs = op.z3(ev, *refs, **kwargs)
    outs = [outs] if len(op.outputs) == 1 else list(outs)
    values = []
    for r in outs:
        data = [v if not isinstance(v, int) else ev.num(v) for v in r.data]
        if any(v.s == "bool" for v in data):
            raise _Fallback("a Boolean output term")
        values.append(np.asarray(_int64([v.v for v in data]), dtype=np.int64).reshape(r.shape))
    return values, ev.rewrites, "proved", f"{ev.rewrites} distinct operations rewritten to numerals"


# -- joint -------------------------------------------------------------------------------------
def _joint(op, args, kwargs, zx, timeout_s):
    refs = [Ref(a.shape, [zx.num(int(v)) for v in a.reshape(-1).tolist()]) for a in args]
    outs = op.z3(zx, *refs, **kwargs)
    outs = [outs] if len(op.outputs) == 1 else list(outs)
    terms = [t for r in outs for t in r.data]
    names = [zx.var(f"j{k}", None) for k in range(len(terms))]
    s = solver(RLIMIT, timeout_s)
    s.add([v == t for v, t in zip(names, terms)])
    first = s.check()
    if first != z3.sat:
        status = "unknown" if first == z3.unknown else "counterexample"
        return None, len(terms), status, f"the equations are {first}: {s.reason_unknown()}"
    model = s.model()
    found = [model.eval(v, model_completion=True) for v in names]
    s.add(z3.Or([v != f for v, f in zip(names, found)]) if names else z3.BoolVal(False))
    second = s.check()
    if second != z3.unsat:
        status = "counterexample" if second == z3.sat else "unknown"
        return None, len(terms), status, ("a second output satisfies the equations"
                                          if second == z3.sat else
                                          f"uniqueness query unknown: {s.reason_unknown()}")
    flat = _int64([f.as_signed_long() if z3.is_bv_value(f) else f.as_long() for f in found])
    values, k = [], 0
    for r in outs:
        values.append(np.asarray(flat[k:k + len(r.data)], dtype=np.int64).reshape(r.shape))
        k += len(r.data)
    return values, len(terms), "proved", "solved, and no second solution (unsat)"


def _int64(values) -> list[int]:
    values = [int(v) for v in values]
    if any(not -(1 << 63) <= v < 1 << 63 for v in values):
        raise _Fallback("a value beyond int64")
    return values
