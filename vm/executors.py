"""Executors: how arrays are held and which rule of an op runs. There is one interpreter loop
(vm/interp.py); an executor only answers these questions.

* ``cpu``       numpy, the ops' ``kernel`` rules (or a ``cpu`` override); with the
                onnxruntime backend (vm/ort/), regions of the program run on onnxruntime's
                integer kernels where its load-time self-test licenses them.
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

import ops
from ops.base import Ref

from . import plugins
from .errors import EnvironmentFault
from .fusion import fuse

DEVICE_TYPES = {0: "cpu", 1: "gpu", 2: "formal", 3: "reference"}
"""CVM's C-API numbering (0 cpu, 1 gpu, 2 formal), plus detvm's pure-Python reference."""


BACKENDS = ("auto", "onnxruntime", "numpy")
"""CPU backends: ``auto`` runs on onnxruntime where its self-test passed and lowering pays,
``onnxruntime`` lowers every instruction it can (and fails without a licensed onnxruntime),
``numpy`` is the numpy executor alone."""


@dataclass(frozen=True)
class Context:
    """Where a model runs: ``Context("cpu")``, ``Context("gpu", 0)``, ...; ``backend``: how
    the CPU computes (:data:`BACKENDS`), the same bytes in every case."""

    device_type: str
    device_id: int = 0
    backend: str = "auto"

    def __post_init__(self):
        if self.device_type not in DEVICE_TYPES.values():
            raise EnvironmentFault(f"unknown device type {self.device_type!r} "
                                   f"(known: {', '.join(DEVICE_TYPES.values())})")
        if self.backend not in BACKENDS or (self.backend != "auto" and
                                            self.device_type != "cpu"):
            raise EnvironmentFault(f"unknown backend {self.backend!r} for {self.device_type} "
                                   f"(cpu: {', '.join(BACKENDS)})")

    def __str__(self) -> str:
        backend = "" if self.backend == "auto" else f", {self.backend}"
        return f"{self.device_type}({self.device_id}{backend})"


class Executor:
    """The numpy executor. Subclasses change the array namespace or the rule they pick."""

    name = "cpu"

    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.xp = np
        self.backend = "numpy" if ctx.device_type == "cpu" else ctx.device_type

    def kernel(self, op):
        """The callable ``(xp, *arrays, **kwargs)`` that computes ``op`` here."""
        return op.overrides.get(self.name, op.kernel)

    def fast_steps(self, program, analysis, steps: list, threads: int | None = None) -> list:
        """The steps a run without a trace takes: on the CPU, fused and prepared at load time
        for ``threads`` lanes (vm/fusion.py, the same bytes); elsewhere the per-instruction
        ``steps``. The fusion pass knows version 1's ops: a program using an op whose rules
        its semantics version changed (ops/semantics.py) runs per instruction."""
        if self.name != "cpu" or uses_changed_ops(program):
            return steps
        return fuse(program, analysis, steps, threads or 1)

    def may_use_blas(self, fast: list) -> bool:
        """Whether the steps ``fast`` may call the BLAS library (whose threads a plan for n
        threads limits around each run)."""
        return True

    def describe(self, program, fast: list) -> str:
        """How a plan with these fast steps computes, in words."""
        return self.backend

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


class OrtExecutor(Executor):
    """The CPU executor with regions lowered to onnxruntime (vm/ort/) and the numpy executor's
    steps elsewhere. ``policy``: what to lower (vm.ort.plan.Policy); the self-test runs when
    a program first has something worth lowering (vm.ort.selftest: once per process)."""

    def __init__(self, ctx: Context, policy):
        super().__init__(ctx)
        self.policy = policy

    def fast_steps(self, program, analysis, steps: list, threads: int | None = None) -> list:
        from .ort.plan import plan
        if uses_changed_ops(program):           # the lowering knows version 1's ops
            return steps
        fast = plan(program, analysis, steps, threads, self.policy)
        return super().fast_steps(program, analysis, steps, threads) if fast is None else fast

    def may_use_blas(self, fast: list) -> bool:
        from .ort.plan import RegionKernel             # a split one runs on the plan's lanes
        return not all(type(step.kernel) is RegionKernel for step in fast)

    def describe(self, program, fast: list) -> str:
        from .ort.plan import describe
        return describe(program, fast)


def uses_changed_ops(program) -> bool:
    """Whether ``program`` uses an op whose rules its semantics version changed from version
    1's (ops/semantics.py): prepared paths that know version 1's ops must leave it alone."""
    changed = ops.semantics.changed(program.semantics)
    return bool(changed) and any(ins.op in changed for ins in program.code)


def make_executor(ctx: Context) -> Executor:
    """The executor for ``ctx``; an unavailable one raises EnvironmentFault, never falls back
    (the CPU's ``auto`` backend is the numpy executor where onnxruntime is not licensed)."""
    if ctx.device_type == "cpu":
        if ctx.backend == "numpy":
            return Executor(ctx)
        from .ort import plan, selftest
        if ctx.backend == "onnxruntime":
            verdict = selftest.verdict()
            if verdict.form is None:
                raise EnvironmentFault(f"the onnxruntime backend is not available: {verdict}")
            return OrtExecutor(ctx, plan.EVERYTHING)
        return OrtExecutor(ctx, plan.AUTO)
    if ctx.device_type == "reference":
        return ReferenceExecutor(ctx)
    if ctx.device_type == "gpu":
        return GpuExecutor(ctx)
    factory = plugins.require("executors", ctx.device_type, f"the {ctx.device_type} executor")
    return factory(ctx)
