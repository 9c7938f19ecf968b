"""vm.lite (MegEngine Lite's API) against direct Model.run: same bytes, callbacks, async,
dumps and profiles parsed back, weight sharing, errors."""
from __future__ import annotations

import json
import threading
import tracemalloc

import numpy as np
import pytest

import vm
from detvm.common import DEMO_DIR
from vm.errors import DetvmError, TrapError
from vm.lite import (LiteConfig, LiteDeviceType, LiteIO, LiteLayout, LiteNetwork, LiteNetworkIO,
                     LiteTensorPhase)

DIGITS = DEMO_DIR / "digits.dvm"


@pytest.fixture(scope="module")
def images():
    return np.load(DEMO_DIR / "digits_inputs.npz")["image"]


@pytest.fixture(scope="module")
def expected(images):
    return vm.load(DIGITS).run({"image": images})["logits"]


def loaded(config=None, io=None) -> LiteNetwork:
    network = LiteNetwork(config, io)
    network.load(str(DIGITS))
    return network


def forward(network, images) -> np.ndarray:
    network.get_io_tensor(network.get_input_name(0)).set_data_by_copy(images)
    network.forward()
    network.wait()
    return network.get_io_tensor(network.get_output_name(0)).to_numpy()


def test_names_tensors_and_bytes_equal_model_run(images, expected):
    network = loaded()
    assert network.get_all_input_name() == ["image"]
    assert network.get_all_output_name() == ["logits"] == [network.get_output_name(0)]
    tensor = network.get_io_tensor("image")
    assert tensor.shape == (8, 1, 8, 8) and tensor.layout.ndim == 4
    got = forward(network, images)
    assert got.dtype == expected.dtype and got.tobytes() == expected.tobytes()
    assert network.get_io_tensor("logits", LiteTensorPhase.LITE_OUTPUT).shape == expected.shape


def test_every_executor_through_the_config(images, expected):
    for device in (LiteDeviceType.LITE_CPU, vm.reference()):
        assert forward(loaded(LiteConfig(device_type=device)), images).tobytes() == \
            expected.tobytes()


def test_start_finish_and_async_callbacks(images, expected):
    network = loaded()
    seen, done = [], threading.Event()
    network.set_start_callback(lambda io: seen.append(("start", sorted(i.name for i in io))))
    network.set_finish_callback(lambda io: seen.append(
        ("finish", {i.name: t.to_numpy().tobytes() for i, t in io.items()})))
    network.async_with_callback(done.set)
    network.get_io_tensor("image").set_data_by_copy(images)
    network.forward()                         # returns at once
    network.wait()
    assert done.is_set()
    assert seen == [("start", ["image"]), ("finish", {"logits": expected.tobytes()})]


def test_async_errors_are_reraised_by_wait(images):
    network = loaded()
    network.async_with_callback(lambda: None)
    network.get_io_tensor("image").set_data_by_copy(images * 0 + 500)    # outside p9
    network.forward()
    with pytest.raises(TrapError, match="outside precision"):
        network.wait()
    network.wait()                            # the error is reported once


def test_io_dumps_and_profile_parse_back(tmp_path, images, expected):
    network = loaded()
    network.io_txt_dump(tmp_path / "io.txt")
    network.io_bin_dump(tmp_path / "bin")
    network.enable_profile_performance(tmp_path / "profile.json")
    assert forward(network, images).tobytes() == expected.tobytes()
    program = network.model.program
    index = json.loads((tmp_path / "bin" / "index.json").read_text())
    assert sorted({e["instruction"] for e in index}) == list(range(len(program.code)))
    last = [e for e in index if e["instruction"] == len(program.code) - 1 and e["role"] == "out"]
    assert np.load(tmp_path / "bin" / last[0]["file"]).tobytes() == expected.tobytes()
    text = (tmp_path / "io.txt").read_text().splitlines()
    headers = [line for line in text if line.startswith("instruction ")]
    assert [line.split()[2] for line in headers] == [ins.op for ins in program.code]
    for line in text:
        if line.startswith("  "):             # each tensor line matches its binary dump
            role, name = line.split()[:2]
            sha = line.split("sha256=")[1].split()[0]
            entry = next(e for e in index if e["tensor"] == name and e["role"] == role)
            assert vm.observe.digest(np.load(tmp_path / "bin" / entry["file"])) == sha
    events = json.loads((tmp_path / "profile.json").read_text())["traceEvents"]
    assert [e["name"] for e in events] == [ins.op for ins in program.code]
    assert all(e["ph"] == "X" and e["dur"] >= 0 for e in events)
    forward(network, images)                  # a second forward appends, later in time
    events2 = json.loads((tmp_path / "profile.json").read_text())["traceEvents"]
    assert len(events2) == 2 * len(events) and events2[len(events)]["ts"] >= events[-1]["ts"]


def wide_model(path) -> str:
    """A dense layer with 1 MiB of int8 weights, written to ``path``."""
    from compiler import Builder
    b = Builder("wide")
    x = b.input("x", (1, 1024), 8)
    w = b.const("w", np.random.default_rng(0).integers(-127, 128, (1024, 1024)), 8)
    b.output(b.op("dense", x, w, units=1024, use_bias=False))
    path.write_bytes(vm.encode(b.build()))
    return str(path)


def grown_by(action) -> int:
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = action()
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del kept
    return grown


def test_share_weights_keeps_one_copy(tmp_path):
    path = wide_model(tmp_path / "wide.dvm")
    source = LiteNetwork()
    source.load(path)

    def own():
        network = LiteNetwork()
        network.load(path)
        return network

    def shared():
        network = LiteNetwork()
        network.share_weights_with(source)
        return network

    assert grown_by(own) > 1 << 20                # a second load holds its own weights
    assert grown_by(shared) < 64 << 10            # sharing adds only the I/O tensors
    network = shared()
    assert network.model is source.model
    x = np.random.default_rng(1).integers(-127, 128, (1, 1024)).astype(np.int8)
    network.get_io_tensor("x").set_data_by_copy(x)
    network.forward()
    assert network.get_io_tensor(network.get_output_name(0)).to_numpy().tobytes() == \
        vm.load(path).run({"x": x})[network.get_output_name(0)].tobytes()
    other = LiteNetwork()
    other.load(str(DIGITS))
    with pytest.raises(TrapError, match="different models"):
        other.share_weights_with(source)


def test_threads_memory_info_and_layout_check(tmp_path, images, expected):
    network = LiteNetwork()
    network.set_cpu_threads_number(2)
    network.load(str(DIGITS))
    assert network.threads_number == 2
    info = network.get_static_memory_alloc_info(tmp_path)
    assert info["peak_memory"] == network.model.peak_memory > 0
    assert json.loads((tmp_path / "memory.json").read_text())["gas"] == network.model.gas
    assert forward(network, images).tobytes() == expected.tobytes()
    io = LiteNetworkIO()
    io.add_output(LiteIO("logits", layout=LiteLayout([8, 11])))
    with pytest.raises(TrapError, match="configured layout"):
        forward(loaded(io=io), images)


def test_misuse_gives_detvm_errors():
    network = LiteNetwork()
    for call in (lambda: network.get_input_name(0), network.forward,
                 lambda: network.get_io_tensor("x"), network.get_all_output_name):
        with pytest.raises(TrapError, match="call load"):
            call()
    network.load(str(DIGITS))
    for call in (lambda: network.get_input_name(3), lambda: network.get_io_tensor("nope"),
                 lambda: network.set_cpu_threads_number(0),
                 lambda: network.async_with_callback(3),
                 lambda: network.get_io_tensor("image").set_data_by_copy([0.5]),
                 lambda: LiteNetwork(config="cpu"),
                 lambda: LiteConfig(device_type=42).context()):
        with pytest.raises(DetvmError):
            call()


def test_a_model_with_a_symbolic_batch():
    from compiler.symbolize import symbolize
    model = vm.Model(symbolize(vm.load(DIGITS).program, {"N": 8}, {"N": 64}))
    network = LiteNetwork()
    network.load(model)
    assert network.get_io_tensor("image").shape == (1, 1, 8, 8)    # a batch of 1 to start
    images = np.load(DEMO_DIR / "digits_inputs.npz")["image"]
    for n in (3, 8, 17):
        batch = np.concatenate([images] * 3)[:n]
        got = forward(network, batch)
        assert got.shape[0] == n
        assert got.tobytes() == model.run({"image": batch})["logits"].tobytes()
    assert network.get_static_memory_alloc_info()["peak_memory"] == model.peak_memory


def test_layouts_and_phases_of_the_wrong_kind():
    network = loaded()
    for call in (lambda: LiteLayout("abc"), lambda: LiteLayout((-1, 3)), lambda: LiteLayout(None),
                 lambda: LiteLayout((1,), "foo"), lambda: network.get_io_tensor("image", 7)):
        with pytest.raises(TrapError):
            call()
    assert LiteLayout([np.int64(2), 3], "float32").shapes == (2, 3)


def test_forward_and_wait_from_the_async_callback(images, expected):
    """The callback may wait() (its forward is done) and chain the next forward(); the
    caller's wait() covers the chain."""
    network, got = loaded(), []

    def done():
        network.wait()
        got.append(network.get_io_tensor("logits").to_numpy())
        if len(got) < 3:
            network.forward()
    network.async_with_callback(done)
    network.get_io_tensor("image").set_data_by_copy(images)
    network.forward()
    network.wait()
    assert len(got) == 3 and all(g.tobytes() == expected.tobytes() for g in got)


def test_share_weights_leaves_a_callers_model_open(images, expected):
    """A model the caller passed to load() is the caller's: sharing replaces it, never closes
    it (a model the network loaded itself is closed)."""
    mine = vm.load(DIGITS)
    network = LiteNetwork()
    network.load(mine)
    network.share_weights_with(loaded())
    assert mine.run({"image": images})["logits"].tobytes() == expected.tobytes()
    own = loaded()
    replaced = own.model
    own.share_weights_with(loaded())
    with pytest.raises(TrapError, match="closed"):
        replaced.run({"image": images})
