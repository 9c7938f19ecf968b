"""Huawei pyACL's model API (``acl.mdl``, ``acl.rt``, ``acl.util``, ``acl.op``) on detvm.

    import vm.acl as acl
    model_id, ret = acl.mdl.load_from_file("model.dvm")
    desc = acl.mdl.create_desc(); ret = acl.mdl.get_desc(desc, model_id)
    size = acl.mdl.get_input_size_by_index(desc, 0)
    buf, ret = acl.rt.malloc(size, acl.ACL_MEM_MALLOC_HUGE_FIRST)
    data = acl.create_data_buffer(buf, size)
    ds = acl.mdl.create_dataset(); _, ret = acl.mdl.add_dataset_buffer(ds, data)
    ret = acl.mdl.execute(model_id, ds, out_ds)       # writes into the caller's buffers

As in pyACL, calls return status codes (``ACL_SUCCESS`` = 0) instead of raising, and
``get_recent_err_msg()`` says what failed; underneath are detvm's error classes
(``get_recent_error()``). Memory is host memory: ``acl.rt.malloc`` and
``acl.util.numpy_to_ptr`` give integer handles ("pointers") to buffers, and a data buffer may
also wrap a numpy array or bytearray directly. Buffers hold each tensor's storage bytes (int8 or
int32, little endian). Single ops: ``acl.op.execute_v2`` / ``acl.op.execute_v`` (vm/single.py).

Modules as in pyACL: ``mdl`` (models, datasets, execution), ``rt`` (memory), ``util``
(pointers), ``op`` (single operators); status codes and data buffers at the top.
"""
from . import mdl, op, rt, util
from .memory import (DataBuffer, create_data_buffer, destroy_data_buffer, get_data_buffer_addr,
                     get_data_buffer_size, get_data_buffer_size_v2)
from .op import TensorDesc, create_tensor_desc, destroy_tensor_desc
from .status import *  # noqa: F401,F403  (ACL_* codes and constants)
from .status import get_recent_err_msg, get_recent_error

__all__ = ["mdl", "op", "rt", "util", "DataBuffer", "create_data_buffer", "destroy_data_buffer",
           "get_data_buffer_addr", "get_data_buffer_size", "get_data_buffer_size_v2",
           "TensorDesc", "create_tensor_desc", "destroy_tensor_desc", "get_recent_err_msg",
           "get_recent_error"]
