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
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from functools import wraps
from typing import Any

import numpy as np

import ops

from .errors import (DetvmError, EnvironmentFault, InternalError, InvalidError, MalformedError,
                     TrapError)
from .model import Model, load
from .single import op_model

ACL_SUCCESS = 0
ACL_ERROR_INVALID_PARAM = 100000
ACL_ERROR_INVALID_FILE = 100003
ACL_ERROR_INVALID_MODEL_ID = 100011
ACL_ERROR_DESERIALIZE_MODEL = 100012
ACL_ERROR_PARSE_MODEL = 100013
ACL_ERROR_MODEL_INPUT_NOT_MATCH = 100017
ACL_ERROR_MODEL_OUTPUT_NOT_MATCH = 100018
ACL_ERROR_OP_INPUT_NOT_MATCH = 100021
ACL_ERROR_OP_ATTR_NOT_MATCH = 100023
ACL_ERROR_OP_NOT_FOUND = 100024
ACL_ERROR_BAD_ALLOC = 200000
ACL_ERROR_INTERNAL_ERROR = 500000
ACL_MEM_MALLOC_HUGE_FIRST, ACL_MEM_MALLOC_HUGE_ONLY, ACL_MEM_MALLOC_NORMAL_ONLY = 0, 1, 2
ACL_MEMCPY_HOST_TO_HOST, ACL_MEMCPY_HOST_TO_DEVICE = 0, 1
ACL_MEMCPY_DEVICE_TO_HOST, ACL_MEMCPY_DEVICE_TO_DEVICE = 2, 3
ACL_INT8, ACL_INT32 = 2, 3
ACL_FORMAT_NCHW, ACL_FORMAT_ND = 0, 2
DTYPES = {np.dtype("<i1"): ACL_INT8, np.dtype("<i4"): ACL_INT32}
CODES = {MalformedError: ACL_ERROR_DESERIALIZE_MODEL, InvalidError: ACL_ERROR_PARSE_MODEL,
         TrapError: ACL_ERROR_INVALID_PARAM, EnvironmentFault: ACL_ERROR_BAD_ALLOC,
         InternalError: ACL_ERROR_INTERNAL_ERROR}

_state = threading.local()
_lock = threading.Lock()
_ids = itertools.count(1)
_models: dict[int, Model] = {}
_memory: dict[int, memoryview] = {}


def get_recent_err_msg() -> str:
    """The message of this thread's last failed call ("" after a success)."""
    error = getattr(_state, "error", None)
    return "" if error is None else str(error)


def get_recent_error() -> DetvmError | None:
    """The detvm error behind this thread's last failed call."""
    return getattr(_state, "error", None)


def _status(paired: bool = False):
    """Run the call; a detvm error becomes its ACL code (and this thread's recent error).
    ``paired`` calls return ``(value, code)`` (value None on failure), the others ``code``."""
    def wrap(fn):
        @wraps(fn)
        def call(*args, **kwargs):
            try:
                value = fn(*args, **kwargs)
            except DetvmError as e:
                _state.error = e
                status = getattr(e, "acl_code", None) or next(
                    c for cls, c in CODES.items() if isinstance(e, cls))
                return (None, status) if paired else status
            _state.error = None
            return (value, ACL_SUCCESS) if paired else ACL_SUCCESS
        return call
    return wrap


def _fail(code: int, message: str):
    """Raise a TrapError carrying ACL ``code``."""
    error = TrapError(message)
    error.acl_code = code
    raise error


# ---------------------------------------------------------------------------------------------
# Memory: handles to host buffers
# ---------------------------------------------------------------------------------------------

def _register(view: memoryview) -> int:
    with _lock:
        handle = next(_ids) << 4
        _memory[handle] = view
    return handle


def _view(ptr) -> memoryview:
    if isinstance(ptr, np.ndarray):
        if not ptr.flags.c_contiguous:
            _fail(ACL_ERROR_INVALID_PARAM, "a buffer array must be C-contiguous")
        return memoryview(ptr).cast("B")
    if isinstance(ptr, (bytearray, memoryview)):
        return memoryview(ptr).cast("B")
    view = _memory.get(ptr) if isinstance(ptr, int) else None
    if view is None:
        _fail(ACL_ERROR_INVALID_PARAM, f"{ptr!r} is not a buffer (acl.rt.malloc, "
                                       "acl.util.numpy_to_ptr, a numpy array or a bytearray)")
    return view


class rt:
    """Runtime memory calls (host memory on every device)."""

    @staticmethod
    @_status(paired=True)
    def malloc(size, policy=ACL_MEM_MALLOC_HUGE_FIRST):
        if not isinstance(size, int) or isinstance(size, bool) or not 0 < size <= 1 << 34:
            _fail(ACL_ERROR_INVALID_PARAM, f"malloc: size {size!r} out of range")
        return _register(memoryview(bytearray(size)))

    malloc_host = malloc

    @staticmethod
    @_status()
    def free(ptr) -> int:
        with _lock:
            if _memory.pop(ptr, None) is None:
                _fail(ACL_ERROR_INVALID_PARAM, f"free: {ptr!r} is not an allocated buffer")

    free_host = free

    @staticmethod
    @_status()
    def memcpy(dst, dest_max, src, count, kind=ACL_MEMCPY_HOST_TO_HOST) -> int:
        d, s = _view(dst), _view(src)
        if not 0 <= count <= min(dest_max, len(d), len(s)):
            _fail(ACL_ERROR_INVALID_PARAM, f"memcpy: count {count} exceeds a buffer "
                                           f"(dst {min(dest_max, len(d))}, src {len(s)} bytes)")
        d[:count] = s[:count]


class util:
    """Pointers to and from numpy arrays and bytes (shared memory, no copy)."""

    @staticmethod
    def numpy_to_ptr(array: np.ndarray) -> int:
        return _register(_view(array))

    bytes_to_ptr = staticmethod(lambda data: _register(memoryview(bytearray(data))))

    @staticmethod
    def ptr_to_bytes(ptr, size: int) -> bytes:
        return bytes(_view(ptr)[:size])

    @staticmethod
    def ptr_to_numpy(ptr, shape, dtype) -> np.ndarray:
        dt = np.dtype(dtype)
        count = int(np.prod(shape))
        return np.frombuffer(_view(ptr), dtype=dt, count=count).reshape(shape)


@dataclass
class DataBuffer:
    """A buffer of ``size`` bytes (aclDataBuffer)."""

    ptr: Any
    size: int


@dataclass
class Dataset:
    """An ordered list of data buffers (aclmdlDataset)."""

    buffers: list[DataBuffer] = field(default_factory=list)


def create_data_buffer(ptr, size: int) -> DataBuffer:
    if not isinstance(size, int) or size < 0 or size > len(_view(ptr)):
        raise TrapError(f"create_data_buffer: size {size!r} exceeds the buffer")
    return DataBuffer(ptr, size)


def destroy_data_buffer(data: DataBuffer) -> int:
    return ACL_SUCCESS if isinstance(data, DataBuffer) else ACL_ERROR_INVALID_PARAM


def get_data_buffer_addr(data: DataBuffer):
    return data.ptr


def get_data_buffer_size_v2(data: DataBuffer) -> int:
    return data.size


get_data_buffer_size = get_data_buffer_size_v2


@dataclass
class ModelDesc:
    """What ``get_desc`` fills in (aclmdlDesc): the model's inputs and outputs."""

    model: Model | None = None


class mdl:
    """Model calls: load, describe, datasets, execute."""

    @staticmethod
    @_status(paired=True)
    def load_from_file(path):
        try:
            return _add(load(path))
        except EnvironmentFault as e:       # a missing or unreadable file
            e.acl_code = ACL_ERROR_INVALID_FILE
            raise

    @staticmethod
    @_status(paired=True)
    def load_from_mem(data, size=None):
        return _add(load(bytes(data if size is None else memoryview(data)[:size])))

    @staticmethod
    @_status()
    def unload(model_id) -> int:
        with _lock:
            model = _models.pop(model_id, None)
        if model is None:
            _fail(ACL_ERROR_INVALID_MODEL_ID, f"unload: no model {model_id!r}")
        model.close()

    create_desc = staticmethod(ModelDesc)
    destroy_desc = staticmethod(lambda desc: ACL_SUCCESS)

    @staticmethod
    @_status()
    def get_desc(desc: ModelDesc, model_id) -> int:
        desc.model = _model(model_id)

    get_num_inputs = staticmethod(lambda desc: len(_desc(desc).inputs))
    get_num_outputs = staticmethod(lambda desc: len(_desc(desc).outputs))
    get_input_size_by_index = staticmethod(lambda desc, i: _nbytes(_io(desc, i, True)))
    get_output_size_by_index = staticmethod(lambda desc, i: _nbytes(_io(desc, i, False)))
    get_input_name_by_index = staticmethod(lambda desc, i: _io(desc, i, True).name)
    get_output_name_by_index = staticmethod(lambda desc, i: _io(desc, i, False).name)
    get_input_data_type = staticmethod(lambda desc, i: DTYPES[_io(desc, i, True).dtype])
    get_output_data_type = staticmethod(lambda desc, i: DTYPES[_io(desc, i, False).dtype])
    get_input_format = staticmethod(lambda desc, i: _format(_io(desc, i, True)))
    get_output_format = staticmethod(lambda desc, i: _format(_io(desc, i, False)))

    @staticmethod
    def get_input_dims(desc, index) -> tuple[dict, int]:
        return _dims(_io(desc, index, True)), ACL_SUCCESS

    @staticmethod
    def get_output_dims(desc, index) -> tuple[dict, int]:
        return _dims(_io(desc, index, False)), ACL_SUCCESS

    @staticmethod
    def get_input_index_by_name(desc, name) -> tuple[int, int]:
        return _index(_desc(desc).inputs, name)

    @staticmethod
    def get_output_index_by_name(desc, name) -> tuple[int, int]:
        return _index(_desc(desc).outputs, name)

    create_dataset = staticmethod(Dataset)
    destroy_dataset = staticmethod(lambda ds: ACL_SUCCESS)

    @staticmethod
    def add_dataset_buffer(dataset: Dataset, data: DataBuffer) -> tuple[Dataset, int]:
        if not isinstance(dataset, Dataset) or not isinstance(data, DataBuffer):
            return None, ACL_ERROR_INVALID_PARAM
        dataset.buffers.append(data)
        return dataset, ACL_SUCCESS

    get_dataset_num_buffers = staticmethod(lambda ds: len(ds.buffers))
    get_dataset_buffer = staticmethod(lambda ds, i: ds.buffers[i] if 0 <= i < len(ds.buffers)
                                      else None)

    @staticmethod
    @_status()
    def execute(model_id, inputs: Dataset, outputs: Dataset) -> int:
        """Run on the input buffers' bytes; write the outputs into the output buffers."""
        model = _model(model_id)
        feeds = {t.name: _read(buf, t) for t, buf in _pairs(model.inputs, inputs, True)}
        result = model.run(feeds)
        for t, buf in _pairs(model.outputs, outputs, False):
            _view(buf.ptr)[:_nbytes(t)] = np.ascontiguousarray(
                result[t.name], dtype=t.dtype).view(np.uint8).reshape(-1)


def _add(model: Model) -> int:
    with _lock:
        model_id = next(_ids)
        _models[model_id] = model
    return model_id


def _model(model_id) -> Model:
    model = _models.get(model_id) if isinstance(model_id, int) else None
    if model is None:
        _fail(ACL_ERROR_INVALID_MODEL_ID, f"no loaded model with id {model_id!r}")
    return model


def _desc(desc) -> Model:
    if not isinstance(desc, ModelDesc) or desc.model is None:
        raise TrapError("the model description is empty: call acl.mdl.get_desc first")
    return desc.model


def _io(desc, index, inputs: bool):
    items = _desc(desc).inputs if inputs else _desc(desc).outputs
    if not isinstance(index, int) or not 0 <= index < len(items):
        raise TrapError(f"{'input' if inputs else 'output'} index {index!r} out of range "
                        f"({len(items)})")
    return items[index]


def _nbytes(t) -> int:
    return t.size * t.dtype.itemsize


def _format(t) -> int:
    return ACL_FORMAT_NCHW if len(t.shape) == 4 else ACL_FORMAT_ND


def _dims(t) -> dict:
    return {"name": t.name, "dimCount": len(t.shape), "dims": list(t.shape)}


def _index(items, name) -> tuple[int, int]:
    for k, t in enumerate(items):
        if t.name == name:
            return k, ACL_SUCCESS
    return -1, ACL_ERROR_INVALID_PARAM


def _pairs(infos, dataset: Dataset, inputs: bool):
    code = ACL_ERROR_MODEL_INPUT_NOT_MATCH if inputs else ACL_ERROR_MODEL_OUTPUT_NOT_MATCH
    if not isinstance(dataset, Dataset) or len(dataset.buffers) != len(infos):
        _fail(code, f"the {'input' if inputs else 'output'} dataset has "
                    f"{len(getattr(dataset, 'buffers', []))} buffers, the model "
                    f"{len(infos)}")
    for t, buf in zip(infos, dataset.buffers):
        if buf.size < _nbytes(t):
            _fail(code, f"buffer for {t.name!r} holds {buf.size} bytes, needs {_nbytes(t)}")
        yield t, buf


def _read(buf: DataBuffer, t) -> np.ndarray:
    raw = np.frombuffer(_view(buf.ptr)[:_nbytes(t)], dtype=t.dtype)
    return raw.reshape(t.shape)


# ---------------------------------------------------------------------------------------------
# Single ops
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorDesc:
    """aclTensorDesc: element type, dims, format of an op's input or output."""

    dtype: int
    dims: tuple[int, ...]
    format: int = ACL_FORMAT_ND


def create_tensor_desc(dtype: int, dims, fmt: int = ACL_FORMAT_ND) -> TensorDesc:
    return TensorDesc(dtype, tuple(int(d) for d in dims), fmt)


def destroy_tensor_desc(desc: TensorDesc) -> int:
    return ACL_SUCCESS


class op:
    """Single-operator execution: any detvm op, validated and gas-metered like a
    one-instruction program (vm/single.py)."""

    @staticmethod
    @_status(paired=True)
    def execute_v(op_type: str, inputs, attr: dict | None = None):
        """``(outputs, status)``: the op's output arrays for numpy ``inputs``."""
        model = _single(op_type, inputs, attr)
        out = model.run({f"x{k}": a for k, a in enumerate(inputs)})
        return [out[t.name] for t in model.outputs]

    @staticmethod
    @_status()
    def execute_v2(op_type: str, input_desc, inputs, output_desc, outputs, attr=None,
                   stream=None) -> int:
        """pyACL's form: inputs and outputs are data buffers described by tensor descs."""
        arrays = [_read(buf, _Desc(d)) for d, buf in zip(input_desc, inputs)]
        if len(arrays) != len(inputs) or len(output_desc) != len(outputs):
            _fail(ACL_ERROR_INVALID_PARAM, "execute_v2: descs and buffers differ in number")
        model = _single(op_type, arrays, attr)
        out = model.run({f"x{k}": a for k, a in enumerate(arrays)})
        for t, desc, buf in zip(model.outputs, output_desc, outputs):
            if _Desc(desc).dtype != t.dtype or tuple(desc.dims) != tuple(t.shape):
                _fail(ACL_ERROR_MODEL_OUTPUT_NOT_MATCH, f"output desc {desc} does not match "
                                                        f"the op's output {list(t.shape)} {t.dtype}")
            _view(buf.ptr)[:_nbytes(t)] = np.ascontiguousarray(out[t.name]).view(np.uint8).reshape(-1)

    @staticmethod
    @_status(paired=True)
    def cast(x, dtype):
        """``x`` in another integer storage type; a value that does not fit is an error."""
        target = np.dtype(dtype)
        array = np.asarray(x)
        if array.dtype.kind not in "iu" or target.kind not in "iu":
            _fail(ACL_ERROR_INVALID_PARAM, f"cast: integer types only ({array.dtype} -> {target})")
        info = np.iinfo(target)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            _fail(ACL_ERROR_INVALID_PARAM, f"cast: values outside {target.name}")
        return array.astype(target)


def _single(op_type, inputs, attr) -> Model:
    if not isinstance(op_type, str) or ops.get(op_type) is None:
        _fail(ACL_ERROR_OP_NOT_FOUND, f"no op {op_type!r} (known: "
                                      f"{', '.join(o.name for o in ops.all_ops())})")
    if attr is not None and not isinstance(attr, dict):
        _fail(ACL_ERROR_OP_ATTR_NOT_MATCH, f"attr must be a dict, got {type(attr).__name__}")
    try:
        return op_model(op_type, *inputs, **(attr or {}))
    except InvalidError as e:
        e.acl_code = ACL_ERROR_OP_ATTR_NOT_MATCH
        raise


class _Desc:
    """A TensorDesc seen as (shape, storage dtype, size) for reading a buffer."""

    def __init__(self, desc: TensorDesc):
        if not isinstance(desc, TensorDesc) or desc.dtype not in DTYPES.values():
            _fail(ACL_ERROR_INVALID_PARAM, f"{desc!r} is not an int8/int32 tensor desc")
        self.shape = desc.dims
        self.dtype = next(d for d, c in DTYPES.items() if c == desc.dtype)
        self.size = int(np.prod(desc.dims))
