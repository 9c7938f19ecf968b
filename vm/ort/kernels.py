"""The kernels of the steps onnxruntime runs: a region's session, and a depthwise
convolution's sessions cut by channels over the plan's lanes."""
from __future__ import annotations

import numpy as np

from ops.scratch import parallel

from ..validate import SMALL_SCAN, below_power_of_two


class RegionKernel:
    """Runs one region's session: detvm values in, detvm values out (their held dtypes).
    ``constants``: the arrays its sessions read as external initializers, kept alive: one
    {name: array} per session (two graphs may use one name for different arrays).
    ``guarded``: (positions, session, its output names) of a variant built for the inputs at
    those positions holding bytes (values in [0, 255]), run when the values at hand are bytes:
    both compute the same bytes there; it only saves work (a program input declared wider than
    the bytes it gets). Both sessions' outputs are the exported tensors in order.
    ``flips``: the input positions the session reads as int8, values in [0, 255] as value -
    128 (their low bytes XOR 0x80), made here: a numpy pass far cheaper than onnxruntime's
    BitwiseXor and Cast; the guarded variant has its own (``guarded_flips``)."""

    fresh_results = True
    """Each call returns new arrays (onnxruntime's), shared with nothing (vm/interp.py)."""

    def __init__(self, session, inputs: list[str], constants: list[dict], flips=()):
        self.session, self.inputs, self.constants = session, inputs, constants
        self.flips, self.guarded_flips = tuple(flips), ()
        self.names = [o.name for o in session.get_outputs()]
        self._run = binding_run(session)
        self.guarded = None

    def guard(self, positions: list[int], session, constants, flips=()) -> None:
        """Run ``session`` when the inputs at ``positions`` hold bytes (``constants``: its
        external initializers; ``flips``: the positions it reads flipped)."""
        self.guarded = (positions, binding_run(session), [o.name for o in session.get_outputs()])
        self.guarded_flips = tuple(flips)
        self.constants = [*self.constants, constants]

    def __call__(self, xp, *arrays):
        return self.call(arrays)

    @property
    def byte_positions(self) -> tuple[int, ...]:
        """The input positions whose values, all bytes, select the guarded variant."""
        return tuple(self.guarded[0]) if self.guarded is not None else ()

    def call(self, arrays, narrow: bool | None = None):
        """The session on ``arrays`` (in input order): the guarded variant when the inputs at
        :attr:`byte_positions` hold bytes, which ``narrow`` says when the caller knows it
        already (None: tested here)."""
        if narrow is None:
            narrow = self.guarded is not None and self._bytes_at(arrays)
        run, names = (self.guarded[1], self.guarded[2]) if narrow else (self._run, self.names)
        flips = self.guarded_flips if narrow else self.flips
        feeds = {name: flipped(a) if k in flips else a if a.flags.c_contiguous else
                 np.ascontiguousarray(a) for k, (name, a) in enumerate(zip(self.inputs, arrays))}
        results = run(names, feeds, None)
        return results[0] if len(results) == 1 else tuple(results)

    def _bytes_at(self, arrays) -> bool:
        for k in self.guarded[0]:
            if not bytes_only(arrays[k]):
                return False
        return True


def flipped(array: np.ndarray) -> np.ndarray:
    """The integers of ``array``, all in [0, 255], minus 128 as int8 in C order: their low
    byte XOR 0x80."""
    out = np.empty(array.shape, np.int8)
    np.bitwise_xor(array, np.uint8(0x80), out=out.view(np.uint8), casting="unsafe")
    return out


def binding_run(session):
    """``session.run``, as onnxruntime's compiled binding where its Python wrapper exposes it
    (``_sess``): the wrapper only checks the feed's names (ours are the session's own) and
    fills in default output names (we pass them), ~1.8 us a call (measured on the digits
    CNN's session: 18.3 -> 16.5 us). Called as ``run(output names, feeds, None)``."""
    binding = getattr(session, "_sess", None)
    return binding.run if callable(getattr(binding, "run", None)) else session.run


def bytes_only(array: np.ndarray) -> bool:
    """Whether every value of the integer ``array`` is in [0, 255]: none for a byte dtype;
    up to SMALL_SCAN values, their bytes as one Python integer masked to all but each value's
    low byte (vm/validate.py below_power_of_two: a numpy reduction costs more and slows the
    session run after it); else one pass (a negative value, seen as unsigned, is above
    255)."""
    if array.dtype == np.uint8 or not array.size:
        return True
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    if array.size <= SMALL_SCAN:
        return below_power_of_two(array, 8)
    if array.dtype == np.int8:
        return int(array.min()) >= 0
    unsigned = array.view(f"u{array.dtype.itemsize}") if array.dtype.kind == "i" else array
    return int(unsigned.max()) <= 255


class ChannelSplitKernel(RegionKernel):
    """A depthwise convolution of one image (its region alone) as ``parts``: (session, first
    channel, end channel), each session the region built for those channels, run on the
    plan's lanes at once, each writing its channels of the one NCHW result in place (an
    IOBinding on a view of it). onnxruntime's grouped ConvInteger multiplies group by group
    on one thread; cut, each lane takes its share (the PP-OCRv4 detector's 16x320x320
    depthwise session: 1.83 ms on one thread, 0.96 in two halves at once). ``axis``: the
    input's channel axis as held (3 when it is held channels last)."""

    def __init__(self, parts: list, axis: int, shape: tuple, dtype, constants):
        first = parts[0][0]
        super().__init__(first, [first.get_inputs()[0].name], constants)
        self.parts = [(session, session.get_inputs()[0].name, session.get_outputs()[0].name,
                       start, stop) for session, start, stop in parts]
        self.axis, self.shape, self.dtype = axis, shape, np.dtype(dtype)

    def call(self, arrays, narrow: bool | None = None):
        (x,) = arrays
        out = np.empty(self.shape, self.dtype)

        def run(part) -> None:
            session, x_name, out_name, start, stop = part
            cut = (slice(None),) * self.axis + (slice(start, stop),)
            piece, dst = np.ascontiguousarray(x[cut]), out[:, start:stop]
            binding = session.io_binding()
            binding.bind_cpu_input(x_name, piece)
            binding.bind_output(out_name, "cpu", 0, self.dtype, dst.shape, dst.ctypes.data)
            session.run_with_iobinding(binding)
        parallel(run, self.parts)
        return out
