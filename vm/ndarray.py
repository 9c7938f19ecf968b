"""CVM's ``cvm.ndarray`` on detvm: integer arrays and the params-blob codec.

    params = vm.ndarray.load_param_dict(blob)            # {name: NDArray}
    blob = vm.ndarray.save_param_dict({"w": vm.ndarray.array(w)})   # canonical bytes

Arrays hold int8 or int32 values in host memory (a context is a label, checked). ``empty``
promises nothing about its contents (as CVM); detvm fills it with the dtype's minimum so that a
read before a write is visible and still deterministic. Errors are :class:`vm.runtime.CVMError`.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .executors import Context
from .runtime import LOGIC, CVMError, check_context, cvm_errors

DTYPES = ("int8", "int32")


def _dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise CVMError(LOGIC, f"unknown dtype {dtype!r}") from None
    if dt.name not in DTYPES:
        raise CVMError(LOGIC, f"dtype {dt.name} is not supported (int8 or int32)")
    return dt


def _as_ints(source, dtype=None) -> np.ndarray:
    """``source`` as an int8/int32 array (int8 kept, other integers checked into int32)."""
    if isinstance(source, NDArray):
        a = source.asnumpy()
    else:
        try:
            a = np.asarray(source)
        except Exception as e:      # ragged sequences, objects whose __array__ raises
            raise CVMError(LOGIC, f"not an array ({type(e).__name__})") from None
    if a.dtype.kind not in "iu":
        raise CVMError(LOGIC, f"arrays hold integers, got dtype {a.dtype}")
    target = _dtype(dtype if dtype is not None else
                    ("int8" if a.dtype == np.int8 else "int32"))
    info = np.iinfo(target)
    if a.size and (int(a.min()) < info.min or int(a.max()) > info.max):
        raise CVMError(LOGIC, f"values do not fit {target.name}")
    return np.ascontiguousarray(a, dtype=target.newbyteorder("="))


class NDArray:
    """An integer array on a context, as CVM's ``cvm.ndarray.NDArray(handle, is_view)``: the
    handle is an int8/int32 numpy array (or another NDArray); ``is_view`` shares its memory
    (writes show through, nothing is copied), otherwise the values are copied."""

    def __init__(self, handle, is_view: bool = False, ctx: Context | None = None):
        if not isinstance(is_view, bool):
            raise CVMError(LOGIC, f"is_view must be a bool, got {is_view!r}")
        source = handle._data if isinstance(handle, NDArray) else handle
        if is_view:
            if not isinstance(source, np.ndarray) or source.dtype.name not in DTYPES \
                    or not source.flags.c_contiguous:
                raise CVMError(LOGIC, "a view needs a C-contiguous int8 or int32 numpy array")
            self._data = source
        else:
            self._data = _as_ints(source).copy()
        self._ctx = check_context(ctx if ctx is not None else getattr(handle, "ctx", None))
        self.is_view = is_view

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def dtype(self) -> str:
        return self._data.dtype.name

    @property
    def ndim(self) -> int:
        return self._data.ndim

    @property
    def ctx(self) -> Context:
        return self._ctx

    context = ctx

    def asnumpy(self) -> np.ndarray:
        """A numpy copy of the values."""
        return self._data.copy()

    def copyfrom(self, source_array) -> "NDArray":
        """Copy values of the same shape in (converted to this array's dtype)."""
        if not self._data.flags.writeable:
            raise CVMError(LOGIC, "copyfrom: this array views read-only memory")
        src = _as_ints(source_array, self._data.dtype)
        if src.shape != self._data.shape:
            raise CVMError(LOGIC, f"copyfrom: shape {src.shape} != {self._data.shape}")
        self._data[...] = src
        return self

    def same_as(self, other) -> bool:
        """Whether ``other`` is this very array object."""
        return self is other

    def prepare_bcast_shape(self, value, bcast_shape) -> "NDArray":
        """A new array of shape ``bcast_shape`` holding ``value`` (a number or array-like)
        broadcast to it, with this array's dtype and context."""
        shape = _shape(bcast_shape, "prepare_bcast_shape")
        try:
            data = np.broadcast_to(np.asarray(value), shape)
        except (TypeError, ValueError) as e:
            raise CVMError(LOGIC, f"prepare_bcast_shape: {e}") from None
        return NDArray(_as_ints(data, self._data.dtype), ctx=self._ctx)

    def __repr__(self) -> str:
        return f"<NDArray {list(self.shape)} {self.dtype} @{self._ctx}>\n{self._data}"


def array(arr, ctx: Context | None = None) -> NDArray:
    """An NDArray holding a copy of ``arr`` (int8 stays int8, other integers become int32)."""
    return NDArray(arr, ctx=check_context(ctx))


def empty(shape, dtype="int32", ctx: Context | None = None) -> NDArray:
    """An NDArray of ``shape`` whose contents are unspecified: write before reading. (detvm
    fills it with the dtype's minimum, never with stale memory.)"""
    dt, shape = _dtype(dtype), _shape(shape, "empty")
    return NDArray(np.full(shape, np.iinfo(dt).min, dtype=dt), is_view=True,
                   ctx=check_context(ctx))


MAX_SIZE = 1 << 30
"""The most values an array made here (``empty``, ``prepare_bcast_shape``) may hold."""


def _shape(shape, what: str) -> tuple[int, ...]:
    """A shape of ints >= 0 holding at most MAX_SIZE values, checked before allocating."""
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise CVMError(LOGIC, f"{what}: bad shape {shape!r}") from None
    if any(d < 0 for d in dims) or int(np.prod(dims, dtype=object)) > MAX_SIZE:
        raise CVMError(LOGIC, f"{what}: shape {list(dims)} is negative or too large")
    return dims


def save_param_dict(dict_data: Mapping[str, object]) -> bytes:
    """The canonical params blob of ``{name: NDArray or array}`` (the same dict, the same
    bytes; CVM's own writer leaks stale bytes after its first call)."""
    from compiler.cvm import save_params
    if not isinstance(dict_data, Mapping) or not all(isinstance(k, str) for k in dict_data):
        raise CVMError(LOGIC, "save_param_dict takes a dict of name -> array")
    with cvm_errors():
        return save_params({k: _as_ints(v) for k, v in dict_data.items()})


def load_param_dict(bytes_data: bytes) -> dict[str, NDArray]:
    """``{name: NDArray}`` of a params blob (strictly checked; a later duplicate name wins)."""
    from compiler.cvm import load_params
    with cvm_errors():
        return {name: NDArray(a) for name, a in load_params(bytes_data)}


__all__ = ["NDArray", "array", "empty", "save_param_dict", "load_param_dict"]
