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
from .errors import DetvmError
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


class CVMModel:
    """A loaded model (the handle of the API): a detvm Model plus CVM's facts and bytes."""

    def __init__(self, model: Model):
        from compiler.cvm import facts
        with cvm_errors():
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


def _context(ctx) -> Context:
    if ctx is None:
        return Context("cpu")
    if not isinstance(ctx, Context):
        raise CVMError(RUNTIME, f"ctx must be a context such as vm.cpu(), got {ctx!r}")
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
    context = _context(ctx)
    with cvm_errors():
        return CVMModel(Model(import_cvm(json_bytes, params, compat), context))


def load_model(model: Model) -> CVMModel:
    """The API handle of an already loaded detvm model (e.g. a .dvm imported from CVM)."""
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

__all__ = ["CVMError", "CVMModel", "load_model", "CVMAPILoadModel", "CVMAPIFreeModel",
           "CVMAPIInference", "CVMAPIGetInputLength", "CVMAPIGetInputTypeSize",
           "CVMAPIGetOutputLength", "CVMAPIGetOutputTypeSize", "CVMAPIGetStorageSize",
           "CVMAPIGetGasFromModel", "CVMAPIGetGasFromGraphFile", "CVMAPIGetVersion",
           "CVMAPIGetPostprocessMethod", "CVMAPIGetPreprocessMethod"]
