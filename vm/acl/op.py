"""``acl.op``: single operators. Any detvm op by name, validated and gas-metered as a
one-instruction program (vm/single.py), bit-exact with the same instruction in a model."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import ops

from ..checks import expect, expect_dims, expect_int, integer_array, integer_dtype
from ..errors import InvalidError
from ..model import Model
from ..single import op_model
from .memory import read_array, write_array
from .status import (ACL_ERROR_INVALID_PARAM, ACL_ERROR_MODEL_OUTPUT_NOT_MATCH,
                     ACL_ERROR_OP_ATTR_NOT_MATCH, ACL_ERROR_OP_INPUT_NOT_MATCH,
                     ACL_ERROR_OP_NOT_FOUND, ACL_FORMAT_ND, ACL_SUCCESS, DTYPES, fail, status)


@dataclass(frozen=True)
class TensorDesc:
    """aclTensorDesc: element type, dims, format of an op's input or output."""

    dtype: int
    dims: tuple[int, ...]
    format: int = ACL_FORMAT_ND

    @property
    def numpy_dtype(self) -> np.dtype:
        for dt, code in DTYPES.items():
            if code == self.dtype:
                return dt
        fail(ACL_ERROR_INVALID_PARAM, f"tensor desc type {self.dtype} is not ACL_INT8/ACL_INT32")


def create_tensor_desc(dtype: int, dims, fmt: int = ACL_FORMAT_ND) -> TensorDesc:
    return TensorDesc(expect_int(dtype, "tensor desc dtype"), expect_dims(dims, "tensor desc dims"),
                      expect_int(fmt, "tensor desc format"))


def destroy_tensor_desc(desc: TensorDesc) -> int:
    return ACL_SUCCESS


@status(paired=True)
def execute_v(op_type: str, inputs, attr: dict | None = None):
    """``(outputs, code)``: the op's output arrays for numpy ``inputs``."""
    inputs = [integer_array(a, f"input {k}") for k, a in enumerate(expect(inputs, (list, tuple),
                                                                           "execute_v inputs"))]
    model = _single(op_type, inputs, attr)
    out = model.run({f"x{k}": a for k, a in enumerate(inputs)})
    return [out[t.name] for t in model.outputs]


@status()
def execute_v2(op_type: str, input_desc, inputs, output_desc, outputs, attr=None, stream=None):
    """pyACL's form: inputs and outputs are data buffers described by tensor descs."""
    for seq, what in ((input_desc, "input descs"), (inputs, "inputs"),
                      (output_desc, "output descs"), (outputs, "outputs")):
        expect(seq, (list, tuple), f"execute_v2 {what}")
    if len(input_desc) != len(inputs) or len(output_desc) != len(outputs):
        fail(ACL_ERROR_OP_INPUT_NOT_MATCH, "execute_v2: descs and buffers differ in number")
    for d in (*input_desc, *output_desc):
        if not isinstance(d, TensorDesc):
            fail(ACL_ERROR_INVALID_PARAM, f"{d!r} is not a tensor desc (create_tensor_desc)")
    arrays = [read_array(buf, d.dims, d.numpy_dtype) for d, buf in zip(input_desc, inputs)]
    model = _single(op_type, arrays, attr)
    out = model.run({f"x{k}": a for k, a in enumerate(arrays)})
    for t, desc, buf in zip(model.outputs, output_desc, outputs):
        if desc.numpy_dtype != t.dtype or desc.dims != tuple(t.shape) or \
                buf.size < t.size * t.dtype.itemsize:
            fail(ACL_ERROR_MODEL_OUTPUT_NOT_MATCH, f"output desc {desc} does not match the "
                                                   f"op's output {list(t.shape)} {t.dtype}")
        write_array(buf, out[t.name])


@status(paired=True)
def cast(x, dtype):
    """``x`` in another integer storage type; a value that does not fit is an error."""
    target, array = integer_dtype(dtype, "cast dtype"), integer_array(x, "cast input")
    info = np.iinfo(target)
    if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
        fail(ACL_ERROR_INVALID_PARAM, f"cast: values outside {target.name}")
    return array.astype(target)


def _single(op_type, inputs, attr) -> Model:
    if not isinstance(op_type, str) or ops.get(op_type) is None:
        fail(ACL_ERROR_OP_NOT_FOUND, f"no op {op_type!r} (known: "
                                     f"{', '.join(o.name for o in ops.all_ops())})")
    if attr is not None and not isinstance(attr, dict):
        fail(ACL_ERROR_OP_ATTR_NOT_MATCH, f"attr must be a dict, got {type(attr).__name__}")
    try:
        return op_model(op_type, *inputs, **(attr or {}))
    except InvalidError as e:
        e.acl_code = ACL_ERROR_OP_ATTR_NOT_MATCH
        raise
