"""MegEngine Lite's configuration and I/O types: options, config, layouts, IO items, tensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from ..checks import expect_dims, integer_array
from ..errors import TrapError
from ..executors import Context


class LiteDeviceType(IntEnum):
    LITE_CPU = 0
    LITE_CUDA = 1
    LITE_DEVICE_DEFAULT = 5


class LiteBackend(IntEnum):
    LITE_DEFAULT = 0


class LiteIOType(IntEnum):
    LITE_IO_VALUE = 0
    LITE_IO_SHAPE = 1


class LiteTensorPhase(IntEnum):
    LITE_IO = 0
    LITE_INPUT = 1
    LITE_OUTPUT = 2


@dataclass
class LiteOptions:
    """MegEngine's forwarding options: accepted for porting, none changes detvm's bytes."""

    weight_preprocess: bool = False
    fuse_preprocess: bool = False
    fake_next_exec: bool = False
    var_sanity_check_first_run: bool = True
    const_shape: bool = False
    force_dynamic_alloc: bool = False
    force_output_dynamic_alloc: bool = False
    force_output_use_user_specified_memory: bool = False
    no_profiling_on_shape_change: bool = False
    jit_level: int = 0
    comp_node_seq_record_level: int = 0
    graph_opt_level: int = 2
    async_exec_level: int = 1


@dataclass
class LiteConfig:
    """Where and how a network runs. ``device_type`` is a LiteDeviceType or any detvm context
    (``vm.reference()``, ``vm.formal()``)."""

    device_type: Any = LiteDeviceType.LITE_CPU
    option: LiteOptions | None = None
    device_id: int = 0
    backend: LiteBackend = LiteBackend.LITE_DEFAULT
    has_compression: bool = False
    auto_optimize_inference: bool = False
    discrete_input_name: str = ""

    def __post_init__(self):
        self.options = self.option if self.option is not None else LiteOptions()

    def context(self) -> Context:
        if isinstance(self.device_type, Context):
            return self.device_type
        try:
            kind = LiteDeviceType(self.device_type)
        except ValueError:
            raise TrapError(f"LiteConfig.device_type {self.device_type!r} is not a "
                            "LiteDeviceType or a detvm context") from None
        return Context("gpu" if kind == LiteDeviceType.LITE_CUDA else "cpu", self.device_id)


@dataclass
class LiteLayout:
    """A tensor's shape and element type (``data_type`` a numpy dtype)."""

    shapes: tuple[int, ...] = ()
    data_type: Any = np.int8

    def __post_init__(self):
        self.shapes = expect_dims(self.shapes, "LiteLayout shapes")
        try:
            self.data_type = np.dtype(self.data_type)
        except (TypeError, ValueError):
            raise TrapError(f"LiteLayout data_type: {self.data_type!r} is not a dtype") from None

    @property
    def ndim(self) -> int:
        return len(self.shapes)


@dataclass(eq=False)
class LiteIO:
    """One input or output of a network; ``layout``, when given, is checked at ``forward``."""

    name: str
    is_host: bool = True
    io_type: LiteIOType = LiteIOType.LITE_IO_VALUE
    layout: LiteLayout | None = None

    @property
    def config_layout(self) -> LiteLayout | None:
        return self.layout


@dataclass
class LiteNetworkIO:
    inputs: list[LiteIO] = field(default_factory=list)
    outputs: list[LiteIO] = field(default_factory=list)

    def add_input(self, io: LiteIO) -> None:
        self.inputs.append(checked(io, LiteIO, "add_input"))

    def add_output(self, io: LiteIO) -> None:
        self.outputs.append(checked(io, LiteIO, "add_output"))


class LiteTensor:
    """A network's input or output buffer (host memory)."""

    def __init__(self, layout: LiteLayout, phase: LiteTensorPhase):
        self.layout, self.phase = layout, phase
        self._data = np.zeros(layout.shapes, dtype=layout.data_type)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def nbytes(self) -> int:
        return self._data.nbytes

    def set_data_by_copy(self, data) -> None:
        """Copy ``data`` (an integer array or sequence) in; the layout follows it."""
        array = np.array(integer_array(data, "set_data_by_copy"), copy=True)
        self._data = array
        self.layout = LiteLayout(array.shape, array.dtype)

    def set_data_by_share(self, data) -> None:
        """Use the caller's integer array itself (no copy; it must stay unchanged until the
        forward that reads it has finished)."""
        if not isinstance(data, np.ndarray) or data.dtype.kind not in "iu":
            raise TrapError("set_data_by_share: an integer numpy array expected")
        self._data = data
        self.layout = LiteLayout(data.shape, data.dtype)

    def copy_from(self, src: "LiteTensor") -> None:
        self.set_data_by_copy(checked(src, LiteTensor, "copy_from")._data)

    def to_numpy(self) -> np.ndarray:
        return self._data.copy()

    def get_data_by_share(self) -> np.ndarray:
        """The buffer itself (read-only view)."""
        view = self._data.view()
        view.flags.writeable = False
        return view

    def __repr__(self) -> str:
        return f"<LiteTensor {list(self.shape)} {self._data.dtype}>"


def checked(value, kind, what: str):
    """``value`` if it is a ``kind``, else a TrapError naming the call."""
    if not isinstance(value, kind):
        raise TrapError(f"{what}: expected a {kind.__name__}, got {type(value).__name__}")
    return value
