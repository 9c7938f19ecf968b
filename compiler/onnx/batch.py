"""A symbolic batch through ONNX import: an input whose first dim is a ``dim_param`` (or -1 / 0)
keeps it as a symbol of the program (vm/symbolic.py).

The lowering only knows fixed shapes, so the model is imported twice, with two values for each
symbol, and compiler/symbolize.py turns the two programs into one with symbols, checking that
every instruction reading the batch is batch-parallel. Each symbol is named after its
``dim_param`` (``N`` for an unnamed one); its maximum is given (``maxima``, ``--max NAME=K``) or
the largest power of two up to 1024 for which the model's gas and peak memory stay within the
default ceilings (vm.Limits).
"""
from __future__ import annotations

import re
from typing import Callable, Mapping, Sequence

from vm.errors import InvalidError
from vm.program import Program
from vm.symbolic import RESERVED, SYMBOL_NAME
from vm.validate import Limits, validate

from ..symbolize import build_symbolic
from .graph import _declared, _listing, graph_inputs, input_dims, is_batch

DEFAULT_MAX = 1024


def symbol_name(dim_param: str) -> str:
    """A symbol name for an ONNX ``dim_param`` (an identifier; ``N`` when it has none)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", dim_param or "")[:64]
    if name and name[0].isdigit():
        name = ("_" + name)[:64]
    return name if SYMBOL_NAME.match(name) and name not in RESERVED else "N"


def batch_inputs(model, shapes: Mapping[str, Sequence[int]] | None) \
        -> dict[str, tuple[str, tuple[int, ...]]]:
    """Input name -> (symbol, the other dims) for every input with a symbolic first dim that
    ``shapes`` does not fix; any other symbolic dim is an error naming the input."""
    out = {}
    for i in graph_inputs(model):
        given = tuple((shapes or {}).get(i.name, ()))
        if given and is_batch(given[0]):
            input_dims(model, 1, {i.name: given})               # the other dims must fit
            out[i.name] = (symbol_name(given[0] or _first_param(i)), tuple(given[1:]))
            continue
        if given or not i.type.tensor_type.HasField("shape"):
            continue
        declared = _declared(i)
        if not declared or not isinstance(declared[0], str):
            continue
        if any(isinstance(d, str) for d in declared[1:]):
            hint = ",".join(str(d) if isinstance(d, int) else "1" if k == 0 else f"D{k}"
                            for k, d in enumerate(declared))
            raise InvalidError(f"ONNX input {i.name!r} has symbolic dims ({_listing(declared)})"
                               f": fix them with --shape {i.name}={hint} (Python: "
                               f"shapes={{{i.name!r}: (...)}}); "
                               "only the first dim (the batch) may stay symbolic")
        out[i.name] = (symbol_name(declared[0] if declared[0] != "?" else ""),
                       tuple(declared[1:]))
    return out


def _first_param(value_info) -> str:
    declared = _declared(value_info) if value_info.type.tensor_type.HasField("shape") else []
    return declared[0] if declared and isinstance(declared[0], str) and declared[0] != "?" \
        else ""


def import_batched(build: Callable[[dict], Program], inputs: dict,
                   maxima: Mapping[str, int] | None, limits: Limits | None = None) -> Program:
    """The program with symbols of ``build(shapes)`` (a fixed-shape import for the given input
    dims), for the batched ``inputs`` of :func:`batch_inputs`; its maxima within ``limits``."""
    names = sorted({s for s, _ in inputs.values()})
    given = dict(maxima or {})
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise InvalidError(f"--max names no symbolic batch: {', '.join(unknown)} (symbols: "
                           f"{', '.join(names) or 'none'})")

    def fixed(values: dict) -> Program:
        return build({name: (values[s], *rest) for name, (s, rest) in inputs.items()})

    try:
        program = build_symbolic(fixed, {s: 1 for s in names})
    except InvalidError as e:
        listed = ", ".join(repr(n) for n in inputs)
        raise InvalidError(f"the batch of input {listed} cannot stay symbolic: {e.message}; "
                           "fix it with --batch N (Python: batch=N)") from None
    return with_maxima(program, given, limits)


def with_maxima(program: Program, given: Mapping[str, int],
                limits: Limits | None = None) -> Program:
    """``program`` with each symbol's maximum: the given one, else the largest power of two
    up to DEFAULT_MAX within the ceilings of ``limits`` (default vm.Limits()); validated
    under them."""
    limits = limits or Limits()
    analysis = validate(program, limits)
    fits = lambda dims: analysis.gas_formula.at(dims) <= limits.max_gas and \
        analysis.memory_formula.at(dims) <= limits.max_memory
    maxima = {s: int(given.get(s, DEFAULT_MAX)) for s in program.symbols}
    free = sorted(set(maxima) - set(given))
    while free and not fits(maxima) and any(maxima[s] > 1 for s in free):
        top = max(free, key=lambda s: maxima[s])
        maxima[top] //= 2
    program.symbols = maxima
    validate(program, limits)
    return program
