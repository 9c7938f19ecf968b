"""Reading an audit's inputs in chunks: an .npz, a directory of NAME.npy (one per model input,
items along the first axis), or a directory of per-item .npy files (a single-input model).

Nothing is read whole: .npy files are memory-mapped, .npz members are streamed (compressed or
not), per-item files are read one by one. Every header is checked (integer dtype, C order, the
model's item shape, the same item count for every input) before a value is read, and a chunk is
bounded in bytes before it is allocated.
"""
from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from numpy.lib import format as npy

from vm.errors import EnvironmentFault, TrapError

MAX_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True)
class Layout:
    """How a model input's items lie in the data: ``item`` is the shape of one item in the
    file, ``feed`` the shape one item is given to the model with (a fixed input of leading dim
    1 may be stored without it); ``batch``: the input's first dim is a symbol (items are batch
    elements and a chunk runs as one batch)."""

    name: str
    item: tuple
    feed: tuple
    batch: bool


def layouts(model) -> list[Layout]:
    out = []
    for t in model.inputs:
        if t.symbol:
            out.append(Layout(t.name, tuple(t.shape[1:]), (1, *t.shape[1:]), True))
        else:
            out.append(Layout(t.name, tuple(t.shape), tuple(t.shape), False))
    return out


class Source:
    """A data set of ``count`` items for ``model``; :meth:`chunks` yields (start, {name:
    array of items}) in input order from item ``start``."""

    def __init__(self, path, model):
        self.path = Path(path)
        self.layouts = layouts(model)
        if self.path.is_dir():
            files = {p.stem: p for p in sorted(self.path.glob("*.npy"))}
            if all(lay.name in files for lay in self.layouts):
                self._reader = _Columns({lay.name: files[lay.name] for lay in self.layouts})
            elif len(self.layouts) == 1 and files:
                self._reader = _PerItem(sorted(files.values()))
            else:
                raise TrapError(f"--inputs {path}: a directory needs NAME.npy for every input "
                                f"({', '.join(lay.name for lay in self.layouts)}), or .npy "
                                "files of one item each for a single-input model")
        elif self.path.suffix == ".npz":
            self._reader = _Npz(self.path, [lay.name for lay in self.layouts])
        else:
            raise TrapError(f"--inputs {path}: expected an .npz file or a directory of .npy")
        self.count = self._check_headers()

    def names(self, lo: int, hi: int) -> list[str]:
        """Where items ``lo`` to ``hi - 1`` come from: ``DATA[k]``, or the item's file name."""
        if isinstance(self._reader, _PerItem):
            return [p.name for p in self._reader.files[lo:hi]]
        return [f"{self.path.name}[{k}]" for k in range(lo, hi)]

    def describe(self) -> dict:
        return {"inputs": str(self.path.name), "items": self.count,
                "layout": self._reader.kind}

    def _check_headers(self) -> int:
        counts = set()
        for lay in self.layouts:
            shape, dtype = self._reader.header(lay.name)
            what = f"input {lay.name!r} in {self.path.name}"
            if dtype.kind not in "iu":
                raise TrapError(f"{what}: dtype {dtype} is not an integer type")
            counts.add(self._count(lay, shape, what))
        if len(counts) != 1:
            raise TrapError(f"{self.path.name}: the inputs hold different numbers of items "
                            f"({', '.join(map(str, sorted(counts)))})")
        return counts.pop()

    def _count(self, lay: Layout, shape: tuple, what: str) -> int:
        if self._reader.kind == "per-item":
            ok = shape in (lay.item, lay.feed) or (lay.feed[0] == 1 and shape == lay.feed[1:])
            if not ok:
                raise TrapError(f"{what}: shape {shape} is not one item {lay.item}")
            return self._reader.items
        rest = tuple(shape[1:])
        if rest != lay.item and not (not lay.batch and lay.item[0] == 1
                                     and rest == lay.item[1:]):
            raise TrapError(f"{what}: items of shape {rest}, the model takes {lay.item}"
                            + ("" if lay.batch else " per item"))
        return int(shape[0]) if shape else 0

    def chunks(self, size: int, start: int = 0) -> Iterator[tuple[int, dict]]:
        """(first index, {input name: array of the chunk's items, each of feed shape}) for
        chunks of ``size`` items from ``start``."""
        width = sum(int(np.prod(lay.feed)) * 8 for lay in self.layouts)
        if size * width > MAX_CHUNK_BYTES:
            raise TrapError(f"--chunk {size}: {size * width} bytes per chunk exceed "
                            f"{MAX_CHUNK_BYTES}")
        for lo in range(start, self.count, size):
            hi = min(lo + size, self.count)
            arrays = {}
            for lay in self.layouts:
                a = np.asarray(self._reader.read(lay.name, lo, hi))
                arrays[lay.name] = a.reshape((hi - lo, *lay.feed[1:]) if lay.batch
                                             else (hi - lo, *lay.feed))
            yield lo, arrays


class _Columns:
    """A directory of NAME.npy, items along the first axis, memory-mapped."""

    kind = "columns"

    def __init__(self, files: dict):
        self.arrays = {}
        for name, path in files.items():
            try:
                self.arrays[name] = np.load(path, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise EnvironmentFault(f"cannot read {path}: {e}") from None

    def header(self, name):
        a = self.arrays[name]
        return tuple(a.shape), a.dtype

    def read(self, name, lo, hi):
        return self.arrays[name][lo:hi]


class _PerItem:
    """A directory of .npy files, one item each, in file-name order."""

    kind = "per-item"

    def __init__(self, files: list):
        self.files = files
        self.items = len(files)

    def header(self, name):
        shapes = {}
        for path in self.files:
            shape, _, dtype = _npy_header(path)
            shapes.setdefault((shape, dtype.str), path)
        if len(shapes) > 1:
            (a, pa), (b, pb) = list(shapes.items())[:2]
            raise TrapError(f"{pa.name} and {pb.name} differ in shape or dtype: {a} and {b}")
        (shape, dtype), = shapes
        return shape, np.dtype(dtype)

    def read(self, name, lo, hi):
        return np.stack([np.load(p, allow_pickle=False) for p in self.files[lo:hi]])


def _npy_header(path):
    try:
        with open(path, "rb") as f:
            return _read_header(f, str(path))
    except OSError as e:
        raise EnvironmentFault(f"cannot read {path}: {e.strerror or e}") from None


def _read_header(f, where: str):
    try:
        version = npy.read_magic(f)
        read = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran, dtype = read(f)                 # the header's size is capped
    except (ValueError, SyntaxError) as e:
        raise TrapError(f"{where}: not an .npy array: {e}") from None
    if fortran:
        raise TrapError(f"{where}: Fortran-ordered arrays are not read in chunks: save it in "
                        "C order (np.save of np.ascontiguousarray)")
    if dtype.hasobject:
        raise TrapError(f"{where}: object arrays are refused")
    return tuple(shape), fortran, dtype


class _Npz:
    """An .npz, each input's member streamed from its start (members are read forward only;
    a chunk before the current position reopens the member)."""

    kind = "npz"

    def __init__(self, path: Path, names: list):
        try:
            self.zip = zipfile.ZipFile(path)
        except (OSError, zipfile.BadZipFile) as e:
            raise EnvironmentFault(f"cannot read {path}: {e}") from None
        members = set(self.zip.namelist())
        missing = [n for n in names if f"{n}.npy" not in members]
        if missing:
            raise TrapError(f"{path.name}: no array {missing[0]!r} (it holds "
                            f"{', '.join(sorted(m[:-4] for m in members if m.endswith('.npy')))})")
        self.path, self.streams = path, {}

    def _open(self, name):
        f = self.zip.open(f"{name}.npy")
        shape, _, dtype = _read_header(f, f"{self.path.name}:{name}")
        self.streams[name] = [f, shape, dtype, 0]

    def header(self, name):
        if name not in self.streams:
            self._open(name)
        return self.streams[name][1], self.streams[name][2]

    def read(self, name, lo, hi):
        if name not in self.streams or self.streams[name][3] > lo:
            self._open(name)
        f, shape, dtype, at = self.streams[name]
        row = int(np.prod(shape[1:])) * dtype.itemsize
        _skip(f, (lo - at) * row)
        data = f.read((hi - lo) * row)
        if len(data) != (hi - lo) * row:
            raise EnvironmentFault(f"{self.path.name}:{name}: truncated at item {lo}")
        self.streams[name][3] = hi
        return np.frombuffer(data, dtype=dtype).reshape((hi - lo, *shape[1:]))


def _skip(f, nbytes: int) -> None:
    while nbytes > 0:
        got = len(f.read(min(nbytes, 1 << 20)))
        if not got:
            return
        nbytes -= got
