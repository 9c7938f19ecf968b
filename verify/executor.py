"""The formal executor: the interpreter loop (vm/interp.py) over known and symbolic tensors.

Mode ``steps`` (the default): while an instruction's inputs are known (:class:`Known`: given
inputs, constants, proved results), Z3 derives its outputs and proves them unique on those
inputs before the next instruction runs (verify/steps.py); an output that is not proved unique
raises (EnvironmentFault for ``unknown``, InternalError for a second solution) and is never
returned. Symbolic inputs (counterexample search) and mode ``joint`` use the constraints: every
op result gets fresh solver constants, one per element, of its storage width, and the equations
``t[k] == store(op(inputs)[k])`` are the program's constraints (SSA: one definition per value);
:func:`solve` derives the outputs from them and asks for *some other output*, which must be
``unsat``.
"""
from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import z3

from ops.base import Ref
from vm.errors import EnvironmentFault, InternalError
from vm.executors import Context, Executor

from .domains import Z3_LOCK, as_int, domain, solver
from .ground import EvalDomain
from .steps import Known, StepProof, digits_lemma, prove

_FRESH = itertools.count()
RLIMIT = 200_000_000
"""Resource limit (deterministic) of the formal executor's solver calls."""


@dataclass(eq=False)
class Sym:
    """A symbolic tensor: ``terms`` (flat, C order) of ``bits``-wide storage (None: the working
    width), the ``defs`` that define them and the tensors they were computed from."""

    shape: tuple[int, ...]
    terms: list
    bits: int | None = None
    defs: list = field(default_factory=list)
    parents: tuple = ()


@dataclass
class Proof:
    """Outcome of a formal run: ``status`` is ``proved`` only when the query "some output
    differs from the derived one" was answered ``unsat``."""

    status: str
    seconds: float
    constraints: int
    detail: str = ""
    steps: list = field(default_factory=list)

    @property
    def proved(self) -> bool:
        return self.status == "proved"


class FormalExecutor(Executor):
    """Z3: kernels are the ops' ``z3`` rules (``domain_name`` ``"bv"``: 64-bit machine
    arithmetic, the default; ``"int"``: integers). ``mode="steps"`` (the default) proves one
    instruction at a time while its inputs are known (verify/steps.py) and falls back to
    constraints for symbolic inputs; ``mode="joint"`` builds the constraints of the whole
    program and solves them at the end. z3's Python API shares one context per process, so
    loads and runs hold one process-wide lock (:meth:`exclusive`): formal models may be loaded
    and run from several threads, one at a time."""

    name = "formal"

    def __init__(self, ctx: Context, domain_name: str = "bv", timeout_s: float | None = None,
                 mode: str = "steps"):
        super().__init__(ctx)
        if mode not in ("steps", "joint"):
            raise ValueError(f"unknown formal mode {mode!r} (steps or joint)")
        with Z3_LOCK:
            self.xp = domain(domain_name)
        self.timeout_s, self.mode = timeout_s, mode

    def exclusive(self):
        return Z3_LOCK

    def kernel(self, op):
        zx = self.xp

        def encode(_zx, *args, gemm=None, **attrs):
            if all(isinstance(a, Known) for a in args):
                call = _Call(op, args, dict(attrs, gemm=gemm) if gemm else attrs)
                outs = tuple(_Deferred(call, k) for k in range(len(op.outputs)))
                return outs if len(outs) > 1 else outs[0]
            args = [self._symbolic(a) for a in args]
            refs = [Ref(a.shape, [zx.load(t, a.bits) for t in a.terms]) for a in args]
            out = op.z3(zx, *refs, **attrs)
            outs = (out,) if len(op.outputs) == 1 else tuple(out)
            return tuple(_Pending(r, args) for r in outs) if len(outs) > 1 else _Pending(out, args)
        return encode

    def _symbolic(self, value):
        """A Sym of numerals for a known tensor (an operand beside symbolic ones)."""
        if not isinstance(value, Known):
            return value
        terms = [self.xp.num(int(v)) for v in value.array.reshape(-1).tolist()]
        return Sym(value.shape, terms, None, [], (value,))

    def from_host(self, array: np.ndarray):
        if self.mode == "steps":
            return Known(np.asarray(array))
        zx = self.xp
        return Sym(tuple(array.shape), [zx.num(int(v)) for v in array.reshape(-1).tolist()])

    def narrow(self, value, dtype: np.dtype):
        """Fresh constants of the storage width, defined by the op's terms stored there (a
        known result: its proved values, stored)."""
        if isinstance(value, _Deferred):
            return value.call.known(value.position, np.dtype(dtype), self)
        zx, bits = self.xp, np.dtype(dtype).itemsize * 8
        k = next(_FRESH)
        names = [zx.var(f"t{k}_{j}", bits) for j in range(len(value.ref.data))]
        defs = [v == zx.store(t, bits) for v, t in zip(names, value.ref.data)]
        return Sym(tuple(value.ref.shape), names, bits, defs, value.parents)

    def to_host(self, value) -> np.ndarray:
        """The unique value of ``value`` under the constraints; raises unless proved unique."""
        arrays, proof = solve([value], self.timeout_s)
        if not proof.proved:
            raise _failure(proof)
        return arrays[0]


@dataclass
class _Pending:
    """An op's result terms before they are stored (narrow turns them into a Sym)."""

    ref: Ref
    parents: tuple


@dataclass(eq=False)
class _Deferred:
    """Output ``position`` of an instruction on known inputs, proved when it is stored."""

    call: "_Call"
    position: int


class _Call:
    """One instruction on known inputs: proved once (verify/steps.py), stored per output."""

    def __init__(self, op, args: tuple, kwargs: dict):
        self.op, self.args, self.kwargs = op, args, kwargs
        self.values, self.proof = None, None

    def known(self, position: int, dtype: np.dtype, executor: FormalExecutor) -> Known:
        if self.proof is None:
            arrays = [a.array for a in self.args]
            self.values, self.proof = prove(self.op, arrays, self.kwargs, executor.xp,
                                             executor.timeout_s)
        if not self.proof.proved:
            raise _failure(run_proof([Known(np.zeros(0), self.proof, self.args)]))
        return Known(store(self.values[position], dtype, executor.xp), self.proof, self.args)


def store(values: np.ndarray, dtype: np.dtype, zx) -> np.ndarray:
    """Proved values in their storage dtype: a value inside the type's range is stored
    unchanged (``lemma:store``); any other is stored as Z3's ``store`` rewrites it (the low
    bits, as astype wraps)."""
    info = np.iinfo(dtype)
    inside = (values >= info.min) & (values <= info.max)
    if inside.all():
        return values.astype(dtype)
    if zx.name == "int":
        raise InternalError(f"formal: a value does not fit its {dtype} storage (integers)")
    out = values.copy()
    ev = EvalDomain(zx)
    bits = dtype.itemsize * 8
    for v in np.unique(values[~inside]):
        out[values == v] = ev.store(ev.lift(int(v)), bits).v
    return out.astype(dtype)


def _cone(values):
    """The nodes of the cone of ``values``, each once, every node after its parents."""
    seen = set()
    stack = [(v, False) for v in values]
    while stack:
        node, done = stack.pop()
        if done:
            yield node
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node.parents)


def constraints(values) -> list:
    """Every definition in the cone of ``values`` (each once, inputs first)."""
    return [d for node in _cone(values) for d in node.defs]


def solve(values, timeout_s: float | None = None) -> tuple[list[np.ndarray], Proof]:
    """The values of ``values`` and the proof that no others satisfy the program's
    constraints: for known tensors, the proofs of the instructions they depend on; for
    symbolic ones, their constraints are solved and a second solution must be ``unsat``."""
    steps = step_proofs(values)
    if all(isinstance(v, Known) for v in values):
        return [v.array.astype(np.int64) for v in values], run_proof(values)
    arrays, proof = _solve_joint(values, timeout_s)
    if steps:
        unproved = [p for p in steps if not p.proved]
        if unproved and proof.proved:
            proof.status, proof.detail = unproved[0].status, unproved[0].detail
        proof.steps = steps
    return arrays, proof


def step_proofs(values) -> list[StepProof]:
    """The proofs of the instructions in the cone of ``values`` (program order), and the
    lemmas they rest on."""
    seen, order = set(), []
    for node in _cone(values):
        if isinstance(node, Known) and node.proof is not None and id(node.proof) not in seen:
            seen.add(id(node.proof))
            order.append(node.proof)
    if any(p.method == "packed" for p in order):
        order.insert(0, digits_lemma())
    return order


def run_proof(values) -> Proof:
    """The proof of a run on known inputs: proved when every instruction and lemma is."""
    steps = step_proofs(values)
    bad = [p for p in steps if not p.proved]
    methods = Counter(p.method for p in steps)
    detail = ("every instruction proved unique on its known inputs ("
              + ", ".join(f"{n} {m}" for m, n in sorted(methods.items())) + ")")
    if bad:
        detail = f"{bad[0].op} ({bad[0].method}): {bad[0].detail}"
    return Proof(bad[0].status if bad else "proved", sum(p.seconds for p in steps),
                 sum(p.facts for p in steps), detail, steps)


def _solve_joint(values, timeout_s: float | None = None) -> tuple[list[np.ndarray], Proof]:
    """Derive ``values`` from their constraints and prove that no other assignment exists."""
    start = time.perf_counter()
    defs = constraints(values)
    s = solver(RLIMIT, timeout_s)
    s.add(defs)
    first = s.check()
    if first != z3.sat:
        return [], Proof("unknown" if first == z3.unknown else "counterexample",
                         time.perf_counter() - start, len(defs),
                         f"the constraints are {first}: {s.reason_unknown()}")
    model = s.model()
    found = [[as_int(model.eval(t, model_completion=True)) for t in v.terms] for v in values]
    other = [t != model.eval(t, model_completion=True) for v in values for t in v.terms]
    s.add(z3.Or(other) if other else z3.BoolVal(False))
    second = s.check()
    seconds = time.perf_counter() - start
    if second == z3.unsat:
        status, detail = "proved", "no other output satisfies the constraints"
    elif second == z3.sat:
        status, detail = "counterexample", "a second output satisfies the constraints"
    else:
        status, detail = "unknown", f"uniqueness query unknown: {s.reason_unknown()}"
    arrays = [np.array(f, dtype=np.int64).reshape(v.shape) for f, v in zip(found, values)]
    return arrays, Proof(status, seconds, len(defs), detail)


def _failure(proof: Proof):
    if proof.status == "unknown":
        error = EnvironmentFault(f"formal: the output could not be proved unique "
                                 f"({proof.detail})")
    else:
        error = InternalError(f"formal: {proof.detail} (an encoding bug)")
    error.proof = proof
    return error
