"""detvm: a deterministic, integer-only inference VM.

    import vm
    model = vm.load("model.dvm")            # decode, validate completely, bind to the CPU
    out = model.run({"x": x})               # numpy in, numpy out, the same bytes everywhere
    model.gas, model.hash                   # known before running
    t = vm.trace(model, {"x": x})           # every instruction's output hash, t.root (vm/audit.py)

Contexts: ``vm.cpu()``, ``vm.gpu(dev_id)``, ``vm.formal()``, ``vm.reference()``, or
``vm.context(dev_type, dev_id)`` with CVM's numbering (0 cpu, 1 gpu, 2 formal).
"""
from __future__ import annotations

from . import audit, errors, observe, receipt
from .audit import trace
from .decoding import decode
from .encoding import encode
from .errors import (DetvmError, EnvironmentFault, InternalError, InvalidError,
                     MalformedError, TrapError)
from .executors import DEVICE_TYPES, Context
from .loader import load
from .model import Model, TensorInfo
from .pipeline import Pipeline
from .program import Instr, Program, Tensor
from .single import op, op_model
from .validate import Limits, validate
from .version import __version__  # noqa: F401

SEED_APIS = ("runtime", "ndarray", "lite", "accl", "acl", "neuropod", "utils")


def cpu(dev_id: int = 0, backend: str = "auto") -> Context:
    """The CPU: ``backend`` "auto" (onnxruntime's integer kernels where its self-test passed
    and they pay, numpy elsewhere), "onnxruntime" (every instruction it can) or "numpy"."""
    return Context("cpu", dev_id, backend)


def gpu(dev_id: int = 0) -> Context:
    """The cupy executor on CUDA device ``dev_id`` (loading fails cleanly without cupy)."""
    return Context("gpu", dev_id)


def formal(dev_id: int = 0) -> Context:
    """The Z3 executor: computes the output and proves it is the only one."""
    return Context("formal", dev_id)


def reference(dev_id: int = 0) -> Context:
    """The pure-Python scalar reference executor (slow; the oracle of the tests)."""
    return Context("reference", dev_id)


def opencl(dev_id: int = 0) -> Context:
    """CVM's OpenCL context: not supported by detvm (an EnvironmentFault)."""
    raise EnvironmentFault("the OpenCL device is not supported by detvm (cpu, gpu, formal and "
                           "reference are)")


def context(dev_type: int | str, dev_id: int = 0) -> Context:
    """A context by CVM device number (0 cpu, 1 gpu, 2 formal) or name."""
    if isinstance(dev_type, int):
        if dev_type not in DEVICE_TYPES:
            raise EnvironmentFault(f"unknown device type {dev_type} "
                                   f"(0 cpu, 1 gpu, 2 formal, 3 reference)")
        dev_type = DEVICE_TYPES[dev_type]
    return Context(dev_type, dev_id)


def __getattr__(name: str):
    """The seed-style APIs are imported on first use: ``vm.runtime`` and ``vm.ndarray``
    (CVM), ``vm.lite`` (MegEngine Lite), ``vm.accl`` (MemryX), ``vm.acl`` (pyACL),
    ``vm.neuropod`` (Neuropod), ``vm.utils`` (CVM's file helpers)."""
    if name in SEED_APIS:
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'vm' has no attribute {name!r}")


__all__ = ["op", "op_model", "load", "Model", "Pipeline", "TensorInfo", "Program", "Tensor", "Instr", "Limits", "validate",
           "encode", "decode", "cpu", "gpu", "formal", "reference", "opencl", "context", "Context",
           "errors", "observe", "audit", "trace", "receipt", "runtime", "ndarray", "DetvmError", "MalformedError", "InvalidError",
           "TrapError", "EnvironmentFault", "InternalError"]
