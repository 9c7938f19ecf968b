"""ONNX front-end: quantized ONNX models (onnxruntime.quantization, QDQ or QOperator) to
integer-only detvm programs.

    program = import_onnx("model.int8.onnx")                  # or bytes, or an onnx.ModelProto
    program = import_onnx(model, maxima={"N": 64})           # a symbolic batch N <= 64
    program = import_onnx(model, batch=8, rounding="half_even")   # batch fixed; exact ratio
    program = import_onnx(model, shapes={"x": (1, 3, 640, 640)})  # fix symbolic dims
    program = import_onnx(model, batch=64, limits=vm.Limits(max_memory=8 << 30))

Every float scale becomes a (multiplier, shift) pair of a ``requantize`` instruction at compile
time; zero points are exact integers; no float is left in the program. See docs/onnx.md.
onnx (and, for ``quantize``, onnxruntime) are optional: ``pip install 'detvm[onnx]'``.
"""
from __future__ import annotations

import dataclasses

from vm.errors import InvalidError
from compiler.fold import fold_tables
from vm.program import Program
from vm.validate import Limits

from . import deconv, layout, linear, luts, matmul, norm, quantops, resize, softmax, tensors
from .batch import batch_inputs, import_batched
from .fixed import ROUNDINGS
from .graph import MS_DOMAIN, Graph, load_model, read_graph
from .islands import resolve
from .lower import Lowering
from .outputs import finish
from .support import check_supported, report, unsupported
from .values import Const

__all__ = ["import_onnx", "diagnose", "HANDLERS", "ROUNDINGS", "supported_ops"]

HANDLERS = {
    ("", "QuantizeLinear"): quantops.quantize_linear,
    ("", "DequantizeLinear"): quantops.dequantize_linear,
    ("", "Conv"): linear.conv,
    ("", "ConvTranspose"): deconv.conv_transpose,
    ("", "Gemm"): linear.gemm,
    ("", "MatMul"): matmul.matmul,
    ("", "QLinearConv"): linear.qlinear_conv,
    ("", "QLinearMatMul"): matmul.qlinear_matmul,
    ("", "ConvInteger"): linear.conv_integer,
    ("", "MatMulInteger"): matmul.matmul_integer,
    (MS_DOMAIN, "QGemm"): linear.qgemm,
    ("", "Add"): quantops.add,
    ("", "BatchNormalization"): linear.batch_norm,
    (MS_DOMAIN, "QLinearAdd"): quantops.qlinear_add,
    ("", "Concat"): quantops.concat,
    (MS_DOMAIN, "QLinearConcat"): quantops.qlinear_concat,
    ("", "Relu"): quantops.relu,
    ("", "Clip"): quantops.clip,
    ("", "AveragePool"): quantops.average_pool,
    ("", "GlobalAveragePool"): quantops.global_average_pool,
    (MS_DOMAIN, "QLinearAveragePool"): quantops.qlinear_pool(False),
    (MS_DOMAIN, "QLinearGlobalAveragePool"): quantops.qlinear_pool(True),
    ("", "MaxPool"): layout.max_pool,
    ("", "Flatten"): layout.flatten,
    ("", "Reshape"): layout.reshape,
    ("", "Transpose"): layout.transpose,
    ("", "SpaceToDepth"): layout.space_to_depth,
    ("", "DepthToSpace"): layout.depth_to_space,
    ("", "Squeeze"): layout.squeeze,
    ("", "Unsqueeze"): layout.unsqueeze,
    ("", "Identity"): layout.identity,
    ("", "Dropout"): layout.identity,
    ("", "Pad"): layout.pad,
    ("", "Softmax"): softmax.softmax,
    (MS_DOMAIN, "QLinearSoftmax"): softmax.qlinear_softmax,
    ("", "ArgMax"): layout.argmax,
    ("", "Constant"): layout.constant_node,
    ("", "Shape"): layout.shape_node,
    ("", "Slice"): tensors.slice_node,
    ("", "Split"): tensors.split_node,
    ("", "Gather"): tensors.gather_node,
    ("", "Cast"): tensors.cast_node,
    ("", "Resize"): resize.resize,
    ("", "Upsample"): resize.resize,
}
HANDLERS.update(luts.handlers(HANDLERS))         # float islands: lookup tables (luts.py)
HANDLERS.update(norm.handlers(HANDLERS))         # the LayerNorm pattern: row statistics
FOLDABLE = {"Cast", "Gather", "Mul", "Div", "Sub", "Add", "Slice", "Range", "Concat",
            "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Transpose", "ConstantOfShape",
            "Identity", "Floor", "Ceil", "Sqrt", "Equal", "Where", "Expand", "Neg"}
"""ai.onnx ops evaluated at compile time when every input is a constant."""


def supported_ops() -> list[str]:
    return sorted(f"{d + '.' if d else ''}{t}" for d, t in HANDLERS)


def _dispatch(key):
    handler = HANDLERS.get(key)

    def run(ctx, node, args):
        present = [a for a in args if a is not None]
        if node.domain == "" and node.op_type in FOLDABLE and present \
                and all(isinstance(a, Const) for a in present):
            return layout.fold(node, args)
        if handler is None:
            raise InvalidError(f"{node.describe()}: {node.op_type} is imported only when all its "
                               "inputs are constants (folded at compile time)")
        if not getattr(handler, "islands", False):
            args = [resolve(ctx, node, a) for a in args]
        return handler(ctx, node, args)
    return run


def handled(domain: str, op_type: str) -> bool:
    return (domain, op_type) in HANDLERS


def foldable(domain: str, op_type: str) -> bool:
    return domain == "" and op_type in FOLDABLE


def import_onnx(model, *, batch: int | None = None, shapes: dict | None = None,
                maxima: dict | None = None, rounding: str = "fp32",
                name: str | None = None, limits: Limits | None = None) -> Program:
    """The detvm program of a quantized ONNX model (path, bytes or onnx.ModelProto).

    ``shapes`` (input name -> dims) fixes inputs' dims. A symbolic first dim of the others
    (an ONNX ``dim_param``, or -1) stays symbolic, a symbol named after it with the maximum
    given in ``maxima`` (symbol -> K) or a default (compiler/onnx/batch.py); ``batch`` fixes it
    instead. Any other symbolic dim is an error. ``rounding`` names the requantize rounding:
    ``fp32`` (onnxruntime's float32 arithmetic reproduced with integers, bit for bit) or
    ``half_even`` (the exact ratio, ties to even). The program is validated under ``limits``
    (default ``vm.Limits()``, the ceilings vm.load applies by default; a symbolic batch's
    default maximum is the largest that fits them): pass the ceilings the program will be
    loaded with, e.g. ``vm.Limits(max_memory=8 << 30)`` for a large fixed batch."""
    proto = load_model(model)
    batched = batch_inputs(proto, shapes) if batch is None else {}
    if batched:
        probe = _probe_limits(limits)
        return import_batched(
            lambda dims: _import(proto, 1, {**(shapes or {}), **dims}, rounding, name, probe),
            batched, maxima, limits)
    if maxima:
        raise InvalidError("--max: the model has no symbolic batch left to bound"
                           + (" (--batch fixes it)" if batch is not None else ""))
    return _import(proto, 1 if batch is None else batch, shapes, rounding, name, limits)


def _probe_limits(limits: Limits | None) -> Limits:
    """The ceilings of the fixed-batch builds a symbolic batch is derived from: gas and peak
    memory grow with the batch, so they are lifted there (a model whose ceiling is reached
    between batches 2 and 3 gets N <= 2); the program with symbols is validated under
    ``limits`` itself (compiler/onnx/batch.py with_maxima)."""
    return dataclasses.replace(limits or Limits(), max_gas=1 << 62, max_memory=1 << 62)


def _import(proto, batch: int, shapes, rounding: str, name, limits=None) -> Program:
    graph = read_graph(proto, batch, shapes)
    check_supported(graph, handled, foldable)
    lowering = _lowering(graph, name, rounding)
    lowering.run(_handlers(graph))
    luts.complete(lowering)
    return fold_tables(finish(lowering, limits), limits)


def check_float_model(model, *, batch: int = 1, shapes: dict | None = None) -> None:
    """Before quantizing: one error listing the ops of a float model that detvm could not
    import once quantized (they stay float), and any input dim left symbolic."""
    check_supported(read_graph(load_model(model), batch, shapes), handled, foldable)


def left_float(model, *, batch: int = 1, shapes: dict | None = None) -> str:
    """The nodes of a quantized model that detvm cannot import, listed ('' when none)."""
    bad = unsupported(read_graph(load_model(model), batch, shapes), handled, foldable)
    return report(bad.items()) if bad else ""


def diagnose(model, *, batch: int = 1, shapes: dict | None = None,
             rounding: str = "fp32") -> list[str]:
    """Why each node of ``model`` that cannot be imported cannot be (empty: it imports).
    Nodes that depend on a failing node are not tried."""
    graph = read_graph(load_model(model), batch, shapes)
    lowering = _lowering(graph, None, rounding)
    try:
        lowering.run(_handlers(graph))
        finish(lowering)
    except InvalidError as e:
        return lowering.failures or [e.message]
    return []


def _lowering(graph: Graph, name: str | None, rounding: str) -> Lowering:
    return Lowering(graph, name or graph.name, rounding)


def _handlers(graph: Graph) -> dict:
    return {key: _dispatch(key) for key in {(n.domain, n.op_type) for n in graph.nodes}}
