"""Validation: everything is checked before anything is allocated or run.

``validate(program, limits)`` re-derives every fact the executors rely on from the ops' rules,
and returns an :class:`Analysis` (gas, peak memory, liveness, licensed GEMM paths). A program
that fails raises :class:`InvalidError` naming the tensor or quoting the instruction.
"""
from __future__ import annotations

import functools
import math
import sys
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

import ops
from ops import gemm as gemm_licences
from ops.base import OpError, bound, shown

from . import memory
from .memory import peak_bytes, step_scratch, tensor_bytes  # noqa: F401  (their home was here)
from .errors import InternalError, InvalidError
from .program import KINDS, Program, storage_dtype
from .symbolic import (Affine, Envelope, attr_symbols, check_symbolic_dims, check_symbols,
                       infer_batched, instantiate, scratch_affine, shape_at, symbolic_gas,
                       symbolic_peak)

MAX_NDIM = 6
MAX_DIM = 1 << 24
MAX_ELEMENTS = 1 << 30
MAX_PRECISION = 32
MEMORY_WEIGHT = 5
"""CVM GetOps charges 5 gas per element of every tensor (its memory term)."""
GEMM_LIMITS = (("float32", 1 << 24), ("float64", 1 << 53))


@dataclass(frozen=True)
class Limits:
    """Resource ceilings checked at load time. The defaults are safe for an untrusted model."""

    max_gas: int = 1 << 40
    max_memory: int = 2 << 30
    max_instructions: int = 1 << 20
    max_tensors: int = 1 << 21


@dataclass
class Analysis:
    """What validation proved about a program; executors use it, never re-derive it."""

    gas: int
    peak_memory: int
    """The bound of a run's allocations on one lane: live tensors and scratch (vm/memory.py)."""
    last_use: list[int]
    live_peak: int = 0
    """Peak bytes of the live tensors alone (what fused plans may not raise)."""
    tile: int = 0
    """The largest scratch of one step: what each extra lane may hold at once."""
    gemm: dict[int, str] = field(default_factory=dict)
    acc_bounds: dict[int, int] = field(default_factory=dict)
    licences: Mapping[int, Any] = field(default_factory=gemm_licences.Licences)
    """Constant-weight conv2d/dense (and q forms): the exact chunked GEMM (ops/gemm.py),
    each computed when a kernel first asks for it."""
    winograd: dict[int, Any] = field(default_factory=dict)
    """Filled by the CPU executor when it binds: the F(2x2, 3x3) licence or None (ops/winograd)."""
    gas_formula: Affine | None = None
    """Gas as an affine function of the symbols (a constant for a fixed-shape program);
    ``gas`` is its value at the symbols' maxima."""
    memory_formula: Envelope | None = None
    """Peak memory as the maximum of affine functions of the symbols; ``peak_memory`` is its
    value at the maxima."""


def check_semantics(version) -> None:
    """InvalidError unless this detvm implements semantics ``version`` (ops/semantics.py)."""
    if not ops.semantics.known(version):
        raise InvalidError(f"semantics version {version} not supported (this detvm implements "
                           f"{', '.join(map(str, ops.semantics.versions()))})")


def infer(op_name: str, shapes: Sequence[tuple], precs: Sequence[int],
          attrs: Mapping[str, Any], semantics: int | None = None,
          consts: Sequence | None = None):
    """Canonical attrs, output shapes and output precisions of one op application under
    ``semantics`` (default: the current version); ``consts``: per input its constant array
    or None (an op's constant-aware bound rule, ``OpDef.const_precision``, reads them).

    Raises OpError (from the op's rules) or KeyError for an unknown op.
    """
    op = ops.get(op_name, semantics)
    if op is None:
        raise KeyError(op_name)
    canon = op.check_attrs(attrs)
    out_shapes = op.infer_shapes(shapes, canon)
    out_precs = op.infer_precisions(precs, shapes, canon, consts)
    return canon, out_shapes, out_precs


def check_shape(shape: Sequence[int], what: str) -> None:
    """The format's shape limits: 1 <= ndim <= 6, 1 <= dim <= 2**24, size <= 2**30."""
    if not 1 <= len(shape) <= MAX_NDIM:
        raise InvalidError(f"{what}: ndim {len(shape)} outside [1, {MAX_NDIM}]")
    size = 1
    for d in shape:
        if not 1 <= d <= MAX_DIM:
            raise InvalidError(f"{what}: dimension {d} outside [1, 2^24]")
        size *= d
        if size > MAX_ELEMENTS:
            raise InvalidError(f"{what}: more than 2^30 elements")


def check_tensor_type(shape: Sequence[int], precision: int, what: str) -> None:
    """:func:`check_shape`, and 1 <= precision <= 32."""
    check_shape(shape, what)
    if not 1 <= precision <= MAX_PRECISION:
        raise InvalidError(f"{what}: precision {precision} outside [1, {MAX_PRECISION}]")


def is_unicode(text: str) -> bool:
    """Whether ``text`` is encodable as UTF-8 (no lone surrogate code points)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate(program: Program, limits: Limits = Limits()) -> Analysis:
    """Check ``program`` completely; return its :class:`Analysis`.

    A program with symbols (vm/symbolic.py) is checked symbolically, then its instance for
    every symbol = 1 completely; gas and peak memory are affine in the symbols and their
    ceilings are checked at the maxima."""
    check_semantics(program.semantics)
    _check_texts(program)
    check_symbols(program, MAX_DIM)
    types = _check_table(program, limits)
    defined, kinds = _check_code(program, types)
    _check_outputs(program, defined)
    if program.symbols:
        return _validate_symbolic(program, limits)
    last_use = _liveness(program)
    smemo: dict = {}
    scratch = [step_scratch(program, program.code[k], smemo) for k in kinds.examples]
    peak, live, tile = memory.analyse(program, last_use,
                                      list(map(scratch.__getitem__, kinds.of)))
    analysis = Analysis(gas=_gas(program, kinds), peak_memory=peak, last_use=last_use,
                        live_peak=live, tile=tile)
    _check_ceilings(analysis.gas, analysis.peak_memory, limits, "")
    analysis.gas_formula = Affine.of(analysis.gas)
    analysis.memory_formula = Envelope.of([Affine.of(analysis.peak_memory)])
    _license_gemms(program, analysis, kinds)
    return analysis


def _check_texts(program: Program) -> None:
    """The model name and metadata: strings encodable as UTF-8 (the .dvm format stores them)."""
    if not isinstance(program.name, str) or not is_unicode(program.name):
        raise InvalidError(f"model name {shown(program.name)} is not valid Unicode text")
    for key, value in program.metadata.items():
        for text, what in ((key, "key"), (value, "value")):
            if not isinstance(text, str) or not is_unicode(text):
                raise InvalidError(f"metadata {what} {shown(text)} is not valid Unicode text")


def _check_ceilings(gas: int, memory: int, limits: Limits, where: str) -> None:
    if gas > limits.max_gas:
        raise InvalidError(f"gas {gas}{where} exceeds the ceiling {limits.max_gas}")
    if memory > limits.max_memory:
        raise InvalidError(f"peak memory {memory} bytes{where} exceeds the ceiling "
                           f"{limits.max_memory}")


def _validate_symbolic(program: Program, limits: Limits) -> Analysis:
    """The facts of a program with symbols: those of its instance at 1 (licences...), gas and
    peak memory as functions of the symbols, with the ceilings checked at the maxima."""
    ones = {s: 1 for s in program.symbols}
    one = validate(instantiate(program, ones), limits)
    gas = symbolic_gas(program, MEMORY_WEIGHT)
    peak = symbolic_peak(program, _liveness(program))
    if gas.at(ones) != one.gas or peak.at(ones) != one.peak_memory:
        raise InternalError(f"symbolic gas {gas} / memory {peak} disagree with the instance "
                            f"at 1 ({one.gas} / {one.peak_memory})")
    maxima = dict(program.symbols)
    at = ", ".join(f"{s} = {n}" for s, n in sorted(maxima.items()))
    _check_ceilings(gas.at(maxima), peak.at(maxima), limits, f" (at {at})")
    tile = max((scratch_affine(program, ins).at(maxima) for ins in program.code), default=0)
    return replace(one, gas=gas.at(maxima), peak_memory=peak.at(maxima), gas_formula=gas,
                   memory_formula=peak, tile=tile)


def _check_table(program: Program, limits: Limits) -> list[int]:
    """Check the tensor table; return every tensor's type number (equal numbers: the same
    shape and precision; a shape given as another sequence than a tuple gets its own)."""
    if len(program.tensors) > limits.max_tensors:
        raise InvalidError(f"{len(program.tensors)} tensors exceed the ceiling {limits.max_tensors}")
    if len(program.code) > limits.max_instructions:
        raise InvalidError(f"{len(program.code)} instructions exceed the ceiling "
                           f"{limits.max_instructions}")
    seen: set[str] = set()
    types: dict = {}                    # (shape, precision) pairs already checked: number
    numbers, consts, plain = [], program.consts, not program.symbols
    for i, t in enumerate(program.tensors):
        name = t.name
        try:
            number = types.get((t.shape, t.precision)) if plain else None
        except TypeError:               # an unhashable shape: the full check names it
            number = None
        if number is not None and (t.kind == "value" or t.kind == "input") and \
                type(t.precision) is int and \
                i not in consts and type(name) is str and name not in seen and \
                0 < len(name) <= 255 and name.isascii() and name.isprintable():
            seen.add(name)              # the common case, as _check_tensor would find it
            numbers.append(number)
            continue
        _check_tensor(program, i, t, seen, types)
        numbers.append(types.setdefault((t.shape, t.precision), len(types))
                       if isinstance(t.shape, tuple) else -1 - i)
    for i in program.consts:
        if not 0 <= i < len(program.tensors):
            raise InvalidError(f"constant pool entry for unknown tensor {i}")
    return numbers


def _check_tensor(program: Program, i: int, t, seen: set, types: dict) -> None:
    what = f"tensor {i} %{t.name}"
    if (not isinstance(t.name, str) or not t.name or not t.name.isprintable()
            or len(t.name.encode()) > 255):
        raise InvalidError(f"tensor {i}: bad name {shown(t.name)}")
    if t.name in seen:
        raise InvalidError(f"{what}: duplicate name")
    seen.add(t.name)
    if t.kind not in KINDS:
        raise InvalidError(f"{what}: unknown kind {t.kind!r}")
    check_symbolic_dims(program, t, what)
    if not isinstance(t.shape, tuple) or (t.shape, t.precision) not in types:
        check_tensor_type(shape_at(t.shape, program.symbols), t.precision, what)
        if isinstance(t.shape, tuple):
            types.setdefault((t.shape, t.precision), len(types))
    data = program.consts.get(i)
    if t.kind != "const":
        if data is not None:
            raise InvalidError(f"{what}: a {t.kind} has constant data")
        return
    if data is None:
        raise InvalidError(f"{what}: constant has no data")
    _check_const(t, data, what)


def _check_const(t, data: np.ndarray, what: str) -> None:
    if not isinstance(data, np.ndarray):
        raise InvalidError(f"{what}: constant data must be a numpy array")
    if tuple(data.shape) != tuple(t.shape):
        raise InvalidError(f"{what}: data shape {tuple(data.shape)} != {tuple(t.shape)}")
    if data.dtype != storage_dtype(t.precision):
        raise InvalidError(f"{what}: data dtype {data.dtype} is not the storage dtype "
                           f"{storage_dtype(t.precision)} of p{t.precision}")
    r = bound(t.precision)
    k = first_outside(data, -r, r)
    if k is not None:
        raise InvalidError(f"{what}: value {int(data.reshape(-1)[k])} at flat index {k} "
                           f"exceeds precision {t.precision} (|v| <= {r})")


SCAN_CHUNK = 1 << 16
"""Elements per step of :func:`first_outside` (its only scratch: a mask of this many)."""


SMALL_SCAN = 256
"""Up to this many elements :func:`first_outside` compares Python integers: two numpy
reductions cost about as much alone and slow an onnxruntime session run right after them by
~1.5 us (a model's input check before its first session)."""


def below_power_of_two(data: np.ndarray, k: int) -> bool:
    """Whether every value of the integer array ``data`` (at most SMALL_SCAN of them) is in
    [0, 2^k): its bytes, as one Python integer, have none of the bits of a value >= 2^k or
    below 0 set (a mask made once per size, dtype and k)."""
    dtype = data.dtype
    if not dtype.isnative:
        return False
    return not int.from_bytes(data.tobytes(), sys.byteorder) & \
        _high_bits(data.size, dtype.itemsize, k, dtype.kind == "i")


@functools.lru_cache(maxsize=64)
def _high_bits(n: int, itemsize: int, k: int, signed: bool) -> int:
    """The bytes of n native integers of ``itemsize`` bytes with the bits of 2^k and up set
    (and a signed integer's sign bit), as one integer in the machine's byte order."""
    width = 8 * itemsize
    high = ((1 << width) - 1) & ~((1 << min(k, width)) - 1)
    if signed:
        high |= 1 << (width - 1)
    return int.from_bytes(np.full(n, high, f"u{itemsize}").tobytes(), sys.byteorder)


def first_outside(data: np.ndarray, lo: int, hi: int) -> int | None:
    """The flat index of the first element of the integer array ``data`` outside [lo, hi], or
    None. Compares in the array's own dtype (lo and hi must be representable in it), chunk by
    chunk: no widened copy, O(SCAN_CHUNK) scratch."""
    flat = data.reshape(-1)
    if not flat.size:
        return None
    if flat.size <= SMALL_SCAN:             # in Python: a numpy reduction costs more here
        k = (hi + 1).bit_length() - 1       # [0, 2^k) within [lo, hi] when lo <= 0
        if lo <= 0 and k and below_power_of_two(flat, k):
            return None
        values = flat.tolist()
        if min(values) >= lo and max(values) <= hi:
            return None
        return next(k for k, v in enumerate(values) if not lo <= v <= hi)
    if int(flat.min()) >= lo and int(flat.max()) <= hi:
        return None
    for start in range(0, flat.size, SCAN_CHUNK):
        part = flat[start:start + SCAN_CHUNK]
        if int(part.min()) < lo or int(part.max()) > hi:
            return start + int(np.flatnonzero((part < lo) | (part > hi))[0])
    return None


@dataclass
class Kinds:
    """The instructions grouped by kind: op, attributes, input and output types (shapes and
    precisions). Every rule but a constant-aware bound gives the same result on instructions
    of one kind; gas and scratch are computed once per kind."""

    of: list[int]
    """Each instruction's kind number."""
    examples: list[int]
    """For each kind, the first instruction of that kind."""


def _check_code(program: Program, types: list[int]) -> tuple[list[bool], Kinds]:
    """Check every instruction in order; return which tensors are defined and the kinds of
    the instructions. An instruction of a kind already checked needs only its own ids checked
    (defined inputs, fresh outputs); any other, or any doubt, takes the full check."""
    tensors = program.tensors
    defined = [t.kind in ("input", "const") for t in tensors]
    value = [t.kind == "value" for t in tensors]
    memo: dict = {}
    known: dict = {}                    # kind key: (number, whether its rules are checked)
    kinds = Kinds([], [])
    type_of = types.__getitem__
    for index, ins in enumerate(program.code):
        try:
            key = (ins.op, tuple(map(type_of, ins.inputs)), tuple(map(type_of, ins.outputs)),
                   attrs_key(ins.attrs))
            entry = known.get(key)
        except (TypeError, IndexError):     # an id out of range, an unhashable attribute
            key = entry = None
        if entry is not None and entry[1] and _fresh(ins, defined, value):
            for i in ins.outputs:
                defined[i] = True
        else:
            try:
                _check_instruction(ins, program, defined, memo)
            except _Bad as e:   # quote the instruction only now (it imports the disassembler)
                where = (program.describe(index) if _ids_ok(ins, len(tensors))
                         else f"instruction {index}")
                raise InvalidError(f"{where}: {e}") from None
            if entry is None:           # checked: its ids are in range, its attributes hashable
                entry = known[key] = (len(kinds.examples),
                                      program.op(ins).const_precision is None)
                kinds.examples.append(index)
        kinds.of.append(entry[0])
    return defined, kinds


def attrs_key(attrs: Mapping) -> tuple:
    """A memo key of an instruction's attributes that tells apart values equal across types
    (9 == 9.0 == True would let an attribute of the wrong type skip its check)."""
    for v in attrs.values():
        t = type(v)
        if not (t is int or t is str or t is tuple and all(type(x) is int for x in v)):
            return tuple((k, _typed(v)) for k, v in attrs.items())
    return tuple(attrs.items())         # ints, strings and tuples of ints: as they are


def _typed(v):
    if type(v) is tuple:
        return tuple(x if type(x) is int else _typed(x) for x in v)
    return v if type(v) is int or type(v) is str else (type(v), v)


def _fresh(ins, defined: list[bool], value: list[bool]) -> bool:
    """Whether the inputs of ``ins`` are defined and its outputs distinct values not yet
    written (its ids are known to be below the table's length)."""
    for i in ins.inputs:
        if i < 0 or not defined[i]:
            return False
    for i in ins.outputs:
        if i < 0 or not value[i] or defined[i]:
            return False
    return len(ins.outputs) == 1 or len(set(ins.outputs)) == len(ins.outputs)


class _Bad(Exception):
    """One instruction's check failed (the caller names the instruction)."""


def _check_instruction(ins, program: Program, defined: list[bool], memo: dict) -> None:
    tensors = program.tensors
    op = ops.get(ins.op, program.semantics)
    if op is None:
        raise _Bad(f"unknown op {ins.op!r}")
    if not _ids_ok(ins, len(tensors)):
        raise _Bad("tensor id out of range")
    for i in ins.inputs:
        if not defined[i]:
            raise _Bad(f"input %{tensors[i].name} used before definition")
    if len(ins.outputs) != len(op.outputs):
        raise _Bad(f"{op.name} has {len(op.outputs)} outputs, got {len(ins.outputs)}")
    for i in ins.outputs:
        if tensors[i].kind != "value":
            raise _Bad(f"writes the {tensors[i].kind} %{tensors[i].name}")
        if defined[i]:
            raise _Bad(f"%{tensors[i].name} is written twice (not SSA)")
    if len(set(ins.outputs)) != len(ins.outputs):
        raise _Bad("the same output twice")
    out_shapes, out_precs = _apply_rules(ins, op, program, memo)
    for i, s, p in zip(ins.outputs, out_shapes, out_precs):
        t = tensors[i]
        if tuple(s) != tuple(t.shape):
            raise _Bad(f"%{t.name} declared shape {list(t.shape)} but the shape rule gives "
                       f"{list(s)}")
        if p > MAX_PRECISION:
            raise _Bad(f"%{t.name} needs precision {p} > {MAX_PRECISION}: it could overflow "
                       "its int32 storage")
        if t.precision < p:
            raise _Bad(f"%{t.name} declared precision {t.precision} but its values need {p}")
        defined[i] = True


def _apply_rules(ins, op, program: Program, memo: dict):
    """The op's rules on this instruction's input types and attributes (and constants, for an
    op with a constant-aware bound rule): (output shapes, output precisions), once per
    distinct application (``memo``: repeated layers and chains cost one dictionary lookup)."""
    tensors, symbols, semantics = program.tensors, program.symbols, program.semantics
    shapes = tuple(tensors[i].shape for i in ins.inputs)
    precs = tuple(tensors[i].precision for i in ins.inputs)
    consts = None
    if op.const_precision is not None:
        consts = [program.consts.get(i) for i in ins.inputs]
    try:
        key = (ins.op, shapes, precs, attrs_key(ins.attrs),
               tuple(i if c is not None else -1 for i, c in zip(ins.inputs, consts or ())))
        hit = memo.get(key)
    except TypeError:                   # an unhashable attribute value: not canonical below
        key, hit = None, None
    if hit is not None:
        return hit
    try:
        if any(tensors[i].symbol for i in ins.inputs):
            canon, out_shapes, out_precs = infer_batched(ins.op, list(shapes), list(precs),
                                                         ins.attrs, symbols, semantics, consts)
        else:
            named = attr_symbols(ins.attrs)
            if named:
                raise _Bad(f"attribute names the symbol {sorted(named)[0]} but {ins.op} reads "
                           "no batched input")
            canon, out_shapes, out_precs = infer(ins.op, shapes, precs, ins.attrs, semantics,
                                                 consts)
    except OpError as e:
        raise _Bad(str(e)) from None
    if canon != dict(ins.attrs):
        missing = sorted(set(canon) - set(ins.attrs))
        raise _Bad("attributes are not canonical"
                   + (f" (missing {', '.join(missing)})" if missing else ""))
    hit = (tuple(tuple(s) for s in out_shapes), tuple(out_precs))
    if key is not None:
        memo[key] = hit
    return hit


def _ids_ok(ins, n: int) -> bool:
    ids = (*ins.inputs, *ins.outputs)
    return not ids or (min(ids) >= 0 and max(ids) < n)


def _check_outputs(program: Program, defined: list[bool]) -> None:
    if not program.outputs:
        raise InvalidError("the program has no output")
    if len(set(program.outputs)) != len(program.outputs):
        raise InvalidError("an output is listed twice")
    for i in program.outputs:
        if not 0 <= i < len(program.tensors):
            raise InvalidError(f"output id {i} out of range")
        if not defined[i]:
            raise InvalidError(f"output %{program.tensors[i].name} is never computed")
    for i, t in enumerate(program.tensors):
        if t.kind == "value" and not defined[i]:
            raise InvalidError(f"tensor %{t.name} is declared but never computed")


def _liveness(program: Program) -> list[int]:
    """last_use[t] = index of the last instruction reading (or writing) t; len(code) for outputs."""
    last = [-1] * len(program.tensors)
    for index, ins in enumerate(program.code):
        for i in ins.inputs:
            last[i] = index
        for i in ins.outputs:
            last[i] = index  # a value nobody reads dies where it is born
    for i in program.outputs:
        last[i] = len(program.code)
    return last


def op_gas(program: Program, ins, memo: dict | None = None) -> int:
    """Gas of one op: CVM's GetOps, base * size(output 0) + 5 * sum of output sizes, plus the
    op's ``work`` rule if it has one (``memo``: the rules once per distinct application)."""
    shapes = [program.tensors[i].shape for i in ins.inputs]
    out = [program.tensors[i].size for i in ins.outputs]
    key = (ins.op, tuple(shapes), tuple(ins.attrs.items()),
           tuple(program.tensors[i].precision for i in ins.inputs))
    rules = memo.get(key) if memo is not None else None
    if rules is None:
        op = program.op(ins)
        rules = (op.cost(shapes, ins.attrs),
                 0 if op.work is None else op.work(shapes, list(key[3]), ins.attrs))
        if memo is not None:
            memo[key] = rules
    return rules[0] * out[0] + MEMORY_WEIGHT * sum(out) + rules[1]


def _gas(program: Program, kinds: Kinds | None = None) -> int:
    """CVM gas: every op's GetOps term plus 5 gas per element of every input and constant
    (``kinds``: the op's term once per kind of instruction, times their number)."""
    gas = sum(MEMORY_WEIGHT * math.prod(t.shape) for t in program.tensors if t.kind != "value")
    memo: dict = {}
    if kinds is None:
        return gas + sum(op_gas(program, ins, memo) for ins in program.code)
    per_kind = [op_gas(program, program.code[k], memo) for k in kinds.examples]
    for number, count in Counter(kinds.of).items():
        gas += per_kind[number] * count
    return gas


NONNEG_SOURCES = {"relu": lambda a: True, "clip": lambda a: a["a_min"] >= 0,
                  "requantize": lambda a: a["qmin"] >= 0}
NONNEG_KEEPERS = ("cvm_right_shift", "cvm_left_shift", "max_pool2d", "upsampling", "reshape",
                  "flatten", "transpose", "expand_dims", "squeeze", "elemwise_add", "sum", "max",
                  "concatenate", "strided_slice", "repeat", "tile")
"""Ops whose output is >= 0 (sources) or >= 0 when every input is (keepers: selections, sums,
and monotone maps fixing 0)."""


def nonnegative(program: Program) -> set[int]:
    """Tensors proved >= 0 by :data:`NONNEG_SOURCES` / :data:`NONNEG_KEEPERS` (a plan fact:
    it narrows the GEMM licences of the linear ops reading them)."""
    out: set[int] = set()
    for ins in program.code:
        source = NONNEG_SOURCES.get(ins.op)
        if (source is not None and source(ins.attrs)) or (
                ins.op in NONNEG_KEEPERS and all(i in out for i in ins.inputs)):
            out.update(ins.outputs)
    return out


def _license_gemms(program: Program, analysis: Analysis, kinds: Kinds) -> None:
    """For ops with an accumulator: prove the partial-sum bound, pick the exact GEMM path."""
    accumulates = [program.op(program.code[k]).acc_bound is not None for k in kinds.examples]
    linear = [k for k, n in enumerate(kinds.of) if accumulates[n]] if any(accumulates) else []
    nonneg = nonnegative(program) if linear else set()
    bounds: dict = {}                   # (kind, constant inputs): the accumulator bound
    for index in linear:
        ins = program.code[index]
        op = program.op(ins)
        tensors = [program.tensors[i] for i in ins.inputs]
        consts = [program.consts.get(i) for i in ins.inputs]
        key = (kinds.of[index], tuple(i if c is not None else -1
                                      for i, c in zip(ins.inputs, consts)))
        acc = bounds.get(key)
        if acc is None:
            acc = bounds[key] = op.acc_bound([t.precision for t in tensors],
                                             [t.shape for t in tensors], ins.attrs, consts)
        analysis.acc_bounds[index] = acc
        analysis.gemm[index] = next((name for name, lim in GEMM_LIMITS if acc < lim), "int64")
        weight = consts[1] if len(consts) > 1 else None
        if ins.op in gemm_licences.LINEAR_OPS and weight is not None:
            x_bound = gemm_licences.data_bound(ins.op, tensors[0].precision, ins.attrs)
            positive = ins.inputs[0] in nonneg and ins.attrs.get("zero_point", 0) == 0
            analysis.licences.add(index, weight, x_bound, positive)
