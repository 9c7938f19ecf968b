"""vm.accl (MemryX's accelerator API): identical bytes to sequential runs under any
interleaving, ordering per stream, back-pressure, timeouts, stop, errors in callbacks."""
from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

import vm
from compiler import Builder
from detvm.common import DEMO_DIR
from vm.accl import AcclTimeoutError, AsyncAccl, MultiStreamAsyncAccl, SyncAccl
from vm.errors import TrapError

MODEL = vm.load(DEMO_DIR / "digits.dvm")


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (8, 1, 8, 8)).astype(np.int8) for _ in range(n)]


def expected(batch: list[np.ndarray]) -> list[bytes]:
    return [MODEL.run({"image": x})["logits"].tobytes() for x in batch]


@pytest.fixture
def jittery(monkeypatch):
    """Runs that take a random time (0-3 ms), so workers finish out of order."""
    run = vm.Model.run
    rng = random.Random(7)

    def slow(self, *args, **kwargs):
        time.sleep(rng.random() * 0.003)
        return run(self, *args, **kwargs)
    monkeypatch.setattr(vm.Model, "run", slow)


def test_sync_run_single_and_many():
    accl = SyncAccl(MODEL)
    batch = frames(3)
    assert accl.run(batch[0])[0].tobytes() == expected(batch[:1])[0]
    assert [o[0].tobytes() for o in accl.run(batch)] == expected(batch)
    assert accl.inport_assignment() == {0: "image"} and accl.outport_assignment() == {0: "logits"}


def blocked_runs(monkeypatch):
    """Model.run waits for ``gate``; ``entered`` counts the runs that started."""
    gate, entered = threading.Event(), threading.Semaphore(0)
    run = vm.Model.run

    def held(self, *args, **kwargs):
        entered.release()
        gate.wait()
        return run(self, *args, **kwargs)
    monkeypatch.setattr(vm.Model, "run", held)
    return gate, entered


def test_sync_send_receive_and_timeouts(monkeypatch):
    accl = SyncAccl(MODEL)
    batch = frames(4)
    for x in batch:
        accl.send(x)
        assert accl.receive(timeout=10_000)[0].tobytes() == expected([x])[0]
    with pytest.raises(AcclTimeoutError, match="no output within 20 ms"):
        accl.receive(timeout=20)
    gate, entered = blocked_runs(monkeypatch)
    accl.send(batch[0])
    assert entered.acquire(timeout=10)       # the worker holds frame 0 ...
    accl.send(batch[1], timeout=1000)
    accl.send(batch[2], timeout=1000)        # ... and the buffer frames 1 and 2
    with pytest.raises(TimeoutError, match="stayed full for 50 ms"):
        accl.send(batch[3], timeout=50)
    gate.set()
    assert [accl.receive(timeout=10_000)[0].tobytes() for _ in range(3)] == expected(batch[:3])
    accl.shutdown()


def test_async_outputs_in_order_and_identical(jittery):
    batch = frames(40, seed=1)
    source, got = iter(batch), []
    accl = AsyncAccl(MODEL, stream_workers=4)
    accl.connect_input(lambda: next(source, None))
    accl.connect_output(lambda logits: got.append(logits.tobytes()))
    accl.wait()
    assert got == expected(batch)


@pytest.mark.parametrize("workers", [1, 3, 8])
def test_multistream_order_per_stream_under_stress(jittery, workers):
    streams = [frames(12, seed=s) for s in range(5)]
    positions, got = [0] * 5, [[] for _ in range(5)]

    def source(s):
        if positions[s] == len(streams[s]):
            return None
        positions[s] += 1
        return streams[s][positions[s] - 1]

    accl = MultiStreamAsyncAccl(MODEL, stream_workers=workers)
    accl.connect_streams(source, lambda s, logits: got[s].append(logits.tobytes()), 5)
    accl.wait()
    assert got == [expected(stream) for stream in streams]


def test_back_pressure_bounds_frames_in_flight(monkeypatch):
    gate, entered = blocked_runs(monkeypatch)
    produced, x = [], frames(1)[0]
    accl = AsyncAccl(MODEL, stream_workers=2)
    accl.connect_input(lambda: produced.append(1) or x)      # an endless stream
    accl.connect_output(lambda logits: None)
    assert entered.acquire(timeout=10) and entered.acquire(timeout=10)   # both workers busy
    time.sleep(0.1)
    assert len(produced) == 2                 # a worker pulls a frame only when it is free
    gate.set()                                # stop() lets the runs in progress finish
    accl.stop()


def test_errors_stop_the_pipeline_and_are_reraised():
    x = frames(1)[0]
    calls = []

    def failing_source():
        calls.append(1)
        if len(calls) == 5:
            raise ValueError("camera unplugged")
        return x

    accl = AsyncAccl(MODEL)
    accl.connect_input(failing_source)
    accl.connect_output(lambda logits: None)
    with pytest.raises(ValueError, match="camera unplugged"):
        accl.wait()
    assert len(calls) == 5

    accl = AsyncAccl(MODEL)
    accl.connect_input(lambda: x)
    accl.connect_output(lambda logits: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        accl.wait()

    accl = AsyncAccl(MODEL)                   # a run's own error: a trap, also re-raised
    bad = iter([x, np.full_like(x, 0).astype(np.int32) + 600])
    accl.connect_input(lambda: next(bad, None))
    accl.connect_output(lambda logits: None)
    with pytest.raises(TrapError, match="outside precision"):
        accl.wait()


def test_stop_ends_an_endless_stream():
    x, seen = frames(1)[0], []
    accl = AsyncAccl(MODEL)
    accl.connect_input(lambda: x)
    accl.connect_output(lambda logits: seen.append(1))
    while not seen:
        time.sleep(0.01)
    accl.stop()
    count = len(seen)
    time.sleep(0.05)
    assert len(seen) == count
    accl.wait()


def test_pre_and_post_processing_models():
    b = Builder("pre")
    b.output(b.op("negative", b.input("raw", (8, 1, 8, 8), 8)))
    pre = vm.Model(b.build())
    b = Builder("post")
    b.output(b.op("argmax", b.input("logits", MODEL.outputs[0].shape, MODEL.outputs[0].precision),
                  axis=1))
    post = vm.Model(b.build())
    batch = [np.clip(x, -127, 127) for x in frames(6, seed=3)]
    want = [post.run({"logits": MODEL.run({"image": pre.run({"raw": x})[pre.outputs[0].name]})
                      ["logits"]})[post.outputs[0].name].tobytes() for x in batch]
    for accl in (SyncAccl(MODEL), AsyncAccl(MODEL)):
        accl.set_preprocessing_model(pre)
        accl.set_postprocessing_model(post)
        assert accl.inport_assignment() == {0: "raw"}
        if isinstance(accl, SyncAccl):
            got = [o[0].tobytes() for o in accl.run(batch)]
        else:
            source, got = iter(batch), []
            accl.connect_input(lambda: next(source, None))
            accl.connect_output(lambda labels: got.append(labels.tobytes()))
            accl.wait()
        assert got == want


def test_misuse_is_a_clear_error():
    with pytest.raises(TrapError, match="must accept 0"):
        AsyncAccl(MODEL).connect_input(lambda frame: frame)
    with pytest.raises(TrapError, match="must accept 2"):
        MultiStreamAsyncAccl(MODEL).connect_streams(lambda s: None, lambda s, a, b: None, 1)
    accl = AsyncAccl(MODEL)
    accl.connect_input(lambda: None)
    with pytest.raises(TrapError, match="unconnected"):
        accl.wait()
    for call in (lambda: SyncAccl(MODEL).run(frames(1)[0], model_idx=2),
                 lambda: SyncAccl(MODEL).receive(timeout=-1),
                 lambda: MultiStreamAsyncAccl(MODEL, stream_workers=0),
                 lambda: MultiStreamAsyncAccl(MODEL).connect_streams(print, print, 0),
                 lambda: SyncAccl(MODEL).run([frames(1)[0], frames(1)[0]], model_idx="0")):
        with pytest.raises(TrapError):
            call()
