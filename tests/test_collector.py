"""vm.collector.paused: the cyclic collector paused while a model loads, restored after."""
from __future__ import annotations

import gc
import threading

import pytest

from vm import collector


@pytest.fixture(autouse=True)
def collector_on():
    gc.enable()
    yield
    gc.enable()


def test_nested_blocks_and_an_exception_restore_the_collector():
    with collector.paused():
        assert not gc.isenabled()
        with collector.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError):
        with collector.paused():
            raise ValueError("a failing load")
    assert gc.isenabled()


def test_a_collector_the_process_disabled_stays_disabled():
    gc.disable()
    with collector.paused():
        pass
    assert not gc.isenabled()


def test_concurrent_loads_restore_it_when_the_last_ends():
    inside, release = threading.Barrier(3), threading.Event()

    def load():
        with collector.paused():
            inside.wait()
            release.wait()
    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert not gc.isenabled()
    release.set()
    for t in threads:
        t.join()
    assert gc.isenabled()


def test_the_pause_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(collector, "PAUSE", False)
    with collector.paused():
        assert gc.isenabled()
    assert gc.isenabled()
