"""CVM's Python API on detvm: ``CVMAPILoadModel``, ``CVMAPIInference`` and friends.

    net = vm.runtime.CVMAPILoadModel(json_str, param_bytes, vm.cpu())     # compat="cvm" too
    out = vm.runtime.CVMAPIInference(net, input_bytes)                     # bytes, as CVM
    vm.runtime.CVMAPIGetOutputLength(net), vm.runtime.CVMAPIGetGasFromModel(net)

Every function raises :class:`CVMError` with CVM's code: 1 (ERROR_LOGIC: the model's or the
caller's fault) or 2 (ERROR_RUNTIME), and a message. By default a model runs the semantics
CVM intended; ``compat="cvm"`` reproduces CVM's deterministic quirks (docs/cvm-compat.md).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from .cvm_bytes import ByteLayout
from .errors import DetvmError, InvalidError
from .executors import Context
from .model import Model

LOGIC, RUNTIME = 1, 2


class CVMError(Exception):
    """A failed CVM API call: ``code`` is 1 (logic) or 2 (runtime), ``message`` says why."""

    def __init__(self, code: int, message: str):
        super().__init__(f"CVM error {code}: {message}")
        self.code, self.message = code, message


@contextmanager
def cvm_errors():
    """Turn detvm errors into :class:`CVMError` with CVM's classification."""
    from compiler.cvm import cvm_code
    try:
        yield
    except DetvmError as e:
        raise CVMError(cvm_code(e), str(e)) from e


class CVMContext(Context):
    """CVM's context type, ``CVMContext(device_type, device_id)``: ``device_type`` in CVM's
    Python (DLPack) numbering, 1 cpu, 2 gpu, 3 formal, or a name. 4 (OpenCL) is not supported.
    ``.device_type`` is detvm's name of the device; ``.dl_device_type`` CVM's number."""

    MASK2STR = {1: "cpu", 2: "gpu", 3: "formal", 4: "opencl"}
    STR2MASK = {v: k for k, v in MASK2STR.items()}

    def __init__(self, device_type, device_id: int = 0):
        name = self.MASK2STR.get(device_type) if isinstance(device_type, int) else device_type
        if name == "opencl":
            raise CVMError(RUNTIME, "the OpenCL device is not supported by detvm "
                                    "(cpu, gpu, formal and reference are)")
        if name not in ("cpu", "gpu", "formal", "reference") or isinstance(device_type, bool):
            raise CVMError(RUNTIME, f"unknown device type {device_type!r} (1 cpu, 2 gpu, "
                                    "3 formal, or a name)")
        if not isinstance(device_id, int) or isinstance(device_id, bool) or device_id < 0:
            raise CVMError(RUNTIME, f"device_id must be an int >= 0, got {device_id!r}")
        super().__init__(name, device_id)

    @property
    def dl_device_type(self) -> int:
        return self.STR2MASK.get(self.device_type, 0)

    def __repr__(self) -> str:
        return f"{self.device_type}({self.device_id})"


def cpu(dev_id: int = 0) -> CVMContext:
    return CVMContext(1, dev_id)


def gpu(dev_id: int = 0) -> CVMContext:
    return CVMContext(2, dev_id)


def formal(dev_id: int = 0) -> CVMContext:
    return CVMContext(3, dev_id)


def opencl(dev_id: int = 0) -> CVMContext:
    """CVM's OpenCL context: not supported (CVM's own is a stub with one op)."""
    return CVMContext(4, dev_id)


def context(dev_type, dev_id: int = 0) -> CVMContext:
    """A context from a number (CVM's Python numbering) or a name, type-checked."""
    return CVMContext(dev_type, dev_id)


class CVMModel:
    """A loaded model (the handle of the API): a detvm Model plus CVM's facts and bytes."""

    def __init__(self, model: Model):
        from compiler.cvm import facts
        with cvm_errors():
            if model.symbols:
                raise InvalidError(f"the CVM API needs fixed shapes; this model has the "
                                   f"symbols {', '.join(model.symbols)}")
            self.model = model
            self.facts = facts(model.program, model.gas)
            self.layout = ByteLayout(model.program, self.facts)
        self.freed = False

    @property
    def compat(self) -> str:
        return self.facts.compat

    def inference(self, input_data: bytes, big_endian: bool = False) -> bytes:
        with cvm_errors():
            x = self.layout.decode(input_data, big_endian)
            outputs = self.model.run({self.layout.input_name: x})
            return self.layout.encode(list(outputs.values()), big_endian)

    def info(self) -> dict[str, Any]:
        """What CVM's API reports about the model."""
        f, lay = self.facts, self.layout
        return {"compat": f.compat, "version": f.version, "postprocess": f.postprocess,
                "input_length": lay.input_length, "input_type_size": lay.input_type_size,
                "output_length": lay.output_length, "output_type_size": lay.output_type_size,
                "storage_size": f.storage_size, "gas": f.gas}

    def __repr__(self) -> str:
        state = "freed" if self.freed else f"compat={self.compat}"
        return f"<CVMModel {self.model.name!r} {state}>"


def check_context(ctx) -> Context:
    """``ctx`` (a detvm or CVM context; None is the CPU), or a CVMError."""
    if ctx is None:
        return Context("cpu")
    if not isinstance(ctx, Context):
        raise CVMError(RUNTIME, f"ctx must be a context such as vm.runtime.cpu() or "
                                f"vm.cpu(), got {ctx!r}")
    return ctx


def _net(net) -> CVMModel:
    if not isinstance(net, CVMModel) or net.freed:
        raise CVMError(LOGIC, "invalid or freed model handle")
    return net


def _bytes(data, what: str) -> bytes:
    if isinstance(data, str):
        return data.encode("utf-8")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CVMError(LOGIC, f"{what} must be bytes, got {type(data).__name__}")
    return bytes(data)


# ---------------------------------------------------------------------------------------------
# The API (names and semantics of CVM's cvm.runtime and C API)
# ---------------------------------------------------------------------------------------------

def CVMAPILoadModel(json_str, param_bytes, ctx=None, compat: str | None = None) -> CVMModel:
    """Load a CVM model (graph JSON text or UTF-8 bytes, params blob) on ``ctx``."""
    from compiler.cvm import import_cvm
    json_bytes, params = _bytes(json_str, "json_str"), _bytes(param_bytes, "param_bytes")
    context = check_context(ctx)
    with cvm_errors():
        return CVMModel(Model(import_cvm(json_bytes, params, compat), context))


def load_model(model: Model) -> CVMModel:
    """The API handle of an already loaded detvm model (e.g. a .dvm imported from CVM)."""
    if not isinstance(model, Model):
        raise CVMError(LOGIC, f"load_model takes a vm.Model, got {type(model).__name__}")
    return CVMModel(model)


def CVMAPIFreeModel(net: CVMModel) -> None:
    """Release the model; the handle is unusable afterwards."""
    _net(net).freed = True
    net.model.close()


def CVMAPIInference(net: CVMModel, input_data, big_endian: bool = False) -> bytes:
    """Run on the input bytes; return the output bytes (``big_endian``: CVM's chain layout)."""
    return _net(net).inference(_bytes(input_data, "input_data"), big_endian)


def CVMAPIGetInputLength(net: CVMModel) -> int:
    return _net(net).layout.input_length


def CVMAPIGetInputTypeSize(net: CVMModel) -> int:
    return _net(net).layout.input_type_size


def CVMAPIGetOutputLength(net: CVMModel) -> int:
    return _net(net).layout.output_length


def CVMAPIGetOutputTypeSize(net: CVMModel) -> int:
    return _net(net).layout.output_type_size


def CVMAPIGetStorageSize(net: CVMModel) -> int:
    return _net(net).facts.storage_size


def CVMAPIGetGasFromModel(net: CVMModel) -> int:
    return _net(net).facts.gas


def CVMAPIGetGasFromGraphFile(json_str) -> int:
    """CVM's gas from the graph JSON alone, after every check that needs no params."""
    from compiler.cvm import check_json
    data = _bytes(json_str, "json_str").split(b"\0", 1)[0]    # a C string ends at NUL
    with cvm_errors():
        return check_json(data).gas


def CVMAPIGetVersion(net: CVMModel) -> str:
    """The model's graph version, e.g. "cvm_1.0.0" (CVM itself returns garbage here)."""
    return _net(net).facts.version


def CVMAPIGetPostprocessMethod(net: CVMModel) -> str:
    """The postprocess string of the graph ("", "argmax", "detection", ...)."""
    return _net(net).facts.postprocess


CVMAPIGetPreprocessMethod = CVMAPIGetPostprocessMethod
"""CVM's C API name for :func:`CVMAPIGetPostprocessMethod` (it is misnamed there)."""

__all__ = ["CVMError", "CVMModel", "CVMContext", "cpu", "gpu", "formal", "opencl", "context",
           "check_context", "load_model", "CVMAPILoadModel", "CVMAPIFreeModel",
           "CVMAPIInference", "CVMAPIGetInputLength", "CVMAPIGetInputTypeSize",
           "CVMAPIGetOutputLength", "CVMAPIGetOutputTypeSize", "CVMAPIGetStorageSize",
           "CVMAPIGetGasFromModel", "CVMAPIGetGasFromGraphFile", "CVMAPIGetVersion",
           "CVMAPIGetPostprocessMethod", "CVMAPIGetPreprocessMethod"]
