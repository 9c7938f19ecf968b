"""The call pattern of a binary island: how onnxruntime's broadcasting loop calls its kernel.

onnxruntime's QLinearAdd rounds some pairs differently when its first input is a scalar per
innermost span (another code path; measured: 1 to 3 of the 65,536 entries for about one
parameter set in four). A two-input table is therefore evaluated with its arguments shaped
the way the model calls the kernel (tables.LAYOUTS). The model's own shapes decide, except for
a fused QLinearAdd of two differently shaped activations: onnxruntime may run it in its own
layout (NHWC after its layout transformation: an NCHW [1, C, 1, 1] operand becomes a vector
per span), so its pattern is read from onnxruntime's optimized graph of the model itself.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

from vm.errors import InvalidError

from .graph import Graph, optional_module
from .tables import Job

LAYOUT_NODES = ("Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity")
"""Nodes onnxruntime's layout transformation puts between a kernel and the model's tensor."""


def pattern(a: tuple, b: tuple) -> str:
    """How the broadcasting loop calls a binary kernel on shapes ``a``, ``b``: ``rows_a``
    when a is a scalar per innermost span (or a one-element tensor), ``rows_b`` when b is,
    else ``flat``."""
    na, nb = int(np.prod(a)), int(np.prod(b))
    if na == 1:
        return "rows_a"
    if nb == 1:
        return "rows_b"
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + tuple(a), (1,) * (n - len(b)) + tuple(b)
    for da, db in reversed(list(zip(a, b))):
        if da == db == 1:
            continue
        return "rows_a" if da == 1 else "rows_b" if db == 1 else "flat"
    return "flat"


def add_positions(nodes: list, sources: dict, order: list) -> tuple | None:
    """The argument at input 0 and at input 1 of the job's QLinearAdd (a QLinearAdd node, or
    the one Add of an island onnxruntime fuses into one), else None."""
    ops = [n for n in nodes if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    if len(ops) != 1 or ops[0].op_type not in ("Add", "QLinearAdd"):
        return None
    names = (ops[0].input[0], ops[0].input[3 if ops[0].op_type == "QLinearAdd" else 1])
    if not all(n in sources for n in names):
        return None
    return tuple(order.index(sources[n].name) for n in names)


def refine(jobs: list[Job], graph: Graph) -> None:
    """Set the layout of every job with a fused QLinearAdd of differently shaped arguments
    from the shapes of its inputs in onnxruntime's optimized graph of the model."""
    pending = [j for j in jobs if j.add is not None and len(set(j.shapes)) > 1]
    if not pending:
        return
    calls = call_shapes(graph, [j.output for j in pending])
    for job in pending:
        if job.output in calls:
            scalar = {"rows_a": 0, "rows_b": 1}.get(pattern(*calls[job.output]))
            job.layout = "flat" if scalar is None else ("rows_a", "rows_b")[job.add[scalar]]


def call_shapes(graph: Graph, outputs: list[str]) -> dict[str, tuple]:
    """For each name of ``outputs`` computed by a QLinearAdd in onnxruntime's optimized graph
    of the model (through the layout nodes it adds): the shapes of its two inputs, read by
    running that optimized graph once on zeros."""
    ort = optional_module("onnxruntime", "Building the tables of float islands")
    onnx = optional_module("onnx", "Building the tables of float islands")
    from onnx import helper
    optimized = _optimized(ort, onnx, _whole(graph))
    producers = {o: n for n in optimized.graph.node for o in n.output}
    adds = {}
    for name in outputs:
        node = producers.get(name)
        while node is not None and node.op_type in LAYOUT_NODES:
            node = producers.get(node.input[0])
        if node is not None and node.op_type == "QLinearAdd":
            adds[name] = node
    consts = {i.name: tuple(i.dims) for i in optimized.graph.initializer}
    exposed = sorted({n.input[k] for n in adds.values() for k in (0, 3)} - set(consts))
    if not exposed:
        return {name: (consts[n.input[0]], consts[n.input[3]]) for name, n in adds.items()}
    optimized.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in exposed)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level, options.intra_op_num_threads = 3, 1
    feeds = {name: np.zeros(shape, dtype) for name, dtype, shape in graph.inputs}
    try:
        session = ort.InferenceSession(optimized.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        shapes = {**consts, **{n: v.shape for n, v in zip(exposed, session.run(exposed, feeds))}}
    except Exception as e:             # onnxruntime raises its own exception types
        raise InvalidError(f"onnxruntime cannot run its optimized graph of the model to read "
                           f"the call pattern of its QLinearAdd nodes: {e}") from None
    return {name: (shapes[n.input[0]], shapes[n.input[3]]) for name, n in adds.items()}


def _whole(graph: Graph):
    """The model again, from its graph (inputs with their fixed dims)."""
    from onnx import helper, numpy_helper
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(
        np.dtype(dtype)), shape) for name, dtype, shape in graph.inputs]
    body = helper.make_graph([n.proto for n in graph.nodes], graph.name, inputs,
                             [helper.make_empty_tensor_value_info(o) for o in graph.outputs],
                             [numpy_helper.from_array(v, k) for k, v in graph.consts.items()])
    opsets = [helper.make_opsetid("", graph.opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(body, opset_imports=opsets,
                             ir_version=helper.find_min_ir_version_for(opsets, True))


def _optimized(ort, onnx, model):
    """onnxruntime's optimized graph of ``model`` (default optimizations), as it saves it."""
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.optimized_model_filepath = os.path.join(tmp, "optimized.onnx")
        options.log_severity_level, options.intra_op_num_threads = 3, 1
        try:
            ort.InferenceSession(model.SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
        except Exception as e:
            raise InvalidError(f"onnxruntime cannot load the model to read the call pattern "
                               f"of its QLinearAdd nodes: {e}") from None
        return onnx.load(options.optimized_model_filepath)
