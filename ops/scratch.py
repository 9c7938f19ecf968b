"""What prepared kernels run with: reusable scratch memory and worker lanes.

A run activates a :class:`Workspace` (and optionally :class:`Lanes`) for its thread with
:func:`using`. Kernels take temporaries with :func:`scratch` (no page faults after the first
run) and spread independent blocks of work with :func:`parallel`: each lane has its own
scratch, blocks write disjoint parts of the output, and every block computes exact integers,
so neither the number of lanes nor the blocking can change a byte.
"""
from __future__ import annotations

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_active = threading.local()


KEEP_BYTES = 32 << 20
"""Bytes of scratch a workspace keeps between steps and runs (a larger request is served
fresh and freed after its step): the peak memory counts it once per lane (vm/memory.py)."""


class Workspace:
    """Scratch buffers reused across runs: one growing byte buffer per role (a kernel's
    temporaries; steps run one after another, so roles are shared), and one sub-workspace per
    extra lane. At most KEEP_BYTES stay between steps: the largest other buffers are let go
    to make room (a kernel still holding one keeps it alive until its step ends)."""

    def __init__(self):
        self.buffers: dict[str, np.ndarray] = {}
        self.lanes: dict[int, Workspace] = {}

    def get(self, role: str, shape, dtype) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = math.prod(shape) * dtype.itemsize      # np.prod of a tuple costs ~3 us
        buf = self.buffers.get(role)
        if buf is None or buf.nbytes < n:
            buf = np.empty(max(n, 64), np.uint8)
            self.buffers.pop(role, None)
            if buf.nbytes <= KEEP_BYTES:
                self._make_room(buf.nbytes)
                self.buffers[role] = buf
        return buf[:n].view(dtype).reshape(shape)

    def _make_room(self, n: int) -> None:
        """Let go of the largest kept buffers until ``n`` more bytes fit in KEEP_BYTES."""
        while self.buffers and sum(b.nbytes for b in self.buffers.values()) + n > KEEP_BYTES:
            del self.buffers[max(self.buffers, key=lambda r: self.buffers[r].nbytes)]

    def lane(self, k: int) -> "Workspace":
        return self if k == 0 else self.lanes.setdefault(k, Workspace())

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.buffers.values()) + \
            sum(w.nbytes for w in self.lanes.values())


class Lanes:
    """``n`` lanes of work: the calling thread and n - 1 pool threads. BLAS should run one
    thread per lane meanwhile (vm/interp.py limits it)."""

    def __init__(self, n: int):
        self.n = n
        self.pool = ThreadPoolExecutor(n - 1, thread_name_prefix="detvm-lane") if n > 1 else None

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False)


class using:
    """``with using(ws, lanes):`` makes ``ws`` (and ``lanes``) what kernels run by this thread
    use inside the block (a class, not a generator: it is entered on every run)."""

    __slots__ = ("ctx", "prev")

    def __init__(self, ws: Workspace | None, lanes: Lanes | None = None):
        self.ctx = (ws, lanes)

    def __enter__(self) -> Workspace | None:
        self.prev = getattr(_active, "ctx", None)
        _active.ctx = self.ctx
        return self.ctx[0]

    def __exit__(self, *exc) -> None:
        _active.ctx = self.prev


def scratch(role: str, shape, dtype) -> np.ndarray:
    """An uninitialised array for temporaries: from the active Workspace, else fresh."""
    ctx = getattr(_active, "ctx", None)
    if ctx is None or ctx[0] is None:
        return np.empty(shape, dtype)
    return ctx[0].get(role, shape, dtype)


MIN_WORK = 1 << 22
"""Multiply-adds below which a kernel is not worth spreading (a lane hand-off costs ~10 us)."""


def lane_count(work: int | None = None) -> int:
    """How many lanes :func:`parallel` spreads over in this thread (1 without lanes, or for
    ``work`` below MIN_WORK)."""
    ctx = getattr(_active, "ctx", None)
    if ctx is None or ctx[1] is None or (work is not None and work < MIN_WORK):
        return 1
    return ctx[1].n


def parallel(fn, items: list) -> None:
    """fn(item) for every item: item k on lane k mod n, each lane with its own scratch.
    Blocks must write disjoint outputs. Inside a lane, nested calls run sequentially."""
    ctx = getattr(_active, "ctx", None)
    lanes = ctx[1] if ctx is not None else None
    n = min(lanes.n, len(items)) if lanes is not None else 1
    if n <= 1:
        for item in items:
            fn(item)
        return
    ws = ctx[0] or Workspace()

    def lane(k: int) -> None:
        with using(ws.lane(k)):
            for item in items[k::n]:
                fn(item)
    futures = [lanes.pool.submit(lane, k) for k in range(1, n)]
    try:
        lane(0)
    finally:
        for f in futures:
            f.result()


def spread(fn, shape, work_per_element: int = 1) -> None:
    """fn(index) for blocks of the two leading axes of ``shape`` (images, then channels),
    one block per lane when the work is worth it; ``index`` is a tuple of slices."""
    n, c = shape[0], shape[1] if len(shape) > 1 else 1
    lanes = lane_count(int(np.prod(shape)) * work_per_element)
    if lanes == 1 or len(shape) < 2:
        fn((slice(None),) * min(2, len(shape)))
    elif n >= lanes:
        step = -(-n // lanes)
        parallel(lambda k: fn((slice(k, k + step), slice(None))), list(range(0, n, step)))
    else:
        step = -(-c // lanes)
        parallel(lambda k: fn((slice(None), slice(k, k + step))), list(range(0, c, step)))
