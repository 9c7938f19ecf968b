"""A program with symbols from two fixed-shape builds of the same model.

A front-end that only knows fixed shapes (the ONNX importer) builds the model twice, with
different values for each symbol (``probes``); :func:`generalize` lines the two programs up and
turns every difference that is exactly a symbol's two values into that symbol: a tensor's first
dim, or an entry of an attribute declared ``symbolic`` (reshape's shape, strided_slice's
bounds). Any other difference (a constant, an instruction, an attribute that moves with the
batch in another way) means the model is not batch-parallel there, and is an InvalidError
naming it. The result is validated, which checks every instruction's batch rule, and its
instances at the probe values are exactly the two builds.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

import ops
from vm.errors import InvalidError
from vm.listing import instruction_text
from vm.program import Instr, Program, Tensor
from vm.symbolic import instantiate
from vm.validate import validate

PROBES = ((2, 3), (5, 7), (11, 13), (17, 19))
"""The pairs of values symbols are built at (distinct, so every difference names its symbol)."""


def probe_values(symbols: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """The two sets of values to build ``symbols`` at."""
    if len(symbols) > len(PROBES):
        raise InvalidError(f"at most {len(PROBES)} symbols, got {len(symbols)}")
    return ({s: PROBES[k][0] for k, s in enumerate(symbols)},
            {s: PROBES[k][1] for k, s in enumerate(symbols)})


def build_symbolic(build: Callable[[dict[str, int]], Program],
                   maxima: Mapping[str, int]) -> Program:
    """The program with symbols ``maxima`` (name -> maximum) from ``build(values)``, a
    fixed-shape build for given symbol values."""
    a, b = probe_values(sorted(maxima))
    return generalize(build(a), build(b), a, b, maxima)


def generalize(pa: Program, pb: Program, a: Mapping[str, int], b: Mapping[str, int],
               maxima: Mapping[str, int]) -> Program:
    """The program with symbols whose instances for values ``a`` and ``b`` are ``pa``, ``pb``."""
    by_pair = {(a[s], b[s]): s for s in maxima}
    if (pa.name, pa.metadata, pa.outputs, pa.semantics) != \
            (pb.name, pb.metadata, pb.outputs, pb.semantics):
        raise InvalidError("the two builds differ in name, metadata or outputs")
    if len(pa.tensors) != len(pb.tensors) or len(pa.code) != len(pb.code):
        raise InvalidError(f"the model's structure depends on the batch ({len(pa.code)} "
                           f"instructions for {_values(a)}, {len(pb.code)} for {_values(b)})")
    tensors = [_tensor(ta, tb, by_pair) for ta, tb in zip(pa.tensors, pb.tensors)]
    for i, x in pa.consts.items():
        y = pb.consts.get(i)
        if y is None or x.shape != y.shape or not np.array_equal(x, y):
            raise InvalidError(f"constant @{pa.tensors[i].name} depends on the batch")
    code = [_instr(pa, ia, ib, by_pair) for ia, ib in zip(pa.code, pb.code)]
    used = {t.symbol for t in tensors if t.kind == "input" and t.symbol}
    program = Program(pa.name, tensors, dict(pa.consts), code, list(pa.outputs),
                      dict(pa.metadata), pa.semantics, {s: maxima[s] for s in sorted(used)})
    validate(program)
    for values, built in ((a, pa), (b, pb)):
        again = instantiate(program, {s: values[s] for s in program.symbols})
        if again.tensors != built.tensors or again.code != built.code:
            raise InvalidError("internal: the generalized program does not give back a build")
    return program


def symbolize(program: Program, values: Mapping[str, int], maxima: Mapping[str, int],
              inputs: Mapping[str, str] | None = None) -> Program:
    """The program with symbols of which ``program`` is the instance for ``values`` (symbol ->
    the batch it has there): the inputs in ``inputs`` (input name -> symbol; default: every
    input whose first dim is a symbol's value), the values computed from them, and the first
    entries of symbolic attributes equal to that value become the symbol. It is validated and
    must give ``program`` back for ``values``: a batch-parallel program computes each row as
    ``program`` does, so nothing a guess could get wrong goes unnoticed."""
    by_value = {n: s for s, n in values.items()}
    if len(by_value) != len(values):
        raise InvalidError("two symbols with the same value cannot be told apart")
    chosen = dict(inputs) if inputs is not None else {
        program.tensors[i].name: by_value[program.tensors[i].shape[0]]
        for i in program.inputs if program.tensors[i].shape and
        program.tensors[i].shape[0] in by_value}
    tensors = list(program.tensors)
    batched: dict[int, str] = {}
    for i in program.inputs:
        if tensors[i].name in chosen:
            batched[i] = chosen[tensors[i].name]
    code = []
    for ins in program.code:
        names = {batched[i] for i in ins.inputs if i in batched}
        if len(names) == 1:
            s = names.pop()
            symbolic = {a.name for a in ops.get(ins.op).attrs if a.symbolic}
            attrs = {k: (s, *v[1:]) if k in symbolic and isinstance(v, tuple) and v
                     and v[0] == values[s] else v for k, v in ins.attrs.items()}
            ins = Instr(ins.op, ins.inputs, ins.outputs, attrs)
            for i in ins.outputs:
                if tensors[i].shape and tensors[i].shape[0] == values[s]:
                    batched[i] = s
        code.append(ins)
    for i, s in batched.items():
        t = tensors[i]
        tensors[i] = Tensor(t.name, (s, *t.shape[1:]), t.precision, t.kind)
    used = sorted(set(batched.values()))
    out = Program(program.name, tensors, dict(program.consts), code, list(program.outputs),
                  dict(program.metadata), program.semantics, {s: maxima[s] for s in used})
    validate(out)
    again = instantiate(out, {s: values[s] for s in used})
    if again.tensors != program.tensors or again.code != program.code:
        raise InvalidError("internal: the symbolic program does not give the program back")
    return out


def _values(values: Mapping[str, int]) -> str:
    return ", ".join(f"{s} = {n}" for s, n in sorted(values.items()))


def _tensor(ta: Tensor, tb: Tensor, by_pair: dict) -> Tensor:
    if (ta.name, ta.kind, ta.precision, len(ta.shape)) != \
            (tb.name, tb.kind, tb.precision, len(tb.shape)):
        raise InvalidError(f"tensor %{ta.name} differs between the builds "
                           f"({ta.kind} {list(ta.shape)} p{ta.precision} / {tb.kind} "
                           f"{list(tb.shape)} p{tb.precision})")
    if ta.shape == tb.shape:
        return ta
    symbol = by_pair.get((ta.shape[0], tb.shape[0]))
    if symbol is None or ta.shape[1:] != tb.shape[1:] or ta.kind == "const":
        raise InvalidError(f"tensor %{ta.name} has shape {list(ta.shape)} in one build and "
                           f"{list(tb.shape)} in the other: not a batch axis")
    return Tensor(ta.name, (symbol, *ta.shape[1:]), ta.precision, ta.kind)


def _instr(pa: Program, ia: Instr, ib: Instr, by_pair: dict) -> Instr:
    where = f"`{instruction_text(pa, ia)}`"
    if (ia.op, ia.inputs, ia.outputs) != (ib.op, ib.inputs, ib.outputs) \
            or set(ia.attrs) != set(ib.attrs):
        raise InvalidError(f"{where} differs between the builds")
    symbolic = {x.name for x in ops.get(ia.op).attrs if x.symbolic}
    attrs = {}
    for key, va in ia.attrs.items():
        vb = ib.attrs[key]
        if va == vb:
            attrs[key] = va
            continue
        if key not in symbolic or not isinstance(va, tuple) or len(va) != len(vb) \
                or any(x != y and (x, y) not in by_pair for x, y in zip(va, vb)):
            raise InvalidError(f"{where}: attribute {key} depends on the batch ({va} / {vb})")
        attrs[key] = tuple(x if x == y else by_pair[(x, y)] for x, y in zip(va, vb))
    return Instr(ia.op, ia.inputs, ia.outputs, attrs)
