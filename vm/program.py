"""A program is data: a tensor table, a constant pool, an SSA instruction list and outputs.

Every front-end (text assembly, CVM JSON, ONNX) builds a :class:`Program`; the binary encoder
(vm/encoding.py), the validator (vm/validate.py) and the executors only ever see this.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

import ops

from .errors import clip_text

KINDS = ("input", "const", "value")
QUOTE_LIMIT = 300
"""Characters of an instruction quoted in an error message."""


_INT8, _INT32 = np.dtype("<i1"), np.dtype("<i4")


def storage_dtype(precision: int) -> np.dtype:
    """CVM storage convention: int8 when the precision is <= 8, else int32 (little endian)."""
    return _INT8 if precision <= 8 else _INT32


@dataclass(frozen=True)
class Tensor:
    """One entry of the tensor table. ``kind`` is input, const or value (an op result).

    In a program with symbols (vm/symbolic.py) the first dim of an input or of a value computed
    from one may be a symbol name (a str): ``("N", 3, 32, 32)``; :attr:`size` then needs the
    program instantiated for a value of N.
    """

    name: str
    shape: tuple[int | str, ...]
    precision: int
    kind: str

    @property
    def symbol(self) -> str | None:
        """The symbol standing for the first dim, or None for a fixed shape."""
        return self.shape[0] if self.shape and isinstance(self.shape[0], str) else None

    @property
    def size(self) -> int:
        n = 1
        for d in self.shape:
            if isinstance(d, str):
                raise TypeError(f"tensor {self.name!r} has the symbolic shape {self.shape}")
            n *= d
        return n

    @property
    def dtype(self) -> np.dtype:
        return storage_dtype(self.precision)


@dataclass(frozen=True)
class Instr:
    """One SSA instruction: op name, input and output tensor ids, canonical attributes.

    In a program with symbols, an entry of an ``ints`` attribute declared ``symbolic`` (e.g.
    reshape's shape) may be a symbol name (a str)."""

    op: str
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "attrs", dict(sorted(self.attrs.items())))


def checked_tensor(name: str, shape: tuple, precision: int, kind: str,
                   _new=object.__new__, _set=object.__setattr__) -> Tensor:
    """The Tensor of fields a decoder has checked, made without the dataclass's ``__init__``
    (a few times faster: tables of millions of entries; the fields are set as ``__init__``
    sets them, so the instance keeps its compact attribute storage)."""
    t = _new(Tensor)
    _set(t, "name", name)
    _set(t, "shape", shape)
    _set(t, "precision", precision)
    _set(t, "kind", kind)
    return t


def checked_instr(op: str, inputs: tuple, outputs: tuple, attrs: dict,
                  _new=object.__new__, _set=object.__setattr__) -> Instr:
    """The Instr of fields a decoder has checked (``attrs`` already in key order), made
    without the dataclass's ``__init__``."""
    ins = _new(Instr)
    _set(ins, "op", op)
    _set(ins, "inputs", inputs)
    _set(ins, "outputs", outputs)
    _set(ins, "attrs", attrs)
    return ins


@dataclass
class Program:
    """A whole model. ``consts`` maps a const tensor id to its values (storage dtype)."""

    name: str
    tensors: list[Tensor]
    consts: dict[int, np.ndarray]
    code: list[Instr]
    outputs: list[int]
    metadata: dict[str, str] = field(default_factory=dict)
    semantics: int = field(default_factory=lambda: ops.semantics.CURRENT)
    """The version of the integer semantics its ops follow (ops/semantics.py)."""
    symbols: dict[str, int] = field(default_factory=dict)
    """Symbol name -> declared maximum (vm/symbolic.py); empty for a fixed-shape program."""

    @property
    def inputs(self) -> list[int]:
        return [i for i, t in enumerate(self.tensors) if t.kind == "input"]

    def tensor_id(self, name: str) -> int:
        for i, t in enumerate(self.tensors):
            if t.name == name:
                return i
        raise KeyError(name)

    def op(self, ins: Instr):
        """The OpDef ``ins`` runs under this program's semantics version (None if the op or
        the version is unknown)."""
        if not ops.semantics.known(self.semantics):
            return None
        return ops.get(ins.op, self.semantics)

    def describe(self, index: int) -> str:
        """Instruction ``index`` quoted as one line of assembly (for error messages), cut to
        :data:`QUOTE_LIMIT` characters."""
        from .listing import instruction_text
        text = clip_text(instruction_text(self, self.code[index], QUOTE_LIMIT), QUOTE_LIMIT)
        return f"instruction {index} `{text}`"
