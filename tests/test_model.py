"""The Python API: load, run, traps, executors, facts known before running."""
from __future__ import annotations

import gc
import os
import threading
import weakref

import numpy as np
import pytest

import vm
from vm.errors import EnvironmentFault, TrapError
from tests.conftest import random_input, small_cnn


@pytest.fixture(scope="module")
def model():
    return vm.load(vm.encode(small_cnn()))


def test_cpu_equals_reference_executor(model):
    ref = vm.load(model.to_bytes(), vm.reference())
    for seed in range(3):
        x = random_input(model, seed)
        got, want = model.run(x), ref.run(x)
        assert list(got) == ["logits"]
        assert got["logits"].dtype == np.int8
        assert got["logits"].tobytes() == want["logits"].tobytes()


def test_edge_inputs_equal_reference(model):
    ref = vm.load(model.to_bytes(), vm.reference())
    for v in (-127, 127, 0):
        x = np.full(model.inputs[0].shape, v, np.int8)
        assert model.run(x)["logits"].tobytes() == ref.run(x)["logits"].tobytes()


def test_facts_known_before_running(model):
    (i,), (o,) = model.inputs, model.outputs
    assert (i.name, i.shape, i.precision, i.dtype) == ("x", (2, 3, 8, 8), 8, np.int8)
    assert (o.name, o.shape, o.precision) == ("logits", (2, 10), 8)
    assert model.input_type_size == 1 and model.input_length == 2 * 3 * 8 * 8
    assert model.output_type_size == 1 and model.output_length == 20
    assert len(model.hash) == 64 and model.gas > 0 and model.peak_memory > 0
    assert model.metadata == {"purpose": "tests"}


def test_single_array_or_dict(model):
    x = random_input(model)
    assert np.array_equal(model.run(x)["logits"], model.run(x["x"])["logits"])


def test_any_integer_dtype_is_accepted(model):
    x = random_input(model)["x"]
    assert np.array_equal(model.run(x.astype(np.int64))["logits"], model.run(x)["logits"])


@pytest.mark.parametrize("bad, message", [
    ({}, "missing input 'x'"),
    ({"x": np.zeros((2, 3, 8, 8), np.int8), "y": np.zeros(1, np.int8)}, "unknown input 'y'"),
    ({"x": np.zeros((1, 3, 8, 8), np.int8)}, "shape"),
    ({"x": np.zeros((2, 3, 8, 8), np.float32)}, "not an integer type"),
    ({"x": np.full((2, 3, 8, 8), -128, np.int8)}, "value -128 at flat index 0 outside precision"),
])
def test_bad_inputs_trap_never_clamp(model, bad, message):
    with pytest.raises(TrapError, match=message):
        model.run(bad)


def test_outputs_are_fresh_writable_arrays(model):
    x = random_input(model)
    out = model.run(x)["logits"]
    out[...] = 0
    assert model.run(x)["logits"].any() or True
    assert out.flags.writeable


def test_run_is_thread_safe(model):
    inputs = [random_input(model, s) for s in range(8)]
    expected = [model.run(x)["logits"].tobytes() for x in inputs]
    results = [None] * 32

    def work(k):
        results[k] = model.run(inputs[k % 8])["logits"].tobytes()
    threads = [threading.Thread(target=work, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected[k % 8] for k in range(32)]


def test_batch_invariance():
    """A batch of N gives the same bytes as N runs of batch 1 (same weights)."""
    big = vm.load(small_cnn(batch=4))
    one = vm.load(small_cnn(batch=1))
    x = random_input(big)["x"]
    whole = big.run(x)["logits"]
    rows = [one.run(x[k:k + 1])["logits"] for k in range(4)]
    assert whole.tobytes() == np.concatenate(rows).tobytes()


def test_trace_sees_every_instruction(model):
    seen = []
    model.run(random_input(model), trace=lambda step, values: seen.append(step.index))
    assert seen == list(range(len(model.program.code)))


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_a_dropped_model_is_freed_without_the_cyclic_gc(backend):
    """No reference cycle keeps a model's plan (its weights, its sessions) alive once the
    model is dropped: the cyclic GC, paused during loads, need not find it."""
    m = vm.load(vm.encode(small_cnn()), vm.cpu(backend=backend), threads=2)
    m.run(random_input(m, 0), trace=lambda *_: None)      # every per-instruction step bound
    plan = weakref.ref(m.plan)
    gc.disable()
    try:
        del m
        assert plan() is None
    finally:
        gc.enable()


def test_context_manager_and_repr(model):
    with vm.load(model.to_bytes()) as m:
        assert "small-cnn" in repr(m)


def test_unavailable_executors_fail_cleanly(model):
    try:
        import cupy  # noqa: F401
        pytest.skip("cupy is installed: the GPU executor is tested in test_gpu.py")
    except ImportError:
        pass
    with pytest.raises(EnvironmentFault, match="cupy"):
        vm.load(model.to_bytes(), vm.gpu())
    # reduced-precision GEMM is switched off before CUDA could start
    assert os.environ["NVIDIA_TF32_OVERRIDE"] == "0" and os.environ["CUPY_TF32"] == "0"


def test_contexts():
    assert vm.context(0) == vm.cpu() and vm.context(1, 2) == vm.gpu(2)
    assert vm.context("formal") == vm.formal()
    with pytest.raises(EnvironmentFault):
        vm.context(9)


def test_load_missing_file_is_environment(tmp_path):
    with pytest.raises(EnvironmentFault, match="cannot read"):
        vm.load(tmp_path / "nope.dvm")


def test_load_from_path_and_text(tmp_path):
    from compiler import disassemble
    p = small_cnn()
    (tmp_path / "m.dvm").write_bytes(vm.encode(p))
    (tmp_path / "m.dvmt").write_text(disassemble(p))
    assert vm.load(tmp_path / "m.dvm").hash == vm.load(str(tmp_path / "m.dvmt")).hash
