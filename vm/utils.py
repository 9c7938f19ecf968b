"""CVM's ``cvm.utils`` file helpers: a model's two files as the bytes ``CVMAPILoadModel``
takes, and a saved input array."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .checks import expect_path
from .errors import EnvironmentFault, TrapError


def load_model(sym_path, prm_path) -> tuple[bytes, bytes]:
    """``(json_bytes, param_bytes)`` of a CVM model: its graph JSON and params files."""
    return _read(sym_path), _read(prm_path)


def load_np_data(data_path) -> bytes:
    """The bytes of an input saved with numpy (``.npy``), as ``CVMAPIInference`` takes them
    (int8 or int32, little endian)."""
    try:
        array = np.load(expect_path(data_path, "data_path"), allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EnvironmentFault(f"cannot read {data_path}: {e}") from None
    if not isinstance(array, np.ndarray):
        array.close()                                   # an .npz archive (NpzFile)
        raise TrapError(f"{data_path}: an int8 or int32 array expected, got an .npz archive")
    if array.dtype.name not in ("int8", "int32"):       # bytes the inference would misread
        raise TrapError(f"{data_path}: an int8 or int32 array expected (the input's storage), "
                        f"got {array.dtype.name}")
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


def _read(path) -> bytes:
    try:
        return Path(expect_path(path, "path")).read_bytes()
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e.strerror or e}") from None
