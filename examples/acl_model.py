"""pyACL's model-execution sample, ported to detvm (vm.acl): describe the model, prepare input
and output datasets of caller-owned buffers, copy the input in, execute, read the output,
destroy everything; then a single operator (argmax) on the result, as the sample's ArgMaxD.

    python examples/acl_model.py [MODEL.dvm]      # default: the shipped digits CNN
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
import vm.acl as acl  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "vm" / "models"
model_path = sys.argv[1] if len(sys.argv) > 1 else str(MODELS / "digits.dvm")
ACL_MEM_MALLOC_HUGE_FIRST = 0


def check(ret, what):
    if ret != acl.ACL_SUCCESS:
        raise SystemExit(f"{what} failed with {ret}: {acl.get_recent_err_msg()}")


model_id, ret = acl.mdl.load_from_file(model_path)
check(ret, "load")
model_desc = acl.mdl.create_desc()
check(acl.mdl.get_desc(model_desc, model_id), "get_desc")

# 1. Input and output datasets: one buffer per input/output, sized from the description.
datasets = {}
for kind, count, size_of in (("input", acl.mdl.get_num_inputs, acl.mdl.get_input_size_by_index),
                             ("output", acl.mdl.get_num_outputs, acl.mdl.get_output_size_by_index)):
    dataset, buffers = acl.mdl.create_dataset(), []
    for i in range(count(model_desc)):
        buffer_size = size_of(model_desc, i)
        buffer, ret = acl.rt.malloc(buffer_size, ACL_MEM_MALLOC_HUGE_FIRST)
        check(ret, "malloc")
        data = acl.create_data_buffer(buffer, buffer_size)
        _, ret = acl.mdl.add_dataset_buffer(dataset, data)
        check(ret, "add_dataset_buffer")
        buffers.append({"buffer": buffer, "size": buffer_size})
    datasets[kind] = (dataset, buffers)

# 2. Copy the input in (host to "device": host memory here), execute.
dims, _ = acl.mdl.get_input_dims(model_desc, 0)
dtype = {acl.ACL_INT8: np.int8, acl.ACL_INT32: np.int32}[acl.mdl.get_input_data_type(model_desc, 0)]
name = acl.mdl.get_input_name_by_index(model_desc, 0)
if model_path.endswith("digits.dvm"):
    img = np.load(MODELS / "digits_inputs.npz")[name].astype(dtype)
else:
    img = np.zeros(dims["dims"], dtype)
src = acl.util.numpy_to_ptr(np.ascontiguousarray(img))
first = datasets["input"][1][0]
check(acl.rt.memcpy(first["buffer"], first["size"], src, first["size"],
                    acl.ACL_MEMCPY_HOST_TO_DEVICE), "memcpy")
check(acl.mdl.execute(model_id, datasets["input"][0], datasets["output"][0]), "execute")

# 3. The output bytes, then an argmax as a single operator.
out = datasets["output"][1][0]
out_dims, _ = acl.mdl.get_output_dims(model_desc, 0)
out_type = {acl.ACL_INT8: np.int8, acl.ACL_INT32: np.int32}[acl.mdl.get_output_data_type(model_desc, 0)]
scores = acl.util.ptr_to_numpy(out["buffer"], out_dims["dims"], out_type)
(labels,), ret = acl.op.execute_v("argmax", [scores], {"axis": 1})
check(ret, "argmax")
print(f"{acl.mdl.get_output_name_by_index(model_desc, 0)} {out_dims['dims']}: labels "
      f"{labels.tolist()}")

# 4. Destroy allocations.
for dataset, buffers in datasets.values():
    for item in buffers:
        check(acl.rt.free(item["buffer"]), "free")
    for i in range(acl.mdl.get_dataset_num_buffers(dataset)):
        check(acl.destroy_data_buffer(acl.mdl.get_dataset_buffer(dataset, i)), "destroy")
    check(acl.mdl.destroy_dataset(dataset), "destroy_dataset")
check(acl.mdl.destroy_desc(model_desc), "destroy_desc")
check(acl.mdl.unload(model_id), "unload")
