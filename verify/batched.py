"""Certificates of programs with symbols (a batch ``N <= max``): what holds for every N.

A certificate of such a program (docs/formal.md) consists of

* ``batch_parallel`` (exact): every instruction reading a batched tensor is accepted by its
  op's batch rule, re-derived from the rules (vm/symbolic.py); the SMT file lists each batched
  tensor's size as ``N x rest`` within the format's limits for every N up to the maximum;
* ``gas_affine`` (z3, over an integer N): the per-instruction gas terms sum to the stated
  ``a + b*N`` for every N in [1, max];
* ``peak_memory_affine`` (z3, over N): the live bytes after every step are at most the stated
  envelope and it is reached, for every N in [1, max];
* every obligation of the instance for N = 1 (shapes, gas, memory, no overflow, licences),
  each resting on ``batch_parallel``: each row of a batch of N is computed as that instance
  computes its one row, so what is proved for it holds row by row for every N.
"""
from __future__ import annotations

from ops.base import OpError
from vm.errors import InvalidError
from vm.program import Program
from vm.memory import WORKSPACE_KEEP
from vm.symbolic import (Affine, infer_batched, instantiate, scratch_affine, shape_at,
                         symbolic_gas, symbolic_peak)
from vm.validate import MAX_ELEMENTS, MEMORY_WEIGHT, _liveness, validate

from .obligations import Obligation, _exact, _negated, any_of
from .smt2 import num, total

RESTS_ON = "batch_parallel"


def at_one(model):
    """(program, analysis or None, obligations) of a program with symbols: its instance for
    every symbol = 1 and the obligations for every value of the symbols."""
    program = model if isinstance(model, Program) else model.program
    ones = {s: 1 for s in program.symbols}
    if isinstance(model, Program):
        instance, analysis = instantiate(program, ones), None
    else:
        found = model.instance(**ones)
        instance, analysis = found.program, found.analysis
    formula = model.analysis.gas_formula if not isinstance(model, Program) else None
    memory = model.analysis.memory_formula if not isinstance(model, Program) else None
    return instance, analysis, [batch_parallel(program), gas_affine(program, formula),
                                peak_memory_affine(program, memory)]


def _declarations(program: Program) -> tuple[list, list[str]]:
    decls = [(s, "Int") for s in sorted(program.symbols)]
    ranges = [f"(and (<= 1 {s}) (<= {s} {n}))" for s, n in sorted(program.symbols.items())]
    return decls, ranges


def _term(a: Affine) -> str:
    terms = [f"(* {num(c)} {s})" for s, c in a.coeffs]
    return total(([num(a.const)] if a.const or not terms else []) + terms)


def batch_parallel(program: Program) -> Obligation:
    """Every batched instruction is licensed by its op's batch rule."""
    batched = [(k, ins) for k, ins in enumerate(program.code)
               if any(program.tensors[i].symbol for i in ins.inputs)]

    def decide():
        problems = []
        for k, ins in batched:
            t = program.tensors
            try:
                infer_batched(ins.op, [t[i].shape for i in ins.inputs],
                              [t[i].precision for i in ins.inputs], ins.attrs, program.symbols,
                              program.semantics, [program.consts.get(i) for i in ins.inputs])
            except (OpError, KeyError, ValueError) as e:
                problems.append(f"{program.describe(k)}: {e}")
        try:
            validate(program)
        except InvalidError as e:
            problems.append(e.message)
        return _exact(problems, f"{len(batched)} batched instructions, each licensed by its "
                      "op's batch rule")

    def query():
        decls, ranges = _declarations(program)
        claims = []
        for t in program.tensors:
            if t.symbol:
                rest = Affine.size(t.shape)
                claims.append(f"(<= {_term(rest)} {MAX_ELEMENTS})")
        return decls, ranges + _negated(claims)

    note = "\n".join(f"instruction {k}: {ins.op}, batch rule "
                     f"{_rule_name(program.op(ins).batch)}" for k, ins in batched)
    return Obligation(RESTS_ON, "exact", query, decide,
                      "every batched tensor has N x rest <= 2^30 elements for every N; each "
                      "batched instruction is licensed by its op's batch rule:\n" + note)


def _rule_name(rule) -> str:
    return getattr(rule, "__name__", None) or repr(rule) if callable(rule) else repr(rule)


def gas_affine(program: Program, claimed: Affine | None) -> Obligation:
    """gas(N) = the stated a + b*N for every N up to the maximum."""
    formula = symbolic_gas(program, MEMORY_WEIGHT)
    claimed = claimed or formula

    def terms() -> list[str]:
        ones = {s: 1 for s in program.symbols}
        out = [_term(Affine.size(t.shape, MEMORY_WEIGHT)) for t in program.tensors
               if t.kind != "value"]
        for ins in program.code:
            t = program.tensors
            base = program.op(ins).cost([shape_at(t[i].shape, ones) for i in ins.inputs],
                                        ins.attrs)
            sizes = [Affine.size(t[i].shape) for i in ins.outputs]
            out.append(f"(+ (* {base} {_term(sizes[0])}) "
                       f"(* {MEMORY_WEIGHT} {total(map(_term, sizes))}))")
            op = program.op(ins)
            if op.work is not None:         # linear in the batch (ops/base.py)
                per_image = op.work([shape_at(t[i].shape, ones) for i in ins.inputs],
                                    [t[i].precision for i in ins.inputs], ins.attrs)
                out.append(_term(Affine.size(t[ins.inputs[0]].shape[:1], per_image)))
        return out

    def query():
        decls, ranges = _declarations(program)
        return decls, ranges + _negated([f"(= {total(terms())} {_term(claimed)})"])

    return Obligation("gas_affine", "z3", query, None,
                      f"for every value of the symbols: gas = {claimed}")


def peak_memory_affine(program: Program, claimed) -> Obligation:
    """The live bytes after every step are at most the stated envelope, which is reached."""
    envelope = claimed or symbolic_peak(program, _liveness(program))

    def query():
        decls, ranges = _declarations(program)
        last = _liveness(program)
        nbytes = [Affine.size(t.shape, t.dtype.itemsize) for t in program.tensors]
        alive = {i for i, t in enumerate(program.tensors) if t.kind != "value"}
        steps = [sorted(alive)]
        for index, ins in enumerate(program.code):
            alive |= set(ins.outputs)
            steps.append(sorted(alive))
            for i in set(ins.inputs) | set(ins.outputs):
                if last[i] == index and program.tensors[i].kind != "const":
                    alive.discard(i)
        keep = _term(Affine.of(WORKSPACE_KEEP))
        scratch = [keep] + [f"(+ {_term(scratch_affine(program, ins))} {keep})"
                            for ins in program.code]
        sums = [total([_term(nbytes[i]) for i in s] + [extra]) for s, extra in zip(steps, scratch)]
        ends = [i for i, t in enumerate(program.tensors) if t.kind == "const"] + \
            2 * sorted(set(program.outputs))
        sums.append(total([_term(nbytes[i]) for i in ends] + [keep]))
        decls.append(("peak", "Int", _max([_term(p) for p in envelope.pieces])))
        claims = [f"(>= peak {s})" for s in sums] + [any_of([f"(= peak {s})" for s in sums])]
        return decls, ranges + _negated(claims)

    return Obligation("peak_memory_affine", "z3", query, None,
                      f"for every value of the symbols: peak memory = {envelope}")


def _max(terms: list[str]) -> str:
    out = terms[0]
    for t in terms[1:]:
        out = f"(ite (>= {out} {t}) {out} {t})"
    return out
