"""Reading an ONNX model: the proto, its opset, constants, inputs with static shapes, nodes.

onnx is imported here only (an optional dependency: ``pip install 'detvm[onnx]'``).
"""
from __future__ import annotations

import importlib

import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

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
        model = onnx.load_from_string(bytes(source))
    except Exception as e:       # protobuf DecodeError and friends
        raise MalformedError(f"not an ONNX model: {e or 'cannot parse the protobuf'}") from None
    _check_texts(model.graph)
    return model


def _check_texts(graph) -> None:
    """Every name, op type and domain of ``graph`` (and of the graphs in its nodes' attributes)
    is text: protobuf hands a proto2 string that is not UTF-8 over as bytes."""
    texts = [graph.name, *(t.name for t in graph.initializer),
             *(v.name for v in (*graph.input, *graph.output))]
    for n in graph.node:
        texts += [n.name, n.op_type, n.domain, *n.input, *n.output]
        for a in n.attribute:
            texts.append(a.name)
            for g in list(a.graphs) + ([a.g] if a.HasField("g") else []):
                _check_texts(g)
    if not all(isinstance(t, str) for t in texts):
        bad = next(t for t in texts if not isinstance(t, str))
        raise MalformedError(f"not an ONNX model: a name or op type is not UTF-8 text "
                             f"({bytes(bad[:40])!r})")


def _initializer(numpy_helper, t):
    """An initializer as an array; a malformed one (type, dims and data disagreeing) is a
    MalformedError naming it."""
    try:
        return numpy_helper.to_array(t)
    except (ValueError, TypeError, KeyError) as e:   # KeyError: an unknown element type
        raise MalformedError(f"initializer {t.name!r}: {e}") from None


def read_graph(model, batch: int = 1, shapes: Mapping[str, Sequence[int]] | None = None) \
        -> Graph:
    """The :class:`Graph` of ``model`` with every input dim fixed (:func:`input_dims`)."""
    onnx = onnx_module()
    from onnx import numpy_helper
    opset = {o.domain or "": o.version for o in model.opset_import}
    version = opset.get("", opset.get("ai.onnx", 0))
    if version < MIN_OPSET:
        raise InvalidError(f"ONNX opset {version} is not supported (need >= {MIN_OPSET})")
    g = model.graph
    consts = {t.name: _initializer(numpy_helper, t) for t in g.initializer}
    dims = input_dims(model, batch, shapes)
    inputs = [(i.name, _dtype(onnx, i.type.tensor_type.elem_type), dims[i.name])
              for i in g.input if i.name not in consts]
    nodes = [Node(n.name or f"{n.op_type}_{k}", n.op_type, n.domain or "", list(n.input),
                  list(n.output), {a.name: _attr(onnx, a) for a in n.attribute}, n)
             for k, n in enumerate(g.node)]
    return Graph(g.name or "onnx", nodes, consts, inputs, [o.name for o in g.output], version,
                 f"{model.producer_name} {model.producer_version}".strip(),
                 {p.key: p.value for p in model.metadata_props})


def graph_inputs(model) -> list:
    """The ValueInfos of the inputs that are not initializers."""
    consts = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in consts]


def input_dims(model, batch: int | None = 1,
               shapes: Mapping[str, Sequence[int]] | None = None) -> dict[str, tuple]:
    """The static dims of every graph input: those given in ``shapes`` (name -> dims, which
    must agree with the model's static dims), else the model's, a symbolic first axis
    becoming ``batch`` (None: left symbolic); any other symbolic dim is an error naming the
    input and the option."""
    shapes = dict(shapes or {})
    inputs = graph_inputs(model)
    unknown = sorted(set(shapes) - {i.name for i in inputs})
    if unknown:
        raise InvalidError(f"--shape names no ONNX input: {', '.join(map(repr, unknown))} "
                           f"(inputs: {', '.join(repr(i.name) for i in inputs)})")
    if batch is not None and batch < 1:
        raise InvalidError(f"the batch must be at least 1 (got {batch})")
    return {i.name: _given_with_batch(i, shapes[i.name], batch) if i.name in shapes
            else _shape(i, batch) for i in inputs}


def is_batch(dim) -> bool:
    """A given first dim that leaves the batch symbolic: None or a symbol's name."""
    return dim is None or isinstance(dim, str)


def _given_with_batch(value_info, given: Sequence, batch: int | None) -> tuple:
    """:func:`_given_shape`, where a first dim None or a name (``--shape x=N,3,48,192``) is
    the batch: ``batch``, or left symbolic (None)."""
    given = tuple(given)
    if not given or not is_batch(given[0]):
        return _given_shape(value_info, given)
    declared = _declared(value_info)
    first = declared[0] if declared and isinstance(declared[0], int) else 1
    return (batch, *_given_shape(value_info, (first, *given[1:]))[1:])


def _declared(value_info) -> list[int | str]:
    """The model's dims of an input: ints where static, the symbol's name (or '?') elsewhere."""
    return [int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0
            else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim]


def _given_shape(value_info, given: Sequence[int]) -> tuple[int, ...]:
    declared, given = _declared(value_info), tuple(int(d) for d in given)
    if not value_info.type.tensor_type.HasField("shape"):
        declared = list(given)                       # rank unknown: any rank is taken
    if len(given) != len(declared) or any(d < 1 for d in given) or any(
            isinstance(want, int) and want != got for want, got in zip(declared, given)):
        raise InvalidError(f"--shape {value_info.name}={','.join(map(str, given))} does not "
                           f"fit the ONNX input's dims ({_listing(declared)})")
    return given


def _shape(value_info, batch: int | None) -> tuple:
    declared = _declared(value_info)
    if not value_info.type.tensor_type.HasField("shape"):
        raise InvalidError(f"ONNX input {value_info.name!r} has no shape: give its dims with "
                           f"--shape {value_info.name}=D0,D1,... (Python: "
                           f"shapes={{{value_info.name!r}: (...)}})")
    dims = [batch if k == 0 and isinstance(d, str) else d for k, d in enumerate(declared)]
    if any(isinstance(d, str) for d in dims):
        hint = ",".join(str(d) if isinstance(d, int) else "1" if d is None else f"D{k}"
                        for k, d in enumerate(dims))
        raise InvalidError(
            f"ONNX input {value_info.name!r} has symbolic dims ({_listing(declared)}): fix "
            f"them with --shape {value_info.name}={hint} (Python: shapes={{"
            f"{value_info.name!r}: (...)}}); only a symbolic first dim defaults (to the batch)")
    return tuple(dims)


def _listing(dims) -> str:
    return f"[{', '.join(map(str, dims))}]" if dims else "a scalar"


def with_input_dims(model, dims: Mapping[str, Sequence[int]]):
    """A copy of ``model`` whose inputs have the ``dims`` (None: a symbolic dim "N"); the
    other dims recorded in the graph (intermediate value infos, symbolic output dims) are
    dropped, for shape inference to recompute."""
    fixed = type(model)()
    fixed.CopyFrom(model)
    for i in graph_inputs(fixed):
        shape = i.type.tensor_type.shape
        shape.ClearField("dim")
        for d in dims[i.name]:
            if d is None:
                shape.dim.add().dim_param = "N"
            else:
                shape.dim.add().dim_value = int(d)
    for o in fixed.graph.output:
        for d in o.type.tensor_type.shape.dim:
            if not (d.HasField("dim_value") and d.dim_value > 0):
                d.Clear()
    del fixed.graph.value_info[:]
    return fixed


def _dtype(onnx, elem_type: int) -> str:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except Exception:
        return f"onnx-type-{elem_type}"


def _attr(onnx, attr) -> Any:
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, onnx.TensorProto):
        return _initializer(onnx.numpy_helper, value)
    return value
