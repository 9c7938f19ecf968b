"""Proof obligations and the static ones: shapes and byte lengths, CVM lengths, gas, memory.

An :class:`Obligation` carries its claim as a standalone SMT-LIB2 query (the negated claim,
expected ``unsat``) and a way to decide it: ``exact`` obligations are decided by exact integer
arithmetic in Python (the file lets any SMT solver re-check the same arithmetic), ``z3`` ones by
z3 on the file's text itself. Shapes are static in detvm (no op has a data-dependent shape), so
these facts hold for every input of any domain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ops.base import OpError, bound
from vm.memory import WORKSPACE_KEEP, step_scratch
from vm.program import Program
from vm.validate import MEMORY_WEIGHT, _liveness, infer

from .smt2 import num, smt2_text, total

STATUSES = ("proved", "counterexample", "unknown")


@dataclass
class Obligation:
    """One claim. ``query()`` gives (declarations, assertions) of its negation; ``decide()``
    (exact obligations) returns (status, detail)."""

    name: str
    method: str
    query: Callable[[], tuple[list, list]]
    decide: Callable[[], tuple[str, str]] | None = None
    note: str = ""
    status: str = "unknown"
    seconds: float = 0.0
    detail: str = ""
    witness: dict | None = None
    replay: str = ""
    facts: dict = field(default_factory=dict)

    def smt2(self, model: str) -> str:
        decls, asserts = self.query()
        return smt2_text(model, self.name, "unsat", decls, asserts, self.note)

    def summary(self) -> dict:
        out = {"name": self.name, "status": self.status, "seconds": round(self.seconds, 6),
               "method": self.method, "detail": self.detail}
        if self.replay:
            out["replay"] = self.replay
        return out


def _negated(claims: list[str]) -> list[str]:
    """The assertion "some claim fails" (n-ary and/or only with two or more arguments)."""
    if not claims:
        return ["false"]
    return [f"(not {claims[0]})" if len(claims) == 1 else f"(not (and {' '.join(claims)}))"]


def any_of(terms: list[str]) -> str:
    """SMT-LIB disjunction of ``terms`` (false for none)."""
    if not terms:
        return "false"
    return terms[0] if len(terms) == 1 else "(or " + " ".join(terms) + ")"


def _product(factors) -> str:
    factors = [num(f) for f in factors]
    return factors[0] if len(factors) == 1 else "(* " + " ".join(factors) + ")"


def _exact(problems: list[str], proved: str) -> tuple[str, str]:
    if problems:
        return "counterexample", "input-independent (every input is a witness): " + problems[0]
    return "proved", proved


# ---------------------------------------------------------------------------------------------
# (1) shapes, byte lengths, storage types; CVM input/output lengths and type sizes
# ---------------------------------------------------------------------------------------------

def shapes(program: Program) -> Obligation:
    """Every op result has the shape its shape rule gives; every tensor's byte length is
    size x storage width, and its storage type holds its precision's range."""
    def decide():
        problems = []
        for index, ins in enumerate(program.code):
            t = program.tensors
            try:
                _, out_shapes, _ = infer(ins.op, [t[i].shape for i in ins.inputs],
                                         [t[i].precision for i in ins.inputs], ins.attrs)
            except (OpError, KeyError) as e:
                problems.append(f"{program.describe(index)}: {e}")
                continue
            for i, s in zip(ins.outputs, out_shapes):
                if tuple(s) != tuple(t[i].shape):
                    problems.append(f"{program.describe(index)}: %{t[i].name} is declared "
                                    f"{list(t[i].shape)}, the shape rule gives {list(s)}")
        for t in program.tensors:
            if bound(t.precision) > bound(8 * t.dtype.itemsize):
                problems.append(f"%{t.name}: p{t.precision} does not fit {t.dtype}")
        return _exact(problems, f"{len(program.tensors)} tensors")

    def query():
        claims = []
        for t in program.tensors:
            width = t.dtype.itemsize
            claims.append(f"(= {_product([*t.shape, width])} {t.size * width})")
            claims.append(f"(<= {bound(t.precision)} {bound(8 * width)})")
        return [], _negated(claims)

    return Obligation("shapes", "exact", query, decide,
                      "every tensor: byte length = prod(shape) * storage width; "
                      "R(p) <= the storage type's maximum")


def _type_size_term(precisions) -> str:
    test = " ".join(f"(<= {p} 8)" for p in precisions)
    return f"(ite (and {test}) 1 4)" if len(precisions) > 1 else f"(ite {test} 1 4)"


def io_lengths(program: Program, claimed: dict) -> Obligation:
    """CVM's meanings: type size = 1 byte when every precision is <= 8, else 4; length = total
    elements x type size (inputs and outputs)."""
    groups = {"input": [program.tensors[i] for i in program.inputs],
              "output": [program.tensors[i] for i in program.outputs]}

    def exact():
        out = {}
        for kind, ts in groups.items():
            size = 1 if not ts or max(t.precision for t in ts) <= 8 else 4
            out[f"{kind}_type_size"] = size
            out[f"{kind}_length"] = sum(t.size for t in ts) * size
        return out

    def decide():
        got = exact()
        problems = [f"{k} is {claimed[k]}, the rule gives {v}" for k, v in got.items()
                    if claimed.get(k, v) != v]
        return _exact(problems, ", ".join(f"{k} {v}" for k, v in got.items()))

    def query():
        claims = []
        for kind, ts in groups.items():
            if not ts:
                continue
            ts_term = _type_size_term([t.precision for t in ts])
            claims.append(f"(= {ts_term} {claimed[kind + '_type_size']})")
            claims.append(f"(= (* {total(str(t.size) for t in ts)} {ts_term}) "
                          f"{claimed[kind + '_length']})")
        return [], _negated(claims)

    return Obligation("io_lengths", "exact", query, decide,
                      "CVM input/output length and type size")


# ---------------------------------------------------------------------------------------------
# (2) gas and peak memory
# ---------------------------------------------------------------------------------------------

def _gas_terms(program: Program) -> list[str]:
    terms = [f"(* {MEMORY_WEIGHT} {t.size})" for t in program.tensors if t.kind != "value"]
    for ins in program.code:
        op, t = program.op(ins), program.tensors
        base = op.cost([t[i].shape for i in ins.inputs], ins.attrs)
        sizes = [t[i].size for i in ins.outputs]
        terms.append(f"(+ (* {base} {sizes[0]}) (* {MEMORY_WEIGHT} {total(map(str, sizes))}))")
        if op.work is not None:         # gas for work beyond CVM's formula (docs/format.md)
            terms.append(str(op.work([t[i].shape for i in ins.inputs],
                                     [t[i].precision for i in ins.inputs], ins.attrs)))
    return terms


def _eval(term: str) -> int:
    """Evaluate our own ground arithmetic s-expressions (+, *, numerals) exactly."""
    tokens = term.replace("(", " ( ").replace(")", " ) ").split()

    def parse(k):
        if tokens[k] != "(":
            return int(tokens[k]), k + 1
        opn, k, args = tokens[k + 1], k + 2, []
        while tokens[k] != ")":
            v, k = parse(k)
            args.append(v)
        if opn == "+":
            return sum(args), k + 1
        if opn == "-":
            return (-args[0] if len(args) == 1 else args[0] - sum(args[1:])), k + 1
        out = 1
        for a in args:
            out *= a
        return out, k + 1

    return parse(0)[0]


def gas(program: Program, claimed: int) -> Obligation:
    """The model's gas (CVM GetOps: op weights x output sizes + 5 x every tensor's elements,
    plus the ops' work terms) equals ``claimed``; it does not depend on the input."""
    def decide():
        value = sum(_eval(t) for t in _gas_terms(program))
        return _exact([] if value == claimed else [f"gas is {value}, {claimed} claimed"],
                      f"gas {value}")

    return Obligation("gas", "exact",
                      lambda: ([], _negated([f"(= {total(_gas_terms(program))} {claimed})"])),
                      decide, "gas = sum over ops of cost * size(out0) + 5 * sizes")


def _live_sums(program: Program) -> list[list[int]]:
    """The byte counts at every point of a run (vm/memory.py): the live tensors (buffers freed
    once dead), the running step's scratch bound and the kept workspace; at the end the
    constants, the outputs and their copies."""
    last = _liveness(program)
    nbytes = [t.size * t.dtype.itemsize for t in program.tensors]
    alive = {i for i, t in enumerate(program.tensors) if t.kind != "value"}
    sums = [[nbytes[i] for i in sorted(alive)] + [WORKSPACE_KEEP]]
    for index, ins in enumerate(program.code):
        alive |= set(ins.outputs)
        sums.append([nbytes[i] for i in sorted(alive)]
                    + [step_scratch(program, ins), WORKSPACE_KEEP])
        for i in set(ins.inputs) | set(ins.outputs):
            if last[i] == index and program.tensors[i].kind != "const":
                alive.discard(i)
    outputs = [nbytes[i] for i in sorted(set(program.outputs))]
    consts = [nbytes[i] for i, t in enumerate(program.tensors) if t.kind == "const"]
    return sums + [consts + outputs + outputs + [WORKSPACE_KEEP]]


def peak_memory(program: Program, claimed: int) -> Obligation:
    """The peak memory bound (live tensors, every buffer freed after its last use, plus each
    step's scratch bound and the kept workspace; vm/memory.py) equals ``claimed``."""
    def decide():
        value = max(sum(s) for s in _live_sums(program))
        return _exact([] if value == claimed else [f"peak is {value}, {claimed} claimed"],
                      f"peak memory {value} bytes")

    def query():
        sums = [total(map(str, s)) for s in _live_sums(program)]
        claims = [f"(>= {claimed} {s})" for s in sums]
        claims.append(any_of([f"(= {claimed} {s})" for s in sums]))
        return [], _negated(claims)

    return Obligation("peak_memory", "exact", query, decide,
                      "peak = max over the points of a run of live bytes + scratch")
