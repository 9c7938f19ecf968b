"""Decoding ``.dvm`` bytes (formats 1 and 2, laid out in vm/encoding.py): strict, bounded and
linear.

* Every count is checked before the entries it announces are read: against what the remaining
  bytes can hold (each entry has a minimum size) and against the ceilings of ``vm.Limits``
  (instructions, tensors), so an absurd claim is refused in O(1) time and memory.
* Canonical by construction: every field is read with its one encoding (fixed widths, UTF-8,
  bool bytes 0/1, the tags an attribute kind admits, format 2 only with symbols and symbolic
  ints only when they name one) and every key list must be strictly increasing, so a decoded
  program re-encodes to exactly its bytes (a property the fuzz tests check) without
  re-encoding it here.
* The tensor table and the code, which may hold millions of entries, are read by tight loops
  over ``struct.unpack_from``; an entry they do not handle is read again by the field-naming
  reader, which reads it (symbols) or names the bad field. Decoding never allocates more than a
  small multiple of the input's size; constants are read-only views into the input.
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

import ops
from ops.base import shown

from .errors import InvalidError, MalformedError
from .format import (HASH_BYTES, MAGIC, SECTIONS, SYMBOL_DIM, TAG_BOOL, TAG_INT, TAG_INTS,
                     TAG_NONE, TAG_STR, TAG_SYMINTS)
from .program import (KINDS, Instr, Program, Tensor, checked_instr, checked_tensor,
                      storage_dtype)
from .validate import Limits

MIN_BYTES = {"metadata": 8, "symbol": 8, "tensor": 7, "constant": 13, "instruction": 5,
             "output": 4}
"""The fewest bytes one entry of each list occupies (empty strings, no dims, ids or attrs)."""
ALLOWED_TAGS = {"int": (TAG_INT,), "bool": (TAG_BOOL,), "ints": (TAG_INTS,), "str": (TAG_STR,),
                "optint": (TAG_INT, TAG_NONE)}
"""The tags each attribute kind admits (an ``ints`` may also be TAG_SYMINTS in format 2)."""
_U8_U8_U8 = struct.Struct("<BBB").unpack_from
_U16_U8 = struct.Struct("<HB").unpack_from
_U16 = struct.Struct("<H").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I64 = struct.Struct("<q").unpack_from
_IDS = [struct.Struct(f"<{n}I").unpack_from for n in range(256)]
"""Unpackers of 0..255 u32 ids (dims, inputs, outputs: their counts are one byte)."""


class _Reader:
    """A bounded cursor; every read names the field it reads, for error messages."""

    def __init__(self, data, where: str):
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

    def count(self, what: str, ceiling: int | None = None, ceiling_name: str = "") -> int:
        """A u32 count of ``what`` entries, checked before any entry is read."""
        n = self.unpack("I", f"{what} count")
        if ceiling is not None and n > ceiling:
            raise InvalidError(f"{n} {ceiling_name} exceed the ceiling {ceiling}")
        left = len(self.data) - self.pos
        if n * MIN_BYTES[what] > left:
            raise MalformedError(f"{self.where}: {n} {what} entries claimed, but they need at "
                                 f"least {n * MIN_BYTES[what]} bytes and {left} are left")
        return n

    def increasing(self, key: str, last: str | None, what: str) -> None:
        if last is not None and not last < key:
            raise MalformedError(f"non-canonical encoding (fields out of order or not "
                                 f"normalized in section {self.where[-4:]}: {what} keys must "
                                 f"increase)")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedError(f"{self.where}: {len(self.data) - self.pos} trailing bytes")


def decode(data: bytes, limits: Limits | None = None) -> Program:
    """Decode and check canonical ``.dvm`` bytes; raise MalformedError on anything else (and
    InvalidError for a count above a ceiling of ``limits``, before reading the entries)."""
    limits = limits or Limits()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)              # immutable: constants are read-only views into it
    if len(data) < len(MAGIC) + 8 + HASH_BYTES:
        raise MalformedError(f"file too short ({len(data)} bytes) to be a .dvm model")
    if data[:len(MAGIC)] != MAGIC:
        raise MalformedError("bad magic: not a .dvm model")
    body, digest = memoryview(data)[:-HASH_BYTES], data[-HASH_BYTES:]
    semantics, payloads = _read_header(_Reader(body, "header"))
    if hashlib.sha256(body).digest() != digest:
        raise MalformedError("hash mismatch: the file is corrupt or was modified")
    if not ops.semantics.known(semantics):      # its op set gives the opcodes their meaning
        raise InvalidError(f"semantics version {semantics} not supported (this detvm "
                           f"implements {', '.join(map(str, ops.semantics.versions()))})")
    _check_ceilings(payloads, limits)
    name, metadata = _read_meta(_Reader(payloads[b"META"], "section META"))
    symbols = (_read_symbols(_Reader(payloads[b"SYMS"], "section SYMS"))
               if b"SYMS" in payloads else [])
    names = [n for n, _ in symbols]
    tensors = _read_tensors(_Reader(payloads[b"TENS"], "section TENS"), limits, names)
    consts = _read_consts(_Reader(payloads[b"CONS"], "section CONS"), tensors)
    code = _read_code(_Reader(payloads[b"CODE"], "section CODE"), limits, names, semantics)
    outputs = _read_outputs(_Reader(payloads[b"OUTS"], "section OUTS"))
    return Program(name, tensors, consts, code, outputs, metadata, semantics, dict(symbols))


def _check_ceilings(payloads: dict, limits: Limits) -> None:
    """The tensor and instruction counts against ``limits``, before any section is read."""
    for tag, ceiling, what in ((b"TENS", limits.max_tensors, "tensors"),
                               (b"CODE", limits.max_instructions, "instructions")):
        count = _U32(payloads[tag], 0)[0] if len(payloads[tag]) >= 4 else 0
        if count > ceiling:
            raise InvalidError(f"{count} {what} exceed the ceiling {ceiling}")


def _read_header(header: _Reader):
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
    return semantics, payloads


def _read_symbols(r: _Reader) -> list[tuple[str, int]]:
    """Format 2: at least one symbol (a program without symbols is written in format 1), names
    strictly increasing."""
    symbols, last = [], None
    count = r.count("symbol")
    if count == 0:
        raise MalformedError("non-canonical encoding (format 2 without symbols: a program "
                             "without symbols is written in format 1)")
    for k in range(count):
        name = r.str(f"symbol {k} name")
        r.increasing(name, last, "symbol")
        symbols.append((name, r.unpack("I", f"symbol {k} maximum")))
        last = name
    r.end()
    return symbols


def _read_meta(r: _Reader):
    name = r.str("model name")
    metadata, last = {}, None
    for k in range(r.count("metadata")):
        key = r.str(f"metadata key {k}")
        r.increasing(key, last, "metadata")
        metadata[key] = r.str(f"metadata value {shown(key)}")
        last = key
    r.end()
    return name, metadata


# -- the tensor table ----------------------------------------------------------------------------

def _read_tensors(r: _Reader, limits: Limits, symbols: list[str]) -> list[Tensor]:
    count = r.count("tensor", limits.max_tensors, "tensors")
    buf, pos, tensors = r.data, r.pos, []
    for k in range(count):
        try:
            name, end = _fast_str(buf, pos)
            kind, precision, ndim = _U8_U8_U8(buf, end)
            shape = _IDS[ndim](buf, end + 3)
            if shape and max(shape) >= SYMBOL_DIM:
                raise ValueError                    # a symbol: the field-naming reader
            tensors.append(checked_tensor(name, shape, precision, KINDS[kind]))
            pos = end + 3 + 4 * ndim
        except (struct.error, ValueError, IndexError):
            r.pos = pos
            tensors.append(_slow_tensor(r, k, symbols))      # or raises, naming the field
            pos = r.pos
    r.pos = pos
    r.end()
    return tensors


def _slow_tensor(r: _Reader, k: int, symbols: list[str]) -> Tensor:
    name = r.str(f"tensor {k} name")
    kind, precision, ndim = r.unpack("BBB", f"tensor {k} kind/precision/ndim")
    if kind >= len(KINDS):
        raise MalformedError(f"{r.where}: tensor {k} has unknown kind {kind}")
    shape = r.array("I", ndim, f"tensor {k} dims")
    if symbols:
        shape = tuple(_symbol_name(r, symbols, d - SYMBOL_DIM, f"tensor {k}")
                      if d >= SYMBOL_DIM else d for d in shape)
    return Tensor(name, shape, precision, KINDS[kind])


def _symbol_name(r: _Reader, symbols: list[str], number: int, where: str) -> str:
    if number >= len(symbols):
        raise MalformedError(f"{r.where}: {where} refers to symbol {number}, "
                             f"{len(symbols)} declared")
    return symbols[number]


def _read_consts(r: _Reader, tensors: list[Tensor]) -> dict[int, np.ndarray]:
    consts, last = {}, -1
    for k in range(r.count("constant")):
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


# -- the code ------------------------------------------------------------------------------------

def _read_code(r: _Reader, limits: Limits, symbols: list[str], semantics: int) -> list[Instr]:
    count = r.count("instruction", limits.max_instructions, "instructions")
    buf, pos, code, ids, op_of = r.data, r.pos, [], _IDS, _Opcodes(semantics)
    append, last = code.append, {}     # (opcode, attribute count): (bytes, attributes)
    for k in range(count):
        try:
            opcode, n_in = _U16_U8(buf, pos)
            op = op_of[opcode]
            end = pos + 3 + 4 * n_in
            n_out = buf[end]
            after = end + 1 + 4 * n_out
            n_attr = buf[after]
            attrs = {}
            append(checked_instr(op.name, ids[n_in](buf, pos + 3), ids[n_out](buf, end + 1),
                                 attrs))
            start = after + 1
            if not n_attr:
                pos = start
                continue
            seen = last.get((opcode, n_attr))  # the same bytes as the op's last attributes
            if seen is not None and buf[start:start + len(seen[0])] == seen[0]:
                attrs.update(seen[1])
                pos = start + len(seen[0])
            else:
                end = _fast_attrs(buf, start, n_attr, op, attrs)
                last[opcode, n_attr] = (bytes(buf[start:end]), dict(attrs))
                pos = end
        except (struct.error, ValueError, IndexError, KeyError, AttributeError):
            del code[k:]                # the entry appended before its attributes failed
            r.pos = pos
            append(_slow_instruction(r, k, symbols, semantics))   # or raises: the field
            pos = r.pos
    r.pos = pos
    r.end()
    return code


class _Opcodes(dict):
    """opcode -> OpDef under one semantics version, looked up once per opcode (None, never
    stored, for an unknown one)."""

    def __init__(self, semantics: int):
        super().__init__()
        self.semantics = semantics

    def __missing__(self, opcode: int):
        op = ops.by_opcode(opcode, self.semantics)
        if op is not None:
            self[opcode] = op
        return op


def _fast_attrs(buf, pos: int, n_attr: int, op, attrs: dict) -> int:
    """Read ``n_attr`` attributes of ``op`` into ``attrs``; any anomaly raises ValueError."""
    schema, last = _schema(op), None
    for _ in range(n_attr):
        key, pos = _fast_str(buf, pos)
        if last is not None and not last < key:
            raise ValueError
        tag = buf[pos]
        pos += 1
        if tag not in ALLOWED_TAGS[schema[key].kind]:
            raise ValueError
        if tag == TAG_INT:
            (value,) = _I64(buf, pos)
            pos += 8
        elif tag == TAG_INTS:
            (m,) = _U16(buf, pos)
            value = _int64s(m)(buf, pos + 2)
            pos += 2 + 8 * m
        elif tag == TAG_BOOL:
            if buf[pos] > 1:
                raise ValueError
            value, pos = bool(buf[pos]), pos + 1
        elif tag == TAG_STR:
            value, pos = _fast_str(buf, pos)
        else:
            value = None
        attrs[key] = value
        last = key
    return pos


def _fast_str(buf, pos: int) -> tuple[str, int]:
    """A u32-length UTF-8 string at ``pos`` and the position after it (ValueError if bad)."""
    (n,) = _U32(buf, pos)
    if pos + 4 + n > len(buf):
        raise ValueError
    return str(buf[pos + 4:pos + 4 + n], "utf-8"), pos + 4 + n


_SCHEMAS: dict[int, dict] = {}
_INT64S: dict[int, object] = {}


def _schema(op) -> dict:
    """{attribute name: Attr} of ``op`` (built once per op of each semantics version)."""
    schema = _SCHEMAS.get(id(op))
    if schema is None:
        schema = _SCHEMAS[id(op)] = {a.name: a for a in op.attrs}
    return schema


def _int64s(m: int):
    """The unpacker of ``m`` little-endian i64 (built once per count)."""
    unpack = _INT64S.get(m)
    if unpack is None:
        unpack = _INT64S[m] = struct.Struct(f"<{m}q").unpack_from
    return unpack


def _slow_instruction(r: _Reader, k: int, symbols: list[str], semantics: int) -> Instr:
    opcode = r.unpack("H", f"instruction {k} opcode")
    op = ops.by_opcode(opcode, semantics)
    if op is None:
        raise MalformedError(f"{r.where}: instruction {k}: unknown opcode {opcode}")
    n_in = r.unpack("B", f"instruction {k} input count")
    inputs = r.array("I", n_in, f"instruction {k} inputs")
    outputs = r.array("I", r.unpack("B", f"instruction {k} output count"),
                      f"instruction {k} outputs")
    attrs, last, schema = {}, None, _schema(op)
    for j in range(r.unpack("B", f"instruction {k} attribute count")):
        key = r.str(f"instruction {k} attribute {j} key")
        if key not in schema:
            raise MalformedError(f"{r.where}: instruction {k} ({op.name}): unknown "
                                 f"attribute {shown(key)}")
        r.increasing(key, last, "attribute")
        attrs[key] = _slow_attr(r, schema[key].kind, f"instruction {k} {op.name}.{key}",
                                symbols)
        last = key
    return Instr(op.name, inputs, outputs, attrs)


def _slow_attr(r: _Reader, kind: str, where: str, symbols: list[str]):
    tag = r.unpack("B", f"{where} tag")
    if tag not in ALLOWED_TAGS[kind] + ((TAG_SYMINTS,) if symbols and kind == "ints" else ()):
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
        value = tuple(_read_entry(r, symbols, f"{where} entry {j}")
                      for j in range(r.unpack("H", f"{where} count")))
        if not any(isinstance(v, str) for v in value):
            raise MalformedError(f"non-canonical encoding (fields out of order or not "
                                 f"normalized in section CODE: {where} names no symbol)")
        return value
    return None


def _read_entry(r: _Reader, symbols: list[str], where: str):
    """One entry of an ints with symbols: an i64, or a symbol's name."""
    flag = r.unpack("B", f"{where} flag")
    if flag == 0:
        return r.unpack("q", where)
    if flag != 1:
        raise MalformedError(f"{r.where}: {where}: flag {flag}")
    return _symbol_name(r, symbols, r.unpack("H", where), where)


def _read_outputs(r: _Reader) -> list[int]:
    outputs = list(r.array("I", r.count("output"), "output ids"))
    r.end()
    return outputs
