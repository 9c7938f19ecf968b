"""ONNX backend node tests of float ops, run on 8-bit quantized tensors.

    python tests/onnx_float_conformance.py [CACHE_DIR]      # prints the counts

detvm imports quantized models, so each float case is quantized the way onnxruntime's
quantizer writes it: its first input becomes a uint8 graph input ``X_q`` read through a
DequantizeLinear (scale and zero point from the input's range), every other input an
initializer, and every output goes through a QuantizeLinear (its scale from the expected
output's range; the input's own for ops that only move data). The expected integers are the
case's expected floats quantized as ONNX QuantizeLinear does. Ops that move data must be
bit-exact (their output is a copy of quantized input values); ops that compute are checked
within ``LIMITS`` LSB, which covers the input's quantization error.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from tests.onnx_conformance import _load_case, cases, generate
from tests.onnx_conformance import summary as conformance_summary

OPS = {"Resize": "resize", "Slice": "slice", "Split": "split", "Gather": "gather",
       "Softmax": "softmax", "ConvTranspose": "convtranspose", "MatMul": "matmul",
       "ReduceMean": "reducemean", "SpaceToDepth": "spacetodepth",
       "DepthToSpace": "depthtospace"}
MOVES = {"Slice", "Split", "Gather", "SpaceToDepth", "DepthToSpace"}
LIMITS = {"Resize": 1, "Softmax": 2, "ConvTranspose": 2, "MatMul": 2, "ReduceMean": 1}
WEIGHTS = {"ConvTranspose": 1}
"""Inputs that are weights: quantized to int8 (symmetric, per tensor) behind a DequantizeLinear,
as the quantizer writes them."""
ACTIVATIONS = {"MatMul": (0, 1)}
"""Inputs that become quantized graph inputs (default: the first); the others constants."""
"""Worst |detvm - expected| in LSB for ops that compute (nearest Resize: 0, it moves data)."""
NOT_APPLICABLE = ("cubic", "tf_crop_and_resize", "antialias", "not_larger", "not_smaller",
                  "half_pixel_symmetric", "zero_size", "slice_start_out_of_bounds",
                  "softmax_large_number", "convtranspose_1d", "convtranspose_3d",
                  "matmul_1d_1d")
"""Modes detvm does not import (1-D and 3-D ConvTranspose), empty or 0-D results (detvm
tensors have neither), and inputs 8 bits cannot carry (softmax_large_number: rows 0..3 and
10000..10003 on one scale)."""
TAG = "-float"


def _params(values: np.ndarray) -> tuple[np.float32, int]:
    """uint8 (scale, zero point) covering ``values`` and 0, as the quantizer's MinMax."""
    lo, hi = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = np.float32((hi - lo) / 255 if hi > lo else 1.0)
    return scale, int(np.clip(round(-lo / float(scale)), 0, 255))


def quantize(values, scale, zero) -> np.ndarray:
    q = np.rint(np.asarray(values, np.float32) / scale) + zero
    return np.clip(q, 0, 255).astype(np.uint8)


def _dequantized(name: str, value, nodes: list, consts: list, feeds: dict):
    """``name`` as a uint8 graph input read through a DequantizeLinear; its (scale, zero)."""
    from onnx import numpy_helper, helper
    s, z = _params(value)
    consts += [numpy_helper.from_array(np.array(s, np.float32), name + "#s"),
               numpy_helper.from_array(np.array(z, np.uint8), name + "#z")]
    nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "#s", name + "#z"],
                                  [name]))
    feeds[name + "_q"] = quantize(value, s, z)
    return s, z


def _weight(name: str, value, nodes: list, consts: list) -> None:
    """``name`` as an int8 constant (symmetric, per tensor) read through a DequantizeLinear."""
    from onnx import numpy_helper, helper
    s = np.float32(max(float(np.abs(value).max()), 1e-6) / 127)
    consts += [numpy_helper.from_array(np.clip(np.rint(value / s), -127, 127).astype(np.int8),
                                       name + "_q"),
               numpy_helper.from_array(np.array(s, np.float32), name + "#s")]
    nodes.append(helper.make_node("DequantizeLinear", [name + "_q", name + "#s"], [name]))


def wrap(model, inputs, outputs, moves: bool):
    """The case as a quantized model: (model, feeds, expected integers)."""
    from onnx import TensorProto, helper, numpy_helper
    g = model.graph
    op = g.node[0].op_type
    nodes, consts, feeds, params = [], [], {}, []
    for k, (vi, value) in enumerate(zip(g.input, inputs)):
        if k in ACTIVATIONS.get(op, (0,)):
            params.append(_dequantized(vi.name, value, nodes, consts, feeds))
        elif k == WEIGHTS.get(op):
            _weight(vi.name, value, nodes, consts)
        else:
            g.initializer.append(numpy_helper.from_array(value, vi.name))
    nodes += list(g.node)
    outs, expected = [], []
    for k, (vi, want) in enumerate(zip(g.output, outputs)):
        s, z = params[0] if moves else _params(want)
        consts += [numpy_helper.from_array(np.array(s, np.float32), f"y{k}#s"),
                   numpy_helper.from_array(np.array(z, np.uint8), f"y{k}#z")]
        nodes.append(helper.make_node("QuantizeLinear", [vi.name, f"y{k}#s", f"y{k}#z"],
                                      [vi.name + "_q"]))
        outs.append(helper.make_tensor_value_info(vi.name + "_q", TensorProto.UINT8,
                                                  want.shape))
        expected.append(quantize(want, s, z))
    graph = helper.make_graph(
        nodes, g.name, [helper.make_tensor_value_info(k, TensorProto.UINT8, v.shape)
                        for k, v in feeds.items()],
        outs, list(g.initializer) + consts)
    wrapped = helper.make_model(graph, opset_imports=model.opset_import,
                                ir_version=model.ir_version)
    return wrapped, feeds, expected


def run_case(path: Path) -> dict:
    """{case, op, status: exact | within | failed | not_applicable, detail}."""
    import vm
    from compiler.onnx import import_onnx
    model, inputs, outputs = _load_case(path)
    op = model.graph.node[0].op_type
    out = {"case": path.name, "op": op, "detail": ""}
    if any(tag in path.name for tag in NOT_APPLICABLE) or len(model.graph.node) != 1 \
            or op not in OPS or inputs[0].dtype != np.float32:
        return {**out, "status": "not_applicable"}
    moves = op in MOVES or (op == "Resize" and "nearest" in path.name)
    try:
        wrapped, feeds, expected = wrap(model, inputs, outputs, moves)
        detvm = vm.load(import_onnx(wrapped))
        got = detvm.run({k: v.astype(np.int64) for k, v in feeds.items()})
    except vm.DetvmError as e:
        return {**out, "status": "failed", "detail": str(e)}
    worst = 0
    for value, want in zip(got.values(), expected):
        if value.shape != want.shape:
            return {**out, "status": "failed", "detail": f"shape {value.shape} != {want.shape}"}
        worst = max(worst, int(np.abs(value.astype(np.int64) - want.astype(np.int64)).max()))
    limit = 0 if moves else LIMITS[op]
    status = "exact" if worst == 0 else ("within" if worst <= limit else "failed")
    return {**out, "status": status, "detail": f"max diff {worst} LSB"}


def summary(results: list[dict]) -> dict:
    return conformance_summary(results, ("exact", "within", "failed"))


def float_cases(cache: Path) -> list[Path]:
    return cases(generate(cache, OPS.values(), TAG + "-" + "-".join(sorted(OPS.values()))))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    paths = float_cases(Path(sys.argv[1] if len(sys.argv) > 1 else ".pytest_cache/onnx-node"))
    results = [run_case(p) for p in paths]
    for r in results:
        print(f"{r['status']:<15} {r['case']:<55} {r['detail']}")
    print(json.dumps(summary(results), indent=2))
