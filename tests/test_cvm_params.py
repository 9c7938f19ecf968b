"""The params blob codec and vm.ndarray (CVM's cvm.ndarray)."""
from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import vm
from compiler.cvm import load_params, save_params
from vm import ndarray as nd
from vm.runtime import CVMError
from tests.cvm_util import params_of, vectors


@pytest.mark.parametrize("m", vectors(), ids=lambda m: m["name"])
def test_writer_reproduces_cvm_blobs(m):
    blob = params_of(m)
    pairs = load_params(blob)
    assert [k for k, _ in pairs] == list(m["params"])
    for (name, a), want in zip(pairs, m["params"].values()):
        assert a.dtype.name == want["dtype"] and list(a.shape) == want["shape"]
        assert a.reshape(-1).tolist() == want["values"]
    assert save_params(pairs) == blob


arrays = st.tuples(st.sampled_from([np.int8, np.int32]),
                   st.lists(st.integers(1, 3), min_size=1, max_size=3)).flatmap(
    lambda t: st.lists(st.integers(-100, 100), min_size=int(np.prod(t[1])),
                       max_size=int(np.prod(t[1]))).map(
        lambda v: np.array(v, t[0]).reshape(t[1])))


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=5), arrays, max_size=4))
def test_round_trip_and_canonical(params):
    blob = save_params(params)
    assert save_params(params) == blob
    back = load_params(blob)
    assert [k for k, _ in back] == list(params)
    for (_, a), b in zip(back, params.values()):
        assert a.dtype == b.dtype and np.array_equal(a, b)


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 200))
def test_garbage_and_truncation_are_clean_errors(junk, cut):
    blob = save_params({"w": np.arange(6, dtype=np.int32).reshape(2, 3), "b": np.ones(2, np.int8)})
    for data in (junk, blob[:cut], blob[:8] + junk):
        try:
            load_params(data)
        except vm.MalformedError as e:
            assert e.cvm_code in (1, 2)
        except vm.InvalidError as e:
            assert e.cvm_code == 1


def test_only_int8_and_int32():
    with pytest.raises(vm.InvalidError):
        save_params({"w": np.zeros(2, np.float32)})
    blob = bytearray(save_params({"w": np.zeros(2, np.int32)}))
    dtype_at = 8 * 3 + 8 + 1 + 8 + 8 + 8 + 4 + 4 + 4     # header, name, count, array head
    blob[dtype_at + 1] = 16                                # bits 16
    with pytest.raises(vm.InvalidError):
        load_params(bytes(blob))


def test_gpu_device_type_is_rejected():
    blob = bytearray(save_params({"w": np.zeros(2, np.int32)}))
    at = 8 * 3 + 8 + 1 + 8 + 16
    blob[at:at + 4] = struct.pack("<i", 2)
    with pytest.raises(vm.MalformedError) as e:
        load_params(bytes(blob))
    assert e.value.cvm_code == 2 and "CPU" in str(e.value)


def test_ndarray_api():
    a = nd.array(np.arange(6, dtype=np.int8).reshape(2, 3))
    assert (a.shape, a.dtype, a.ndim, a.ctx) == ((2, 3), "int8", 2, vm.cpu())
    assert a.context == vm.cpu() and a.same_as(a)
    e = nd.empty((2, 3))
    assert e.dtype == "int32" and e.shape == (2, 3)          # contents unspecified
    e.copyfrom(a)
    assert e.asnumpy().tolist() == [[0, 1, 2], [3, 4, 5]] and e.dtype == "int32"
    blob = nd.save_param_dict({"a": a, "e": e})
    assert nd.save_param_dict({"a": a, "e": e}) == blob
    back = nd.load_param_dict(blob)
    assert back["a"].dtype == "int8" and np.array_equal(back["e"].asnumpy(), e.asnumpy())
    assert nd.array([1, 2]).dtype == "int32"


@pytest.mark.parametrize("bad", [lambda: nd.array(np.zeros(2)),
                                 lambda: nd.array([1 << 40]),
                                 lambda: nd.empty((2,), "float32"),
                                 lambda: nd.empty((2,)).copyfrom(np.zeros(3, np.int32)),
                                 lambda: nd.load_param_dict(b"")])
def test_ndarray_errors(bad):
    with pytest.raises(CVMError) as e:
        bad()
    assert e.value.code == 1
