"""Argument checks for the public APIs: a wrong type or value from the caller is a TrapError
naming the argument, never a TypeError or AttributeError from deep inside."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .errors import EnvironmentFault, TrapError


def expect(value, kinds, what: str):
    """``value`` if it is an instance of ``kinds``."""
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _tuple(kinds)):
        names = " or ".join(k.__name__ for k in _tuple(kinds))
        raise TrapError(f"{what}: expected {names}, got {type(value).__name__}")
    return value


def expect_int(value, what: str, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool) in [lo, hi]."""
    expect(value, int, what)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise TrapError(f"{what}: {value} outside [{'-inf' if lo is None else lo}, "
                        f"{'inf' if hi is None else hi}]")
    return value


def expect_dims(value, what: str) -> tuple[int, ...]:
    """A shape: a sequence of ints >= 0."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TrapError(f"{what}: expected a sequence of ints, got {type(value).__name__}")
    dims = tuple(value)
    for d in dims:
        expect_int(d if not isinstance(d, np.integer) else int(d), what, lo=0)
    return tuple(int(d) for d in dims)


def expect_bytes(value, what: str) -> bytes:
    """Bytes from bytes, bytearray or a memoryview."""
    return bytes(expect(value, (bytes, bytearray, memoryview), what))


def expect_path(value, what: str) -> str:
    """A file system path (str or os.PathLike)."""
    return os.fspath(expect(value, (str, os.PathLike), what))


def integer_array(value: Any, what: str) -> np.ndarray:
    """``value`` as an integer numpy array (no copy when it already is one)."""
    try:
        array = np.asarray(value)
    except MemoryError:
        raise EnvironmentFault(f"{what}: out of memory reading it") from None
    except Exception as e:          # ragged sequences, objects whose __array__ raises
        raise TrapError(f"{what}: cannot be read as an array ({type(e).__name__})") from None
    if array.dtype.kind not in "iu":
        raise TrapError(f"{what}: integer data expected, got dtype {array.dtype}")
    return array


def integer_dtype(value, what: str) -> np.dtype:
    """A numpy integer dtype from anything numpy reads as one."""
    try:
        dt = np.dtype(value)
    except (TypeError, ValueError):
        raise TrapError(f"{what}: {value!r} is not a dtype") from None
    if dt.kind not in "iu":
        raise TrapError(f"{what}: an integer dtype expected, got {dt}")
    return dt


def _tuple(kinds) -> tuple:
    return kinds if isinstance(kinds, tuple) else (kinds,)
