"""The binary ``.dvm`` format: canonical, little endian, sectioned, hashed.

Layout (all integers little endian)::

    magic           8 bytes  89 'D' 'V' 'M' 0D 0A 1A 0A
    format version  u16      (FORMAT_VERSION)
    semantics       u16      (the op set's semantics version)
    section count   u32      (5)
    sections        META TENS CONS CODE OUTS, in this order, each:
                    tag (4 ASCII bytes), u64 payload length, payload
    hash            32 bytes SHA-256 of every preceding byte: the model's identity

    str     = u32 byte length + UTF-8 bytes
    META    = str model name, u32 n, n x (str key, str value)   keys strictly increasing
    TENS    = u32 n, n x (str name, u8 kind, u8 precision, u8 ndim, ndim x u32 dim)
    CONS    = u32 n, n x (u32 tensor id, u8 element bytes, u64 byte length, raw bytes)
              tensor ids strictly increasing; element bytes = storage width (1 or 4)
    CODE    = u32 n, n x (u16 opcode, u8 n_in, n_in x u32, u8 n_out, n_out x u32,
              u8 n_attr, n_attr x (str key, u8 tag, value)), keys strictly increasing
              tags: 0 int = i64, 1 bool = u8 0/1, 2 ints = u16 count + count x i64,
                    3 str = str, 4 none (no value)
    OUTS    = u32 n, n x u32 tensor id

Format 2 (a program with symbols, vm/symbolic.py) differs in three places::

    section count   u32      (6)
    sections        META SYMS TENS CONS CODE OUTS
    SYMS    = u32 n >= 1, n x (str name, u32 maximum)   names strictly increasing
    TENS    a dim u32 >= 2^31 is symbol number (dim - 2^31) of SYMS
    CODE    tag 5 ints with symbols = u16 count + count x (u8 0 + i64 value | u8 1 + u16 symbol)

A program without symbols is always written in format 1 (so its bytes and hash are those it
always had), and format 2 always declares at least one symbol: one program, one encoding.

Decoding (vm/decoding.py) is strict: a truncated or overlong field, trailing bytes, an unknown
opcode, attribute or tag, a bad hash, or any byte sequence that the encoder would not produce
(non-canonical) is a :class:`MalformedError` naming the field.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from ops.registry import REGISTRY

from .decoding import decode  # noqa: F401  (re-exported: vm.encoding.decode)
from .errors import MalformedError
from .format import (FORMAT_VERSION, HASH_BYTES, I64, MAGIC, SECTIONS,  # noqa: F401
                     SYMBOL_DIM, TAG_BOOL, TAG_INT, TAG_INTS, TAG_NONE, TAG_STR, TAG_SYMINTS)
from .program import KINDS, Program, storage_dtype


# ---------------------------------------------------------------------------------------------
# Encoder
# ---------------------------------------------------------------------------------------------

class _Writer:
    def __init__(self):
        self.parts: list[bytes] = []

    def pack(self, fmt: str, *values) -> None:
        self.parts.append(struct.pack("<" + fmt, *values))

    def str(self, s: str) -> None:
        data = s.encode("utf-8")
        self.pack("I", len(data))
        self.parts.append(data)

    def bytes(self) -> bytes:
        return b"".join(self.parts)


def encode(program: Program) -> bytes:
    """The canonical bytes of ``program`` (hash included)."""
    body = _body(program)
    return body + hashlib.sha256(body).digest()


def _body(program: Program) -> bytes:
    version = 2 if program.symbols else 1
    writers = {b"META": _meta, b"SYMS": _symbols, b"TENS": _tensors, b"CONS": _consts,
               b"CODE": _code, b"OUTS": _outputs}
    tags = SECTIONS[version]
    head = MAGIC + struct.pack("<HHI", version, program.semantics, len(tags))
    return head + b"".join(tag + struct.pack("<Q", len(p)) + p
                           for tag, p in ((t, writers[t](program)) for t in tags))


def _symbol_ids(p: Program) -> dict[str, int]:
    return {name: k for k, name in enumerate(sorted(p.symbols))}


def _symbols(p: Program) -> bytes:
    w = _Writer()
    w.pack("I", len(p.symbols))
    for name in sorted(p.symbols):
        w.str(name)
        w.pack("I", p.symbols[name])
    return w.bytes()


def model_hash(data: bytes) -> str:
    """The identity of an encoded model: hex SHA-256 over its canonical bytes (its trailer)."""
    return data[-HASH_BYTES:].hex()


def _meta(p: Program) -> bytes:
    w = _Writer()
    w.str(p.name)
    w.pack("I", len(p.metadata))
    for key in sorted(p.metadata):
        w.str(key)
        w.str(p.metadata[key])
    return w.bytes()


def _tensors(p: Program) -> bytes:
    w = _Writer()
    ids = _symbol_ids(p)
    w.pack("I", len(p.tensors))
    for t in p.tensors:
        w.str(t.name)
        w.pack("BBB", KINDS.index(t.kind), t.precision, len(t.shape))
        w.pack(f"{len(t.shape)}I", *(SYMBOL_DIM + _symbol(ids, d, t.name) if isinstance(d, str)
                                      else d for d in t.shape))
    return w.bytes()


def _symbol(ids: dict[str, int], name: str, where: str) -> int:
    if name not in ids:
        raise MalformedError(f"cannot encode {where}: undeclared symbol {name!r}")
    return ids[name]


def _consts(p: Program) -> bytes:
    w = _Writer()
    w.pack("I", len(p.consts))
    for tid in sorted(p.consts):
        dtype = storage_dtype(p.tensors[tid].precision)
        data = np.ascontiguousarray(p.consts[tid], dtype=dtype).tobytes()
        w.pack("IBQ", tid, dtype.itemsize, len(data))
        w.parts.append(data)
    return w.bytes()


def _code(p: Program) -> bytes:
    w = _Writer()
    ids = _symbol_ids(p)
    w.pack("I", len(p.code))
    for ins in p.code:
        op = REGISTRY.get(ins.op)           # names and opcodes are the same in every version
        if op is None:
            raise MalformedError(f"cannot encode unknown op {ins.op!r}")
        w.pack("HB", op.opcode, len(ins.inputs))
        w.pack(f"{len(ins.inputs)}I", *ins.inputs)
        w.pack("B", len(ins.outputs))
        w.pack(f"{len(ins.outputs)}I", *ins.outputs)
        w.pack("B", len(ins.attrs))
        for key in sorted(ins.attrs):
            w.str(key)
            _attr_value(w, ins.attrs[key], f"{ins.op}.{key}", ids)
    return w.bytes()


def _attr_value(w: _Writer, v, where: str, ids: dict[str, int]) -> None:
    if v is None:
        w.pack("B", TAG_NONE)
    elif isinstance(v, bool):
        w.pack("BB", TAG_BOOL, int(v))
    elif isinstance(v, int):
        w.pack("Bq", TAG_INT, v)
    elif isinstance(v, str):
        w.pack("B", TAG_STR)
        w.str(v)
    elif isinstance(v, tuple) and any(isinstance(e, str) for e in v):
        w.pack("BH", TAG_SYMINTS, len(v))
        for e in v:
            if isinstance(e, str):
                w.pack("BH", 1, _symbol(ids, e, where))
            else:
                w.pack("Bq", 0, e)
    elif isinstance(v, tuple):
        w.pack("BH", TAG_INTS, len(v))
        w.pack(f"{len(v)}q", *v)
    else:
        raise MalformedError(f"cannot encode attribute {where} = {v!r}")


def _outputs(p: Program) -> bytes:
    w = _Writer()
    w.pack("I", len(p.outputs))
    w.pack(f"{len(p.outputs)}I", *p.outputs)
    return w.bytes()
