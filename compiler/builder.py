"""Builder: construct a :class:`vm.program.Program` one declaration at a time.

Every call is checked at once against the op rules (``vm.validate.infer``), so a mistake is
reported where it is made, naming the op or tensor::

    b = Builder("tiny")
    x = b.input("x", (1, 3, 8, 8), 8)
    w = b.const("w", np.ones((4, 3, 3, 3), np.int8))        # precision inferred: p2
    y = b.op("conv2d", x, w, channels=4, kernel_size=3, padding=1, use_bias=False)
    y = b.relu(y)                                            # sugar for b.op("relu", y)
    prog = b.output(y).build()

Tensor ids follow the order of declaration (inputs, constants and op results interleaved).
A symbol declared with :meth:`Builder.symbol` may stand for the first dim of inputs, and of the
values computed from them (vm/symbolic.py)::

    b.symbol("N", 1024)
    x = b.input("x", ("N", 784), 8)                          # any batch of 1 to 1024 rows
    y = b.op("reshape", x, shape=("N", 28, 28))              # values: ("N", ...) inferred
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Mapping, Sequence

import numpy as np

import ops
from ops.base import OpError, bound, precision_for
from vm.errors import InvalidError
from vm.program import Instr, Program, Tensor, storage_dtype
from vm.symbolic import attr_symbols, check_symbol_name, infer_batched, shape_at
from vm.validate import (MAX_DIM, MAX_PRECISION, Limits, check_semantics, check_shape,
                         check_tensor_type, infer, validate)

TypeDecl = tuple  # (shape, precision); either may be None in Builder.op's ``declared``


class Builder:
    """Incremental, checked construction of a Program (see the module docstring)."""

    def __init__(self, name: str, semantics: int | None = None):
        """``semantics``: the version of the integer semantics (default: the current one)."""
        if not isinstance(name, str):
            raise InvalidError(f"model name must be a string, got {name!r}")
        semantics = ops.semantics.CURRENT if semantics is None else semantics
        check_semantics(semantics)
        self.name, self.semantics = name, semantics
        self.metadata: dict[str, str] = {}
        self.tensors: list[Tensor] = []
        self.consts: dict[int, np.ndarray] = {}
        self.code: list[Instr] = []
        self.outputs: list[int] = []
        self.symbols: dict[str, int] = {}
        self._ids: dict[str, int] = {}
        self._auto: dict[str, int] = {}

    # -- queries ------------------------------------------------------------------------------
    def __contains__(self, name: str) -> bool:
        return name in self._ids

    def tensor(self, name: str) -> Tensor:
        """The declared tensor ``name`` (InvalidError if there is none)."""
        if name not in self._ids:
            raise InvalidError(f"undefined tensor {name!r}")
        return self.tensors[self._ids[name]]

    def __getattr__(self, op_name: str):
        """``b.relu(x)`` is ``b.op("relu", x)`` for every registered op."""
        if op_name.startswith("_") or ops.get(op_name) is None:
            raise AttributeError(op_name)
        return lambda *inputs, **kw: self.op(op_name, *inputs, **kw)

    # -- declarations -------------------------------------------------------------------------
    def meta(self, key: str, value: str) -> "Builder":
        """Add one metadata string pair (keys are unique)."""
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidError(f"metadata must map strings to strings, got {key!r}: {value!r}")
        if key in self.metadata:
            raise InvalidError(f"duplicate metadata key {key!r}")
        self.metadata[key] = value
        return self

    def symbol(self, name: str, maximum: int) -> str:
        """Declare a symbol: a dim of any value in [1, maximum] (e.g. the batch)."""
        try:
            check_symbol_name(name)
        except OpError as e:
            raise InvalidError(str(e)) from None
        if name in self.symbols:
            raise InvalidError(f"symbol {name} declared twice")
        if not isinstance(maximum, int) or isinstance(maximum, bool) \
                or not 1 <= maximum <= MAX_DIM:
            raise InvalidError(f"symbol {name}: maximum {maximum!r} outside [1, 2^24]")
        self.symbols[name] = maximum
        return name

    def input(self, name: str, shape: Sequence[int | str], precision: int) -> str:
        """Declare an input of ``shape`` whose elements satisfy |x| <= R(precision); its first
        dim may be a declared symbol."""
        self._declare(name, _shape(shape, f"input {name!r}", self.symbols), precision,
                      "input")
        return name

    def const(self, name: str, values, precision: int | None = None,
              shape: Sequence[int] | None = None) -> str:
        """Declare a constant; ``values`` (array or nested/flat list of ints) is reshaped to
        ``shape`` when given (C order). ``precision`` None picks the smallest that holds them."""
        what = f"constant {name!r}"
        wide = _int_array(values, what)
        if shape is not None:
            shape = _shape(shape, what)
            check_shape(shape, what)                  # before reshape: ndim <= 6
            if math.prod(shape) != wide.size:
                raise InvalidError(f"{what}: {wide.size} values for shape {list(shape)}")
            wide = wide.reshape(shape)
        top = int(np.abs(wide).max(initial=0))
        if precision is None:
            precision = min(precision_for(top), MAX_PRECISION)
        self._check_type(tuple(wide.shape), precision, what)
        if top > bound(precision):
            flat = np.abs(wide.reshape(-1))
            k = int(np.flatnonzero(flat > bound(precision))[0])
            raise InvalidError(f"{what}: value {int(wide.reshape(-1)[k])} at flat index {k} "
                               f"exceeds precision {precision} (|v| <= {bound(precision)})")
        tid = self._declare(name, tuple(wide.shape), precision, "const")
        self.consts[tid] = wide.astype(storage_dtype(precision))
        return name

    def op(self, op_name: str, /, *inputs: str, outputs: Sequence[str] | None = None,
           declared: Sequence[TypeDecl | None] | None = None, **attrs: Any):
        """Apply ``op_name`` to the named inputs; return the output name (or a tuple of names).

        ``outputs`` names the results (default ``<op>_<k>``). ``declared`` gives an optional
        (shape, precision) per output: the shape must equal the inferred one, a precision may
        widen the inferred one up to 32. Attribute names ``outputs``/``declared``: use apply().
        """
        return self.apply(op_name, inputs, attrs, outputs, declared)

    def apply(self, op_name: str, inputs: Sequence[str], attrs: Mapping[str, Any],
              outputs: Sequence[str] | None = None,
              declared: Sequence[TypeDecl | None] | None = None):
        """:meth:`op` with the attributes as a mapping."""
        op = ops.get(op_name, self.semantics) if isinstance(op_name, str) else None
        if op is None:
            raise InvalidError(f"unknown op {op_name!r}")
        names = self._output_names(op, outputs)
        where = f"{op_name} ({', '.join(names)})"
        ids = [self._ref(n, where) for n in inputs]
        src = [self.tensors[i] for i in ids]
        try:
            canon, shapes, precs = self._infer(op_name, src, dict(attrs),
                                               [self.consts.get(i) for i in ids])
        except OpError as e:
            raise InvalidError(f"{where}: {e}") from None
        declared = list(declared) if declared is not None else [None] * len(names)
        if len(declared) != len(names):
            raise InvalidError(f"{where}: {len(declared)} declared types for {len(names)} outputs")
        types = [self._result_type(n, tuple(s), p, d, where)
                 for n, s, p, d in zip(names, shapes, precs, declared)]
        out_ids = [self._declare(n, s, p, "value") for n, (s, p) in zip(names, types)]
        self.code.append(Instr(op_name, tuple(ids), tuple(out_ids), canon))
        return names[0] if len(names) == 1 else tuple(names)

    def _infer(self, op_name: str, src: list[Tensor], attrs: dict, consts: list):
        shapes, precs = [t.shape for t in src], [t.precision for t in src]
        if any(t.symbol for t in src):
            return infer_batched(op_name, shapes, precs, attrs, self.symbols, self.semantics,
                                 consts)
        named = attr_symbols({k: tuple(v) if isinstance(v, list) else v
                              for k, v in attrs.items()})
        if named:
            raise OpError(f"attribute names the symbol {sorted(named)[0]} but {op_name} reads "
                          "no batched input")
        return infer(op_name, shapes, precs, attrs, self.semantics, consts)

    def rename(self, old: str, new: str) -> str:
        """Give tensor ``old`` the unused name ``new`` (instructions refer to ids: unchanged)."""
        tid = self._ref(old, "rename")
        if not isinstance(new, str) or not new or not new.isprintable() \
                or len(new.encode()) > 255:
            raise InvalidError(f"bad tensor name {new!r} (printable, 1 to 255 bytes)")
        if new in self._ids:
            raise InvalidError(f"duplicate tensor name {new!r}")
        self.tensors[tid] = replace(self.tensors[tid], name=new)
        del self._ids[old]
        self._ids[new] = tid
        return new

    def output(self, *names: str) -> "Builder":
        """Mark tensors as program outputs, in order."""
        for name in names:
            tid = self._ref(name, "output")
            if tid in self.outputs:
                raise InvalidError(f"output {name!r} listed twice")
            self.outputs.append(tid)
        return self

    def build(self, limits: Limits | None = None) -> Program:
        """The Program, after full validation (``vm.validate.validate``) under ``limits``
        (default: vm.Limits(), the ceilings vm.load applies by default)."""
        program = Program(self.name, list(self.tensors), dict(self.consts), list(self.code),
                          list(self.outputs), dict(self.metadata), self.semantics,
                          dict(self.symbols))
        validate(program, limits or Limits())
        return program

    # -- helpers ------------------------------------------------------------------------------
    def _declare(self, name: str, shape: tuple, precision: int, kind: str) -> int:
        if not isinstance(name, str) or not name or not name.isprintable() \
                or len(name.encode()) > 255:
            raise InvalidError(f"bad tensor name {name!r} (printable, 1 to 255 bytes)")
        if name in self._ids:
            raise InvalidError(f"duplicate tensor name {name!r}")
        self._check_type(shape_at(shape, self.symbols), precision, f"{kind} {name!r}")
        self._ids[name] = len(self.tensors)
        self.tensors.append(Tensor(name, shape, precision, kind))
        return self._ids[name]

    @staticmethod
    def _check_type(shape: tuple, precision: Any, what: str) -> None:
        if not isinstance(precision, int) or isinstance(precision, bool):
            raise InvalidError(f"{what}: precision must be an int, got {precision!r}")
        check_tensor_type(shape, precision, what)

    def _ref(self, name: str, where: str) -> int:
        if not isinstance(name, str) or name not in self._ids:
            raise InvalidError(f"{where}: undefined tensor {name!r}")
        return self._ids[name]

    def _output_names(self, op, outputs) -> list[str]:
        n = len(op.outputs)
        if outputs is None:
            return self._fresh(op)
        names = [outputs] if isinstance(outputs, str) else list(outputs)
        if len(names) != n:
            raise InvalidError(f"{op.name} has {n} output(s), got {len(names)} names")
        return names

    def _fresh(self, op) -> list[str]:
        """Unused names ``<op>_<k>`` (``<op>_<k>.<output>`` for several outputs)."""
        k = self._auto.get(op.name, 0)
        while True:
            base = f"{op.name}_{k}"
            names = [base] if len(op.outputs) == 1 else [f"{base}.{o}" for o in op.outputs]
            k += 1
            if not any(n in self._ids for n in names):
                self._auto[op.name] = k
                return names

    @staticmethod
    def _result_type(name, shape, prec, decl, where) -> tuple[tuple, int]:
        """The output type: the inferred one, checked against / widened by a declaration."""
        dshape, dprec = (None, None) if decl is None else decl
        if dshape is not None and tuple(dshape) != shape:
            raise InvalidError(f"{where}: {name!r} declared shape {list(dshape)} but the shape "
                               f"rule gives {list(shape)}")
        if dprec is not None:
            if not MAX_PRECISION >= dprec >= prec:
                raise InvalidError(f"{where}: {name!r} declared precision {dprec} but its values "
                                   f"need {prec} (and at most {MAX_PRECISION} is allowed)")
            prec = dprec
        if prec > MAX_PRECISION:
            raise InvalidError(f"{where}: {name!r} needs precision {prec} > {MAX_PRECISION}; "
                               "narrow it first (e.g. cvm_right_shift)")
        return shape, prec


def _shape(shape, what: str, symbols: Mapping[str, int] | None = None) -> tuple:
    """``shape`` as a tuple of ints; with ``symbols``, the first dim may be one of them."""
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise InvalidError(f"{what}: shape must be a sequence of ints, got {shape!r}") from None
    late = [k for k, d in enumerate(dims) if isinstance(d, str) and k]
    if late and symbols is not None:
        raise InvalidError(f"{what}: symbol {dims[late[0]]} as dim {late[0]} (only the first "
                           "dim may be symbolic)")
    if dims and isinstance(dims[0], str) and symbols is not None:
        if dims[0] not in symbols:
            raise InvalidError(f"{what}: undeclared symbol {dims[0]!r}")
        return (dims[0], *_shape(dims[1:], what))
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in dims):
        raise InvalidError(f"{what}: shape must be a sequence of ints, got {shape!r}")
    return tuple(int(d) for d in dims)


def _int_array(values, what: str) -> np.ndarray:
    """``values`` as an int64 array; floats, bools and out-of-int64 values are refused."""
    try:
        arr = np.asarray(values)
    except (ValueError, OverflowError) as e:
        raise InvalidError(f"{what}: values are not a rectangular array of ints ({e})") from None
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype.kind == "O":
        flat = arr.reshape(-1).tolist()
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in flat):
            raise InvalidError(f"{what}: values must be integers")
        if any(abs(v) > bound(MAX_PRECISION) for v in flat):
            raise InvalidError(f"{what}: a value exceeds precision {MAX_PRECISION}")
        arr = np.array(flat, dtype=np.int64).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise InvalidError(f"{what}: values must be integers, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and int(arr.max()) > bound(MAX_PRECISION):
        raise InvalidError(f"{what}: a value exceeds precision {MAX_PRECISION}")
    return arr.astype(np.int64)
