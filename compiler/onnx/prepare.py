"""A float ONNX model made ready for onnxruntime's static quantization (``detvm quantize``).

* **Dims**: every input gets static dims (``shapes``, else the model's); a symbolic first dim
  (the batch) stays symbolic, any other symbolic dim is an error naming the input and
  ``--shape``. Calibration then runs on exactly the shapes the program will have.
* **Opset**: a model below opset 13 is converted to 13 (onnx's version converter) when the
  weights are quantized per channel: DequantizeLinear has an ``axis`` only from opset 13, and
  onnxruntime cannot load the per-channel model it writes for opset 11 or 12.
* **Split outputs**: a graph output made by a Concat (a detector's boxes and class scores)
  is left float, so each of its inputs keeps its own scale; one scale for all of them would
  leave the scores (0..1) with one or two levels next to boxes in pixels. The importer
  writes one scale per index along the Concat's axis (exact; docs/onnx.md).

Every change is announced through ``notify`` (the library never prints).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

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
