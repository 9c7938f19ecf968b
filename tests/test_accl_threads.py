"""vm.accl's threads: stop() and wait() called from a callback, errors reported once, SyncAccl
send/receive from several threads, its bounded buffers, shutdown, and no thread left behind."""
from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest

import vm
from detvm.common import DEMO_DIR
from tests.test_accl import blocked_runs
from vm.accl import QUEUE_DEPTH, AcclTimeoutError, AsyncAccl, SyncAccl
from vm.errors import TrapError

MODEL = vm.load(DEMO_DIR / "digits.dvm")


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (8, 1, 8, 8)).astype(np.int8) for _ in range(n)]


def expected(batch) -> list[bytes]:
    return [MODEL.run({"image": x})["logits"].tobytes() for x in batch]


def finishes(fn, seconds: float = 60) -> list:
    """Run ``fn`` on a thread: [result or exception] once it returned, [] if it hangs."""
    outcome: list = []

    def call():
        try:
            outcome.append(fn())
        except BaseException as e:
            outcome.append(e)
    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    return outcome


def accl_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("detvm-accl")}


@pytest.mark.parametrize("where", ["input", "output"])
def test_stop_from_a_callback_ends_the_pipeline(where):
    batch, got = frames(40, seed=2), []
    source = iter(batch)
    accl = AsyncAccl(MODEL, stream_workers=2)

    def take():
        if where == "input" and len(got) >= 3:
            accl.stop()
        return next(source, None)

    def show(logits):
        got.append(logits.tobytes())
        if where == "output" and len(got) == 3:
            accl.stop()
    accl.connect_input(take)
    accl.connect_output(show)
    assert finishes(accl.wait) == [None]              # no deadlock, no error
    assert 3 <= len(got) < len(batch) and got == expected(batch[:len(got)])
    assert finishes(accl.stop) == [None]              # stop() again, from outside: joins


def test_wait_from_a_callback_is_a_clear_error():
    accl = AsyncAccl(MODEL)
    source = iter(frames(3))
    accl.connect_input(lambda: next(source, None))
    accl.connect_output(lambda logits: accl.wait())
    outcome = finishes(accl.wait)
    assert len(outcome) == 1 and isinstance(outcome[0], TrapError)
    assert "from a callback" in str(outcome[0])


def test_an_error_is_reported_once_and_the_object_stays_usable():
    accl = AsyncAccl(MODEL)
    accl.connect_input(lambda: 1 / 0)
    accl.connect_output(lambda logits: None)
    with pytest.raises(ZeroDivisionError):
        accl.wait()
    accl.wait()                                       # reported already: a second wait passes
    batch, got = frames(4, seed=5), []
    source = iter(batch)
    accl.connect_input(lambda: next(source, None))    # connect again after wait
    accl.connect_output(lambda logits: got.append(logits.tobytes()))
    accl.wait()                                       # the first run's error is not raised again
    assert got == expected(batch)


def test_usage_errors_are_runtime_errors_as_memryx_raises():
    with pytest.raises(RuntimeError, match="must accept 0"):
        AsyncAccl(MODEL).connect_input(lambda frame: frame)
    accl = AsyncAccl(MODEL)
    accl.connect_output(lambda logits: None)
    with pytest.raises(RuntimeError, match="unconnected"):
        accl.wait()


def test_sync_send_from_several_threads_loses_no_frame():
    for trial in range(10):                           # the first sends race for the worker
        accl = SyncAccl(MODEL)
        parts = [frames(3, seed=10 * trial + k) for k in range(4)]
        start = threading.Barrier(len(parts))

        def send(part):
            start.wait()
            for x in part:
                accl.send(x, timeout=60_000)
        senders = [threading.Thread(target=send, args=(p,), daemon=True) for p in parts]
        for t in senders:
            t.start()
        got = [accl.receive(timeout=60_000)[0].tobytes() for _ in range(12)]
        for t in senders:
            t.join()
        assert sorted(got) == sorted(expected([x for p in parts for x in p]))
        accl.shutdown()


def test_sync_buffers_are_bounded_without_receive():
    accl = SyncAccl(MODEL)
    batch = frames(2 * QUEUE_DEPTH + 1, seed=3)
    for x in batch[:-1]:                              # the output buffer and the input buffer
        accl.send(x, timeout=60_000)
    with pytest.raises(AcclTimeoutError):             # full: nothing received
        accl.send(batch[-1], timeout=100)
    got = [accl.receive(timeout=60_000)[0].tobytes() for _ in batch[:-1]]
    assert got == expected(batch[:-1])
    accl.shutdown()


def test_shutdown_wakes_a_blocked_receiver_and_the_worker_ends():
    accl = SyncAccl(MODEL)
    before = accl_threads()
    accl.send(frames(1)[0])
    accl.receive(timeout=60_000)
    assert len(accl_threads() - before) == 1         # one worker, started by the first send
    outcome: list = []
    receiver = threading.Thread(target=lambda: outcome.append(finishes(accl.receive)))
    receiver.start()
    accl.shutdown()
    receiver.join(60)
    assert len(outcome) == 1 and isinstance(outcome[0][0], TrapError)
    assert "shut down" in str(outcome[0][0])
    assert not accl_threads() - before                # shutdown joined it


def test_a_dropped_sync_accl_ends_its_worker():
    before = accl_threads()
    accl = SyncAccl(MODEL)
    accl.send(frames(1)[0])
    accl.receive(timeout=60_000)
    workers = accl_threads() - before
    gone = weakref.ref(accl)
    del accl
    gc.collect()
    assert gone() is None and workers                 # the worker does not keep it alive ...
    for t in workers:
        t.join(60)
        assert not t.is_alive()                       # ... and ends when it is dropped


def test_timeouts_of_every_kind_of_number():
    accl = SyncAccl(MODEL)
    x = frames(1)[0]
    for limit in (np.int64(60_000), float("inf"), 1e300, None):   # a huge limit: none
        accl.send(x, timeout=limit)
        assert accl.receive(timeout=limit)[0].tobytes() == expected([x])[0]
    for bad in (float("nan"), -1, "100", True):
        outcome = finishes(lambda: accl.receive(timeout=bad))
        assert len(outcome) == 1 and isinstance(outcome[0], TrapError), (bad, outcome)
        assert "milliseconds" in str(outcome[0])
    accl.shutdown()


def test_a_reused_input_buffer_is_read_when_handed_over(monkeypatch):
    """MemryX copies a frame when it is sent or returned by the input callback: a caller may
    refill the same buffer at once (a camera loop), even while a worker still runs the last."""
    batch = frames(2, seed=8)
    gate, entered = blocked_runs(monkeypatch)         # runs wait until both have started
    buffer, got, count = np.empty_like(batch[0]), [], iter(range(len(batch) + 1))

    def refill():
        k = next(count)
        if k == len(batch):
            return None
        buffer[...] = batch[k]
        return buffer
    accl = AsyncAccl(MODEL, stream_workers=2)
    accl.connect_input(refill)
    accl.connect_output(lambda logits: got.append(logits.tobytes()))
    assert entered.acquire(timeout=60) and entered.acquire(timeout=60)
    gate.set()
    accl.wait()
    assert got == expected(batch)

    gate.clear()
    sync = SyncAccl(MODEL)
    buffer[...] = batch[0]
    sync.send(buffer)
    assert entered.acquire(timeout=60)                # the worker holds the first frame
    buffer[...] = batch[1]
    sync.send(buffer)
    gate.set()
    assert [sync.receive(timeout=60_000)[0].tobytes() for _ in batch] == expected(batch)
    sync.shutdown()


def test_a_bad_frame_fails_at_send():
    """Checked when sent (the caller's call fails), so bad frames never fill the buffers."""
    accl = SyncAccl(MODEL)
    for bad in (-1, "bogus", object(), np.array([1.5]), [[], {}], np.zeros((2, 2), np.int8),
                np.full((8, 1, 8, 8), 1000, np.int32)):
        outcome = finishes(lambda: accl.send(bad, timeout=60_000))
        assert len(outcome) == 1 and isinstance(outcome[0], TrapError), (bad, outcome)
    accl.shutdown()
