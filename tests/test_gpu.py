"""GPU executor (cupy) against the CPU executor, bit for bit.

Skipped, with the reason, where cupy or a CUDA device is missing (CI has neither). On a GPU
machine: ``pip install ".[gpu,test]" && python -m pytest tests/test_gpu.py``.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st


def _gpu_reason() -> str | None:
    try:
        import cupy
    except Exception as e:  # ImportError or a broken CUDA install
        return f"cupy is not installed (pip install 'detvm[gpu]'): {type(e).__name__}"
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy finds no CUDA device"
    except Exception as e:
        return f"no usable CUDA device: {e}"
    return None


REASON = _gpu_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"GPU tests: {REASON}")

import vm  # noqa: E402
from tests.cases import all_cases  # noqa: E402
from tests.conftest import random_input, small_cnn  # noqa: E402

CASES = all_cases()
SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))


def same_bytes(program, feeds) -> None:
    blob = vm.encode(program)
    got = vm.load(blob, vm.gpu()).run(feeds)
    want = vm.load(blob, vm.cpu()).run(feeds)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape, k
        assert got[k].tobytes() == want[k].tobytes(), k


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_op_gpu_equals_cpu(name):
    from tests.test_differential import check_every_case
    check_every_case(name, same_bytes, SETTINGS)


@SETTINGS
@given(st.data())
def test_random_programs_gpu_equals_cpu(data):
    from tests.test_differential import random_feeds
    from tests.test_text import programs
    program = data.draw(programs())
    same_bytes(program, random_feeds(vm.load(program), data))


def test_shipped_models_gpu_equal_cpu():
    from detvm.common import DEMO_DIR
    for stem in ("digits", "demo"):
        path = DEMO_DIR / f"{stem}.dvm"
        if not path.exists():
            continue
        model = vm.load(path)
        same_bytes(model.program, random_input(model))
    same_bytes(small_cnn(), random_input(vm.load(small_cnn())))


def test_cvm_conformance_vectors_on_gpu():
    from tests.cvm_util import input_bytes, params_of, vectors
    from vm import runtime
    for v in vectors():
        if "error" in v["info"]:
            continue
        cpu = runtime.CVMAPILoadModel(v["graph_json"], params_of(v), ctx=vm.cpu())
        gpu = runtime.CVMAPILoadModel(v["graph_json"], params_of(v), ctx=vm.gpu())
        data = input_bytes(v)
        assert runtime.CVMAPIInference(gpu, data) == runtime.CVMAPIInference(cpu, data)


def test_resnet18_bench_model_gpu_equals_cpu():
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from resnet18 import build_resnet18
    program = build_resnet18(batch=2)
    same_bytes(program, random_input(vm.load(program)))


@pytest.mark.parametrize("k, path", [(1040, "float32"), (1041, "float64")])
@pytest.mark.parametrize("sign", [1, -1])
def test_gemm_exact_at_the_edge_of_its_licence(k, path, sign):
    """K * 127 * 127 just below / above 2^24: every partial sum is as large as licensed."""
    from compiler import Builder
    b = Builder("edge")
    x = b.input("x", (4, k), 8)
    w = b.const("w", np.full((3, k), 127 * sign, np.int8), precision=8)
    b.output(b.op("dense", x, w, units=3, use_bias=False))
    program = b.build()
    assert vm.load(program).analysis.gemm[0] == path
    feeds = {"x": np.full((4, k), 127, np.int8)}
    feeds["x"][1] = -127
    feeds["x"][2, ::2] = -127
    same_bytes(program, feeds)
    ref = vm.load(program, vm.reference()).run(feeds)
    assert vm.load(program, vm.gpu()).run(feeds)["dense_0"].tobytes() == ref["dense_0"].tobytes()


def test_tf32_is_off():
    import os
    vm.load(small_cnn(), vm.gpu())
    assert os.environ.get("NVIDIA_TF32_OVERRIDE") == "0"
    assert os.environ.get("CUPY_TF32", "0") == "0"
