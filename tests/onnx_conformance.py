"""ONNX backend node tests of the integer ops, regenerated from the generators in the onnx
wheel (which ships the generators, not the data), cached, and run through the importer.

    python tests/onnx_conformance.py [CACHE_DIR]        # prints the counts

Generation runs in a subprocess (the generators register each case once per process) and
writes the usual layout: CACHE/<case>/model.onnx, CACHE/<case>/test_data_set_0/*.pb.
Each case's first input stays a model input; the others (scales, zero points, weights) become
initializers, i.e. compile-time constants of the detvm program. Float inputs and outputs go
through ``float_io``. Integer-spec ops (ConvInteger, MatMulInteger, DequantizeLinear) must be
bit-exact; ops that round through float (QuantizeLinear, QLinearConv, QLinearMatMul) within
1 LSB. Element types detvm does not hold (float8, 4-bit, 2-bit) and blocked quantization are
counted as not applicable.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

OPS = {"ConvInteger": "convinteger", "MatMulInteger": "matmulinteger",
       "QLinearConv": "qlinearconv", "QLinearMatMul": "qlinearmatmul",
       "QuantizeLinear": "quantizelinear", "DequantizeLinear": "dequantizelinear"}
EXACT = {"ConvInteger", "MatMulInteger", "DequantizeLinear"}
NOT_APPLICABLE = ("e4m3", "e5m2", "float4", "blocked")

_GENERATE = """
import importlib, os, sys
from onnx import numpy_helper
import onnx.backend.test.case.node as node
for module in sys.argv[2:]:
    importlib.import_module("onnx.backend.test.case.node." + module)
for case in node._NodeTestCases:
    d = os.path.join(sys.argv[1], case.name, "test_data_set_0")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(sys.argv[1], case.name, "model.onnx"), "wb") as f:
        f.write(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    for kind, arrays in (("input", inputs), ("output", outputs)):
        for k, a in enumerate(arrays):
            t = a if hasattr(a, "SerializeToString") else numpy_helper.from_array(a)
            with open(os.path.join(d, f"{kind}_{k}.pb"), "wb") as f:
                f.write(t.SerializeToString())
"""


def generate(cache: Path, modules=None, tag: str = "") -> Path:
    """The cache directory of the node tests of ``modules`` (default: the integer ops) for this
    onnx version, generated once."""
    import onnx
    root = Path(cache) / f"onnx-{onnx.__version__}{tag}"
    if not (root / ".complete").exists():
        root.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-c", _GENERATE, str(root),
                        *(modules or OPS.values())], check=True, capture_output=True)
        (root / ".complete").write_text("ok")
    return root


def cases(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/model.onnx"))


def _load_case(path: Path):
    import onnx
    from onnx import numpy_helper
    model = onnx.load(path / "model.onnx")
    read = lambda kind: [numpy_helper.to_array(onnx.load_tensor(str(p))) for p in sorted(
        (path / "test_data_set_0").glob(f"{kind}_*.pb"), key=lambda p: int(p.stem.split("_")[1]))]
    return model, read("input"), read("output")


def _fold(model, inputs):
    """Keep the first graph input; every other input becomes an initializer."""
    from onnx import numpy_helper
    g = model.graph
    for vi, value in list(zip(g.input, inputs))[1:]:
        g.initializer.append(numpy_helper.from_array(value, vi.name))
    keep = g.input[0]
    del g.input[:]
    g.input.append(keep)
    return model


def run_case(path: Path) -> dict:
    """{case, op, status: exact | within_1 | failed | not_applicable, detail}."""
    import vm
    from compiler.onnx import import_onnx
    model, inputs, outputs = _load_case(path)
    op = model.graph.node[0].op_type
    out = {"case": path.name, "op": op, "detail": ""}
    if any(tag in path.name for tag in NOT_APPLICABLE) or len(model.graph.node) != 1:
        return {**out, "status": "not_applicable"}
    try:
        detvm = vm.load(import_onnx(_fold(model, inputs)))
        x = inputs[0]
        if x.dtype.kind not in "iuf":         # ml_dtypes int4 / int2: plain ints for the VM
            x = x.astype(np.int64)
        got = detvm.run({detvm.inputs[0].name: x}, float_io=True)
    except vm.DetvmError as e:
        return {**out, "status": "failed", "detail": str(e)}
    worst = 0.0
    for (name, value), want in zip(got.items(), outputs):
        if value.shape != want.shape:
            return {**out, "status": "failed", "detail": f"{name}: shape {value.shape}"}
        if want.dtype.kind == "f":
            worst = max(worst, 0.0 if np.array_equal(value.astype(want.dtype), want) else 9.0)
        else:
            worst = max(worst, float(np.abs(value.astype(np.int64) - want.astype(np.int64)).max()))
    limit = 0 if op in EXACT else 1
    status = "exact" if worst == 0 else ("within_1" if worst <= limit else "failed")
    return {**out, "status": status, "detail": f"max diff {worst:g}"}


def summary(results: list[dict], statuses=("exact", "within_1", "failed")) -> dict:
    """Per ONNX op, how many cases were generated and how many ended in each status."""
    table = {}
    for r in results:
        row = table.setdefault(r["op"], dict.fromkeys(("generated", "not_applicable",
                                                       *statuses), 0))
        row["generated"] += 1
        row[r["status"]] += 1
    return table


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    root = generate(Path(sys.argv[1] if len(sys.argv) > 1 else ".pytest_cache/onnx-node"))
    results = [run_case(p) for p in cases(root)]
    for r in results:
        print(f"{r['status']:<15} {r['case']:<45} {r['detail']}")
    print(json.dumps(summary(results), indent=2))
