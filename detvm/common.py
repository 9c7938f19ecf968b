"""What every command shares: loading a model from a path, reading and writing files, reading
inputs, digesting outputs. Files that cannot be read or written are environment faults (exit 3).
"""
from __future__ import annotations

import argparse
import hashlib
import re
from pathlib import Path

import numpy as np

import vm
from vm.errors import EnvironmentFault, TrapError

DEMO_DIR = Path(vm.__file__).parent / "models"
"""The shipped models (vm's package data): the digits CNN and the lines model."""


def load_model(path: str, ctx="cpu", compat: str | None = None, backend: str = "auto",
               limits: vm.Limits | None = None):
    """A model from a .dvm/.dvmt file or a CVM model directory (symbol, params); ``ctx`` a
    device type or a vm.Context; ``backend``: the CPU's (vm.cpu), for a device type;
    ``limits``: the load's ceilings (default vm.Limits())."""
    from vm import Context, Model, load
    if not isinstance(ctx, Context):
        ctx = Context(ctx, 0, backend if ctx == "cpu" else "auto")
    if Path(path).is_dir():
        return Model(import_cvm(Path(path) / "symbol", Path(path) / "params", compat), ctx,
                     limits)
    return load(path, ctx, limits)


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def add_memory_ceiling(p) -> None:
    """The ``--max-memory SIZE`` option: the peak-memory ceiling of a load (vm.Limits)."""
    default = vm.Limits().max_memory >> 30
    p.add_argument("--max-memory", type=size_arg, default=None, metavar="SIZE",
                   help=f"the peak-memory ceiling a model must fit, in bytes or with a suffix "
                        f"K, M, G, T (powers of 1024; default {default}G)")


def size_arg(text: str) -> int:
    """``4G``, ``512M``, ``2147483648`` -> bytes; a usage error otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*(?:([KMGT])(?:i?B)?|B)?\s*", text, re.IGNORECASE)
    if not match or int(match[1]) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size: a positive number of bytes, "
                                         "or one with a suffix K, M, G or T")
    return int(match[1]) * SIZE_UNITS[(match[2] or "").upper()]


def limits_of(args) -> vm.Limits | None:
    """The vm.Limits the command's options ask for (None: the defaults)."""
    size = getattr(args, "max_memory", None)
    return None if size is None else vm.Limits(max_memory=size)


def read_file(path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e.strerror or e}") from None


def import_cvm(graph: Path, params: Path, compat: str | None):
    """The program of a CVM model (graph JSON + params files)."""
    from compiler.cvm import import_cvm
    name = graph.parent.resolve().name if graph.name == "symbol" else graph.stem
    return import_cvm(read_file(graph), read_file(params), compat, name=name or "cvm")


def write_file(path, data: bytes | str) -> None:
    try:
        Path(path).write_bytes(data.encode() if isinstance(data, str) else data)
    except OSError as e:
        raise EnvironmentFault(f"cannot write {path}: {e.strerror or e}") from None


def read_inputs(specs: list[str], model) -> dict:
    """``--input NAME=FILE.npy`` / ``FILE.npz`` specs as a feed dict."""
    feeds = {}
    for spec in specs:
        name, _, path = spec.rpartition("=")
        if not name:
            if len(model.inputs) != 1 and not path.endswith(".npz"):
                raise TrapError(f"--input {spec}: the model has several inputs; write NAME=FILE")
            name = model.inputs[0].name
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise EnvironmentFault(f"cannot read input {path}: {e}") from None
        if isinstance(loaded, np.lib.npyio.NpzFile):
            feeds.update({k: loaded[k] for k in loaded.files})
        else:
            feeds[name] = loaded
    return feeds


def output_digest(outputs: dict) -> str:
    """SHA-256 over the outputs' bytes (storage dtype, little endian, in output order)."""
    h = hashlib.sha256()
    for a in outputs.values():
        h.update(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes())
    return h.hexdigest()
