"""A small writer of ONNX protobuf messages (onnx.proto, proto2 syntax), so that the
onnxruntime backend builds its graphs without the ``onnx`` package.

Only what the backend needs: ModelProto, GraphProto, NodeProto, AttributeProto (int, float,
string, ints, floats, tensor), TensorProto (raw_data), ValueInfoProto with a fixed tensor shape.
The field numbers are ONNX's, which never change; fields are written in field-number order and
repeated scalars unpacked, as onnx's own serializer does, so the bytes equal
``onnx.helper``'s for the same message (tests/test_ort_backend.py checks both).
"""
from __future__ import annotations

import functools
import struct

import numpy as np

ELEM_TYPES = {np.dtype(np.float32): 1, np.dtype(np.uint8): 2, np.dtype(np.int8): 3,
              np.dtype(np.uint16): 4, np.dtype(np.int16): 5, np.dtype(np.int32): 6,
              np.dtype(np.int64): 7, np.dtype(np.bool_): 9, np.dtype(np.uint32): 12,
              np.dtype(np.uint64): 13}
"""numpy dtype -> TensorProto.DataType."""
ATTR_FLOAT, ATTR_INT, ATTR_STRING, ATTR_TENSOR, ATTR_FLOATS, ATTR_INTS = 1, 2, 3, 4, 6, 7
VARINT, FIXED32, BYTES = 0, 5, 2


_ONE_BYTE = [bytes((n,)) for n in range(128)]


def _varint(n: int) -> bytes:
    """Base-128 varint; a negative int64 is written as its 64-bit two's complement."""
    if 0 <= n < 128:
        return _ONE_BYTE[n]
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@functools.lru_cache(maxsize=None)
def _key(field: int, wire: int) -> bytes:
    return _varint(field << 3 | wire)


def _int(field: int, n: int) -> bytes:
    return _key(field, VARINT) + _varint(int(n))


def _bytes(field: int, data: bytes) -> bytes:
    return _key(field, BYTES) + _varint(len(data)) + data


def _str(field: int, s: str) -> bytes:
    return _bytes(field, s.encode("utf-8"))


def tensor(name: str, array: np.ndarray, external: bool = False) -> bytes:
    """TensorProto: dims (1), data_type (2), name (8), raw_data (9, little endian); or,
    ``external``, no data but external_data (13) and data_location (14) EXTERNAL: the session
    receives the array itself (session.py)."""
    array = np.ascontiguousarray(array)
    dtype = array.dtype.newbyteorder("<")
    head = (b"".join(_int(1, d) for d in array.shape) + _int(2, ELEM_TYPES[np.dtype(dtype)])
            + (_str(8, name) if name else b""))
    if external:
        return head + _bytes(13, _str(1, "location") + _str(2, "detvm")) + _int(14, 1)
    return head + _bytes(9, array.astype(dtype, copy=False).tobytes())


def attribute(name: str, value) -> bytes:
    """AttributeProto: name (1), f (2), i (3), s (4), t (5), floats (7), ints (8), type (20)."""
    out = _str(1, name)
    if isinstance(value, np.ndarray):
        return out + _bytes(5, tensor("", value)) + _int(20, ATTR_TENSOR)
    if isinstance(value, bool) or isinstance(value, (int, np.integer)):
        return out + _int(3, int(value)) + _int(20, ATTR_INT)
    if isinstance(value, float):
        return out + _key(2, FIXED32) + struct.pack("<f", value) + _int(20, ATTR_FLOAT)
    if isinstance(value, str):
        return out + _str(4, value) + _int(20, ATTR_STRING)
    values = list(value)
    if values and all(isinstance(v, float) for v in values):
        return out + b"".join(_key(7, FIXED32) + struct.pack("<f", v) for v in values) + \
            _int(20, ATTR_FLOATS)
    return out + b"".join(_int(8, int(v)) for v in values) + _int(20, ATTR_INTS)


def node(op_type: str, inputs, outputs, name: str = "", domain: str = "", **attrs) -> bytes:
    """NodeProto: input (1), output (2), name (3), op_type (4), attribute (5, sorted by
    name), domain (7)."""
    out = b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs)
    if name:
        out += _str(3, name)
    out += _str(4, op_type)
    out += b"".join(_bytes(5, attribute(k, attrs[k])) for k in sorted(attrs))
    return out + (_str(7, domain) if domain else b"")


def value_info(name: str, dtype, shape) -> bytes:
    """ValueInfoProto name (1), type (2): TypeProto.tensor_type (1) = elem_type (1),
    shape (2) = dims (1) of dim_value (1)."""
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    tensor_type = _int(1, ELEM_TYPES[np.dtype(dtype)]) + _bytes(2, dims)
    return _str(1, name) + _bytes(2, _bytes(1, tensor_type))


def graph(name: str, nodes, inputs, outputs, initializers=()) -> bytes:
    """GraphProto: node (1), name (2), initializer (5), input (11), output (12); every part
    already encoded (``node``, ``value_info``, ``tensor``)."""
    return (b"".join(_bytes(1, n) for n in nodes) + _str(2, name)
            + b"".join(_bytes(5, t) for t in initializers)
            + b"".join(_bytes(11, v) for v in inputs) + b"".join(_bytes(12, v) for v in outputs))


def model(graph_bytes: bytes, opsets: dict[str, int], ir_version: int = 9,
          producer: str = "detvm") -> bytes:
    """ModelProto: ir_version (1), producer_name (2), graph (7), opset_import (8) of
    OperatorSetIdProto domain (1), version (2)."""
    imports = b"".join(_bytes(8, _str(1, domain) + _int(2, version))
                       for domain, version in opsets.items())
    return _int(1, ir_version) + _str(2, producer) + _bytes(7, graph_bytes) + imports
