"""Concurrency: 8 threads x 1000 runs over several small models, and the same runs in other
processes, give the bytes of single-threaded runs (a model is shared by every thread)."""
from __future__ import annotations

import hashlib
import multiprocessing
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

import vm
from compiler import Builder
from detvm.common import DEMO_DIR
from vm.ort.kernels import ChannelSplitKernel
from tests.conftest import random_input, small_cnn

THREADS, RUNS, FEEDS = 8, 1000, 4


def _mlp():
    rng = np.random.default_rng(3)
    b = Builder("mlp")
    x = b.input("x", (2, 16), 8)
    h = b.op("dense", x, b.const("w1", rng.integers(-127, 128, (32, 16)), 8), units=32,
             use_bias=False)
    h = b.op("relu", b.op("cvm_right_shift", h, precision=8, shift_bit=7))
    y = b.op("dense", h, b.const("w2", rng.integers(-127, 128, (4, 32)), 8), units=4,
             use_bias=False)
    b.output(b.op("argmax", y, axis=1))
    return b.build()


def _batched():
    rng = np.random.default_rng(4)
    b = Builder("batched")
    b.symbol("N", 8)
    x = b.input("x", ("N", 12), 8)
    y = b.op("dense", x, b.const("w", rng.integers(-127, 128, (6, 12)), 8), units=6,
             use_bias=False)
    b.output(b.op("requantize", y, multiplier=[1 << 20], shift=[27], axis=1, qmin=-127,
                  qmax=127))
    return b.build()


def workload():
    """[(model, [feeds])]: the small CNN (on the default lanes and on 2), an MLP, a model with
    a symbolic batch (at batches 1 to 4) and the shipped digits CNN."""
    models = [vm.load(small_cnn(1)), vm.load(small_cnn(1), threads=2), vm.load(_mlp()),
              vm.load(_batched()), vm.load(DEMO_DIR / "digits.dvm")]
    out = []
    for model in models:
        if model.symbols:
            rng = np.random.default_rng(5)
            feeds = [{"x": rng.integers(-127, 128, (k + 1, 12)).astype(np.int8)}
                     for k in range(FEEDS)]
        else:
            feeds = [random_input(model, s) for s in range(FEEDS)]
        out.append((model, feeds))
    return out


def _bytes(result: dict) -> bytes:
    return b"".join(k.encode() + v.dtype.str.encode() + str(v.shape).encode() + v.tobytes()
                    for k, v in sorted(result.items()))


def _job(k: int, thread: int, work):
    model, feeds = work[(k + thread) % len(work)]
    return (k + thread) % len(work), k % FEEDS, model.run(feeds[k % FEEDS])


def digest(runs: int = 200) -> str:
    """SHA-256 of the outputs of ``runs`` runs over the workload (one thread)."""
    work, h = workload(), hashlib.sha256()
    for k in range(runs):
        h.update(_bytes(_job(k, 0, work)[2]))
    return h.hexdigest()


def test_threads_share_models_and_give_the_same_bytes():
    work = workload()
    expected = {(m, f): _bytes(model.run(feeds[f]))
                for m, (model, feeds) in enumerate(work) for f in range(FEEDS)}
    wrong, done = [], [0] * THREADS
    start = threading.Barrier(THREADS)

    def thread(t: int) -> None:
        start.wait()
        for k in range(RUNS):
            m, f, result = _job(k, t, work)
            if _bytes(result) != expected[m, f]:
                wrong.append((t, k, m, f))
            done[t] += 1
    threads = [threading.Thread(target=thread, args=(t,)) for t in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert done == [RUNS] * THREADS and not wrong


def test_processes_give_the_same_bytes():
    here = digest()
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        assert list(pool.map(digest, [200] * 2)) == [here] * 2


def test_threads_share_a_model_cut_over_its_lanes():
    """A depthwise convolution large enough to be cut by channels over the plan's lanes
    (vm/ort/kernels.py ChannelSplitKernel), run by 4 threads at once: each run's bytes are
    the single-threaded run's."""
    rng = np.random.default_rng(6)
    b = Builder("depthwise")
    x = b.input("x", (1, 16, 176, 176), 8)
    w = b.const("w", rng.integers(-127, 128, (16, 1, 3, 3)), 8)
    b.output(b.op("conv2d", x, w, channels=16, kernel_size=(3, 3), padding=(1, 1), groups=16,
                  use_bias=False))
    model = vm.load(b.build(), threads=2)
    if not any(isinstance(s.kernel, ChannelSplitKernel) for s in model.plan.fast):
        pytest.skip(f"not cut over lanes here: {model.backend}")
    feeds = [{"x": rng.integers(-127, 128, (1, 16, 176, 176)).astype(np.int8)}
             for _ in range(3)]
    expected = [_bytes(model.run(f)) for f in feeds]
    wrong = []

    def thread(t: int) -> None:
        for k in range(40):
            if _bytes(model.run(feeds[(k + t) % 3])) != expected[(k + t) % 3]:
                wrong.append((t, k))
    threads = [threading.Thread(target=thread, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not wrong
    numpy_model = vm.load(b.build(), vm.cpu(backend="numpy"))
    assert [_bytes(numpy_model.run(f)) for f in feeds] == expected
