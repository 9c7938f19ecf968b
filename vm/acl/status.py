"""pyACL's status codes and constants, and how detvm's errors become them: every call returns
a code (``ACL_SUCCESS`` = 0) and keeps the error of this thread's last failed call."""
from __future__ import annotations

import threading
from functools import wraps

import numpy as np

from ..errors import (DetvmError, EnvironmentFault, InternalError, InvalidError, MalformedError,
                      TrapError)

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
"""Storage dtype -> ACL data type."""
CODES = {MalformedError: ACL_ERROR_DESERIALIZE_MODEL, InvalidError: ACL_ERROR_PARSE_MODEL,
         TrapError: ACL_ERROR_INVALID_PARAM, EnvironmentFault: ACL_ERROR_BAD_ALLOC,
         InternalError: ACL_ERROR_INTERNAL_ERROR}
"""The code of a detvm error class, unless the failing call named a more precise one."""

_state = threading.local()


def get_recent_err_msg() -> str:
    """The message of this thread's last failed call ("" after a success)."""
    error = getattr(_state, "error", None)
    return "" if error is None else str(error)


def get_recent_error() -> DetvmError | None:
    """The detvm error behind this thread's last failed call."""
    return getattr(_state, "error", None)


def status(paired: bool = False):
    """Run the call; a detvm error becomes its ACL code (and this thread's recent error).
    ``paired`` calls return ``(value, code)`` (value None on failure), the others ``code``."""
    def wrap(fn):
        @wraps(fn)
        def call(*args, **kwargs):
            try:
                value = fn(*args, **kwargs)
            except DetvmError as e:
                _state.error = e
                code = getattr(e, "acl_code", None) or next(
                    c for cls, c in CODES.items() if isinstance(e, cls))
                return (None, code) if paired else code
            _state.error = None
            return (value, ACL_SUCCESS) if paired else ACL_SUCCESS
        return call
    return wrap


def fail(code: int, message: str):
    """Raise a TrapError carrying ACL ``code``."""
    error = TrapError(message)
    error.acl_code = code
    raise error


__all__ = [k for k in list(globals()) if k.startswith("ACL_")]
