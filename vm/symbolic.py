"""Symbolic dims: a program whose inputs have a symbolic first axis (a batch ``N <= max``).

A program may declare symbols, each with a maximum (``Program.symbols``). The first dim of an
input may be a symbol, and so is the first dim of every value computed from it: ``("N", 10)``.
Every instruction that reads such a *batched* tensor must be batch-parallel: its op declares a
batch rule (``OpDef.batch``, ops/base.py) and the output for N rows is, row by row, what the
op gives on each row alone. By induction over the program the outputs for a batch of N are
the N outputs of single-row runs, byte for byte.

Nothing runs on a symbolic program: :func:`instantiate` substitutes values for the symbols
(in shapes and in ``symbolic`` attributes such as reshape's target shape) and gives an
ordinary program, validated and run like any other. This module infers and checks the symbolic
facts: one instruction's output types (:func:`infer_batched`), gas as an affine function of
the symbols (:class:`Affine`) and peak memory as the maximum of affine functions
(:class:`Envelope`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import ops
from ops.base import OpError, require

from .errors import InvalidError
from .memory import STEP_SLACK, WORKSPACE_KEEP, frees_after
from .program import Instr, Program

SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
RESERVED = ("true", "false", "none")
MAX_SYMBOLS = 16


def check_symbol_name(name) -> None:
    """OpError unless ``name`` can name a symbol (an identifier of at most 64 characters)."""
    require(isinstance(name, str) and SYMBOL_NAME.match(name) is not None
            and name not in RESERVED,
            f"bad symbol name {name!r} (an identifier of 1 to 64 characters, not "
            f"{', '.join(RESERVED)})")


def probes(limit: int) -> list[int]:
    """The values of a symbol at which a rule is evaluated: 1, 2, 3 and the maximum."""
    return sorted({1, 2, 3, limit})


def shape_at(shape: Sequence, dims: Mapping[str, int]) -> tuple[int, ...]:
    """``shape`` with every symbol replaced by its value in ``dims``."""
    return tuple(dims[d] if isinstance(d, str) else d for d in shape)


def attrs_at(op_name: str, attrs: Mapping, dims: Mapping[str, int],
             semantics: int | None = None) -> dict:
    """``attrs`` with the symbols of its ``symbolic`` attributes replaced by their values
    (the op's attributes under ``semantics``, default the current version)."""
    op = ops.get(op_name, semantics)
    symbolic = {a.name for a in op.attrs if a.symbolic} if op is not None else set()
    return {k: shape_at(v, dims) if k in symbolic and isinstance(v, tuple) else v
            for k, v in attrs.items()}


def attr_symbols(attrs: Mapping) -> set[str]:
    """The symbols named in the entries of tuple-valued attributes."""
    return {e for v in attrs.values() if isinstance(v, tuple) for e in v if isinstance(e, str)}


def instantiate(program: Program, dims: Mapping[str, int]) -> Program:
    """The fixed-shape program for the symbol values ``dims`` (constants are shared)."""
    if not program.symbols:
        return program
    missing = sorted(set(program.symbols) - set(dims))
    if missing:
        raise KeyError(missing[0])
    tensors = [replace(t, shape=shape_at(t.shape, dims)) if t.symbol else t
               for t in program.tensors]
    code = [Instr(ins.op, ins.inputs, ins.outputs,
                  attrs_at(ins.op, ins.attrs, dims, program.semantics))
            if attr_symbols(ins.attrs) else ins for ins in program.code]
    return Program(program.name, tensors, program.consts, code, list(program.outputs),
                   dict(program.metadata), program.semantics)


def check_symbols(program: Program, max_dim: int) -> None:
    """The symbol table: at most MAX_SYMBOLS identifiers, maxima in [1, max_dim], each the
    first dim of some input (InvalidError otherwise)."""
    symbols = program.symbols
    if len(symbols) > MAX_SYMBOLS:
        raise InvalidError(f"{len(symbols)} symbols exceed the ceiling {MAX_SYMBOLS}")
    for name, limit in symbols.items():
        try:
            check_symbol_name(name)
        except OpError as e:
            raise InvalidError(str(e)) from None
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= max_dim:
            raise InvalidError(f"symbol {name}: maximum {limit!r} outside [1, {max_dim}]")
    used = {program.tensors[i].symbol for i in program.inputs}
    unused = sorted(set(symbols) - used)
    if unused:
        raise InvalidError(f"symbol {unused[0]} is declared but no input has it")


def check_symbolic_dims(program: Program, t, what: str) -> None:
    """A symbol may only be the first dim of an input or a value, and must be declared."""
    for k, d in enumerate(t.shape):
        if not isinstance(d, str):
            continue
        if k != 0 or t.kind == "const":
            raise InvalidError(f"{what}: symbol {d} as dim {k} of a {t.kind} (only the first "
                               "dim of an input or a computed value may be symbolic)")
        if d not in program.symbols:
            raise InvalidError(f"{what}: undeclared symbol {d}")


# ---------------------------------------------------------------------------------------------
# One instruction
# ---------------------------------------------------------------------------------------------

def infer_batched(op_name: str, shapes: Sequence[tuple], precs: Sequence[int],
                  attrs: Mapping, symbols: Mapping[str, int], semantics: int | None = None,
                  consts: Sequence | None = None):
    """Canonical attrs, output shapes and precisions of an op applied to inputs of which some
    are batched (first dim a symbol of ``symbols``); OpError when it is not batch-parallel.

    The op's batch rule decides which inputs may be batched; its shape, precision and cost
    rules, evaluated at N = 1, 2, 3 and the maximum, must give outputs ``(N, rest)`` with
    ``rest``, the precisions and the gas weight independent of N.
    """
    op = ops.get(op_name, semantics)
    batched = [k for k, s in enumerate(shapes) if s and isinstance(s[0], str)]
    names = {shapes[k][0] for k in batched}
    canon = op.check_attrs(attrs)
    named = attr_symbols(canon)
    if not batched:
        raise ValueError("infer_batched needs a batched input")
    require(len(names) == 1, f"{op_name} mixes the batches {' and '.join(sorted(names))}")
    symbol = names.pop()
    if not named <= {symbol}:
        raise OpError(f"attribute names the symbol {sorted(named - {symbol})[0]}, not this "
                      f"instruction's batch {symbol}")
    for k, s in enumerate(shapes):
        require(all(not isinstance(d, str) for d in s[1:]),
                f"input {k} has a symbol on an axis other than the first")
    allowed = op.batchable(canon, [len(s) for s in shapes], symbols[symbol])
    shared = [k for k in batched if k not in allowed]
    if shared:
        k = shared[0]
        name = op.inputs[min(k, len(op.inputs) - 1)].rstrip("?*")
        can = ", ".join(str(j) for j in allowed)
        raise OpError(f"{op_name} shares its input {k} ({name}) across the batch: only its "
                      f"input{'s' if len(allowed) > 1 else ''} {can} may be batched")
    results = [_infer_at(op, shapes, precs, canon, {symbol: n}, semantics, consts)
               for n in probes(symbols[symbol])]
    return canon, _generalize(op_name, symbol, results), results[0][1]


def _infer_at(op, shapes, precs, canon, dims, semantics, consts=None):
    """(output shapes, output precisions, gas weight) of the instantiated application."""
    at = attrs_at(op.name, canon, dims, semantics)
    concrete = [shape_at(s, dims) for s in shapes]
    again = op.check_attrs(at)
    require(again == at, "attributes are not canonical once the symbol is substituted")
    out = op.infer_shapes(concrete, at)
    return out, op.infer_precisions(precs, concrete, at, consts), op.cost(concrete, at), dims


def _generalize(op_name: str, symbol: str, results) -> list[tuple]:
    """The symbolic output shapes, from the outputs at each probe (OpError when they are not
    ``(N, rest)`` with ``rest`` fixed, or precision or gas weight move with N)."""
    first_shapes, first_precs, first_cost, _ = results[0]
    for shapes, precs, cost, dims in results:
        n = dims[symbol]
        for k, (s, s1) in enumerate(zip(shapes, first_shapes)):
            require(len(s) >= 1 and s[0] == n and tuple(s[1:]) == tuple(s1[1:]),
                    f"output {k} has shape {list(s)} for {symbol} = {n}: a batch-parallel "
                    f"output has shape [{symbol}, ...] with the other dims fixed")
        require(precs == first_precs, f"output precisions depend on {symbol} "
                f"({first_precs} for 1, {precs} for {n})")
        require(cost == first_cost, f"the gas weight of {op_name} depends on {symbol} "
                f"({first_cost} for 1, {cost} for {n}): its gas is not affine in {symbol}")
    return [(symbol, *s[1:]) for s in first_shapes]


# ---------------------------------------------------------------------------------------------
# Affine facts: gas and memory
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Affine:
    """``const + sum(coef * symbol)``; printed as ``a + b*N``."""

    const: int
    coeffs: tuple[tuple[str, int], ...] = ()

    @classmethod
    def of(cls, const: int, coeffs: Mapping[str, int] | None = None) -> "Affine":
        return cls(int(const), tuple(sorted((s, int(c)) for s, c in (coeffs or {}).items()
                                            if c)))

    @classmethod
    def size(cls, shape: Sequence, scale: int = 1) -> "Affine":
        """``scale`` times the element count of a shape whose first dim may be a symbol."""
        rest = scale
        for d in shape[1:] if shape and isinstance(shape[0], str) else shape:
            rest *= d
        return cls.of(0, {shape[0]: rest}) if shape and isinstance(shape[0], str) \
            else cls.of(rest)

    def __add__(self, other: "Affine") -> "Affine":
        coeffs = dict(self.coeffs)
        for s, c in other.coeffs:
            coeffs[s] = coeffs.get(s, 0) + c
        return Affine.of(self.const + other.const, coeffs)

    def at(self, dims: Mapping[str, int]) -> int:
        """The value for the symbol values ``dims``."""
        return self.const + sum(c * dims[s] for s, c in self.coeffs)

    def __str__(self) -> str:
        terms = [f"{c}*{s}" for s, c in self.coeffs]
        return " + ".join([str(self.const)] + terms) if self.const or not terms \
            else " + ".join(terms)

    def to_json(self) -> dict:
        return {"const": self.const, **{s: c for s, c in self.coeffs}}


@dataclass(frozen=True)
class Envelope:
    """The maximum of affine functions (peak memory: one per step of the program)."""

    pieces: tuple[Affine, ...]

    @classmethod
    def of(cls, pieces) -> "Envelope":
        """The envelope without pieces that another one dominates for every symbol value."""
        kept: list[Affine] = []
        for p in sorted(set(pieces), key=lambda a: (-a.const, a.coeffs)):
            if not any(_dominates(q, p) for q in kept):
                kept = [q for q in kept if not _dominates(p, q)] + [p]
        return cls(tuple(kept))

    def at(self, dims: Mapping[str, int]) -> int:
        return max(p.at(dims) for p in self.pieces)

    def __str__(self) -> str:
        if len(self.pieces) == 1:
            return str(self.pieces[0])
        return "max(" + ", ".join(str(p) for p in self.pieces) + ")"

    def to_json(self) -> list:
        return [p.to_json() for p in self.pieces]


def _dominates(a: Affine, b: Affine) -> bool:
    """a >= b for every value of the symbols (every symbol >= 1)."""
    ca, cb = dict(a.coeffs), dict(b.coeffs)
    return a.const >= b.const and all(ca.get(s, 0) >= c for s, c in cb.items())


def symbolic_gas(program: Program, memory_weight: int) -> Affine:
    """CVM gas (vm/validate.py ``op_gas``) as an affine function of the symbols; every gas
    weight was checked independent of the symbols (:func:`infer_batched`), and an op's work
    rule is linear in its batch (ops/base.py)."""
    ones = {s: 1 for s in program.symbols}
    total = Affine.of(0)
    for t in program.tensors:
        if t.kind != "value":
            total += Affine.size(t.shape, memory_weight)
    for ins in program.code:
        op = program.op(ins)
        shapes = [shape_at(program.tensors[i].shape, ones) for i in ins.inputs]
        base = op.cost(shapes, attrs_at(ins.op, ins.attrs, ones, program.semantics))
        outs = [program.tensors[i].shape for i in ins.outputs]
        total += Affine.size(outs[0], base)
        if op.work is not None:     # linear in the batch: its value per image, times the batch
            per_image = op.work(shapes, [program.tensors[i].precision for i in ins.inputs],
                                attrs_at(ins.op, ins.attrs, ones, program.semantics))
            total += Affine.size(program.tensors[ins.inputs[0]].shape[:1], per_image)
        for s in outs:
            total += Affine.size(s, memory_weight)
    return total


def symbolic_peak(program: Program, last_use: list[int]) -> Envelope:
    """The peak memory bound (vm/memory.py ``peak_memory``), one affine function per point of
    a run: the envelope is exact for every value of the symbols."""
    nbytes = [Affine.size(t.shape, t.dtype.itemsize) for t in program.tensors]
    keep = Affine.of(WORKSPACE_KEEP)
    live = Affine.of(0)
    for i, t in enumerate(program.tensors):
        if t.kind != "value":
            live += nbytes[i]
    pieces = [live + keep]
    for index, ins in enumerate(program.code):
        for i in ins.outputs:
            live += nbytes[i]
        pieces.append(live + scratch_affine(program, ins) + keep)
        for i in frees_after(program, last_use, index, ins):
            live += Affine.of(-nbytes[i].const, {s: -c for s, c in nbytes[i].coeffs})
    end = keep
    for i, t in enumerate(program.tensors):
        if t.kind == "const":
            end += nbytes[i]
    for i in set(program.outputs):
        end += nbytes[i] + nbytes[i]
    return Envelope.of(pieces + [end])


def scratch_affine(program: Program, ins) -> Affine:
    """An instruction's scratch bound (vm/memory.py ``step_scratch``) as an affine function
    of the symbols (the rules are affine in the batch: two values per symbol fix it)."""
    def at(dims):
        t = program.tensors
        return STEP_SLACK + program.op(ins).scratch_bytes(
            [shape_at(t[i].shape, dims) for i in ins.inputs],
            [shape_at(t[i].shape, dims) for i in ins.outputs],
            attrs_at(ins.op, ins.attrs, dims, program.semantics))
    ones = {s: 1 for s in program.symbols}
    base = at(ones)
    coeffs = {s: at({**ones, s: 2}) - base for s in program.symbols}
    return Affine.of(base - sum(coeffs.values()), {s: c for s, c in coeffs.items() if c})
