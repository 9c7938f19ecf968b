"""ONNX front-end: quantized ONNX models (onnxruntime.quantization, QDQ or QOperator) to
integer-only detvm programs.

    program = import_onnx("model.int8.onnx")                  # or bytes, or an onnx.ModelProto
    program = import_onnx(model, batch=8, rounding="half_even")   # the exact ratio

Every float scale becomes a (multiplier, shift) pair of a ``requantize`` instruction at compile
time; zero points are exact integers; no float is left in the program. See docs/onnx.md.
onnx (and, for ``quantize``, onnxruntime) are optional: ``pip install 'detvm[onnx]'``.
"""
from __future__ import annotations

from vm.errors import InvalidError
from vm.program import Program

from . import layout, linear, quantops
from .fixed import ROUNDINGS
from .graph import MS_DOMAIN, Graph, load_model, read_graph
from .lower import Lowering
from .outputs import finish
from .values import Const

__all__ = ["import_onnx", "HANDLERS", "ROUNDINGS", "supported_ops"]

HANDLERS = {
    ("", "QuantizeLinear"): quantops.quantize_linear,
    ("", "DequantizeLinear"): quantops.dequantize_linear,
    ("", "Conv"): linear.conv,
    ("", "Gemm"): linear.gemm,
    ("", "MatMul"): linear.matmul,
    ("", "QLinearConv"): linear.qlinear_conv,
    ("", "QLinearMatMul"): linear.qlinear_matmul,
    ("", "ConvInteger"): linear.conv_integer,
    ("", "MatMulInteger"): linear.matmul_integer,
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
    ("", "Squeeze"): layout.squeeze,
    ("", "Unsqueeze"): layout.unsqueeze,
    ("", "Identity"): layout.identity,
    ("", "Dropout"): layout.identity,
    ("", "Pad"): layout.pad,
    ("", "Softmax"): layout.softmax,
    ("", "ArgMax"): layout.argmax,
    ("", "Constant"): layout.constant_node,
    ("", "Shape"): layout.shape_node,
}
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
            raise InvalidError(f"{node.describe()}: only constant inputs are supported")
        return handler(ctx, node, args)
    return run


def _check_supported(graph: Graph) -> None:
    """One error listing every unsupported op type and the nodes that use it."""
    bad: dict[str, list[str]] = {}
    for n in graph.nodes:
        key = (n.domain, n.op_type)
        if key not in HANDLERS and not (n.domain == "" and n.op_type in FOLDABLE):
            bad.setdefault(f"{n.domain + '.' if n.domain else ''}{n.op_type}", []).append(n.name)
    if bad:
        listing = "; ".join(f"{op} (nodes: {', '.join(names[:5])}"
                            f"{', ...' if len(names) > 5 else ''})" for op, names in bad.items())
        raise InvalidError(f"unsupported ONNX ops: {listing}")


def import_onnx(model, *, batch: int = 1, rounding: str = "fp32",
                name: str | None = None) -> Program:
    """The detvm program of a quantized ONNX model (path, bytes or onnx.ModelProto).

    ``batch`` fixes a symbolic first input dimension; ``rounding`` names the requantize
    rounding: ``fp32`` (onnxruntime's float32 arithmetic reproduced with integers, bit for
    bit) or ``half_even`` (the exact ratio, ties to even)."""
    graph = read_graph(load_model(model), batch)
    _check_supported(graph)
    keys = {(n.domain, n.op_type) for n in graph.nodes}
    handlers = {key: _dispatch(key) for key in keys}
    lowering = Lowering(graph, name or graph.name, rounding)
    lowering.run(handlers)
    return finish(lowering)
