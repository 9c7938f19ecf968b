"""Reading an ONNX model: the proto, its opset, constants, inputs with static shapes, nodes.

onnx is imported here only (an optional dependency: ``pip install 'detvm[onnx]'``).
"""
from __future__ import annotations

import importlib

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vm.errors import EnvironmentFault, InvalidError, MalformedError

MIN_OPSET = 10
"""The oldest ai.onnx opset read. The quantized ops exist since opset 10 (the ONNX node tests
of ConvInteger, MatMulInteger and QLinearConv use it); onnxruntime's quantizer writes >= 13."""
MS_DOMAIN = "com.microsoft"


def optional_module(name: str, purpose: str):
    """Import ``name`` (from the ``onnx`` extra), or raise EnvironmentFault saying why."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise EnvironmentFault(f"{purpose} needs {name} (pip install 'detvm[onnx]'): "
                               f"{e}") from None


def onnx_module():
    return optional_module("onnx", "ONNX import")


@dataclass
class Node:
    """One ONNX node: op type, domain, inputs ('' = absent), outputs, decoded attributes."""

    name: str
    op_type: str
    domain: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    proto: Any = None

    def describe(self) -> str:
        return f"ONNX node {self.name!r} ({self.op_type})"


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    consts: dict[str, np.ndarray]
    inputs: list[tuple[str, str, tuple[int, ...]]]       # (name, numpy dtype name, shape)
    outputs: list[str]
    opset: int
    producer: str = ""
    metadata: dict[str, str] = field(default_factory=dict)


def load_model(source) -> Any:
    """An onnx.ModelProto from a ModelProto, serialized bytes or a file path."""
    onnx = onnx_module()
    if isinstance(source, onnx.ModelProto):
        return source
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, "rb") as f:
                source = f.read()
        except OSError as e:
            raise EnvironmentFault(f"cannot read {os.fspath(source)}: {e.strerror or e}") \
                from None
    try:
        return onnx.load_from_string(bytes(source))
    except Exception as e:       # protobuf DecodeError and friends
        raise MalformedError(f"not an ONNX model: {type(e).__name__}: {e}") from None


def read_graph(model, batch: int = 1) -> Graph:
    """The :class:`Graph` of ``model``; symbolic dims of the inputs' first axis become
    ``batch``, any other unknown dim is an error."""
    onnx = onnx_module()
    from onnx import numpy_helper
    opset = {o.domain or "": o.version for o in model.opset_import}
    version = opset.get("", opset.get("ai.onnx", 0))
    if version < MIN_OPSET:
        raise InvalidError(f"ONNX opset {version} is not supported (need >= {MIN_OPSET})")
    g = model.graph
    consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    inputs = [(i.name, _dtype(onnx, i.type.tensor_type.elem_type), _shape(i, batch))
              for i in g.input if i.name not in consts]
    nodes = [Node(n.name or f"{n.op_type}_{k}", n.op_type, n.domain or "", list(n.input),
                  list(n.output), {a.name: _attr(onnx, a) for a in n.attribute}, n)
             for k, n in enumerate(g.node)]
    return Graph(g.name or "onnx", nodes, consts, inputs, [o.name for o in g.output], version,
                 f"{model.producer_name} {model.producer_version}".strip(),
                 {p.key: p.value for p in model.metadata_props})


def _dtype(onnx, elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return f"onnx-type-{elem_type}"


def _shape(value_info, batch: int) -> tuple[int, ...]:
    dims = []
    for k, d in enumerate(value_info.type.tensor_type.shape.dim):
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif k == 0:
            dims.append(int(batch))
        else:
            raise InvalidError(f"ONNX input {value_info.name!r}: dimension {k} is not static "
                               f"({d.dim_param or '?'}); only the batch axis may be symbolic")
    return tuple(dims)


def _attr(onnx, attr) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    return value
