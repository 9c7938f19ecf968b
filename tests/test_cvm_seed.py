"""The CVM seed's Python calls that detvm adds: CVMContext and its constructors, opencl as a
clear refusal, NDArray(handle, is_view), prepare_bcast_shape, checked contexts, empty, and the
cvm.utils file helpers."""
from __future__ import annotations


import numpy as np
import pytest

import vm
from detvm.common import DEMO_DIR
from vm import ndarray as nd, runtime as rt, utils



def test_contexts_in_cvm_numbering():
    assert rt.CVMContext(1, 0).device_type == "cpu" and rt.cpu().dl_device_type == 1
    assert rt.CVMContext(2, 1).device_type == "gpu" == rt.gpu(1).device_type
    assert rt.formal().device_type == "formal" and rt.context("reference").device_type == \
        "reference"
    assert isinstance(rt.cpu(), vm.Context)
    for bad in (7, "tpu", True):
        with pytest.raises(rt.CVMError, match="unknown device type"):
            rt.CVMContext(bad)
    with pytest.raises(rt.CVMError, match="OpenCL device is not supported"):
        rt.opencl()
    with pytest.raises(vm.EnvironmentFault, match="OpenCL"):
        vm.opencl()
    with pytest.raises(rt.CVMError, match="device_id"):
        rt.CVMContext(1, -1)


def test_models_load_on_cvm_contexts():
    model = vm.load(DEMO_DIR / "demo.dvm", rt.cpu())
    x = np.load(DEMO_DIR / "demo_inputs.npz")
    feeds = {t.name: x[t.name] for t in model.inputs}
    ref = vm.load(DEMO_DIR / "demo.dvm", rt.context("reference")).run(feeds)
    assert [a.tobytes() for a in model.run(feeds).values()] == [a.tobytes() for a in ref.values()]
    with pytest.raises(rt.CVMError, match="ctx must be a context"):
        rt.CVMAPILoadModel(b"{}", b"", ctx="cpu")


def test_ndarray_handles_views_and_broadcast():
    base = np.arange(6, dtype=np.int32).reshape(2, 3)
    view, copy = nd.NDArray(base, is_view=True), nd.NDArray(base)
    base[0, 0] = 42
    assert view.asnumpy()[0, 0] == 42 and copy.asnumpy()[0, 0] == 0
    assert view.is_view and not copy.is_view
    wide = view.prepare_bcast_shape(7, (2, 2, 3))
    assert wide.shape == (2, 2, 3) and wide.dtype == "int32" and (wide.asnumpy() == 7).all()
    assert view.prepare_bcast_shape([1, 2, 3], (4, 3)).asnumpy()[3].tolist() == [1, 2, 3]
    with pytest.raises(rt.CVMError):
        view.prepare_bcast_shape([1, 2], (4, 3))
    with pytest.raises(rt.CVMError):
        nd.NDArray(base, is_view=True).prepare_bcast_shape(1 << 40, (2,))
    with pytest.raises(rt.CVMError, match="view needs"):
        nd.NDArray(base.astype(np.int64), is_view=True)
    with pytest.raises(rt.CVMError, match="ctx must be a context"):
        nd.array(base, ctx="gpu")
    assert nd.array(base, ctx=rt.gpu()).ctx.device_type == "gpu"


def test_empty_promises_nothing_but_is_deterministic():
    a, b = nd.empty((2, 3), "int8"), nd.empty((2, 3), "int8")
    assert a.asnumpy().tobytes() == b.asnumpy().tobytes()
    assert not (a.asnumpy() == 0).all()
    with pytest.raises(rt.CVMError):
        nd.empty((-1, 2))
    with pytest.raises(rt.CVMError):
        nd.empty((1 << 20, 1 << 20))


def test_utils_read_a_model_and_an_input(tmp_path):
    (tmp_path / "symbol").write_text('{"nodes": []}')
    (tmp_path / "params").write_bytes(b"\x01\x02")
    assert utils.load_model(tmp_path / "symbol", tmp_path / "params") == \
        (b'{"nodes": []}', b"\x01\x02")
    np.save(tmp_path / "x.npy", np.array([1, -2], np.int32))
    assert utils.load_np_data(tmp_path / "x.npy") == np.array([1, -2], "<i4").tobytes()
    with pytest.raises(vm.EnvironmentFault):
        utils.load_model(tmp_path / "nope", tmp_path / "params")


def test_broadcast_is_bounded_and_views_may_be_read_only():
    a = nd.array(np.arange(2, dtype=np.int32))
    with pytest.raises(rt.CVMError, match="too large"):
        a.prepare_bcast_shape(1, (1 << 20, 1 << 20))      # a view of 2**40 values: refused
    with pytest.raises(rt.CVMError, match="negative"):
        a.prepare_bcast_shape(1, (-1, 2))
    frozen = np.zeros(2, np.int32)
    frozen.flags.writeable = False
    view = nd.NDArray(frozen, is_view=True)
    assert view.asnumpy().tolist() == [0, 0]
    with pytest.raises(rt.CVMError, match="read-only"):
        view.copyfrom([1, 2])


def test_load_np_data_takes_int8_or_int32_arrays_only(tmp_path):
    np.save(tmp_path / "i8.npy", np.array([[1, -2]], np.int8))
    assert utils.load_np_data(tmp_path / "i8.npy") == b"\x01\xfe"
    np.save(tmp_path / "f.npy", np.array([1.5]))
    np.save(tmp_path / "i64.npy", np.array([1], np.int64))
    np.savez(tmp_path / "z.npz", x=np.zeros(2, np.int8))
    for name in ("f.npy", "i64.npy", "z.npz"):         # bytes CVMAPIInference would misread
        with pytest.raises(vm.TrapError, match="int8 or int32"):
            utils.load_np_data(tmp_path / name)
