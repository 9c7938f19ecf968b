"""The formal executor: the interpreter loop (vm/interp.py) over symbolic tensors.

Values are :class:`Sym` tensors; the rule an instruction runs is its op's ``z3`` encoding. Every
op result gets fresh solver constants, one per element, of its storage width, and the equations
``t[k] == store(op(inputs)[k])`` are the program's constraints (SSA: one definition per value).
Nothing is solved while the loop runs; :func:`solve` (called by ``to_host``, or jointly for all
outputs by :func:`verify.formal_run`) derives the outputs from the constraints and proves them
unique: it asks for *some other output* and must get ``unsat``. An output that is not proved
unique is never returned.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import z3

from ops.base import Ref
from vm.errors import EnvironmentFault, InternalError
from vm.executors import Context, Executor

from .domains import Z3_LOCK, as_int, domain, solver

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

    @property
    def proved(self) -> bool:
        return self.status == "proved"


class FormalExecutor(Executor):
    """Z3: values are :class:`Sym` tensors, kernels are the ops' ``z3`` rules (``domain_name``
    ``"bv"``: 64-bit machine arithmetic, the default; ``"int"``: integers). z3's Python API
    shares one context per process, so loads and runs hold one process-wide lock
    (:meth:`exclusive`): formal models may be loaded and run from several threads, one at a
    time."""

    name = "formal"

    def __init__(self, ctx: Context, domain_name: str = "bv", timeout_s: float | None = None):
        super().__init__(ctx)
        with Z3_LOCK:
            self.xp = domain(domain_name)
        self.timeout_s = timeout_s

    def exclusive(self):
        return Z3_LOCK

    def kernel(self, op):
        zx = self.xp

        def encode(_zx, *args: Sym, gemm=None, **attrs):
            refs = [Ref(a.shape, [zx.load(t, a.bits) for t in a.terms]) for a in args]
            out = op.z3(zx, *refs, **attrs)
            outs = (out,) if len(op.outputs) == 1 else tuple(out)
            return tuple(_Pending(r, args) for r in outs) if len(outs) > 1 else _Pending(out, args)
        return encode

    def from_host(self, array: np.ndarray) -> Sym:
        zx = self.xp
        return Sym(tuple(array.shape), [zx.num(int(v)) for v in array.reshape(-1).tolist()])

    def narrow(self, value, dtype: np.dtype) -> Sym:
        """Fresh constants of the storage width, defined by the op's terms stored there."""
        zx, bits = self.xp, np.dtype(dtype).itemsize * 8
        k = next(_FRESH)
        names = [zx.var(f"t{k}_{j}", bits) for j in range(len(value.ref.data))]
        defs = [v == zx.store(t, bits) for v, t in zip(names, value.ref.data)]
        return Sym(tuple(value.ref.shape), names, bits, defs, value.parents)

    def to_host(self, value: Sym) -> np.ndarray:
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


def constraints(values) -> list:
    """Every definition in the cone of ``values`` (each once, inputs first)."""
    seen, order = set(), []
    stack = [(v, False) for v in values]
    while stack:
        node, done = stack.pop()
        if done:
            order.extend(node.defs)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        stack.extend((p, False) for p in node.parents)
    return order


def solve(values, timeout_s: float | None = None) -> tuple[list[np.ndarray], Proof]:
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
        return EnvironmentFault(f"formal: the output could not be proved unique ({proof.detail})")
    return InternalError(f"formal: {proof.detail} (an encoding bug)")
