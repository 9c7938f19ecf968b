"""Neuropod's addition example, ported to detvm (vm.neuropod): a problem definition with a
symbolic dim, a model packaged with test data (checked at packaging), then inference.

    python examples/neuropod_addition.py [OUT.dvmpkg]
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
from compiler import Builder  # noqa: E402
from vm.neuropod import create_neuropod, load_neuropod  # noqa: E402

# The problem: two one-dimensional int32 tensors of the same size; their sum.
INPUT_SPEC = [
    {"name": "x", "dtype": "int32", "shape": ("num_inputs",)},
    {"name": "y", "dtype": "int32", "shape": ("num_inputs",)},
]
OUTPUT_SPEC = [
    {"name": "out", "dtype": "int32", "shape": (None,)},
]
TEST_INPUT_DATA = {"x": np.arange(5, dtype=np.int32), "y": np.arange(5, dtype=np.int32)}
TEST_EXPECTED_OUT = {"out": (np.arange(5) + np.arange(5)).astype(np.int32)}


def addition_model():
    """x + y for any length up to 4096, values of up to 20 bits (an exact int32 sum)."""
    b = Builder("addition_model")
    n = b.symbol("num_inputs", 4096)
    x, y = b.input("x", (n,), 21), b.input("y", (n,), 21)
    b.output(b.op("elemwise_add", x, y, outputs=["out"]))
    return b.build()


path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp()) / "addition.dvmpkg"
create_neuropod(neuropod_path=path, model_name="addition_model", model=addition_model(),
                input_spec=INPUT_SPEC, output_spec=OUTPUT_SPEC,
                test_input_data=TEST_INPUT_DATA, test_expected_out=TEST_EXPECTED_OUT)
print(f"packaged {path.name} ({path.stat().st_size} bytes); its test data re-ran")

x = np.array([1, 2, 3, 4], dtype=np.int32)
y = np.array([5, 6, 7, 8], dtype=np.int32)
with load_neuropod(path) as neuropod:
    results = neuropod.infer({"x": x, "y": y})
    print(results["out"])                                   # [ 6  8 10 12]
    try:
        neuropod.infer({"x": x, "y": y[:3]})                # num_inputs would be 4 and 3
    except Exception as e:
        print("refused:", e)
