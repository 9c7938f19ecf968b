"""Chains of elementwise integer steps folded into one table lookup, and dead code removed.

A tensor computed from one small-range tensor R (its *root*) by elementwise instructions that
do not depend on the position (per-tensor requantize, lut, relu, clip) is a function of R's
value alone. Running the chain's own kernels on every value R can take gives that function as
a table, and one ``lut`` of R replaces the chain. A two-input lut whose arguments are such
functions of the same root, with the same shape, folds too (SiLU: x * sigmoid(x) becomes one
256-entry table). The rewritten program computes the same bytes for every input: each table
entry is what the replaced instructions compute for that value of R (lut clamps, so a value
of R outside its range is never read; R's range is its proven one).

:func:`prune` then drops instructions no output depends on, and unused constants.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

import ops
from ops.base import bound
from vm.program import Instr, Program, Tensor, storage_dtype
from vm.validate import Limits, validate

MAX_ROOT = 1 << 12
"""Roots of at most 4,096 values (8-bit activations: 256)."""
UNARY = ("requantize", "relu", "clip")


def fold_tables(program: Program, limits: Limits | None = None) -> Program:
    """``program`` with every chain of two or more elementwise steps replaced by one lut
    (validated under ``limits``, default vm.Limits())."""
    tensors, consts = list(program.tensors), dict(program.consts)
    chains: dict[int, tuple[int, np.ndarray, int]] = {}     # id -> (root, values, steps)
    producers = {o: ins for ins in program.code for o in ins.outputs}
    ranges = lambda tid: _range(program, producers.get(tid), tid)
    code = []
    for ins in program.code:
        chain = _step(program, ins, chains, ranges)
        if chain is None:
            code.append(ins)
            continue
        out = ins.outputs[0]
        chains[out] = chain
        root, values, steps = chain
        if steps < 2:
            code.append(ins)
            continue
        t = tensors[out]
        tensors.append(Tensor(_fresh(tensors, f"{t.name}#table"), (len(values),), t.precision,
                              "const"))
        consts[len(tensors) - 1] = values.astype(storage_dtype(t.precision))
        code.append(Instr("lut", (len(tensors) - 1, root), (out,), {"low": (ranges(root)[0],)}))
    folded = replace(program, tensors=tensors, consts=consts, code=code)
    return prune(folded, limits)


def _step(program: Program, ins, chains, ranges):
    """(root, values over the root's range, steps) of ``ins``'s output, or None."""
    if ins.op in UNARY and len(ins.outputs) == 1:
        if ins.op == "requantize" and len(ins.attrs["multiplier"]) != 1:
            return None                                 # per channel: depends on position
        arg = _arg(ins.inputs[0], chains, ranges)
        if arg is None:
            return None
        root, values, steps = arg
        return root, _kernel(ins, values), steps + 1
    if ins.op == "lut" and ins.inputs[0] in program.consts:
        args = [_arg(i, chains, ranges) for i in ins.inputs[1:]]
        shapes = {program.tensors[i].shape for i in ins.inputs[1:]}
        if None in args or len({a[0] for a in args}) != 1 or len(shapes) != 1:
            return None
        table = program.consts[ins.inputs[0]]
        values = ops.get("lut").kernel(np, table, *[a[1] for a in args], **ins.attrs)
        return args[0][0], np.asarray(values, np.int64), max(a[2] for a in args) + 1
    return None


def _arg(tid: int, chains, ranges):
    """A chained tensor's (root, values, steps); an unchained one with a small range is its
    own root (the identity, 0 steps)."""
    if tid in chains:
        return chains[tid]
    lo, hi = ranges(tid)
    if hi - lo + 1 > MAX_ROOT:
        return None
    return tid, np.arange(lo, hi + 1, dtype=np.int64), 0


def _range(program: Program, producer, tid: int) -> tuple[int, int]:
    """The proven range of a tensor: a requantize's [qmin, qmax], a constant-table lut's
    table range, else its precision's."""
    if producer is not None and producer.op == "requantize":
        return producer.attrs["qmin"], producer.attrs["qmax"]
    if producer is not None and producer.op == "lut" and producer.inputs[0] in program.consts:
        table = program.consts[producer.inputs[0]]
        return int(table.min()), int(table.max())
    r = bound(program.tensors[tid].precision)
    return -r, r


def _kernel(ins, values: np.ndarray) -> np.ndarray:
    return np.asarray(ops.get(ins.op).kernel(np, values, **ins.attrs), np.int64)


def _fresh(tensors, base: str) -> str:
    names = {t.name for t in tensors}
    name, k = base, 1
    while name in names:
        name, k = f"{base}#{k}", k + 1
    return name


def prune(program: Program, limits: Limits | None = None) -> Program:
    """``program`` without the instructions no output depends on and the constants and
    values nothing reads (inputs stay); tensor ids are renumbered in order; validated (under
    ``limits``, default vm.Limits())."""
    live = set(program.outputs)
    code = []
    for ins in reversed(program.code):
        if live.intersection(ins.outputs):
            code.append(ins)
            live.update(ins.inputs)
    code.reverse()
    written = {o for ins in code for o in ins.outputs}
    keep = [i for i, t in enumerate(program.tensors) if t.kind == "input" or i in live
            or i in written]
    new = {old: k for k, old in enumerate(keep)}
    pruned = replace(program, tensors=[program.tensors[i] for i in keep],
                     consts={new[i]: a for i, a in program.consts.items() if i in new},
                     code=[Instr(ins.op, tuple(new[i] for i in ins.inputs),
                                 tuple(new[i] for i in ins.outputs), ins.attrs) for ins in code],
                     outputs=[new[i] for i in program.outputs])
    validate(pruned, limits or Limits())
    return pruned
