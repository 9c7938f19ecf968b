"""vm.acl (pyACL's model and single-op API) and vm.op: caller-owned buffers, model
descriptions by index and name, status codes, and single ops bit-exact with the reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import vm
import vm.acl as acl
from detvm.common import DEMO_DIR
from ops.base import bound
from tests.cases import all_cases, values_for

DIGITS = str(DEMO_DIR / "digits.dvm")
CASES = all_cases()


@pytest.fixture
def digits():
    model_id, ret = acl.mdl.load_from_file(DIGITS)
    assert ret == acl.ACL_SUCCESS
    yield model_id
    assert acl.mdl.unload(model_id) == acl.ACL_SUCCESS


def dataset(buffers):
    ds = acl.mdl.create_dataset()
    for b in buffers:
        _, ret = acl.mdl.add_dataset_buffer(ds, acl.create_data_buffer(b, b.nbytes if
                                                                        isinstance(b, np.ndarray)
                                                                        else len(b)))
        assert ret == acl.ACL_SUCCESS
    return ds


def test_description_by_index_and_name(digits):
    desc = acl.mdl.create_desc()
    assert acl.mdl.get_desc(desc, digits) == acl.ACL_SUCCESS
    model = vm.load(DIGITS)
    assert acl.mdl.get_num_inputs(desc) == 1 and acl.mdl.get_num_outputs(desc) == 1
    assert acl.mdl.get_input_name_by_index(desc, 0) == "image"
    assert acl.mdl.get_output_index_by_name(desc, "logits") == (0, acl.ACL_SUCCESS)
    assert acl.mdl.get_input_index_by_name(desc, "nope")[1] != acl.ACL_SUCCESS
    dims, ret = acl.mdl.get_input_dims(desc, 0)
    assert ret == 0 and dims == {"name": "image", "dimCount": 4, "dims": [8, 1, 8, 8]}
    assert acl.mdl.get_input_size_by_index(desc, 0) == 8 * 64 * model.inputs[0].dtype.itemsize
    assert acl.mdl.get_output_data_type(desc, 0) == \
        {1: acl.ACL_INT8, 4: acl.ACL_INT32}[model.outputs[0].dtype.itemsize]
    assert acl.mdl.get_input_format(desc, 0) == acl.ACL_FORMAT_NCHW


def test_execute_writes_into_caller_buffers(digits):
    desc = acl.mdl.create_desc()
    acl.mdl.get_desc(desc, digits)
    model = vm.load(DIGITS)
    images = np.load(DEMO_DIR / "digits_inputs.npz")["image"]
    expected = model.run({"image": images})["logits"]
    # input through acl.rt.malloc + memcpy from a numpy pointer; output into a numpy array
    size = acl.mdl.get_input_size_by_index(desc, 0)
    device, ret = acl.rt.malloc(size, acl.ACL_MEM_MALLOC_HUGE_FIRST)
    host = np.ascontiguousarray(images, dtype=model.inputs[0].dtype)
    assert acl.rt.memcpy(device, size, acl.util.numpy_to_ptr(host), size,
                         acl.ACL_MEMCPY_HOST_TO_DEVICE) == 0
    out = np.zeros(expected.shape, dtype=expected.dtype)
    ins = acl.mdl.create_dataset()
    acl.mdl.add_dataset_buffer(ins, acl.create_data_buffer(device, size))
    assert acl.mdl.execute(digits, ins, dataset([out])) == acl.ACL_SUCCESS
    assert out.tobytes() == expected.tobytes()
    raw = bytearray(out.nbytes)                       # a bytearray works as a buffer too
    assert acl.mdl.execute(digits, ins, dataset([raw])) == acl.ACL_SUCCESS
    assert bytes(raw) == expected.tobytes()
    assert acl.util.ptr_to_numpy(device, images.shape, host.dtype).tobytes() == host.tobytes()
    assert acl.rt.free(device) == acl.ACL_SUCCESS


def test_status_codes_and_recent_errors(digits):
    small = np.zeros(3, np.int8)
    code = acl.mdl.execute(digits, dataset([np.zeros(2048, np.uint8)]), dataset([small]))
    assert code == acl.ACL_ERROR_MODEL_OUTPUT_NOT_MATCH and "needs" in acl.get_recent_err_msg()
    assert acl.mdl.execute(digits, dataset([]), dataset([small])) == \
        acl.ACL_ERROR_MODEL_INPUT_NOT_MATCH
    bad = np.full(2048 // 4, 1000, np.int32)          # outside the input's precision
    out = np.zeros(320, np.uint8)
    assert acl.mdl.execute(digits, dataset([bad]), dataset([out])) == acl.ACL_ERROR_INVALID_PARAM
    assert isinstance(acl.get_recent_error(), vm.TrapError)
    assert acl.mdl.execute(12345, dataset([]), dataset([])) == acl.ACL_ERROR_INVALID_MODEL_ID
    assert acl.mdl.load_from_file("/no/such.dvm") == (None, acl.ACL_ERROR_INVALID_FILE)
    assert acl.mdl.load_from_mem(b"not a model")[1] == acl.ACL_ERROR_DESERIALIZE_MODEL
    assert acl.rt.free(999) == acl.ACL_ERROR_INVALID_PARAM
    assert acl.rt.malloc(-1)[1] == acl.ACL_ERROR_INVALID_PARAM
    assert acl.mdl.unload(4242) == acl.ACL_ERROR_INVALID_MODEL_ID
    assert acl.rt.memcpy(bytearray(2), 2, bytearray(8), 8) == acl.ACL_ERROR_INVALID_PARAM
    assert acl.get_recent_err_msg().startswith("trap: memcpy")
    with pytest.raises(vm.TrapError, match="get_desc first"):
        acl.mdl.get_num_inputs(acl.mdl.create_desc())


def test_single_ops_through_execute_v2():
    x = np.array([[-5, 3, 127, -127]], np.int8)
    out = np.zeros_like(x)
    desc = acl.create_tensor_desc(acl.ACL_INT8, x.shape)
    assert acl.op.execute_v2("relu", [desc], [acl.create_data_buffer(x, x.nbytes)], [desc],
                             [acl.create_data_buffer(out, out.nbytes)], {}) == 0
    assert out.tolist() == [[0, 3, 127, 0]]
    assert acl.op.execute_v("nope", [x]) == (None, acl.ACL_ERROR_OP_NOT_FOUND)
    assert acl.op.execute_v("relu", [x], {"axis": 1})[1] == acl.ACL_ERROR_OP_ATTR_NOT_MATCH
    assert acl.op.cast(x, np.int32)[0].dtype == np.int32
    assert acl.op.cast(np.array([300]), np.int8)[1] == acl.ACL_ERROR_INVALID_PARAM


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
@pytest.mark.parametrize("name", sorted(CASES))
def test_vm_op_is_the_one_instruction_program(name, data):
    """vm.op on every op's law-suite cases equals the reference executor's bytes, and its
    model's gas is the gas of that one-instruction program."""
    case = data.draw(CASES[name])
    arrays = []
    for i in case.inputs:
        flat = i.values if i.values is not None else data.draw(values_for(i.shape, i.precision))
        arrays.append(np.array(flat, dtype=np.int8 if i.precision <= 8 else np.int32)
                      .reshape(i.shape))
    precisions = [i.precision for i in case.inputs]
    try:
        model = vm.op_model(name, *arrays, precisions=precisions, **case.attrs)
    except vm.InvalidError:
        return                                 # the case's precisions pass 32 bits here
    got = vm.op(name, *arrays, precisions=precisions, **case.attrs)
    ref = vm.load(vm.encode(model.program), vm.reference()).run(
        {f"x{k}": a for k, a in enumerate(arrays)})
    got = got if isinstance(got, tuple) else (got,)
    assert [g.tobytes() for g in got] == [r.tobytes() for r in ref.values()]
    assert model.gas == vm.validate(model.program).gas


def test_vm_op_checks_like_a_program():
    assert vm.op("relu", np.array([-2, 5])).tolist() == [0, 5]
    assert vm.op("relu", np.array([-2, 5])).dtype == np.int8      # tight precision: p4
    with pytest.raises(vm.InvalidError, match="unknown op"):
        vm.op("softplus", np.array([1]))
    with pytest.raises(vm.InvalidError, match="no attribute"):
        vm.op("relu", np.array([1]), axis=1)
    with pytest.raises(vm.TrapError, match="not an integer"):
        vm.op("relu", np.array([0.5]))
    with pytest.raises(vm.TrapError, match="outside precision"):
        vm.op("relu", np.array([200]), precisions=[8])
    wide = np.full((1, 4), bound(31), np.int32)
    with pytest.raises(vm.InvalidError, match="precision"):
        vm.op("dense", wide, wide, units=1, use_bias=False)


def test_dynamic_batch_of_a_symbolic_model():
    from compiler.symbolize import symbolize
    model = vm.Model(symbolize(vm.load(DIGITS).program, {"N": 8}, {"N": 64}))
    model_id, ret = acl.mdl.load_from_mem(model.to_bytes())
    desc = acl.mdl.create_desc()
    acl.mdl.get_desc(desc, model_id)
    assert acl.mdl.get_input_dims(desc, 0)[0]["dims"] == [-1, 1, 8, 8]
    info, ret = acl.mdl.get_dynamic_batch(desc)
    assert info["batchCount"] == 64 and info["batch"][-1] == 64
    size = acl.mdl.get_input_size_by_index(desc, 0)
    assert size == 64 * 64 * model.inputs[0].dtype.itemsize          # room for the largest
    images = np.load(DEMO_DIR / "digits_inputs.npz")["image"].astype(model.inputs[0].dtype)
    for n in (2, 8):
        data = np.zeros(size, np.uint8)
        data[:images[:n].nbytes] = images[:n].view(np.uint8).reshape(-1)
        out = np.zeros(acl.mdl.get_output_size_by_index(desc, 0), np.uint8)
        ins = dataset([data])
        assert acl.mdl.set_dynamic_batch_size(model_id, ins, 0, n) == acl.ACL_SUCCESS
        assert acl.mdl.execute(model_id, ins, dataset([out])) == acl.ACL_SUCCESS
        want = model.run({"image": images[:n]})["logits"]
        assert out[:want.nbytes].tobytes() == want.tobytes()
    assert acl.mdl.set_dynamic_batch_size(model_id, ins, 0, 65) == acl.ACL_ERROR_INVALID_PARAM
    fixed, _ = acl.mdl.load_from_file(DIGITS)
    assert acl.mdl.set_dynamic_batch_size(fixed, ins, 0, 2) == acl.ACL_ERROR_INVALID_PARAM
    acl.mdl.unload(model_id)
    acl.mdl.unload(fixed)


def test_read_only_and_mistyped_buffers_are_status_codes(digits):
    frozen = np.zeros(320, np.uint8)
    frozen.flags.writeable = False
    code = acl.mdl.execute(digits, dataset([np.zeros(2048, np.uint8)]), dataset([frozen]))
    assert code == acl.ACL_ERROR_INVALID_PARAM and "read-only" in acl.get_recent_err_msg()
    assert not frozen.any()
    for args in ((memoryview(b"abcd"), 4, bytearray(4), 4), (bytearray(4), "4", bytearray(4), 4),
                 (bytearray(4), None, bytearray(4), 4), (bytearray(4), 4, bytearray(4), True)):
        assert acl.rt.memcpy(*args) == acl.ACL_ERROR_INVALID_PARAM, args


def test_a_bool_is_no_model_id(monkeypatch):
    monkeypatch.setitem(acl.mdl._models, 1, vm.load(DIGITS))     # True == 1
    desc = acl.mdl.create_desc()
    assert acl.mdl.get_desc(desc, True) == acl.ACL_ERROR_INVALID_MODEL_ID
    assert acl.mdl.unload(True) == acl.ACL_ERROR_INVALID_MODEL_ID
