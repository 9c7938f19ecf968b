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

Decoding is strict: a truncated or overlong field, trailing bytes, an unknown opcode, attribute
or tag, a bad hash, or any byte sequence that the encoder would not produce (non-canonical) is a
:class:`MalformedError` naming the field. Decoding never allocates more than the input's size.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

import ops
from ops.registry import REGISTRY

from .errors import InvalidError, MalformedError
from .program import KINDS, Instr, Program, Tensor, storage_dtype

MAGIC = b"\x89DVM\r\n\x1a\n"
FORMAT_VERSION = 2
"""The newest format this detvm writes and reads; it reads every version in SECTIONS."""
SECTIONS = {1: (b"META", b"TENS", b"CONS", b"CODE", b"OUTS"),
            2: (b"META", b"SYMS", b"TENS", b"CONS", b"CODE", b"OUTS")}
HASH_BYTES = 32
TAG_INT, TAG_BOOL, TAG_INTS, TAG_STR, TAG_NONE, TAG_SYMINTS = range(6)
I64 = (-(1 << 63), (1 << 63) - 1)
SYMBOL_DIM = 1 << 31
"""A TENS dim at or above this stands for symbol number (dim - SYMBOL_DIM) (format 2)."""


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


# ---------------------------------------------------------------------------------------------
# Decoder
# ---------------------------------------------------------------------------------------------

class _Reader:
    """A bounded cursor; every read names the field it reads, for error messages."""

    def __init__(self, data: bytes, where: str):
        self.data, self.pos, self.where = memoryview(data), 0, where

    def take(self, n: int, field: str) -> bytes:
        return bytes(self.view(n, field))

    def view(self, n: int, field: str) -> memoryview:
        """The next ``n`` bytes without copying them."""
        if n < 0 or self.pos + n > len(self.data):
            raise MalformedError(f"{self.where}: truncated {field} (needs {n} bytes at offset "
                                 f"{self.pos}, {len(self.data) - self.pos} left)")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str):
        fmt = "<" + fmt
        values = struct.unpack(fmt, self.take(struct.calcsize(fmt), field))
        return values if len(values) > 1 else values[0]

    def array(self, code: str, n: int, field: str) -> tuple:
        """``n`` values of struct code ``code``, always as a tuple."""
        return struct.unpack(f"<{n}{code}", self.take(n * struct.calcsize(code), field))

    def str(self, field: str) -> str:
        raw = self.take(self.unpack("I", f"{field} length"), field)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedError(f"{self.where}: {field} is not valid UTF-8") from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedError(f"{self.where}: {len(self.data) - self.pos} trailing bytes")


def decode(data: bytes) -> Program:
    """Decode and check canonical ``.dvm`` bytes; raise MalformedError on anything else."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)              # immutable: constants are read-only views into it
    if len(data) < len(MAGIC) + 8 + HASH_BYTES:
        raise MalformedError(f"file too short ({len(data)} bytes) to be a .dvm model")
    if data[:len(MAGIC)] != MAGIC:
        raise MalformedError("bad magic: not a .dvm model")
    body, digest = memoryview(data)[:-HASH_BYTES], data[-HASH_BYTES:]
    header = _Reader(body, "header")
    header.take(len(MAGIC), "magic")
    version, semantics, count = header.unpack("HHI", "version fields")
    if version not in SECTIONS:
        raise MalformedError(f"format version {version} not supported (this detvm reads "
                             f"{', '.join(map(str, SECTIONS))})")
    tags = SECTIONS[version]
    if count != len(tags):
        raise MalformedError(f"header: {count} sections, expected {len(tags)}")
    payloads = {}
    for tag in tags:
        got = header.take(4, "section tag")
        if got != tag:
            raise MalformedError(f"header: section {got!r} where {tag.decode()} was expected")
        payloads[tag] = header.view(header.unpack("Q", f"{tag.decode()} length"),
                                    f"{tag.decode()} payload")
    header.end()
    if hashlib.sha256(body).digest() != digest:
        raise MalformedError("hash mismatch: the file is corrupt or was modified")
    if not ops.semantics.known(semantics):      # its op set gives the opcodes their meaning
        raise InvalidError(f"semantics version {semantics} not supported (this detvm "
                           f"implements {', '.join(map(str, ops.semantics.versions()))})")
    name, metadata = _read_meta(_Reader(payloads[b"META"], "section META"))
    symbols = _read_symbols(_Reader(payloads[b"SYMS"], "section SYMS")) \
        if b"SYMS" in payloads else []
    tensors = _read_tensors(_Reader(payloads[b"TENS"], "section TENS"), symbols)
    consts = _read_consts(_Reader(payloads[b"CONS"], "section CONS"), tensors)
    code = _read_code(_Reader(payloads[b"CODE"], "section CODE"), symbols, semantics)
    outputs = _read_outputs(_Reader(payloads[b"OUTS"], "section OUTS"))
    program = Program(name, tensors, consts, code, outputs, metadata, semantics,
                      dict(symbols))
    # Canonical: every section re-encodes to its bytes. The header was read field by field and
    # CONS entry by entry (ids increasing, exact widths and lengths, raw data), so those
    # re-encode identically by construction; the other sections are re-encoded and compared.
    if version == 2 and not symbols:
        raise MalformedError("non-canonical encoding (format 2 without symbols: a program "
                             "without symbols is written in format 1)")
    for tag, section in ((b"META", _meta), (b"SYMS", _symbols), (b"TENS", _tensors),
                         (b"CODE", _code), (b"OUTS", _outputs)):
        if tag not in payloads:
            continue
        if section(program) != payloads[tag]:
            raise MalformedError("non-canonical encoding (fields out of order or not "
                                 f"normalized in section {tag.decode()})")
    return program


def _read_meta(r: _Reader):
    name = r.str("model name")
    metadata = {}
    for k in range(r.unpack("I", "metadata count")):
        key = r.str(f"metadata key {k}")
        metadata[key] = r.str(f"metadata value {key!r}")
    r.end()
    return name, metadata


def _read_symbols(r: _Reader) -> list[tuple[str, int]]:
    symbols = []
    for k in range(r.unpack("I", "symbol count")):
        symbols.append((r.str(f"symbol {k} name"), r.unpack("I", f"symbol {k} maximum")))
    r.end()
    return symbols


def _symbol_name(r: _Reader, symbols: list, number: int, where: str) -> str:
    if number >= len(symbols):
        raise MalformedError(f"{r.where}: {where} refers to symbol {number}, "
                             f"{len(symbols)} declared")
    return symbols[number][0]


def _read_tensors(r: _Reader, symbols: list) -> list[Tensor]:
    tensors = []
    for k in range(r.unpack("I", "tensor count")):
        name = r.str(f"tensor {k} name")
        kind, precision, ndim = r.unpack("BBB", f"tensor {k} kind/precision/ndim")
        if kind >= len(KINDS):
            raise MalformedError(f"{r.where}: tensor {k} has unknown kind {kind}")
        shape = r.array("I", ndim, f"tensor {k} dims")
        if symbols:
            shape = tuple(_symbol_name(r, symbols, d - SYMBOL_DIM, f"tensor {k}")
                          if d >= SYMBOL_DIM else d for d in shape)
        tensors.append(Tensor(name, shape, precision, KINDS[kind]))
    r.end()
    return tensors


def _read_consts(r: _Reader, tensors: list[Tensor]) -> dict[int, np.ndarray]:
    consts, last = {}, -1
    for k in range(r.unpack("I", "constant count")):
        tid, width, nbytes = r.unpack("IBQ", f"constant {k} header")
        if tid >= len(tensors) or tensors[tid].kind != "const":
            raise MalformedError(f"{r.where}: constant {k} refers to tensor {tid}, not a const")
        if tid <= last:
            raise MalformedError("non-canonical encoding (fields out of order or not "
                                 "normalized in section CONS: tensor ids must increase)")
        last = tid
        t = tensors[tid]
        dtype = storage_dtype(t.precision)
        if width != dtype.itemsize or nbytes != t.size * width:
            raise MalformedError(f"{r.where}: constant %{t.name}: {nbytes} bytes of width "
                                 f"{width}, expected {t.size * dtype.itemsize} of width "
                                 f"{dtype.itemsize}")
        raw = r.view(nbytes, f"constant %{t.name} data")
        consts[tid] = np.frombuffer(raw, dtype=dtype).reshape(t.shape)   # read-only, no copy
    r.end()
    return consts


def _read_code(r: _Reader, symbols: list, semantics: int) -> list[Instr]:
    code = []
    for k in range(r.unpack("I", "instruction count")):
        opcode = r.unpack("H", f"instruction {k} opcode")
        op = ops.by_opcode(opcode, semantics)
        if op is None:
            raise MalformedError(f"{r.where}: instruction {k}: unknown opcode {opcode}")
        n_in = r.unpack("B", f"instruction {k} input count")
        inputs = r.array("I", n_in, f"instruction {k} inputs")
        outputs = r.array("I", r.unpack("B", f"instruction {k} output count"),
                          f"instruction {k} outputs")
        attrs = {}
        known = {a.name: a for a in op.attrs}
        for j in range(r.unpack("B", f"instruction {k} attribute count")):
            key = r.str(f"instruction {k} attribute {j} key")
            if key not in known:
                raise MalformedError(f"{r.where}: instruction {k} ({op.name}): unknown "
                                     f"attribute {key!r}")
            attrs[key] = _read_attr(r, known[key].kind, f"instruction {k} {op.name}.{key}",
                                    symbols)
        code.append(Instr(op.name, inputs, outputs, attrs))
    r.end()
    return code


def _read_attr(r: _Reader, kind: str, where: str, symbols: list):
    tag = r.unpack("B", f"{where} tag")
    allowed = {"int": (TAG_INT,), "bool": (TAG_BOOL,), "str": (TAG_STR,),
               "ints": (TAG_INTS, TAG_SYMINTS) if symbols else (TAG_INTS,),
               "optint": (TAG_INT, TAG_NONE)}[kind]
    if tag not in allowed:
        raise MalformedError(f"{r.where}: {where}: tag {tag} does not fit a {kind} attribute")
    if tag == TAG_INT:
        return r.unpack("q", where)
    if tag == TAG_BOOL:
        v = r.unpack("B", where)
        if v > 1:
            raise MalformedError(f"{r.where}: {where}: bool byte {v}")
        return bool(v)
    if tag == TAG_INTS:
        return r.array("q", r.unpack("H", f"{where} count"), where)
    if tag == TAG_STR:
        return r.str(where)
    if tag == TAG_SYMINTS:
        return tuple(_read_entry(r, symbols, f"{where} entry {j}")
                     for j in range(r.unpack("H", f"{where} count")))
    return None


def _read_entry(r: _Reader, symbols: list, where: str):
    """One entry of an ints with symbols: an i64, or a symbol's name."""
    flag = r.unpack("B", f"{where} flag")
    if flag == 0:
        return r.unpack("q", where)
    if flag != 1:
        raise MalformedError(f"{r.where}: {where}: flag {flag}")
    return _symbol_name(r, symbols, r.unpack("H", where), where)


def _read_outputs(r: _Reader) -> list[int]:
    outputs = list(r.array("I", r.unpack("I", "output count"), "output ids"))
    r.end()
    return outputs
