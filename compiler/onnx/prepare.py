"""A float ONNX model made ready for onnxruntime's static quantization (``detvm quantize``).

* **Dims**: every input gets static dims (``shapes``, else the model's); a symbolic first dim
  (the batch) stays symbolic, any other symbolic dim is an error naming the input and
  ``--shape``. Calibration then runs on exactly the shapes the program will have.
* **Opset**: a model below opset 13 is converted to 13 (onnx's version converter) when the
  weights are quantized per channel: DequantizeLinear has an ``axis`` only from opset 13, and
  onnxruntime cannot load the per-channel model it writes for opset 11 or 12.
* **Shape arithmetic under a symbolic batch**: nodes computing constants from shapes (a
  detector's anchor grid: Shape -> Gather -> Range -> Add -> Expand) are folded into
  initializers where the batch does not flow into them (onnxruntime's pre-processing folds
  them only when every dim is fixed; left in the graph, the quantizer wraps them in
  QuantizeLinear / DequantizeLinear and they no longer fold at import). What depends on the
  batch stays, for the importer to keep as the symbol.
* **Split outputs**: a graph output made by a Concat (a detector's boxes and class scores)
  is left float, so each of its inputs keeps its own scale; one scale for all of them would
  leave the scores (0..1) with one or two levels next to boxes in pixels. The importer
  writes one scale per index along the Concat's axis (exact; docs/onnx.md).

Every change is announced through ``notify`` (the library never prints).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from vm.errors import InvalidError

from .graph import graph_inputs, input_dims, onnx_module, with_input_dims

PER_CHANNEL_OPSET = 13
"""The first ai.onnx opset whose DequantizeLinear takes an axis (per-channel scales)."""


def fixed_dims(model, shapes: Mapping[str, Sequence[int]] | None) -> dict[str, tuple]:
    """Each input's dims: ``shapes`` where given, else the model's, a symbolic batch as None."""
    return input_dims(model, None, shapes)


def opset(model) -> int:
    versions = {o.domain or "": o.version for o in model.opset_import}
    return versions.get("", versions.get("ai.onnx", 0))


def prepared(model, shapes=None, *, per_channel: bool = True,
             notify: Callable[[str], None] = lambda message: None):
    """(the model with fixed dims and a usable opset, its input dims)."""
    dims = fixed_dims(model, shapes)
    model = with_input_dims(model, dims)
    version = opset(model)
    if per_channel and version < PER_CHANNEL_OPSET:
        model = _converted(model, version)
        notify(f"the model's opset {version} was converted to {PER_CHANNEL_OPSET} (per-channel "
               "weights need it; --per-tensor keeps the opset)")
    return model, dims


def fold_batch_constants(model, dims: Mapping[str, tuple],
                         notify: Callable[[str], None] = lambda message: None):
    """``model`` with the constants its nodes compute from initializers and shapes (the
    importer's rule: compiler/onnx/support.py) replaced by initializers where the batch does
    not flow into them (:func:`_batch_free`; values by onnxruntime on zero inputs of ``dims``,
    a symbolic batch as None, at batches 1 and 2). Unchanged when no batch is symbolic,
    nothing folds, or the model cannot be read or run (the quantizer then says why)."""
    if not any(d and d[0] is None for d in dims.values()):
        return model
    from . import foldable                              # compiler/onnx: the importer's rule
    from .graph import read_graph
    from .support import constant_tensors
    try:
        graph = read_graph(model, 1)
        const = constant_tensors(graph, foldable)
        computed = [o for n in graph.nodes for o in n.outputs
                    if o in const and o not in graph.consts]
        at = [_evaluated(model, computed, graph.inputs, dims, batch) for batch in (1, 2)] \
            if computed else []
    except Exception:               # an optional step: the quantizer reports what fails
        return model
    same = _batch_free(graph, set(computed), at) if computed else set()
    nodes = [n for n in model.graph.node
             if not (n.output and all(o in same for o in n.output if o))]
    if len(nodes) == len(model.graph.node):
        return model
    read = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    from onnx import numpy_helper
    folded = onnx_module().ModelProto()
    folded.CopyFrom(model)
    del folded.graph.node[:]
    folded.graph.node.extend(nodes)
    folded.graph.initializer.extend(numpy_helper.from_array(at[0][t], t)
                                    for t in sorted(same & read))
    notify(f"{len(model.graph.node) - len(nodes)} nodes computing constants from shapes (the "
           "same at every batch) were folded before quantization")
    return folded


def _batch_free(graph, computed: set[str], at: list[dict]) -> set[str]:
    """The tensors of ``computed`` that do not depend on the batch, from their values ``at``
    batches 1 and 2. A dim a Shape node reports is the batch's when it differs between the
    two; selections of a shape's elements by constant indices (Gather, a 1-D Slice, Concat,
    Unsqueeze, Squeeze, Cast, Identity) keep which elements are; any other node's result
    depends on the batch wherever one of its inputs does (no value is trusted to be
    independent because two batches happened to give the same one)."""
    taint: dict[str, np.ndarray] = {}          # tensor -> per element: depends on the batch
    tainted = lambda t: t is not None and bool(t.any())
    value = lambda name: np.asarray(at[0][name] if name in at[0] else graph.consts[name])
    for n in graph.nodes:
        outs = [o for o in n.outputs if o in computed]
        if not outs:
            continue
        shape = np.shape(at[0][outs[0]])
        ins = [taint.get(i) if i in computed else None for i in n.inputs]
        if n.op_type == "Shape":
            a, b = np.asarray(at[0][outs[0]]), np.asarray(at[1][outs[0]])
            taint[outs[0]] = a != b if a.shape == b.shape else np.ones(shape, bool)
            continue
        try:
            got = _selected(n, ins, value, shape)
        except Exception:                       # a form not followed here: all of it
            got = None
        if got is None or got.shape != shape:
            got = np.full(shape, any(tainted(t) for t in ins))
        for o in outs:
            taint[o] = got if o == outs[0] else np.full(np.shape(at[0][o]), tainted(got))
    return {t for t in computed if t in taint and not taint[t].any()}


def _selected(n, ins: list, value, shape: tuple) -> np.ndarray | None:
    """Which elements of node ``n``'s result (of ``shape``) depend on the batch, when ``n``
    selects elements of 1-D tensors (``ins``: its inputs' per-element dependence, None where
    none) by constant indices, or only reshapes or casts one; else None."""
    constant = lambda k: ins[k] is None or not ins[k].any()
    if n.op_type == "Concat" and all(t is None or t.ndim == 1 for t in ins):
        return np.concatenate([np.zeros(value(i).size, bool) if t is None else t
                               for i, t in zip(n.inputs, ins)])
    data = ins[0] if ins else None
    if data is None:
        return None
    if n.op_type in ("Unsqueeze", "Squeeze", "Cast", "Identity"):
        return data.reshape(shape)
    if data.ndim != 1:
        return None
    if n.op_type == "Gather" and constant(1):
        return np.take(data, value(n.inputs[1]).astype(np.int64), axis=0)
    if n.op_type == "Slice" and all(constant(k) for k in range(1, len(ins))) and \
            (len(n.inputs) < 5 or not n.inputs[4] or int(value(n.inputs[4])[0]) == 1):
        return data[int(value(n.inputs[1])[0]):int(value(n.inputs[2])[0])]   # clamped alike
    return None


def _evaluated(model, names: list[str], inputs, dims: Mapping[str, tuple],
               batch: int) -> dict:
    """{name: value} of the tensors ``names`` of ``model`` run by onnxruntime on zeros for
    ``inputs`` (Graph.inputs: name, dtype, shape) of ``dims``, the symbolic batch ``batch``."""
    import onnxruntime
    from onnx import helper
    probe = onnx_module().ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    shape = lambda d: (batch, *d[1:]) if d and d[0] is None else tuple(d)
    feeds = {name: np.zeros(shape(dims[name]), dtype) for name, dtype, _ in inputs}
    return dict(zip(names, session.run(names, feeds)))


def _converted(model, version: int):
    onnx = onnx_module()
    from onnx import version_converter
    try:
        converted = version_converter.convert_version(model, PER_CHANNEL_OPSET)
        onnx.checker.check_model(converted)
    except Exception as e:          # the converter raises bare RuntimeErrors and more
        raise InvalidError(f"cannot convert the model from opset {version} to "
                           f"{PER_CHANNEL_OPSET} for per-channel weights ({e}); "
                           "quantize with --per-tensor") from None
    return converted


def split_outputs(model, notify: Callable[[str], None] = lambda message: None) -> list[str]:
    """The names of the Concat nodes that make graph outputs (to leave float), announced."""
    outputs = {o.name for o in model.graph.output}
    consts = {t.name for t in model.graph.initializer}
    names = []
    for k, node in enumerate(model.graph.node):
        computed = [i for i in node.input if i and i not in consts]
        if node.op_type == "Concat" and (node.domain or "") == "" and len(computed) > 1 \
                and any(o in outputs for o in node.output):
            if not node.name:
                node.name = f"Concat_{k}"
            names.append(node.name)
            notify(f"output {node.output[0]!r}: its Concat ({node.name}) is left float so "
                   f"that each of its {len(computed)} inputs keeps its own scale "
                   "(--no-split-outputs quantizes it with one scale)")
    return names


def check_calibration(samples: Mapping, dims: Mapping[str, tuple]) -> int:
    """The number of samples; each array must be (samples, *the input's other dims)."""
    counts = set()
    for name, dim in dims.items():
        a = samples[name]
        if tuple(a.shape[1:]) != tuple(dim[1:]) or a.ndim != len(dim):
            wanted = ", ".join(["N"] + [str(d) for d in dim[1:]])
            raise InvalidError(f"calibration data for input {name!r} has shape "
                               f"{list(a.shape)}; the model needs [{wanted}] (N samples)")
        counts.add(len(a))
    if len(counts) != 1:
        raise InvalidError(f"calibration arrays hold different numbers of samples: "
                           f"{sorted(counts)}")
    n = counts.pop()
    batch = {dim[0] for dim in dims.values() if dim and dim[0] is not None}
    if n == 0 or (batch and n < max(batch)):
        raise InvalidError(f"calibration data holds {n} samples; the model's batch is "
                           f"{max(batch or {1})}")
    return n


def input_names(model) -> list[str]:
    return [i.name for i in graph_inputs(model)]
