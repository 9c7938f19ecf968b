"""Tiny quantized ONNX graphs around one float op, for bit-exact comparisons with onnxruntime.

Each integer graph input ``NAME_q`` is dequantized to ``NAME`` (DequantizeLinear), the float
nodes run, and each listed output ``Y`` is quantized to the graph output ``Y_q``. Both
runtimes then see the same integers in and out, so a comparison is exact, and onnxruntime's
default session fuses the DQ -> op -> Q patterns into its integer kernels as it does in real
models.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPSET, IR = 17, 8
TYPES = {"uint8": (0, 255), "int8": (-128, 127)}


@dataclass
class Port:
    """A quantized graph input or output: name, element type, shape, scale, zero point."""
    name: str
    shape: tuple
    scale: float = 0.05
    zero: int = 128
    dtype: str = "uint8"


def qdq_model(nodes, inputs: list[Port], outputs: list[Port], inits=(), opset: int = OPSET,
              domains=()):
    from onnx import TensorProto, helper, numpy_helper
    onnx_type = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
    body, consts = [], [numpy_helper.from_array(np.asarray(v), k) for k, v in dict(inits).items()]

    def params(p: Port, tag: str):
        consts.append(numpy_helper.from_array(np.array(p.scale, np.float32), f"{tag}_s"))
        consts.append(numpy_helper.from_array(np.array(p.zero, p.dtype), f"{tag}_z"))
        return [f"{tag}_s", f"{tag}_z"]

    for p in inputs:
        body.append(helper.make_node("DequantizeLinear", [p.name + "_q", *params(p, p.name)],
                                     [p.name], name=f"dq_{p.name}"))
    body += list(nodes)
    for p in outputs:
        body.append(helper.make_node("QuantizeLinear", [p.name, *params(p, p.name + "_out")],
                                     [p.name + "_q"], name=f"q_{p.name}"))
    graph = helper.make_graph(
        body, "qdq",
        [helper.make_tensor_value_info(p.name + "_q", onnx_type[p.dtype], p.shape)
         for p in inputs],
        [helper.make_tensor_value_info(p.name + "_q", onnx_type[p.dtype], p.shape)
         for p in outputs], consts)
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets, ir_version=IR)


def random_feeds(model, rng, inputs: list[Port]) -> dict:
    return {p.name + "_q": rng.integers(*TYPES[p.dtype], size=p.shape, endpoint=True)
            .astype(p.dtype) for p in inputs}


def run_ort(model, feeds: dict, optimized: bool = True) -> list:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    if not optimized:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def optimized_ops(model) -> list[str]:
    """The op types of onnxruntime's optimized graph (to check which kernel it runs)."""
    import os
    import tempfile

    import onnx
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as d:
        options = ort.SessionOptions()
        options.optimized_model_filepath = os.path.join(d, "opt.onnx")
        ort.InferenceSession(model.SerializeToString(), options,
                             providers=["CPUExecutionProvider"])
        return [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]


def run_detvm(model, feeds: dict, **kw) -> list:
    import vm
    from compiler.onnx import import_onnx
    loaded = vm.load(import_onnx(model, **kw))
    out = loaded.run({k: v.astype(np.int64) for k, v in feeds.items()})
    return [out[name] for name in out]


def compare(model, feeds: dict, **kw) -> tuple[np.ndarray, np.ndarray]:
    """(detvm, onnxruntime) integer outputs, stacked flat."""
    ours = run_detvm(model, feeds, **kw)
    theirs = run_ort(model, feeds)
    assert [o.shape for o in ours] == [t.shape for t in theirs]
    flat = lambda arrays: np.concatenate([a.astype(np.int64).reshape(-1) for a in arrays])
    return flat(ours), flat(theirs)
