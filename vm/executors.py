"""Executors: how arrays are held and which rule of an op runs. There is one interpreter loop
(vm/interp.py); an executor only answers these questions.

* ``cpu``       numpy, the ops' ``kernel`` rules (or a ``cpu`` override).
* ``gpu``       cupy, the same ``kernel`` rules with ``xp = cupy`` (or a ``gpu`` override).
* ``reference`` pure Python: the ops' ``scalar`` rules on unbounded ints (the slow oracle).
* ``formal``    Z3 (verify/, the formal mode; registered as a plugin, vm/plugins.py).
"""
from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np

from ops.base import Ref

from . import plugins
from .errors import EnvironmentFault
from .fusion import fuse

DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "formal", 3: "reference"}
"""CVM's C-API numbering (0 cpu, 1 gpu, 2 formal), plus detvm's pure-Python reference."""


@dataclass(frozen=True)
class Context:
    """Where a model runs: ``Context("cpu")``, ``Context("gpu", 0)``, ..."""

    device_type: str
    device_id: int = 0

    def __post_init__(self):
        if self.device_type not in DEVICE_TYPES.values():
            raise EnvironmentFault(f"unknown device type {self.device_type!r} "
                                   f"(known: {', '.join(DEVICE_TYPES.values())})")

    def __str__(self) -> str:
        return f"{self.device_type}({self.device_id})"


class Executor:
    """The numpy executor. Subclasses change the array namespace or the rule they pick."""

    name = "cpu"

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.xp = np

    def kernel(self, op):
        """The callable ``(xp, *arrays, **kwargs)`` that computes ``op`` here."""
        return op.overrides.get(self.name, op.kernel)

    def fast_steps(self, program, analysis, steps: list, lanes: int = 1) -> list:
        """The steps a run without a trace takes: on the CPU, fused and prepared at load time
        for ``lanes`` lanes (vm/fusion.py, the same bytes); elsewhere the per-instruction
        ``steps``."""
        if self.name != "cpu":
            return steps
        return fuse(program, analysis, steps, lanes)

    def exclusive(self):
        """A context manager held for a whole run: executors whose library is not thread-safe
        (z3) serialize their runs with it; the numpy executors need nothing."""
        return nullcontext()

    def from_host(self, array: np.ndarray):
        return array

    def to_host(self, value) -> np.ndarray:
        return value

    def narrow(self, value, dtype: np.dtype):
        """Store a kernel result in the output's storage dtype (validation proved it fits)."""
        return value.astype(dtype, copy=False)


class ReferenceExecutor(Executor):
    """Runs the ops' pure-Python ``scalar`` rules on :class:`ops.base.Ref` tensors."""

    name = "reference"

    def kernel(self, op):
        def scalar(xp, *args, gemm=None, **attrs):
            return op.scalar(list(args), attrs)
        return scalar

    def from_host(self, array: np.ndarray):
        return Ref.from_array(array)

    def to_host(self, value) -> np.ndarray:
        return value.to_array()

    def narrow(self, value, dtype: np.dtype):
        return value


class GpuExecutor(Executor):
    """cupy: the same kernels on the device; only inputs and outputs cross to the host."""

    name = "gpu"

    def __init__(self, ctx: Context):
        super().__init__(ctx)
        _tf32_off()
        try:
            import cupy
        except Exception as e:  # ImportError, or a broken CUDA install
            raise EnvironmentFault(f"the gpu executor needs cupy (pip install 'detvm[gpu]'): "
                                   f"{e}") from None
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as e:
            raise EnvironmentFault(f"no usable CUDA device: {e}") from None
        if not 0 <= ctx.device_id < count:
            raise EnvironmentFault(f"gpu({ctx.device_id}) does not exist ({count} devices)")
        self.xp = cupy
        self.device = cupy.cuda.Device(ctx.device_id)

    def from_host(self, array: np.ndarray):
        with self.device:
            return self.xp.asarray(array)

    def to_host(self, value) -> np.ndarray:
        return self.xp.asnumpy(value)


def _tf32_off() -> None:
    """Switch reduced-precision GEMM off before CUDA starts: TF32 would round the float32
    operands to 10-bit mantissas and break the exact-GEMM licence. NVIDIA_TF32_OVERRIDE=0 is
    the driver's process-wide switch (cuBLAS and cuDNN), CUPY_TF32=0 cupy's own. A process that
    already started cupy with TF32 on cannot be trusted: refuse it."""
    if "cupy" in sys.modules and os.environ.get("CUPY_TF32", "0") != "0":
        raise EnvironmentFault("cupy was started with CUPY_TF32 on: TF32 GEMMs are not exact; "
                               "start the process with CUPY_TF32=0")
    os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    os.environ["CUPY_TF32"] = "0"


def make_executor(ctx: Context) -> Executor:
    """The executor for ``ctx``; an unavailable one raises EnvironmentFault, never falls back."""
    if ctx.device_type == "cpu":
        return Executor(ctx)
    if ctx.device_type == "reference":
        return ReferenceExecutor(ctx)
    if ctx.device_type == "gpu":
        return GpuExecutor(ctx)
    factory = plugins.require("executors", ctx.device_type, f"the {ctx.device_type} executor")
    return factory(ctx)
